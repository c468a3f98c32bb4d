"""Reader: a memory's read path: the per-user cache, stored snapshots, and ranking.

A read is served, in this order, by the in-process cache (fresh for ``cache_ttl_s``), by a
selection saved in the store for the user's current profile version (see
``snapshots.py``), or by loading and ranking the whole profile (then saved for the next
cold read). Writes through the memory call :meth:`ProfileReader.invalidate`.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from langchain_outprofile.memory.snapshots import (
    dump_selection,
    load_selection,
    snapshot_key,
    valid_until,
)
from langchain_outprofile.render import BlockTemplate, render_block, render_entry
from langchain_outprofile.select import choose
from langchain_outprofile.store import ProfileStore
from langchain_outprofile.tokens import TokenCounter
from langchain_outprofile.types import (
    ProfileEntry,
    ProfileSelection,
    SelectionOptions,
    StoredProfile,
)

__all__ = ["BudgetTooSmallWarning", "ProfileReader"]


class BudgetTooSmallWarning(UserWarning):
    """The token budget cannot hold the block's frame, so the block is empty."""


class ReaderSettings(Protocol):
    """What the reader uses of its memory (read on every call, so changes apply at once)."""

    store: ProfileStore
    counter: TokenCounter
    template: BlockTemplate
    clock: Callable[[], float]
    monotonic: Callable[[], float]
    cache_ttl_s: float
    cache_size: int
    snapshot_ttl_s: float
    pending_ttl_s: float


@dataclass
class _Cached:
    """One user's in-memory read state. ``version`` is the store's profile version, read
    before ``profile`` is loaded; both stay None until a read needs them."""

    loaded_at: float
    version: str | None = None
    profile: StoredProfile | None = None
    selections: dict[tuple[Any, ...], ProfileSelection] = field(default_factory=dict)


class ProfileReader:
    """The read path of one memory: an LRU over users, each fresh for ``cache_ttl_s``.

    Example:
        ```python
        reader = ProfileReader(memory)  # what OutputProfileMemory does for itself
        reader.select("ana", SelectionOptions(max_tokens=300), query=None).text
        ```
    """

    def __init__(self, memory: ReaderSettings) -> None:
        self._memory = memory
        self._cache: OrderedDict[str, _Cached] = OrderedDict()
        self._lock = threading.Lock()

    def select(self, user: str, options: SelectionOptions, query: str | None) -> ProfileSelection:
        """The user's block under ``options`` (``query`` is used only when
        ``options.relevance_weight`` > 0; such selections are never cached or saved)."""
        cached = self._cached(user)
        if options.relevance_weight > 0 and query:
            return self._rank(user, self._profile(user, cached), options, query)
        key = (options, self._memory.template)
        if key in cached.selections:
            return cached.selections[key]
        selection = self._stored_selection(user, cached, options)
        if selection is None:
            selection = self._fresh_selection(user, cached, options)
        with self._lock:
            cached.selections[key] = selection
        return selection

    def _snapshot_key(self, options: SelectionOptions) -> str:
        return snapshot_key(options, self._memory.template, self._memory.counter.encoding_name)

    def _stored_selection(
        self, user: str, cached: _Cached, options: SelectionOptions
    ) -> ProfileSelection | None:
        """The selection saved in the store for the user's current profile version, if any."""
        if self._memory.snapshot_ttl_s <= 0:
            return None
        version, payload = self._memory.store.snapshot(user, self._snapshot_key(options))
        if cached.profile is None and cached.version is None:
            cached.version = version
        if payload is None:
            return None
        return load_selection(payload, user_id=user, options=options, now=self._memory.clock())

    def _fresh_selection(
        self, user: str, cached: _Cached, options: SelectionOptions
    ) -> ProfileSelection:
        """Rank and pack the whole profile; save the result for later cold reads."""
        profile = self._profile(user, cached)
        selection = self._rank(user, profile, options, None)
        if self._memory.snapshot_ttl_s > 0 and cached.version is not None:
            until = valid_until(
                profile,
                now=self._memory.clock(),
                max_age_s=self._memory.snapshot_ttl_s,
                pending_ttl_s=self._memory.pending_ttl_s,
            )
            payload = dump_selection(selection, until=until)
            self._memory.store.save_snapshot(
                user, self._snapshot_key(options), cached.version, payload
            )
        return selection

    def _rank(
        self, user: str, profile: StoredProfile, options: SelectionOptions, query: str | None
    ) -> ProfileSelection:
        """Score, diversify and pack the whole profile, and render the block."""
        template, counter, store = self._memory.template, self._memory.counter, self._memory.store
        query_vector = (
            np.asarray(store.embeddings.embed_query(query), dtype=np.float32) if query else None
        )

        def entry_cost(entry: ProfileEntry) -> int:
            # numbered as the largest position the block can have, so no entry is under-counted
            widest = options.pool_size
            return counter.count(render_entry(entry, widest, options.fields, template) + "\n")

        def fits(entries: Sequence[ProfileEntry]) -> bool:
            return counter.count(render_block(entries, options.fields, template)) <= (
                options.max_tokens
            )

        choice = choose(
            profile,
            options,
            counter=counter,
            fixed_cost=counter.count(f"{template.header}\n{template.footer}"),
            entry_cost=entry_cost,
            fits=fits,
            now=self._memory.clock(),
            query_vector=query_vector,
        )
        text = render_block([c.entry for c in choice.chosen], options.fields, template)
        return ProfileSelection(
            user_id=user,
            text=text,
            tokens=counter.count(text) if text else 0,
            choice=choice,
            encoding=counter.encoding_name,
        )

    def _cached(self, user: str) -> _Cached:
        """The user's read state, fresh for ``cache_ttl_s`` of the memory's monotonic
        clock. A write through this object drops it from the cache, so whatever a read
        still fills into it is never served again (no store I/O happens here)."""
        now = self._memory.monotonic()
        with self._lock:
            hit = self._cache.get(user)
            if hit is not None and now - hit.loaded_at < self._memory.cache_ttl_s:
                self._cache.move_to_end(user)
                return hit
            fresh = _Cached(now)
            if self._memory.cache_ttl_s <= 0:
                self._cache.pop(user, None)
                return fresh
            self._cache[user] = fresh
            self._cache.move_to_end(user)
            while len(self._cache) > self._memory.cache_size:
                self._cache.popitem(last=False)
        return fresh

    def _profile(self, user: str, cached: _Cached) -> StoredProfile:
        """The user's whole profile, loaded once per read state (version read first)."""
        if cached.profile is not None:
            return cached.profile
        if cached.version is None:
            cached.version = self._version(user)
        profile = self._memory.store.load(user)  # a read never writes: stale pending entries
        cached.profile = profile  # are never selected, and go on the next write
        return profile

    def _version(self, user: str) -> str | None:
        """The profile version a snapshot would be tagged with (None: snapshots are off)."""
        return self._memory.store.version(user) if self._memory.snapshot_ttl_s > 0 else None

    def invalidate(self, users: Iterable[str]) -> None:
        """Drop the read state of users just written (see :meth:`_cached`)."""
        with self._lock:
            for user in users:
                self._cache.pop(user, None)
