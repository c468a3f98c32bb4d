"""The feedback loop at cache speed: which writes move the profile version, how many Chroma
calls a write makes, and how often a tracked run looks for stale pending outputs."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import chromadb

from langchain_outprofile import OutputProfileMemory, ReadOptions, Signal, WriteOptions
from tests.conftest import ManualClock, WatchedCollection, offline_memory, unique_name


class CallCounter(WatchedCollection):
    """Counts the calls made to one Chroma collection object, by method name."""

    def __init__(self, collection: Any) -> None:
        self.calls: Counter[str] = Counter()
        super().__init__(collection, self._counted)

    def _counted(self, name: str, call: Callable[..., Any]) -> Callable[..., Any]:
        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return call(*args, **kwargs)

        return counted


_memory = offline_memory


def counting(
    counts: Counter[str], name: str, operation: Callable[..., Awaitable[Any]]
) -> Callable[..., Awaitable[Any]]:
    """``operation`` (a store coroutine method), counting its calls under ``name``."""

    async def counted(*args: Any, **kwargs: Any) -> Any:
        counts[name] += 1
        return await operation(*args, **kwargs)

    return counted


def _count_calls(memory: OutputProfileMemory) -> tuple[CallCounter, CallCounter, CallCounter]:
    """Wrap the store's entries, log and state collections in call counters."""
    entries = CallCounter(memory.store._collection)
    log = CallCounter(memory.store._log)
    state = CallCounter(memory.store.state._collection)
    memory.store._collection = entries
    memory.store._log = log
    memory.store.state._collection = state
    return entries, log, state


def test_a_pending_output_keeps_the_version_and_the_saved_block(
    client: chromadb.api.ClientAPI,
) -> None:
    name, clock = unique_name("live"), ManualClock()
    writer = _memory(client, name, clock=clock)
    writer.add("Short answer first.", user_id="ana")
    block = writer.select("ana").text
    version = writer.store.version("ana")

    writer.record_output("A tracked answer.", user_id="ana", run_id=str(uuid.uuid4()))
    assert writer.store.version("ana") == version

    reader = _memory(client, name, clock=clock, reads=ReadOptions(cache_ttl_s=0))
    loads = Counter[str]()
    reader.store.aload_fold = counting(loads, "load", reader.store.aload_fold)  # type: ignore[method-assign, assignment]
    assert reader.select("ana").text == block
    assert loads["load"] == 0, "the saved selection did not serve the cold read"


def test_a_selectable_write_moves_the_version(client: chromadb.api.ClientAPI) -> None:
    memory = _memory(client, unique_name("live"))
    memory.add("Short answer first.", user_id="ana")
    version = memory.store.version("ana")
    memory.add("Bullets, no fluff.", user_id="ana", signal="endorsed")
    assert memory.store.version("ana") not in ("", version)


def test_feedback_on_a_pending_output_moves_the_version(client: chromadb.api.ClientAPI) -> None:
    memory = _memory(client, unique_name("live"))
    memory.add("Short answer first.", user_id="ana")
    run = str(uuid.uuid4())
    memory.record_output("A tracked answer.", user_id="ana", run_id=run)
    version = memory.store.version("ana")
    memory.feedback(run, "endorsed")
    assert memory.store.version("ana") != version
    assert "A tracked answer." in memory.select("ana").text


def test_a_first_pending_output_still_lists_the_user(client: chromadb.api.ClientAPI) -> None:
    memory = _memory(client, unique_name("live"))
    memory.record_output("A tracked answer.", user_id="new", run_id=str(uuid.uuid4()))
    assert memory.store.user_ids() == ["new"]
    assert memory.store.version("new") != ""


def test_expiring_pending_outputs_keeps_the_version(client: chromadb.api.ClientAPI) -> None:
    clock = ManualClock()
    memory = _memory(
        client, unique_name("live"), clock=clock, writes=WriteOptions(pending_ttl_s=60)
    )
    memory.add("Short answer first.", user_id="ana")
    memory.record_output("A tracked answer.", user_id="ana", run_id=str(uuid.uuid4()))
    version = memory.store.version("ana")
    clock.advance(61)
    assert memory.expire("ana").pending == 0  # seen stale: marked, kept one more ttl
    clock.advance(61)
    assert memory.expire("ana").pending == 1
    assert memory.store.version("ana") == version
    assert [e["text"] for e in memory.export("ana")] == ["Short answer first."]


def test_a_tracked_run_looks_for_stale_pending_outputs_at_most_once_an_interval(
    client: chromadb.api.ClientAPI,
) -> None:
    clock = ManualClock()
    memory = _memory(
        client, unique_name("live"), clock=clock, writes=WriteOptions(pending_ttl_s=600)
    )
    queries = Counter[str]()
    memory.store.astale_pending = counting(  # type: ignore[method-assign, assignment]
        queries, "q", memory.store.astale_pending
    )
    for n in range(3):
        memory.record_output(f"Answer {n}.", user_id="ana", run_id=str(uuid.uuid4()))
    memory.flush()  # the look-up runs in the background
    assert queries["q"] == 1
    clock.advance(601)  # past the interval (the ttl, here): the next run looks, and marks
    memory.record_output("Answer 3.", user_id="ana", run_id=str(uuid.uuid4()))
    memory.flush()
    assert queries["q"] == 2
    assert len(memory.export("ana")) == 4
    clock.advance(601)  # a ttl after they were seen stale: the next run deletes them
    memory.record_output("Answer 4.", user_id="ana", run_id=str(uuid.uuid4()))
    memory.flush()
    assert queries["q"] == 3
    assert [e["text"] for e in memory.export("ana")] == ["Answer 3.", "Answer 4."]


def test_what_a_write_costs_in_chroma_calls(client: chromadb.api.ClientAPI) -> None:
    """An add of a new text: its rows read by id (new or known, and a base to copy), its
    event added to the log, its row written, and the version renewed: 4 calls, whether or
    not the memory holds the user's ranking (it takes its own events at once). The read
    after a block-changing write catches up with the log: the version, a check that the
    fold's oldest event is still there (no forget came between), the ids of the user's recent
    events, and nothing more when no other writer came between (then the new block is saved
    for other processes, in the background). A tracked run's output also
    reads its claim back, and renews no version."""
    memory = _memory(client, unique_name("live"))
    memory.add("Seed.", user_id="ana")
    memory.record_output("Warm-up.", user_id="ana", run_id=str(uuid.uuid4()))  # expiry check
    entries, log, state = _count_calls(memory)

    memory.add("Short answer first.", user_id="ana")
    assert (dict(entries.calls), dict(log.calls), dict(state.calls)) == (
        {"get": 1, "upsert": 1},
        {"add": 1},
        {"upsert": 1},
    )

    memory.select("ana")  # now the memory holds the ranking
    for counter in (entries, log, state):
        counter.calls.clear()
    memory.add("Bullets, no fluff.", user_id="ana")
    assert (dict(entries.calls), dict(log.calls), dict(state.calls)) == (
        {"get": 1, "upsert": 1},
        {"add": 1},
        {"upsert": 1},
    )
    for counter in (entries, log, state):
        counter.calls.clear()
    assert "Bullets, no fluff." in memory.select("ana").text
    memory.flush()  # the block's snapshot, saved in the background: 3 gets and an upsert
    assert (dict(entries.calls), dict(log.calls), dict(state.calls)) == (
        {"get": 1},  # the new entry's vector, for diversity
        {"get": 2},  # its oldest event still there; the ids of recent events: none new
        {"get": 4, "upsert": 1},  # the version, and the snapshot's check-write-check
    )

    for counter in (entries, log, state):
        counter.calls.clear()
    memory.record_output("A tracked answer.", user_id="ana", run_id=str(uuid.uuid4()))
    assert dict(entries.calls) == {"get": 1, "upsert": 1}
    assert dict(log.calls) == {"add": 1, "get": 1}  # the event, its claim read back
    assert dict(state.calls) == {}


def test_a_write_through_the_memory_is_a_delta_not_a_reload(
    client: chromadb.api.ClientAPI,
) -> None:
    memory = _memory(client, unique_name("live"))
    memory.add_many([{"text": f"Note {n}: fine.", "user_id": "ana"} for n in range(30)])
    memory.select("ana", max_tokens=200)
    loads = Counter[str]()
    memory.store.aload_fold = counting(loads, "load", memory.store.aload_fold)  # type: ignore[method-assign, assignment]
    run = str(uuid.uuid4())
    memory.record_output("A tracked answer.", user_id="ana", run_id=run)
    memory.feedback(run, "endorsed")
    selection = memory.select("ana", max_tokens=200)
    assert "A tracked answer." in selection.text
    assert loads["load"] == 0


def test_a_write_by_another_memory_is_seen_after_the_ttl(client: chromadb.api.ClientAPI) -> None:
    """A state kept past ``cache_ttl_s`` is revalidated by its version: another writer's
    write moves it, and the next read ranks again."""
    ticks = ManualClock(0.0)
    name = unique_name("live")
    reader = _memory(client, name, monotonic=ticks, reads=ReadOptions(cache_ttl_s=5))
    other = _memory(client, name)
    reader.add("first", user_id="ana")
    assert [e.text for e in reader.select("ana").entries] == ["first"]
    ticks.advance(6)
    assert [e.text for e in reader.select("ana").entries] == ["first"]  # revalidated, kept
    other.add("second", user_id="ana", signal=Signal.ENDORSED)
    ticks.advance(6)
    assert {e.text for e in reader.select("ana").entries} == {"first", "second"}


def test_another_memorys_forget_then_write_leaves_nothing_forgotten_in_the_cache(
    client: chromadb.api.ClientAPI,
) -> None:
    """A catch-up reads only the user's recent events, so it must notice a forget (which
    removes every older event): another memory forgets the user and writes a new text; the
    reader, holding a ranking of the old profile, serves only the new text."""
    ticks, clock = ManualClock(0.0), ManualClock()
    name = unique_name("live")
    reader = _memory(client, name, monotonic=ticks, clock=clock, reads=ReadOptions(cache_ttl_s=5))
    reader.add_many([{"text": f"Old note {n}.", "user_id": "ana"} for n in range(5)])
    clock.advance(86_400)  # a day later: the old notes are outside any recent window
    reader.add("A recent note.", user_id="ana")
    assert len(reader.select("ana").entries) == 6
    other = _memory(client, name, clock=clock)
    clock.advance(1.0)  # the forget comes after the recent note (the same time would tie)
    other.forget("ana")
    other.add("Written after the forget.", user_id="ana")
    ticks.advance(6)
    assert [e.text for e in reader.select("ana").entries] == ["Written after the forget."]


def test_the_block_after_a_delta_is_saved_for_other_processes(
    client: chromadb.api.ClientAPI,
) -> None:
    """The selection packed from an updated ranking is saved in the background as the
    snapshot of the new version: a cold memory then reads it without loading the profile."""
    name = unique_name("live")
    writer = _memory(client, name)
    writer.add("Short answer first.", user_id="ana")
    writer.select("ana")
    writer.add(
        "Bullets, no fluff.", user_id="ana", signal="endorsed"
    )  # a delta of the cached ranking
    block = writer.select("ana").text
    writer._reader.flush()
    reader = _memory(client, name, reads=ReadOptions(cache_ttl_s=0))
    loads = Counter[str]()
    reader.store.aload_fold = counting(loads, "load", reader.store.aload_fold)  # type: ignore[method-assign, assignment]
    assert reader.select("ana").text == block
    assert "Bullets, no fluff." in block
    assert loads["load"] == 0, "no snapshot of the new version was saved"
