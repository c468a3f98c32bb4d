"""Retention: entries that expire are never selected, read as gone, and are deleted by
``expire`` or, now and then, by later writes; on real Chroma, with an injected clock."""

from __future__ import annotations

import asyncio
import math
from dataclasses import replace

import chromadb
import pytest

from langchain_outprofile import (
    InvalidInputError,
    OutputProfileMemory,
    ProfileEntry,
    ReadOptions,
    WriteOptions,
)
from langchain_outprofile.memory import Expired
from langchain_outprofile.store.rows import to_metadata
from tests.conftest import ManualClock, offline_memory, unique_name

DAY = 86_400.0


def _memory(
    client: chromadb.api.ClientAPI, clock: ManualClock, name: str | None = None, **kwargs: object
) -> OutputProfileMemory:
    return offline_memory(client, name or unique_name("ret"), clock=clock, **kwargs)


def _texts(memory: OutputProfileMemory, user: str = "ana", **kwargs: object) -> list[str]:
    return [e.text for e in memory.select(user, **kwargs).entries]  # type: ignore[arg-type]


def _log_texts(memory: OutputProfileMemory, user: str) -> set[str]:
    """Every text the log and the entry rows still hold for ``user`` (stored bytes)."""
    rows = memory.store._log.get(where={"user_id": user}, include=["metadatas"])
    found = {str(m.get("e", "")) for m in rows["metadatas"] or []}
    entries = memory.store._collection.get(where={"user_id": user}, include=["metadatas"])
    return found | {str(m.get("e", "")) for m in entries["metadatas"] or []}


def test_an_expired_entry_is_never_read_even_before_it_is_deleted(
    client: chromadb.api.ClientAPI,
) -> None:
    clock = ManualClock()
    name = unique_name("ret")
    memory = _memory(client, clock, name, reads=ReadOptions(cache_ttl_s=3600))
    memory.add("Kept forever, this one.", user_id="ana")
    memory.add("My phone number is 555-0100.", user_id="ana", ttl_s=60)
    assert len(_texts(memory)) == 2  # cached: ranking, selection and snapshot
    other = _memory(client, clock, name)  # another process: served the saved snapshot
    assert len(_texts(other)) == 2
    clock.advance(60)
    assert _texts(memory) == ["Kept forever, this one."]
    assert _texts(other) == ["Kept forever, this one."]
    assert _texts(_memory(client, clock, name)) == ["Kept forever, this one."]
    assert "555" not in memory.select("ana").explain()
    assert [r["text"] for r in memory.export("ana")] == ["Kept forever, this one."]
    assert memory.stats("ana").entries == 1
    assert any("555" in t for t in _log_texts(memory, "ana"))  # not deleted yet
    assert memory.expire("ana") == Expired(1, {"ana": 1})
    assert not any("555" in t for t in _log_texts(memory, "ana"))
    assert memory.expire("ana") == Expired()
    assert _texts(memory) == ["Kept forever, this one."]


def test_the_latest_signal_that_names_an_expiry_sets_it(client: chromadb.api.ClientAPI) -> None:
    clock = ManualClock()
    memory = _memory(client, clock)
    start = clock.now
    first = memory.add("Extended by a later signal.", user_id="ana", ttl_s=60)
    assert first.expires_at == start + 60
    kept = memory.add(
        "Extended by a later signal.", user_id="ana", signal="endorsed"
    )  # names none: kept
    assert kept.expires_at == start + 60 and len(kept.signals) == 2
    later = memory.add(
        "Extended by a later signal.", user_id="ana", expires_at=start + 600, signal="accepted"
    )
    assert later.expires_at == start + 600
    memory.add("Shortened by a later signal.", user_id="ana", ttl_s=DAY)
    memory.add("Shortened by a later signal.", user_id="ana", ttl_s=30)
    clock.advance(60)
    assert _texts(memory) == ["Extended by a later signal."]
    clock.advance(540)
    assert _texts(memory) == []
    assert memory.expire().entries == 2


def test_retention_applies_to_writes_and_later_writes_sweep_what_expired(
    client: chromadb.api.ClientAPI,
) -> None:
    clock = ManualClock()
    memory = _memory(client, clock, writes=WriteOptions(retention_s=100))
    first = memory.add("Written first, expires first.", user_id="ana", created_at=clock.now - DAY)
    assert first.expires_at == clock.now + 100  # from the write, not from created_at
    clock.advance(50)
    memory.add("Written second.", user_id="ana")
    clock.advance(60)
    assert _texts(memory) == ["Written second."]
    memory.flush()
    assert memory.store.count("ana") == 2  # the expired row is still there: no sweep yet
    memory.add("Written third: this write sweeps.", user_id="ana")
    memory.flush()  # the sweep runs in the background
    assert memory.store.count("ana") == 2
    assert not any("expires first" in t for t in _log_texts(memory, "ana"))
    assert sorted(_texts(memory)) == ["Written second.", "Written third: this write sweeps."]


def test_expire_covers_one_user_or_every_user(client: chromadb.api.ClientAPI) -> None:
    clock = ManualClock()
    memory = _memory(client, clock)
    for user in ("ana", "bob"):
        memory.add(f"{user} keeps this.", user_id=user)
        memory.add(f"{user} loses this.", user_id=user, ttl_s=10)
        memory.add(f"{user} loses that too.", user_id=user, ttl_s=20)
    clock.advance(20)
    assert memory.expire("ana") == Expired(2, {"ana": 2})
    assert memory.store.count("bob") == 3
    report = memory.expire()
    assert report == Expired(2, {"bob": 2}) and int(report) == 2
    assert memory.forget("bob") == 1  # forget reports what it removed too
    assert asyncio.run(memory.aexpire()) == Expired()


@pytest.mark.parametrize(
    "fields",
    [
        {"ttl_s": -1},
        {"ttl_s": 0},
        {"ttl_s": math.nan},
        {"ttl_s": math.inf},
        {"ttl_s": 1e13},  # after the year 9999
        {"ttl_s": "60"},
        {"expires_at": 1_000.0},  # already past
        {"expires_at": 1_800_000_000.0},  # now: already expired
        {"expires_at": math.nan},
        {"expires_at": 2_000_000_000.0, "ttl_s": 60},
    ],
)
def test_bad_expiries_are_refused_and_nothing_is_stored(
    client: chromadb.api.ClientAPI, fields: dict[str, object]
) -> None:
    memory = _memory(client, ManualClock())
    with pytest.raises(InvalidInputError):
        memory.add("Never stored.", user_id="ana", **fields)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match=r"entries\[1\]"):
        memory.add_many(
            [{"text": "Fine.", "user_id": "ana"}, {"text": "Bad.", "user_id": "ana", **fields}]
        )
    assert memory.export("ana") == []


@pytest.mark.parametrize("retention", [-1, 0, math.nan, math.inf, "30d", True])
def test_a_bad_retention_is_refused(client: chromadb.api.ClientAPI, retention: object) -> None:
    with pytest.raises(InvalidInputError, match="retention_s"):
        _memory(client, ManualClock(), writes=WriteOptions(retention_s=retention))  # type: ignore[arg-type]


def test_add_many_and_import_carry_expiries(client: chromadb.api.ClientAPI) -> None:
    clock = ManualClock()
    memory = _memory(client, clock)
    entry = ProfileEntry.create("An entry object.", user_id="ana", created_at=clock.now)
    stored = memory.add_many(
        [replace(entry, expires_at=clock.now + 30), {"text": "A dict.", "user_id": "ana"}]
    )
    assert [e.expires_at for e in stored] == [clock.now + 30, None]
    with pytest.raises(InvalidInputError, match=r"entries\[0\]"):
        memory.add_many([replace(entry, expires_at=clock.now - 1)])
    records = memory.export("ana")
    kept = _memory(
        client, clock, writes=WriteOptions(retention_s=DAY)
    )  # names none: gets the retention
    assert kept.import_(records) == 2
    assert sorted((r["text"], r.get("expires_at")) for r in kept.export("ana")) == [
        ("A dict.", clock.now + DAY),
        ("An entry object.", clock.now + 30),
    ]
    clock.advance(30)
    late = _memory(client, clock)
    assert late.import_(records) == 1  # the expired record is left out
    assert [r["text"] for r in late.export("ana")] == ["A dict."]


def test_a_pinned_thread_stops_showing_an_entry_when_it_expires(
    client: chromadb.api.ClientAPI,
) -> None:
    clock = ManualClock()
    memory = _memory(client, clock)
    memory.add("Pinned but short-lived.", user_id="ana", ttl_s=60)
    memory.add("Pinned for good.", user_id="ana")
    assert len(_texts(memory, thread_id="t-1")) == 2
    clock.advance(59)
    assert len(_texts(memory, thread_id="t-1")) == 2
    clock.advance(1)
    assert _texts(memory, thread_id="t-1") == ["Pinned for good."]


def test_async_writes_take_expiries_too(client: chromadb.api.ClientAPI) -> None:
    clock = ManualClock()
    memory = _memory(client, clock)

    async def run() -> list[str]:
        await memory.aadd("Async and short-lived.", user_id="ana", ttl_s=5)
        await memory.aadd("Async and kept.", user_id="ana", signal="endorsed")
        clock.advance(5)
        removed = await memory.aexpire("ana")
        assert removed.entries == 1
        return [e.text for e in (await memory.aselect("ana")).entries]

    assert asyncio.run(run()) == ["Async and kept."]


def test_a_base_row_a_repair_wrote_expires_too(client: chromadb.api.ClientAPI) -> None:
    """A repair folds the log into rows of the old format (bases, no log events): expire
    finds their expiry on the row."""
    clock = ManualClock()
    memory = _memory(client, clock)
    entry = replace(
        ProfileEntry.create("A repaired row.", user_id="ana", created_at=clock.now),
        expires_at=clock.now + 10,
    )
    memory.store._collection.upsert(
        ids=[entry.id],
        metadatas=[to_metadata(entry)],  # no log mark: a base, as repair writes it
        embeddings=memory.store.embeddings.embed_documents([entry.text]),
    )
    assert _texts(memory) == ["A repaired row."]
    clock.advance(10)
    assert _texts(memory) == []
    assert memory.expire() == Expired(1, {"ana": 1})
    assert memory.store.count("ana") == 0
