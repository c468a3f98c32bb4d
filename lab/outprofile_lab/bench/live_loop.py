"""The live-loop benchmark: the product's loop, turn by turn, against a similarity memory.

One turn of our memory is what a tracked LCEL chain costs beside the model: the injector
reads the block (``ProfileInjector.invoke`` on the turn's messages), the tracked run stores
its output as pending (``record_output``, what ``memory.track`` calls), and every third turn
the user endorses the answer (``feedback``). Model time is left out. It runs twice per turn:
in a pinned thread (``thread_id`` in the config) and unpinned (every read current). One turn
of the query-similarity memory pattern, in the same loop on the same store: embed the
request, a ``where``-filtered query of ``k`` nearest rows of the user, and write the turn
(embed the answer, upsert one row into the same collection, as a pending output of the user
so our selection never picks it). The three alternate turn by turn, so machine noise falls
on all of them alike.

Also measured in the same run: ingest through ``add_many`` (validation, style embedding,
folding, upsert, versions) against the ceiling, a raw ``collection.upsert`` of the same rows
with their vectors computed beforehand, and ``add_many`` with ``documents=True`` (the text also
written as the Chroma document, which Chroma full-text indexes); the first read of the user
(a full ranking), and the reads right after an endorsement (the first read after an append).

Run ``python -m outprofile_lab.bench --scenario live-loop`` (``--help``: sizes, modes).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from langchain_core.messages import HumanMessage, SystemMessage

from langchain_outprofile import (
    OutputProfileMemory,
    ProfileEntry,
    SelectionOptions,
    Signal,
    StyleEmbeddings,
)
from langchain_outprofile.store.rows import to_metadata
from outprofile_lab.bench.synthetic import queries, user_entries, user_name

__all__ = ["LIVE_LOOP_COLUMNS", "live_loop_scenario"]

_CHUNK = 5000
_FEEDBACK_EVERY = 3

LIVE_LOOP_COLUMNS = (
    ("mode", "mode"),
    ("scenario", "scenario"),
    ("entries", "entries"),
    ("users", "users"),
    ("turn p50 ms", "turn_p50_ms"),
    ("turn p95 ms", "turn_p95_ms"),
    ("pinned p50 ms", "pinned_p50_ms"),
    ("pinned p95 ms", "pinned_p95_ms"),
    ("similarity p50 ms", "similarity_p50_ms"),
    ("similarity p95 ms", "similarity_p95_ms"),
    ("ours/similarity", "ratio_turn_over_similarity"),
    ("read after append p50 ms", "read_after_append_p50_ms"),
    ("first read ms", "first_read_ms"),
    ("pinned stable %", "pinned_stable_pct"),
    ("add_many rows/s", "add_many_per_s"),
    ("raw upsert rows/s", "raw_upsert_per_s"),
    ("add_many/raw", "ratio_add_many_over_raw"),
    ("add_many with documents rows/s", "add_many_documents_per_s"),
)


@dataclass
class _Turns:
    """Per-turn timings (seconds) of one loop."""

    total: list[float] = field(default_factory=list)
    read: list[float] = field(default_factory=list)
    record: list[float] = field(default_factory=list)
    feedback: list[float] = field(default_factory=list)
    read_after_append: list[float] = field(default_factory=list)
    blocks: list[str] = field(default_factory=list)


def _clock() -> float:
    return time.perf_counter()


def _timed(call: Callable[[], Any]) -> tuple[Any, float]:
    start = _clock()
    result = call()
    return result, _clock() - start


def _ingest_all(
    memory: OutputProfileMemory,
    with_documents: OutputProfileMemory,
    raw: Any,
    records: list[dict[str, Any]],
) -> tuple[float, float, float]:
    """Seconds of ``add_many`` into our collection, of ``add_many`` with ``documents=True``
    into another, and of a raw upsert of the same rows (vectors computed beforehand,
    untimed) into ``raw``: chunk by chunk, alternating."""
    embedder = StyleEmbeddings()
    ours = documented = ceiling = 0.0
    for start in range(0, len(records), _CHUNK):
        chunk = records[start : start + _CHUNK]
        entries = [memory.entry(**r) for r in chunk]
        vectors = embedder.embed_array([e.text for e in entries])
        rows = {"ids": [e.id for e in entries], "metadatas": [to_metadata(e) for e in entries]}
        ceiling += _timed(lambda r=rows, v=vectors: raw.upsert(embeddings=v, **r))[1]  # type: ignore[misc]
        ours += _timed(lambda c=chunk: memory.add_many(c))[1]  # type: ignore[misc]
        documented += _timed(lambda c=chunk: with_documents.add_many(c))[1]  # type: ignore[misc]
    return ours, documented, ceiling


def _our_turn(
    memory: OutputProfileMemory,
    user: str,
    turn: int,
    query: str,
    thread: str | None,
    turns: _Turns,
    after_append: bool,
) -> None:
    configurable = {"user_id": user, **({"thread_id": thread} if thread else {})}
    injector = memory.injector()
    messages = [SystemMessage("You answer briefly."), HumanMessage(query)]
    start = _clock()
    sent, read = _timed(lambda: injector.invoke(messages, {"configurable": configurable}))
    run = str(uuid.uuid4())
    answer = f"Answer {turn} ({thread or 'current'}): {query}"
    _, record = _timed(lambda: memory.record_output(answer, user_id=user, run_id=run))
    feedback = 0.0
    if turn % _FEEDBACK_EVERY == _FEEDBACK_EVERY - 1:
        _, feedback = _timed(lambda: memory.feedback(run, "endorsed", user_id=user))
        turns.feedback.append(feedback)
    turns.total.append(_clock() - start)
    turns.read.append(read)
    turns.record.append(record)
    # the block is its own message, after the app's system prompt by default
    header = memory.template.header
    turns.blocks.append(next(str(m.content) for m in sent if str(m.content).startswith(header)))
    if after_append:
        turns.read_after_append.append(read)


def _similarity_turn(
    collection: Any, embedder: StyleEmbeddings, user: str, query: str, k: int
) -> float:
    """LangChain's query-similarity memory pattern for one turn, on the same collection: the
    turn is written as a row of the user (as a pending output: our selection never picks it)."""

    def turn() -> str:
        hits = collection.query(
            query_embeddings=[embedder.embed_query(query)],
            n_results=k,
            where={"user_id": user},
            include=["metadatas"],
        )
        answer = ProfileEntry.create(
            f"Answer to {query} {uuid.uuid4()}", user_id=user, signal=Signal.PENDING
        )
        collection.upsert(
            ids=[answer.id],
            metadatas=[to_metadata(answer)],
            embeddings=[embedder.embed_query(answer.text)],
        )
        return str(hits["ids"])

    return _timed(turn)[1]


def live_loop_scenario(
    client: Any,
    name: str,
    *,
    entries: int,
    users: int,
    turns: int,
    max_tokens: int,
    seed: int,
    ms: Callable[[Sequence[float]], tuple[float, float]],
    compare_ingest: bool = True,
) -> dict[str, Any]:
    """One live-loop scenario: ``entries`` spread over ``users`` in one collection, then
    ``turns`` turns of the user ``user_name(0)`` (see the module docstring). Without
    ``compare_ingest``, only ``add_many`` ingests (no raw-upsert or documents collection)."""
    stamp = time.time_ns()
    memory = OutputProfileMemory.from_client(
        client,
        collection_name=f"live-{name}-{stamp}",
        options=SelectionOptions(max_tokens=max_tokens),
    )
    per_user = entries // users
    records = [r for u in range(users) for r in user_entries(u, per_user, seed=seed)]
    if compare_ingest:
        with_documents = OutputProfileMemory.from_client(
            client, collection_name=f"docs-{name}-{stamp}", documents=True
        )
        raw = client.create_collection(
            f"raw-{name}-{stamp}", metadata={"hnsw:space": "cosine"}, embedding_function=None
        )
        ours_s, documented_s, raw_s = _ingest_all(memory, with_documents, raw, records)
    else:
        ours_s = sum(
            _timed(lambda c=records[i : i + _CHUNK]: memory.add_many(c))[1]  # type: ignore[misc]
            for i in range(0, len(records), _CHUNK)
        )
        documented_s = raw_s = float("nan")
    ours_collection = client.get_collection(memory.store.collection_name)
    user = user_name(0)
    asks = queries(turns, seed=seed)
    first, first_s = _timed(lambda: memory.select(user))
    k = max(1, len(first.entries))
    embedder = StyleEmbeddings()
    unpinned, pinned, similar = _Turns(), _Turns(), []
    thread = f"thread-{stamp}"
    for turn, query in enumerate(asks):
        after_append = turn > 0 and (turn - 1) % _FEEDBACK_EVERY == _FEEDBACK_EVERY - 1
        _our_turn(memory, user, turn, query, None, unpinned, after_append)
        _our_turn(memory, user, turn, query, thread, pinned, after_append)
        similar.append(_similarity_turn(ours_collection, embedder, user, query, k))
    turn_ms, pinned_ms, similar_ms = ms(unpinned.total), ms(pinned.total), ms(similar)
    stable = sum(b == pinned.blocks[0] for b in pinned.blocks) / len(pinned.blocks)
    return {
        "scenario": name,
        "entries": len(records),
        "users": users,
        "turns": turns,
        "turn_p50_ms": turn_ms[0],
        "turn_p95_ms": turn_ms[1],
        "read_p50_ms": ms(unpinned.read)[0],
        "record_p50_ms": ms(unpinned.record)[0],
        "feedback_p50_ms": ms(unpinned.feedback)[0],
        "pinned_p50_ms": pinned_ms[0],
        "pinned_p95_ms": pinned_ms[1],
        "pinned_read_p50_ms": ms(pinned.read)[0],
        "similarity_p50_ms": similar_ms[0],
        "similarity_p95_ms": similar_ms[1],
        "ratio_turn_over_similarity": turn_ms[0] / similar_ms[0],
        "read_after_append_p50_ms": ms(unpinned.read_after_append)[0],
        "read_after_append_p95_ms": ms(unpinned.read_after_append)[1],
        "first_read_ms": first_s * 1e3,
        "pinned_stable_pct": 100.0 * stable,
        "unpinned_blocks_distinct": len(set(unpinned.blocks)),
        "add_many_per_s": len(records) / ours_s,
        "add_many_documents_per_s": len(records) / documented_s,
        "raw_upsert_per_s": len(records) / raw_s,
        "ratio_add_many_over_raw": raw_s / ours_s,  # nan without compare_ingest
        "similarity_k": k,
    }
