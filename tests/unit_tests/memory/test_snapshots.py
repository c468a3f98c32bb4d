"""Snapshots: a finished selection kept in the store serves cold reads of an unchanged profile.

A second memory on the same collection with ``cache_ttl_s=0`` stands for another process (or
this one after its cache expired). Whether it loads the profile is observed by making the
real ``store.load`` raise: a snapshot hit must not need it.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from langchain_outprofile import (
    InvalidInputError,
    OutputProfileMemory,
    ProfileEntry,
    ReadOptions,
    Signal,
    WriteOptions,
)
from langchain_outprofile.memory.snapshots import LEFT_OUT_KEPT, dump_selection, load_selection
from tests.conftest import ManualClock, MemoryFactory

TEXTS = [f"Entry {i}: short first, then {'details ' * (i % 5)}done!" for i in range(12)]


class _LoadForbidden(AssertionError):
    pass


def _forbid_loads(memory: OutputProfileMemory, monkeypatch: pytest.MonkeyPatch) -> None:
    async def refuse(*args: Any, **kwargs: Any) -> Any:
        raise _LoadForbidden("the profile was loaded: no snapshot served this read")

    monkeypatch.setattr(memory.store, "aload_fold", refuse)


def _filled(make_memory: MemoryFactory, **kwargs: Any) -> OutputProfileMemory:
    memory = make_memory(**kwargs)
    memory.add_many(
        [{"text": t, "user_id": "ana", "created_at": 1.7e9 + i} for i, t in enumerate(TEXTS)]
    )
    memory.add("Bob's own words, never Ana's.", user_id="bob")
    return memory


def test_a_cold_read_of_an_unchanged_profile_is_served_from_the_snapshot(
    make_memory: MemoryFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = _filled(make_memory)
    made = first.select("ana", max_tokens=120)
    cold = make_memory(reads=ReadOptions(cache_ttl_s=0))
    _forbid_loads(cold, monkeypatch)

    served = cold.select("ana", max_tokens=120)

    assert served.text == made.text and served.tokens == made.tokens
    assert served.entries == made.entries
    assert served.choice.chosen == made.choice.chosen
    assert served.choice.left_out_total == made.choice.left_out_total > 0
    assert served.explain() == made.explain()


def test_other_options_and_other_users_do_not_share_a_snapshot(
    make_memory: MemoryFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = _filled(make_memory)
    first.select("ana", max_tokens=120)
    cold = make_memory(reads=ReadOptions(cache_ttl_s=0))
    _forbid_loads(cold, monkeypatch)

    with pytest.raises(_LoadForbidden):
        cold.select("ana", max_tokens=121)
    with pytest.raises(_LoadForbidden):
        cold.select("ana", max_tokens=120, order="stable")
    with pytest.raises(_LoadForbidden):
        cold.select("bob", max_tokens=120)


def test_a_write_from_elsewhere_makes_the_snapshot_stale(make_memory: MemoryFactory) -> None:
    first = _filled(make_memory)
    first.select("ana", max_tokens=400)
    other_process = make_memory(reads=ReadOptions(cache_ttl_s=0))
    other_process.store.upsert([ProfileEntry.create("Brand new, sign off: -A", user_id="ana")])

    cold = make_memory(reads=ReadOptions(cache_ttl_s=0))
    assert "Brand new, sign off: -A" in {e.text for e in cold.select("ana", max_tokens=400).entries}


def test_a_write_racing_the_load_is_never_hidden_by_the_snapshot(
    make_memory: MemoryFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    memory = _filled(make_memory, reads=ReadOptions(cache_ttl_s=0))
    real_load = memory.store.aload_fold
    writer = make_memory(reads=ReadOptions(cache_ttl_s=0))

    async def a_write_lands_right_after_the_load(user_id: str, **kwargs: Any) -> Any:
        loaded = await real_load(user_id, **kwargs)
        writer.store.upsert([ProfileEntry.create("Landed mid-read.", user_id=user_id)])
        return loaded

    monkeypatch.setattr(memory.store, "aload_fold", a_write_lands_right_after_the_load)
    memory.select("ana", max_tokens=400)  # its snapshot misses the write: must not be served
    monkeypatch.setattr(memory.store, "aload_fold", real_load)

    texts = {
        e.text
        for e in make_memory(reads=ReadOptions(cache_ttl_s=0)).select("ana", max_tokens=400).entries
    }
    assert "Landed mid-read." in texts


def test_deleting_an_entry_removes_every_snapshot_that_quotes_it(
    make_memory: MemoryFactory,
) -> None:
    memory = _filled(make_memory)
    secret = memory.add("My door code is 4711, do not keep this.", user_id="ana")
    memory.select("ana", max_tokens=400)
    assert _stored_payloads(memory, "ana") and any(
        "4711" in p for p in _stored_payloads(memory, "ana")
    )

    assert memory.delete(secret.id, user_id="ana")

    assert not any("4711" in p for p in _stored_payloads(memory, "ana"))
    assert (
        "4711"
        not in make_memory(reads=ReadOptions(cache_ttl_s=0)).select("ana", max_tokens=400).text
    )


def test_forget_removes_the_users_snapshots_and_only_theirs(make_memory: MemoryFactory) -> None:
    memory = _filled(make_memory)
    memory.select("ana", max_tokens=200)
    memory.select("bob", max_tokens=200)

    memory.forget("ana")

    assert _stored_payloads(memory, "ana") == []
    assert _stored_payloads(memory, "bob")
    assert make_memory(reads=ReadOptions(cache_ttl_s=0)).select("ana", max_tokens=200).text == ""


def test_a_snapshot_expires_after_snapshot_ttl_s(
    make_memory: MemoryFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = ManualClock(1.8e9)
    _filled(make_memory, clock=clock, reads=ReadOptions(snapshot_ttl_s=60)).select(
        "ana", max_tokens=200
    )
    cold = make_memory(clock=clock, reads=ReadOptions(cache_ttl_s=0, snapshot_ttl_s=60))
    _forbid_loads(cold, monkeypatch)
    cold.select("ana", max_tokens=200)  # served

    clock.advance(61)
    with pytest.raises(_LoadForbidden):
        cold.select("ana", max_tokens=200)


def test_a_pending_entry_neither_shortens_a_snapshot_nor_is_quoted_in_it(
    make_memory: MemoryFactory,
) -> None:
    """A pending output is never a candidate: its expiry does not end the snapshot (only
    ``snapshot_ttl_s`` does), and neither the choice nor the snapshot carries its text."""
    clock = ManualClock(1.8e9)
    memory = _filled(
        make_memory,
        clock=clock,
        reads=ReadOptions(snapshot_ttl_s=3600),
        writes=WriteOptions(pending_ttl_s=100),
    )
    draft = ProfileEntry.create("Draft awaiting feedback.", user_id="ana", created_at=clock.now)
    memory.store.upsert([replace(draft, signals=(Signal.PENDING,))])
    made = memory.select("ana", max_tokens=200)
    assert "Draft awaiting feedback." not in [c.entry.text for c in made.choice.left_out]
    (payload,) = _stored_payloads(memory, "ana")

    assert "Draft awaiting feedback." not in payload
    assert load_selection(payload, user_id="ana", options=memory.options, now=clock.now + 101)
    assert (
        load_selection(payload, user_id="ana", options=memory.options, now=clock.now + 3600) is None
    )


def test_a_payload_of_another_user_is_refused(make_memory: MemoryFactory) -> None:
    memory = _filled(make_memory)
    selection = memory.select("ana", max_tokens=200)
    payload = dump_selection(selection, until=2e9)

    assert load_selection(payload, user_id="ana", options=selection.choice.options, now=1.9e9)
    assert (
        load_selection(payload, user_id="bob", options=selection.choice.options, now=1.9e9) is None
    )


def test_a_snapshot_keeps_the_first_left_out_candidates_and_counts_all(
    make_memory: MemoryFactory,
) -> None:
    memory = make_memory()
    memory.add_many(
        [{"text": f"Note {i}: fine.", "user_id": "ana"} for i in range(LEFT_OUT_KEPT + 30)]
    )
    made = memory.select("ana", max_tokens=60)
    restored = load_selection(
        dump_selection(made, until=4e9), user_id="ana", options=made.choice.options, now=0.0
    )

    assert restored is not None and restored.text == made.text
    assert len(restored.choice.left_out) == LEFT_OUT_KEPT < made.choice.left_out_total
    assert restored.choice.left_out == made.choice.left_out[:LEFT_OUT_KEPT]
    assert restored.explain() == made.explain()


def test_snapshot_ttl_zero_stores_no_selection(make_memory: MemoryFactory) -> None:
    memory = _filled(make_memory, reads=ReadOptions(snapshot_ttl_s=0))
    memory.select("ana", max_tokens=200)
    assert _stored_payloads(memory, "ana") == []


def test_a_negative_snapshot_ttl_is_refused(make_memory: MemoryFactory) -> None:
    with pytest.raises(InvalidInputError, match="snapshot_ttl_s"):
        make_memory(reads=ReadOptions(snapshot_ttl_s=-1))


def _stored_payloads(memory: OutputProfileMemory, user: str) -> list[str]:
    """Every stored selection of one user, read straight from the state collection."""
    found = memory.store.state._collection.get(where={"user_id": user}, include=["metadatas"])
    return [str(m["payload"]) for m in found["metadatas"] or [] if m and "payload" in m]


@pytest.mark.parametrize(
    "damage",
    ["not json", "[]", '{"format": 1}', '{"format": 1, "valid_until": 9e9, "chosen": [{}]}'],
)
def test_a_damaged_snapshot_is_ranked_again_and_replaced(
    make_memory: MemoryFactory, damage: str
) -> None:
    memory = _filled(make_memory, reads=ReadOptions(cache_ttl_s=0))
    expected = memory.select("ana", max_tokens=200).text
    key = memory._reader._snapshot_key(memory.options.with_changes(max_tokens=200))
    memory.store.save_snapshot("ana", key, memory.store.version("ana"), damage)

    assert memory.select("ana", max_tokens=200).text == expected
    (payload,) = _stored_payloads(memory, "ana")
    assert payload != damage
