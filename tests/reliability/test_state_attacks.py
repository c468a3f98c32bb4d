"""Attacks on the state collection and the read cache.

- ``forget`` racing a read: the forget is run from *inside* a read, at each point of the
  read's sequence (after it read the version, after it loaded the profile, after it wrote its
  snapshot), by the reading memory itself and by another memory on the same collection (as
  another process would). After ``forget`` returns, no row of either collection may hold the
  user's text or name the user, the racing read must not return the text, and a reopen and a
  second ``forget`` find nothing.
- Reads write nothing for unknown or forgotten users.
- A user's snapshots take a fixed number of slots whatever the number of option keys, and are
  stored without a full-text index (no document).
- The read cache is bounded by the entries it holds as well as by users, and drops expired
  read states.

Each runs on every real Chroma mode (``make_memory``) unless it is about the in-process cache.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import chromadb
import pytest

from langchain_outprofile import InvalidInputError, OutputProfileMemory, ProfileEntry, ReadOptions
from langchain_outprofile.store import state
from outprofile_lab.bench.synthetic import user_entries
from tests.conftest import ManualClock, MemoryFactory, unique_name

SECRET = "My door code is 4711, please forget it."
NEEDLE = "4711"


def _fill(memory: OutputProfileMemory) -> None:
    memory.add_many(
        [
            {"text": f"Ana's note {i}: short first, then details.", "user_id": "ana"}
            for i in range(6)
        ]
    )
    memory.add(SECRET, user_id="ana", signal="endorsed")
    memory.add("Bob keeps his own words.", user_id="bob")


def _rows_holding(memory: OutputProfileMemory, needle: str) -> list[str]:
    """Ids of every row, in the entries and the state collection, whose document or
    metadata contains ``needle``."""
    found = []
    for collection in (memory.store._collection, memory.store.state._collection):
        rows = collection.get(include=["documents", "metadatas"])
        for id_, document, meta in zip(
            rows["ids"], rows["documents"], rows["metadatas"], strict=True
        ):
            if needle in (document or "") or needle in json.dumps(meta or {}):
                found.append(id_)
    return found


def _state_rows(memory: OutputProfileMemory, user: str | None = None) -> list[str]:
    where: Any = {"user_id": user} if user is not None else None
    return list(memory.store.state._collection.get(where=where, include=[])["ids"])


# -- forget racing a read ---------------------------------------------------------------------


def _after_version_read(memory: OutputProfileMemory, forget: Callable[[], None], mp: Any) -> None:
    real = memory.store.asnapshot

    async def then_forget(user_id: str, key: str) -> Any:
        found = await real(user_id, key)
        forget()
        return found

    mp.setattr(memory.store, "asnapshot", then_forget)


def _after_load(memory: OutputProfileMemory, forget: Callable[[], None], mp: Any) -> None:
    real = memory.store.aload_fold

    async def then_forget(user_id: str, **kwargs: Any) -> Any:
        loaded = await real(user_id, **kwargs)
        forget()
        return loaded

    mp.setattr(memory.store, "aload_fold", then_forget)


def _after_snapshot_write(memory: OutputProfileMemory, forget: Callable[[], None], mp: Any) -> None:
    """The forget lands between the snapshot's write and anything after it (in one process
    the location lock rules this out; another process is not held by it)."""
    collection = memory.store.state._collection
    real = collection.upsert
    done: list[bool] = []

    def then_forget(*args: Any, **kwargs: Any) -> Any:
        written = real(*args, **kwargs)
        if not done and any(not i.startswith(("v:", "m:")) for i in kwargs["ids"]):
            done.append(True)
            forget()
        return written

    mp.setattr(collection, "upsert", then_forget)


INTERLEAVINGS = {
    "after-version-read": _after_version_read,
    "after-load": _after_load,
    "after-snapshot-write": _after_snapshot_write,
}


@pytest.mark.parametrize("forgetter", ["same-memory", "other-memory"])
@pytest.mark.parametrize("point", sorted(INTERLEAVINGS))
def test_forget_racing_a_read_leaves_nothing_of_the_user(
    make_memory: MemoryFactory, monkeypatch: pytest.MonkeyPatch, point: str, forgetter: str
) -> None:
    reader = make_memory(reads=ReadOptions(cache_ttl_s=3600))
    _fill(reader)
    other = make_memory()
    by = reader if forgetter == "same-memory" else other
    forgotten: list[int] = []

    def forget() -> None:
        if not forgotten:
            forgotten.append(by.forget("ana"))

    with monkeypatch.context() as mp:
        INTERLEAVINGS[point](reader, forget, mp)
        raced = reader.select("ana", max_tokens=400)

    assert forgotten == [7]
    assert NEEDLE not in raced.text, "the racing read returned the forgotten text"
    assert _rows_holding(reader, NEEDLE) == []
    assert _state_rows(reader, "ana") == []
    reopened = make_memory(reads=ReadOptions(cache_ttl_s=0))
    assert reopened.select("ana", max_tokens=400).text == ""
    assert reader.select("ana", max_tokens=400).text == ""
    assert reopened.forget("ana") == 0
    assert _rows_holding(reader, NEEDLE) == [] and _state_rows(reader, "ana") == []
    assert reopened.store.user_ids() == ["bob"]
    assert "Bob keeps his own words." in reopened.select("bob").text


def test_a_snapshot_saved_for_a_version_that_moved_is_taken_back(
    make_memory: MemoryFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An ordinary write (not a forget) between the load and the save: the snapshot of the
    older profile is removed, and the read ranks the newer profile once more."""
    reader = make_memory(reads=ReadOptions(cache_ttl_s=0))
    _fill(reader)
    writer = make_memory()
    real = reader.store.aload_fold
    writes: list[str] = []

    async def a_write_lands(user_id: str, **kwargs: Any) -> Any:
        loaded = await real(user_id, **kwargs)
        if not writes:
            writes.append(writer.add("Landed mid-read.", user_id=user_id).id)
        return loaded

    monkeypatch.setattr(reader.store, "aload_fold", a_write_lands)
    selection = reader.select("ana", max_tokens=400)

    assert "Landed mid-read." in selection.text
    version = reader.store.version("ana")
    rows = reader.store.state._collection.get(where={"user_id": "ana"}, include=["metadatas"])
    assert all(m["version"] == version for m in rows["metadatas"])


def test_a_read_racing_a_forget_and_a_new_write_returns_only_the_new_profile(
    make_memory: MemoryFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The version seen after the save is a new token, not '': the user was forgotten and
    written again. The read starts over and shows the new profile only."""
    reader = make_memory(reads=ReadOptions(cache_ttl_s=3600))
    _fill(reader)
    other = make_memory()
    real = reader.store.aload_fold
    loads: list[str] = []

    async def forget_then_write(user_id: str, **kwargs: Any) -> Any:
        loaded = await real(user_id, **kwargs)
        if not loads:
            other.forget(user_id)
            other.add("A new start.", user_id=user_id)
        loads.append(user_id)
        return loaded

    monkeypatch.setattr(reader.store, "aload_fold", forget_then_write)
    raced = reader.select("ana", max_tokens=400)

    assert [e.text for e in raced.entries] == ["A new start."]
    assert loads == ["ana", "ana"]
    assert _rows_holding(reader, NEEDLE) == []
    assert [e.text for e in reader.select("ana", max_tokens=400).entries] == ["A new start."]


def test_a_read_whose_version_keeps_moving_ranks_at_most_twice(
    make_memory: MemoryFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    reader = make_memory(reads=ReadOptions(cache_ttl_s=0))
    _fill(reader)
    writer = make_memory()
    real = reader.store.aload_fold
    loads: list[str] = []

    async def a_write_every_load(user_id: str, **kwargs: Any) -> Any:
        loaded = await real(user_id, **kwargs)
        loads.append(user_id)
        writer.add(f"Write number {len(loads)}.", user_id=user_id)
        return loaded

    monkeypatch.setattr(reader.store, "aload_fold", a_write_every_load)
    raced = reader.select("ana", max_tokens=400)

    assert loads == ["ana", "ana"]
    assert "Write number 1." in raced.text
    assert _snapshot_rows(reader, "ana") == []  # each save was taken back


# -- reads write nothing for unknown or forgotten users ---------------------------------------


def test_reads_of_unknown_and_forgotten_users_write_nothing(make_memory: MemoryFactory) -> None:
    memory = make_memory(reads=ReadOptions(cache_ttl_s=0))
    _fill(memory)
    memory.select("ana")
    memory.select("bob")
    rows = len(_state_rows(memory))

    for i in range(200):
        assert memory.select(f"stranger-{i}").text == ""
    assert len(_state_rows(memory)) == rows

    memory.forget("ana")
    assert _state_rows(memory, "ana") == []
    rows = len(_state_rows(memory))
    for reader in (memory, make_memory(reads=ReadOptions(cache_ttl_s=0)), make_memory()):
        assert reader.select("ana").text == ""
        assert reader.select("ana", max_tokens=333).text == ""
    assert len(_state_rows(memory)) == rows
    assert _state_rows(memory, "ana") == []
    assert memory.store.user_ids() == ["bob"]


def test_a_user_added_after_forget_gets_a_fresh_version_and_snapshots(
    make_memory: MemoryFactory,
) -> None:
    memory = make_memory()
    _fill(memory)
    memory.select("ana")
    memory.forget("ana")
    assert memory.store.version("ana") == ""

    memory.add("A new start.", user_id="ana")
    assert memory.store.version("ana")
    assert memory.store.user_ids() == ["ana", "bob"]
    assert "A new start." in make_memory(reads=ReadOptions(cache_ttl_s=0)).select("ana").text
    assert NEEDLE not in make_memory(reads=ReadOptions(cache_ttl_s=0)).select("ana").text


def test_a_version_row_left_by_an_older_forget_counts_as_no_version(
    make_memory: MemoryFactory,
) -> None:
    """Releases before this one kept a version row flagged ``emptied`` after ``forget``."""
    memory = make_memory()
    _fill(memory)
    memory.forget("ana")
    memory.store.state._collection.upsert(
        ids=[state.state_id("v", "ana")],
        metadatas=[{"user_id": "ana", "version": "f" * 32, "emptied": True}],
        embeddings=[[1.0]],
    )
    rows = len(_state_rows(memory))

    assert memory.store.version("ana") == ""
    assert memory.select("ana").text == ""
    assert len(_state_rows(memory)) == rows
    assert memory.store.user_ids() == ["bob"]
    memory.add("Back again.", user_id="ana")  # the write clears the flag
    assert memory.store.user_ids() == ["ana", "bob"]


# -- bounded snapshots ------------------------------------------------------------------------


def _snapshot_rows(memory: OutputProfileMemory, user: str) -> Any:
    rows = memory.store.state._collection.get(
        where={"user_id": user}, include=["documents", "metadatas"]
    )
    keep = [i for i, id_ in enumerate(rows["ids"]) if not id_.startswith("v:")]
    return [(rows["ids"][i], rows["documents"][i], rows["metadatas"][i]) for i in keep]


def test_distinct_budgets_keep_a_fixed_number_of_snapshot_rows(
    make_memory: MemoryFactory, store_mode: str
) -> None:
    """160 distinct budgets on the in-process store (twenty times the slots; the bound does
    not grow with the count: 600 kept 8 rows too); 80, still ten times the slots, where
    every snapshot write costs a disk or network round trip."""
    memory = make_memory(reads=ReadOptions(cache_ttl_s=0))
    memory.add_many([{"text": f"Note {i}: fine, brief.", "user_id": "ana"} for i in range(8)])

    for budget in range(100, 260 if store_mode == "ephemeral" else 180):
        memory.select("ana", max_tokens=budget)

    rows = _snapshot_rows(memory, "ana")
    assert 0 < len(rows) <= state.SNAPSHOT_SLOTS
    assert all(document is None for _, document, _ in rows), "a snapshot is full-text indexed"


def test_keys_sharing_a_slot_never_serve_each_other(
    make_memory: MemoryFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    memory = make_memory(reads=ReadOptions(cache_ttl_s=0))
    memory.add_many([{**r, "user_id": "ana"} for r in user_entries(0, 40, seed=1)])
    ranked = make_memory(reads=ReadOptions(snapshot_ttl_s=0))
    by_slot: dict[int, dict[str, int]] = {}
    for budget in range(100, 700, 20):  # 30 keys over 8 slots
        key = memory._reader._snapshot_key(memory.options.with_changes(max_tokens=budget))
        block = ranked.select("ana", max_tokens=budget).text
        by_slot.setdefault(state.snapshot_slot(key), {}).setdefault(block, budget)
    first, second = next(list(b.values()) for b in by_slot.values() if len(b) > 1)[:2]
    want_first = ranked.select("ana", max_tokens=first).text
    want_second = ranked.select("ana", max_tokens=second).text

    memory.select("ana", max_tokens=first)
    memory.select("ana", max_tokens=second)  # takes the slot of ``first``
    cold = make_memory(reads=ReadOptions(cache_ttl_s=0))
    loads: list[str] = []
    real = cold.store.aload_fold

    async def counted(user_id: str, **kwargs: Any) -> Any:
        loads.append(user_id)
        return await real(user_id, **kwargs)

    monkeypatch.setattr(cold.store, "aload_fold", counted)
    assert cold.select("ana", max_tokens=second).text == want_second
    assert loads == []  # served by the slot
    assert cold.select("ana", max_tokens=first).text == want_first
    assert loads == ["ana"]  # a collision is a miss, never the other key's block


def _memory(**kwargs: Any) -> OutputProfileMemory:
    return OutputProfileMemory.from_client(
        chromadb.EphemeralClient(), collection_name=unique_name("cap"), **kwargs
    )


def _held(memory: OutputProfileMemory) -> int:
    """Entries and candidates the read cache holds, counted from the outside."""
    total = 0
    for held in memory._reader._cache.values():
        total += len(held.profile.entries) if held.profile is not None else 0
        total += sum(len(ranking) for ranking in held.rankings.values())
        for selection in held.selections.values():
            total += len(selection.choice.chosen) + len(selection.choice.left_out)
    return total


def test_the_read_cache_never_holds_more_entries_than_cache_entries() -> None:
    bound = 300
    memory = _memory(
        reads=ReadOptions(cache_ttl_s=3600, cache_size=1024, cache_entries=bound, snapshot_ttl_s=0)
    )
    users = [f"user-{u}" for u in range(30)]
    memory.add_many(
        [{"text": f"{u} wrote note {i}.", "user_id": u} for u in users for i in range(40)]
    )
    memory.add_many([{"text": f"Huge note {i}.", "user_id": "huge"} for i in range(400)])

    for user in [*users, "huge", *users[:3]]:
        for budget in (100, 200):
            assert memory.select(user, max_tokens=budget).entries
            assert _held(memory) <= bound
            assert memory._reader.held_entries == _held(memory)

    assert "huge" not in memory._reader.cached_users()  # larger than the bound on its own
    assert users[2] in memory._reader.cached_users()  # the most recent users stay


def test_an_expired_read_state_is_evicted_without_snapshots() -> None:
    """With no version to revalidate against, a state past the ttl is swept."""
    ticks = ManualClock(1000.0)
    memory = _memory(monotonic=ticks, reads=ReadOptions(cache_ttl_s=10, snapshot_ttl_s=0))
    memory.add("Ana's words.", user_id="ana")
    memory.add("Bob's words.", user_id="bob")
    memory.select("ana")
    assert "ana" in memory._reader._cache

    ticks.advance(11)
    memory.select("bob")

    assert "ana" not in memory._reader._cache
    assert list(memory._reader._cache) == ["bob"]


def test_a_delta_an_invalidation_or_a_revalidation_keeps_the_count_right() -> None:
    ticks = ManualClock(1000.0)
    memory = _memory(monotonic=ticks, reads=ReadOptions(cache_ttl_s=10, cache_entries=10_000))
    memory.add_many([{"text": f"Note {i}.", "user_id": "ana"} for i in range(20)])
    served = memory.select("ana")
    candidates = len(served.choice.chosen) + len(served.choice.left_out)
    assert memory._reader.held_entries == _held(memory) == 20 + 20 + candidates

    memory.add("One more.", user_id="ana")  # a delta: the ranking is kept, the rest dropped
    assert memory._reader.held_entries == _held(memory) == 21
    served = memory.select("ana")
    candidates = len(served.choice.chosen) + len(served.choice.left_out)
    assert memory._reader.held_entries == _held(memory) == 21 + candidates

    ticks.advance(11)  # past the ttl: revalidated by the version, kept as it is
    memory.select("ana")
    assert memory._reader.held_entries == _held(memory) == 21 + candidates

    memory.import_(memory.export("ana"))  # no delta describes an import: dropped
    assert memory._reader.held_entries == _held(memory) == 0


def test_a_bad_cache_entries_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="cache_entries"):
        _memory(reads=ReadOptions(cache_entries=-1))


def test_writes_behind_the_cache_still_show_after_the_ttl(make_memory: MemoryFactory) -> None:
    """The sweep of expired states keeps the cache's contract: stale until the ttl, then
    read through."""
    ticks = ManualClock(1000.0)
    reader = make_memory(monotonic=ticks, reads=ReadOptions(cache_ttl_s=5))
    reader.add("first", user_id="ana")
    assert [e.text for e in reader.select("ana").entries] == ["first"]
    reader.store.upsert([ProfileEntry.create("second", user_id="ana")])
    ticks.advance(4)
    assert [e.text for e in reader.select("ana").entries] == ["first"]
    ticks.advance(1)
    assert {e.text for e in reader.select("ana").entries} == {"first", "second"}
