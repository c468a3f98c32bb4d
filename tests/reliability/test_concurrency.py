"""Concurrency: many threads (and asyncio tasks) drive one memory object at once.

Each worker owns a user shared with at most one other worker and runs a random mix of
adds, batched adds, re-endorsements, tracked outputs with feedback, deletes, selects and
exports. Every read must show its user's entries only, a worker must see its own write
on the very next select (no stale cache), no call may raise, and at the end each user
holds exactly the entries its workers added and did not delete.
"""

from __future__ import annotations

import asyncio
import random
import threading
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import chromadb
import pytest

from langchain_outprofile import OutputProfileMemory
from tests.conftest import unique_name

USERS = ("ana", "bob", "cy", "dee", "eve")
WORKERS = 8

Call = Callable[..., Awaitable[Any]]


def _memory() -> OutputProfileMemory:
    return OutputProfileMemory.from_client(
        chromadb.EphemeralClient(), collection_name=unique_name()
    )


def _candidate_ids(selection: Any, user: str) -> set[str]:
    candidates = (*selection.choice.chosen, *selection.choice.left_out)
    assert all(c.entry.user_id == user for c in candidates), "another user's entry was read"
    return {c.entry.id for c in candidates}


async def _worker(call: Call, memory: OutputProfileMemory, n: int, ops: int) -> set[str]:
    """Run ``ops`` random operations as worker ``n``; return the ids it expects to remain."""
    rng = random.Random(n)
    user = USERS[n % len(USERS)]
    mine: list[str] = []
    for i in range(ops):
        roll = rng.random()
        text = f"worker {n} op {i}: {rng.random()}"
        if roll < 0.30:
            entry = await call(memory.add, text, user_id=user)
            mine.append(entry.id)
            seen = _candidate_ids(await call(memory.select, user, max_tokens=200), user)
            assert entry.id in seen, "a select right after an add missed the write"
        elif roll < 0.40:
            batch = [{"text": f"{text} #{k}", "user_id": user} for k in range(3)]
            mine += [e.id for e in await call(memory.add_many, batch)]
        elif roll < 0.50 and mine:
            own = await call(memory.export, user)
            again = next(r for r in own if r["id"] == mine[-1])
            entry = await call(memory.add, again["text"], user_id=user, signal="endorsed")
            assert entry.id == mine[-1]
        elif roll < 0.60:
            run = str(uuid.uuid4())
            entry = await call(memory.add, text, user_id=user, signal="pending", run_id=run)
            done = await call(memory.feedback, run, "endorsed", user_id=user)
            assert done.id == entry.id and not done.pending
            mine.append(entry.id)
        elif roll < 0.70 and mine:
            victim = mine.pop(rng.randrange(len(mine)))
            assert await call(memory.delete, victim, user_id=user)
        elif roll < 0.85:
            _candidate_ids(await call(memory.select, user, max_tokens=rng.randint(80, 800)), user)
        else:
            records = await call(memory.export, user)
            assert all(r["user_id"] == user for r in records)
    return set(mine)


def _check_final(memory: OutputProfileMemory, kept: list[set[str]]) -> None:
    for u, user in enumerate(USERS):
        expected = set().union(*(kept[n] for n in range(len(kept)) if n % len(USERS) == u))
        stored = {r["id"] for r in memory.export(user)}
        assert stored == expected, f"{user}: lost {expected - stored}, extra {stored - expected}"
    assert memory.store.total() == sum(len(k) for k in kept)


async def _sync_call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return fn(*args, **kwargs)


def _threads(ops: int) -> None:
    memory = _memory()
    start = threading.Barrier(WORKERS)

    def run(n: int) -> set[str]:
        start.wait()
        return asyncio.run(_worker(_sync_call, memory, n, ops))

    with ThreadPoolExecutor(WORKERS) as pool:
        kept = list(pool.map(run, range(WORKERS)))  # re-raises any worker's exception
    _check_final(memory, kept)


async def _tasks(ops: int) -> None:
    memory = _memory()
    call: Call = asyncio.to_thread  # the sync API from the default executor's threads
    kept = await asyncio.gather(*(_worker(call, memory, n, ops) for n in range(WORKERS)))
    _check_final(memory, list(kept))


def test_threads_share_one_memory() -> None:
    _threads(ops=40)


async def test_asyncio_tasks_share_one_memory() -> None:
    await _tasks(ops=40)


@pytest.mark.slow
def test_threads_share_one_memory_slow() -> None:
    _threads(ops=1_000)


@pytest.mark.slow
async def test_asyncio_tasks_share_one_memory_slow() -> None:
    await _tasks(ops=1_000)


def _write_after_the_next_load(
    memory: OutputProfileMemory, monkeypatch: pytest.MonkeyPatch, text: str
) -> threading.Event:
    """Make the next profile load of ``memory`` return what it read, after another thread
    has added ``text`` for ana (through the memory); the event is set once it has."""
    real_load = memory.store.aload_fold
    raced = threading.Event()

    async def load_then_a_write_lands(user_id: str, **kwargs: Any) -> Any:
        profile = await real_load(user_id, **kwargs)
        if not raced.is_set():
            raced.set()
            writer = threading.Thread(target=memory.add, args=(text,), kwargs={"user_id": "ana"})
            writer.start()
            writer.join()
        return profile

    monkeypatch.setattr(memory.store, "aload_fold", load_then_a_write_lands)
    return raced


def test_a_read_racing_a_write_does_not_cache_stale_data(monkeypatch: pytest.MonkeyPatch) -> None:
    """Force the interleaving the random runs can only hit by chance, on the real store.

    A reader loads the profile; before it caches that load, another thread adds an entry
    (and invalidates the cache). The reader must not then cache its now stale load, or a
    select right after the add would miss the new entry for ``cache_ttl_s``.
    """
    memory = _memory()
    memory.add("The first entry.", user_id="ana")
    _write_after_the_next_load(memory, monkeypatch, "A second entry.")
    memory.select("ana")  # its load finished before the write landed: stale
    seen = _candidate_ids(memory.select("ana"), "ana")
    assert memory.entry("A second entry.", user_id="ana").id in seen


def test_a_new_ranking_racing_a_write_is_not_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    """The state already holds a ranking (budget 300) and takes writes as deltas. A read
    under new options (budget 200) loads the profile; before it keeps the ranking it built,
    a write lands as a delta. The new ranking predates that write: it must not be kept."""
    memory = _memory()
    memory.add("The first entry.", user_id="ana")
    memory.select("ana", max_tokens=300)
    memory.add("The second entry.", user_id="ana")  # a delta: the state keeps its ranking
    raced = _write_after_the_next_load(memory, monkeypatch, "A third entry.")
    memory.select("ana", max_tokens=200)
    assert raced.is_set()
    third = memory.entry("A third entry.", user_id="ana").id
    assert third in _candidate_ids(memory.select("ana", max_tokens=200), "ana")
    assert third in _candidate_ids(memory.select("ana", max_tokens=300), "ana")
