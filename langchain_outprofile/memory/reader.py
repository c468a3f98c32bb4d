"""Reader: a memory's read path: the per-user cache, stored snapshots, and ranking.

A read is served, in this order, by the in-process cache (fresh for ``cache_ttl_s``), by a
selection saved in the store for the user's current profile version (see
``snapshots.py``), or by loading and ranking the whole profile (then saved for the next
cold read). Writes through the memory call :meth:`ProfileReader.invalidate`.

The cache is bounded by users (``cache_size``) and by the entries its read states hold
(``cache_entries``: every loaded profile's entries plus every cached selection's
candidates); the least recently used states go first, and states past ``cache_ttl_s`` are
dropped by a sweep that runs at most once per ``cache_ttl_s``, on a read.

Reads racing ``forget`` (or any write). A cold read that ranks the profile takes these steps:
V reads the version (its tag t), L loads the entries, then, under the location lock, C checks
that the version is still t, S writes the snapshot, K reads the version again and D deletes
the row S wrote if it moved; last, R reads the version once more to decide whether to start
over. ``forget`` takes E (delete the entries, in batches, each after giving the user a new
version), then X (delete every state row of the user: from then on the version is '' until a
write sets a new random token, so it never equals t again). E comes before X, and V, L, C, S,
K, D, R come in that order:

- X before V: the read sees '' (or the token of a later write) and loads after E, so it holds
  nothing forgotten; with '' it saves nothing.
- V before X, L after E: nothing forgotten was loaded; C, K or R sees the version moved.
- L before E ends (the read loaded text being forgotten), then:
  - X before C: C sees '' or a new token; nothing is written.
  - X between C and S (only a writer the lock does not hold can: another client of a
    server): S writes the row after X, K sees the move and D deletes it before the read
    returns. The row was never servable: serving needs the version to equal t.
  - X between S and K: X deletes the row; K sees the move (D finds nothing).
  - X after K: the snapshot is kept, and X deletes it.

So once ``forget`` and the reads in flight have returned, no state row names the user, and no
snapshot row ever served text loaded before a forget. When R finds the version moved, the read
starts over from a new read state (and drops the stale one from the cache). Starting over after
R saw '' is final: that V comes after X, so its L after E, and the forgotten text is not in it.
Starting over after another move (a write, or a forget still deleting batches) happens once
more at most: a read whose versions keep moving returns its last attempt, which holds text
forgotten since only if its R came before that forget's X (the read was done with the store
before the forget was). Not covered: ``snapshot_ttl_s=0`` and query-dependent selections read no
version, so such a racing read returns what it loaded (nothing is saved), and another memory's
cache serves what it read for up to its ``cache_ttl_s``. A process killed between S and D
(server case above) leaves a row that is never served, until the user's next delete,
``forget`` or save into that slot replaces it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from langchain_outprofile.errors import BudgetTooSmallWarning
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

_ATTEMPTS = 3
"""Rankings a cold read may take when the profile's version moves under it (module docstring)."""


class ReaderSettings(Protocol):
    """What the reader uses of its memory (read on every call, so changes apply at once)."""

    store: ProfileStore
    counter: TokenCounter
    template: BlockTemplate
    clock: Callable[[], float]
    monotonic: Callable[[], float]
    cache_ttl_s: float
    cache_size: int
    cache_entries: int
    snapshot_ttl_s: float
    pending_ttl_s: float


@dataclass
class _Cached:
    """One user's in-memory read state. ``version`` is the store's profile version, read
    before ``profile`` is loaded; both stay None until a read needs them. ``held`` is what
    the state adds to the reader's count of held entries while it is in the cache."""

    loaded_at: float
    version: str | None = None
    profile: StoredProfile | None = None
    selections: dict[tuple[Any, ...], ProfileSelection] = field(default_factory=dict)
    held: int = 0


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
        self._held = 0
        self._swept_at = memory.monotonic()
        self._lock = threading.Lock()

    @property
    def held_entries(self) -> int:
        """Entries (of loaded profiles) and candidates (of cached selections) the cache holds;
        never more than the memory's ``cache_entries`` once a call has returned."""
        return self._held

    def cached_users(self) -> list[str]:
        """The users whose read state is cached, least recently used first."""
        with self._lock:
            return list(self._cache)

    def select(self, user: str, options: SelectionOptions, query: str | None) -> ProfileSelection:
        """The user's block under ``options`` (``query`` is used only when
        ``options.relevance_weight`` > 0; such selections are never cached or saved)."""
        cached = self._cached(user)
        if options.relevance_weight > 0 and query:
            return self._rank(user, self._profile(user, cached), options, query)
        key = (options, self._memory.template)
        hit = cached.selections.get(key)
        if hit is not None:
            return hit
        selection = self._stored_selection(user, cached, options)
        if selection is None:
            cached, selection = self._fresh_selection(user, cached, options)
        with self._lock:
            if self._cache.get(user) is cached and key not in cached.selections:
                cached.selections[key] = selection
                self._add_held(
                    cached, len(selection.choice.chosen) + len(selection.choice.left_out)
                )
        return selection

    def _snapshot_key(self, options: SelectionOptions) -> str:
        return snapshot_key(options, self._memory.template, self._memory.counter.name)

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
    ) -> tuple[_Cached, ProfileSelection]:
        """Rank and pack the whole profile; save the result for later cold reads. When the
        version moved while this read ran, start over from a new read state (see the module
        docstring); returns the read state the selection belongs to."""
        for attempt in range(1, _ATTEMPTS + 1):
            profile = self._profile(user, cached)
            selection = self._rank(user, profile, options, None)
            seen = self._save(user, cached, options, profile, selection)
            moved = seen is not None and seen != cached.version
            if not moved or attempt == _ATTEMPTS or (attempt > 1 and seen):
                break
            cached = self._restart(user, cached)
        return cached, selection

    def _save(
        self,
        user: str,
        cached: _Cached,
        options: SelectionOptions,
        profile: StoredProfile,
        selection: ProfileSelection,
    ) -> str | None:
        """Save the selection as the snapshot of the version read before loading ``profile``
        (the store refuses it, or takes it back, if that version moved), and return the
        user's version after the save. None when nothing is saved: snapshots are off, or the
        version is '' (an unknown or forgotten user, whose read writes nothing)."""
        if self._memory.snapshot_ttl_s <= 0 or not cached.version:
            return None
        until = valid_until(
            profile,
            now=self._memory.clock(),
            max_age_s=self._memory.snapshot_ttl_s,
            pending_ttl_s=self._memory.pending_ttl_s,
        )
        payload = dump_selection(selection, until=until)
        store = self._memory.store
        store.save_snapshot(user, self._snapshot_key(options), cached.version, payload)
        return store.version(user)

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
            encoding=counter.name,
        )

    def _cached(self, user: str) -> _Cached:
        """The user's read state, fresh for ``cache_ttl_s`` of the memory's monotonic
        clock. A write through this object drops it from the cache, so whatever a read
        still fills into it is never served again (no store I/O happens here)."""
        now, ttl = self._memory.monotonic(), self._memory.cache_ttl_s
        with self._lock:
            if now - self._swept_at >= ttl:
                self._swept_at = now
                for expired in [u for u, s in self._cache.items() if now - s.loaded_at >= ttl]:
                    self._drop(expired)
            hit = self._cache.get(user)
            if hit is not None and now - hit.loaded_at < ttl:
                self._cache.move_to_end(user)
                return hit
            self._drop(user)
            fresh = _Cached(now)
            if ttl <= 0:
                return fresh
            self._cache[user] = fresh
            while len(self._cache) > self._memory.cache_size:
                self._drop(next(iter(self._cache)))
        return fresh

    def _restart(self, user: str, stale: _Cached) -> _Cached:
        """A new read state for a read that found the version moved under it. The stale
        state leaves the cache (other reads must not rank its profile); the new one is not
        cached: the next read builds its own."""
        with self._lock:
            if self._cache.get(user) is stale:
                self._drop(user)
        return _Cached(stale.loaded_at)

    def _profile(self, user: str, cached: _Cached) -> StoredProfile:
        """The user's whole profile, loaded once per read state (version read first)."""
        if cached.profile is not None:
            return cached.profile
        if cached.version is None:
            cached.version = self._version(user)
        profile = self._memory.store.load(user)  # a read never writes: stale pending entries
        with self._lock:  # are never selected, and go on the next write
            if cached.profile is None:
                cached.profile = profile
                if self._cache.get(user) is cached:
                    self._add_held(cached, len(profile.entries))
            return cached.profile

    def _add_held(self, cached: _Cached, count: int) -> None:
        """Count ``count`` more entries held by ``cached`` (in the cache), then drop the least
        recently used states until the count is within ``cache_entries`` (the newest state
        too, when it alone is larger). Called under the lock."""
        cached.held += count
        self._held += count
        while self._held > self._memory.cache_entries and self._cache:
            self._drop(next(iter(self._cache)))

    def _drop(self, user: str) -> None:
        """Remove a user's read state from the cache, if any (under the lock)."""
        state = self._cache.pop(user, None)
        if state is not None:
            self._held -= state.held

    def _version(self, user: str) -> str | None:
        """The profile version a snapshot would be tagged with (None: snapshots are off)."""
        return self._memory.store.version(user) if self._memory.snapshot_ttl_s > 0 else None

    def invalidate(self, users: Iterable[str]) -> None:
        """Drop the read state of users just written (see :meth:`_cached`)."""
        with self._lock:
            for user in users:
                self._drop(user)
