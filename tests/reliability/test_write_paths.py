# ruff: noqa: E501  (one row of the bad-input table per line reads best)
"""Every write path validates every item, and a fold never crosses users.

Attacks from outside: entries built directly (bypassing ``ProfileEntry.create``) and handed
to ``add_many``, a teammate's copy made with ``dataclasses.replace``, numbers too large for a
float, NaN settings, and a collection named like the state collection. Each is refused with
a typed error naming the fix, and nothing stored changes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import chromadb
import pytest

from langchain_outprofile import (
    InvalidInputError,
    OutputProfileMemory,
    ProfileEntry,
    ReadOptions,
    SelectionOptions,
    Signal,
    SignalStrengths,
    WriteOptions,
)
from tests.conftest import unique_name

HUGE = 10**400  # an int no float can hold


@pytest.fixture
def memory() -> OutputProfileMemory:
    memory = OutputProfileMemory.from_client(
        chromadb.EphemeralClient(), collection_name=unique_name("wp")
    )
    memory.add("Short answer first.", user_id="ana")
    memory.add("Cheers, Bob", user_id="bob")
    return memory


def _snapshot(memory: OutputProfileMemory) -> tuple[Any, ...]:
    return memory.export("ana"), memory.export("bob"), memory.store.total()


def _entry(**changes: Any) -> ProfileEntry:
    return replace(ProfileEntry.create("A direct entry.", user_id="ana"), **changes)


Row = tuple[str, Callable[[OutputProfileMemory], Any], str]

ROWS: list[Row] = [
    ("entry without signals", lambda m: m.add_many([_entry(signals=())]), "signals must be"),
    ("entry with NaN strength", lambda m: m.add_many([_entry(strength=math.nan)]), "strength must be"),
    ("entry with strength 7", lambda m: m.add_many([_entry(strength=7.0)]), "strength must be"),
    ("entry over max_text_chars", lambda m: m.add_many([_entry(text="x" * 20_001)]), "over the limit"),
    ("entry with empty user", lambda m: m.add_many([_entry(user_id="")]), "user_id must be"),
    ("entry with a huge created_at", lambda m: m.add_many([_entry(created_at=HUGE)]), "created_at must be"),
    ("entry with a list as metadata", lambda m: m.add_many([_entry(metadata=[1])]), "metadata must be"),
    ("huge created_at", lambda m: m.add("hi", user_id="ana", created_at=HUGE), "created_at must be"),
    ("huge rating", lambda m: m.add("hi", user_id="ana", rating=HUGE), "rating must be"),
    ("huge option", lambda m: m.select("ana", mmr_lambda=HUGE), "mmr_lambda must be"),
    ("unknown option", lambda m: m.select("ana", colour="red"), "unknown selection option"),
    ("huge strength setting", lambda m: SignalStrengths(accepted=HUGE), "strength accepted must be"),
    ("huge half-life", lambda m: SelectionOptions(half_life_days=HUGE), "half_life_days must be"),
    ("NaN pending_ttl_s", lambda m: OutputProfileMemory.from_client(m.store.client, collection_name=m.store.collection_name, writes=WriteOptions(pending_ttl_s=math.nan)), "pending_ttl_s must be"),
    ("inf cache_ttl_s", lambda m: OutputProfileMemory.from_client(m.store.client, collection_name=m.store.collection_name, reads=ReadOptions(cache_ttl_s=math.inf)), "cache_ttl_s must be"),
    ("state collection name", lambda m: OutputProfileMemory.from_client(m.store.client, collection_name=f"{m.store.collection_name}.state"), "names the state collection"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "call", "says"), ROWS, ids=[r[0] for r in ROWS])
def test_bad_writes_are_refused_and_change_nothing(
    memory: OutputProfileMemory, case: str, call: Callable[[OutputProfileMemory], Any], says: str
) -> None:
    before = _snapshot(memory)
    with pytest.raises(InvalidInputError) as raised:
        call(memory)
    assert says in str(raised.value), f"{case}: {raised.value}"
    assert _snapshot(memory) == before
    assert memory.stats("ana").entries == 1  # stats still work for the user


def test_a_copy_for_a_teammate_is_the_teammates_entry(memory: OutputProfileMemory) -> None:
    """``dataclasses.replace(entry, user_id="bob")`` keeps ana's id; the write derives the
    id from (user, text) again, so bob's copy and bob's rejection never touch ana's entry,
    and ana's later add of the text stays in ana's block."""
    anas = memory.add("Ship it today.", user_id="ana")
    (bobs,) = memory.add_many([replace(anas, user_id="bob")])
    assert bobs.user_id == "bob" and bobs.id != anas.id
    memory.add("Ship it today.", user_id="bob", signal="rejected")
    memory.add("Ship it today.", user_id="ana")
    ana_texts = [e.text for e in memory.select("ana").entries]
    bob_texts = [e.text for e in memory.select("bob").entries]
    assert "Ship it today." in ana_texts and "Ship it today." not in bob_texts
    (ana_row,) = [r for r in memory.export("ana") if r["text"] == "Ship it today."]
    assert ana_row["user_id"] == "ana" and Signal.REJECTED.value not in ana_row["signals"]
