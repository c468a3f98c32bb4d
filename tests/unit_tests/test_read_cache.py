"""The read cache: an LRU over users, bounded by ``cache_size``, expiring after ``cache_ttl_s``.

A write made straight to the store (as another process sharing the collection would) does not
invalidate this memory's cache, so whether ``select`` shows it tells a cached user from an
evicted or expired one, without looking inside the cache.
"""

from __future__ import annotations

from typing import Any

import chromadb
import numpy as np
import pytest

from langchain_outprofile import InvalidInputError, OutputProfileMemory, ProfileEntry, ReadOptions
from tests.conftest import ManualClock, MemoryFactory, unique_name


def _memory(**kwargs: Any) -> OutputProfileMemory:
    return OutputProfileMemory.from_client(
        chromadb.EphemeralClient(), collection_name=unique_name("cache"), **kwargs
    )


def _texts(memory: OutputProfileMemory, user: str) -> set[str]:
    return {e.text for e in memory.select(user, max_tokens=400).entries}


def _write_behind(memory: OutputProfileMemory, user: str, text: str) -> None:
    """Store an entry without going through the memory (no invalidation)."""
    memory.store.upsert([ProfileEntry.create(text, user_id=user)])


def test_the_least_recently_used_user_is_evicted_beyond_cache_size() -> None:
    memory = _memory(reads=ReadOptions(cache_ttl_s=3600, cache_size=2))
    for user in ("a", "b", "c"):
        memory.add(f"First text of {user}.", user_id=user)
    _texts(memory, "a")
    _texts(memory, "b")
    _texts(memory, "a")  # a is now more recent than b
    _texts(memory, "c")  # evicts b, the least recently used
    for user in ("a", "b", "c"):
        _write_behind(memory, user, f"Second text of {user}.")

    assert _texts(memory, "b") == {"First text of b.", "Second text of b."}
    assert _texts(memory, "c") == {"First text of c."}  # still cached: stale on purpose


def test_a_cached_user_is_served_stale_until_its_ttl_then_read_through() -> None:
    cached = _memory(reads=ReadOptions(cache_ttl_s=3600))
    cached.add("Stay brief.", user_id="ana")
    _texts(cached, "ana")
    _write_behind(cached, "ana", "Use bullets.")
    assert _texts(cached, "ana") == {"Stay brief."}

    through = OutputProfileMemory.from_client(
        cached.store.client,
        collection_name=cached.store.collection_name,
        reads=ReadOptions(cache_ttl_s=0),
    )
    assert _texts(through, "ana") == {"Stay brief.", "Use bullets."}
    _write_behind(through, "ana", "Sign off with a dash.")
    assert _texts(through, "ana") == {"Stay brief.", "Use bullets.", "Sign off with a dash."}


def test_writes_through_the_memory_invalidate_at_once() -> None:
    memory = _memory(reads=ReadOptions(cache_ttl_s=3600))
    memory.add("Stay brief.", user_id="ana")
    _texts(memory, "ana")
    memory.add("Use bullets.", user_id="ana")
    assert _texts(memory, "ana") == {"Stay brief.", "Use bullets."}


@pytest.mark.parametrize("kwargs", [{"cache_size": 0}, {"cache_ttl_s": -1.0}])
def test_bad_cache_settings_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(InvalidInputError, match="cache"):
        _memory(reads=ReadOptions(**kwargs))


@pytest.mark.parametrize("eager_rows", [0, 5, 6, 512])
def test_a_profile_gives_the_stored_vectors_of_the_rows_asked(eager_rows: int) -> None:
    memory = _memory()
    memory.store.eager_rows = eager_rows  # 0 and 5: lazy (6 entries); 6 and 512: one read
    texts_in = [f"Text number {i}, told my way!" for i in range(6)]
    memory.add_many(
        [{"text": t, "user_id": "ana", "created_at": 1e9 + i} for i, t in enumerate(texts_in)]
    )
    memory.add("Someone else's text.", user_id="bob")
    profile = memory.store.load("ana")
    assert [e.text for e in profile.entries] == texts_in  # oldest first, only ana's
    expected = np.asarray(memory.store.embeddings.embed_documents(texts_in), dtype=np.float32)

    np.testing.assert_allclose(profile.vectors_for([4, 1]), expected[[4, 1]], atol=1e-6)
    assert profile.vectors_for([]).shape == (0, expected.shape[1])
    np.testing.assert_allclose(profile.vectors, expected, atol=1e-6)


def test_lazy_and_eager_loads_choose_the_same_block() -> None:
    memory = _memory(reads=ReadOptions(cache_ttl_s=0, snapshot_ttl_s=0))
    memory.add_many(
        [
            {
                "text": f"Entry {i}: {'short. ' * (i % 4)}done!",
                "user_id": "ana",
                "signal": ("authored", "accepted", "endorsed")[i % 3],
            }
            for i in range(30)
        ]
    )
    eager = memory.select("ana", max_tokens=200, pool_size=10).text
    memory.store.eager_rows = 0
    lazy = memory.select("ana", max_tokens=200, pool_size=10).text

    assert eager and lazy == eager


def test_other_writers_show_up_once_the_ttl_has_passed_on_the_memorys_clock(
    make_memory: MemoryFactory,
) -> None:
    """Replaces a test that slept 0.6 s and needed a write to finish within 0.5 s: the
    cache's freshness is measured on the memory's injected monotonic clock."""
    ticks = ManualClock(1000.0)
    reader = make_memory(monotonic=ticks, reads=ReadOptions(cache_ttl_s=0.5))
    writer = make_memory()
    writer.add("first", user_id="ana")
    assert _texts(reader, "ana") == {"first"}  # read state loaded at 1000.0

    writer.add("second", user_id="ana")
    ticks.set(1000.25)
    assert _texts(reader, "ana") == {"first"}  # cached: a quarter of the ttl has passed
    ticks.set(1000.5)
    assert _texts(reader, "ana") == {"first", "second"}  # the ttl has passed: read through

    writer.add("third", user_id="ana")
    assert _texts(reader, "ana") == {"first", "second"}  # cached again from 1000.5
    ticks.set(1001.0)
    assert _texts(reader, "ana") == {"first", "second", "third"}
