"""Reader: a memory's read path: the per-user cache, rankings that take writes as deltas,
stored snapshots, and ranking.

A read is served, in this order, by the in-process cache, by the user's cached
:class:`~langchain_outprofile.select.Ranking` (re-packed only when its candidate pool
changed), by a selection saved in the store for the user's current profile version (see
``snapshots.py``), for a large profile by the ranking head saved with an older selection
and what the log gained since (:meth:`ProfileReader._from_head`; docs/design.md, "A ranking
head"), or by loading and ranking the whole profile (then saved for the next cold read). A
cached state is fresh for ``cache_ttl_s``; after that, when snapshots are on, one read of
the user's version revalidates it (the same version: nothing was written, in any
process, and the state is kept), else it is dropped.

Writes through the memory report what they did (:meth:`ProfileReader.written`): the entries
as stored, the ids removed and, for each user whose version they renewed, the version before
and after, read and set under the store's lock. When the version before is the one the
cached state was read at (no other writer came between), each cached ranking takes the
change as a delta and the state moves to the new version; otherwise the state is dropped. A
write that cannot change a block (a pending output, or its expiry) renews no version and
leaves every saved selection valid. Rankings with blended keys (typicality) are not kept.

The cache is bounded by users (``cache_size``) and by the entries its read states hold
(``cache_entries``: every loaded profile's and kept ranking's entries plus every cached
selection's candidates); the least recently used states go first, and states unused for
``cache_ttl_s`` are dropped by a sweep that runs at most once per ``cache_ttl_s``, on a read
(unless snapshots are on: then they stay until the LRU bounds drop them, and are
revalidated on use).

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
before the forget was). A snapshot saved from an updated ranking takes the same C, S, K, D
steps with the version its state moved to. Not covered: ``snapshot_ttl_s=0`` and
query-dependent selections read no version, so such a racing read returns what it loaded
(nothing is saved), and another memory's cache serves what it read for up to its
``cache_ttl_s``. A process killed between S and D (server case above) leaves a row that is
never served, until the user's next delete, ``forget`` or save into that slot replaces it.
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from langchain_outprofile.bridge import run_sync
from langchain_outprofile.errors import BudgetTooSmallWarning
from langchain_outprofile.memory.snapshots import (
    Head,
    dump_selection,
    load_head,
    load_selection,
    snapshot_key,
)
from langchain_outprofile.render import BlockTemplate, render_block, render_entry
from langchain_outprofile.select import (
    LEFT_OUT_KEPT,
    Beyond,
    Ranking,
    Vectors,
    choose_from,
    profile_vectors,
    rank,
    ranked,
)
from langchain_outprofile.store import ProfileStore, Written
from langchain_outprofile.store.log import Event, Fold, coverage_of
from langchain_outprofile.tokens import TokenCounter
from langchain_outprofile.types import (
    ProfileEntry,
    ProfileSelection,
    ReadOptions,
    SelectionOptions,
    StoredProfile,
)

__all__ = ["BudgetTooSmallWarning", "CacheSettings", "ProfileReader"]

_ATTEMPTS = 3
"""Rankings a cold read may take when the profile's version moves under it (module docstring)."""
_FULL_CHECK_S = 60.0
"""Longest time a kept ranking goes without comparing its events with the whole log, even
when the version did not move (a writer killed between its events and its version), or when
a writer's clock was so far behind that its events fell before the window below."""
_WINDOW_S = 300.0
"""How far back from its newest event (or from now, if earlier) a catch-up looks: events are
stamped by their writer just before they are added, so only a writer stalled, or with a
clock behind, by longer lands outside it (then the full check finds it)."""

HEAD_MIN_RATIO = 8
"""A ranking head is saved beside a snapshot only for a profile this many times larger than
the head: a smaller profile loads fast enough, and each save rewrites the head's entries."""

_Key = tuple[SelectionOptions, BlockTemplate]


@dataclass(frozen=True)
class _HeadCut:
    """A ranking head's entries and what lies beyond them, cut while the ranking could not
    move, with the events of its fold as they were then. Its coverage (a sort and digest of
    every event id: linear in the profile) is computed by :meth:`head`, which a warm read
    leaves to the background save."""

    entries: tuple[ProfileEntry, ...]
    beyond: Beyond
    events: tuple[Event, ...]

    def head(self) -> Head:
        return Head(self.entries, self.beyond, coverage_of([], self.events))


class CacheSettings(Protocol):
    """What every in-process cache of a memory (the reader's, the pins') uses of it; read
    on every call, so changes apply at once."""

    store: ProfileStore
    counter: TokenCounter
    template: BlockTemplate
    clock: Callable[[], float]
    monotonic: Callable[[], float]
    reads: ReadOptions


@dataclass
class _Cached:
    """One user's in-memory read state. ``version`` is the store's profile version the
    state is current for (read before ``profile`` was loaded, or set by a write this state
    took as a delta); None until a read needs it. ``profile`` is None until loaded and after
    a delta (the rankings hold the change; a read that needs the whole profile loads it
    again). ``generation`` counts the deltas taken, so a read that ran across one does not
    cache what it computed. ``held`` is what the state adds to the reader's count of held
    entries while it is in the cache."""

    checked_at: float
    version: str | None = None
    profile: StoredProfile | None = None
    base: StoredProfile | None = None
    """The profile the rankings were built from: its vectors stay right by id after deltas."""
    positions: dict[str, int] | None = None
    """Row of each entry id in ``base`` (built on first use)."""
    profile_version: str | None = None
    """The version ``profile`` was loaded at."""
    rankings: dict[_Key, Ranking] = field(default_factory=dict)
    selections: dict[_Key, ProfileSelection] = field(default_factory=dict)
    saved: set[_Key] = field(default_factory=set)
    vectors: dict[str, np.ndarray] = field(default_factory=dict)
    generation: int = 0
    held: int = 0
    lock: threading.RLock = field(default_factory=threading.RLock)
    fold: Fold | None = None
    """The events the rankings were folded from (the log catches it up: a delta)."""
    writes: int = 0
    """Block-changing writes this memory made of the user; ``caught`` is the count the last
    catch-up started at: while they differ, the next read catches up first."""
    caught: int = 0
    caught_at: float = 0.0
    """When the fold was last compared with the whole log (not only the version)."""


class ProfileReader:
    """The read path of one memory: an LRU over users, revalidated after ``cache_ttl_s``.

    Example:
        ```python
        reader = ProfileReader(memory)  # what OutputProfileMemory does for itself
        reader.select("ana", SelectionOptions(max_tokens=300), query=None).text
        ```
    """

    def __init__(self, memory: CacheSettings) -> None:
        self._memory = memory
        self._cache: OrderedDict[str, _Cached] = OrderedDict()
        self._held = 0
        self._swept_at = memory.monotonic()
        self._lock = threading.Lock()
        self._saver: ThreadPoolExecutor | None = None
        self._saves: list[Future[None] | asyncio.Future[None]] = []

    @property
    def held_entries(self) -> int:
        """Entries (of loaded profiles and kept rankings) and candidates (of cached
        selections) the cache holds; never more than ``cache_entries`` once a call returned."""
        return self._held

    def cached_users(self) -> list[str]:
        """The users whose read state is cached, least recently used first."""
        with self._lock:
            return list(self._cache)

    def select(self, user: str, options: SelectionOptions, query: str | None) -> ProfileSelection:
        """The user's block under ``options``: :meth:`aselect`, run at once (synchronous
        client)."""
        return run_sync(self.aselect(user, options, query))

    async def aselect(
        self, user: str, options: SelectionOptions, query: str | None
    ) -> ProfileSelection:
        """The user's block under ``options`` (``query`` is used only when
        ``options.relevance_weight`` > 0; such selections are never cached or saved)."""
        cached = await self._cached(user)
        if options.relevance_weight > 0 and query:
            return self._selection(user, *await self._fresh_ranking(user, cached, options, query))
        key = (options, self._memory.template)
        now = self._memory.clock()
        with cached.lock:
            hit = cached.selections.get(key)
            if hit is not None and hit.choice.valid_until > now:
                return hit
            ranking = cached.rankings.get(key)
            if hit is not None or (ranking is not None and ranking.expire(now)):
                # an entry expired: the choice may differ, and its snapshot is saved anew
                cached.selections.pop(key, None)
                cached.saved.discard(key)
        if ranking is not None:
            await self._fetch_pool_vectors(cached, ranking)
        cut = None
        with cached.lock:
            generation, ranking = cached.generation, cached.rankings.get(key)
            version = cached.version  # the version the ranking is current for
            selection = (
                None
                if ranking is None
                else self._selection(user, ranking, self._vectors_of(cached))
            )
            if ranking is not None and key not in cached.saved:
                # the kept ranking and its fold move together: the head and its coverage
                # describe the same events (a snapshot saved without one would drop the
                # head the last full load saved)
                cut = self._head_cut(ranking, cached.fold)
        if selection is None:
            selection = await self._stored_selection(user, cached, options)
        if selection is None:
            cached, selection, generation = await self._fresh_selection(user, cached, options, key)
        elif ranking is not None and key not in cached.saved:
            self._save_current(user, cached, key, selection, version, cut)
        self._keep(user, cached, key, selection, generation)
        return selection

    def _keep(
        self,
        user: str,
        cached: _Cached,
        key: _Key,
        selection: ProfileSelection,
        generation: int,
    ) -> None:
        """Cache ``selection`` in ``cached``, unless a delta came in since it was computed
        or the state left the cache."""
        with self._lock, cached.lock:
            if self._unchanged(user, cached, generation) and key not in cached.selections:
                cached.selections[key] = selection
                self._add_held(
                    cached, len(selection.choice.chosen) + len(selection.choice.left_out)
                )

    def _unchanged(self, user: str, cached: _Cached, generation: int) -> bool:
        """Whether ``cached`` is still the user's state in the cache and took no delta since
        ``generation`` (so what was computed from it may be kept). Under both locks."""
        return self._cache.get(user) is cached and cached.generation == generation

    def _snapshot_key(self, options: SelectionOptions) -> str:
        return snapshot_key(options, self._memory.template, self._memory.counter.name)

    async def _stored_selection(
        self, user: str, cached: _Cached, options: SelectionOptions
    ) -> ProfileSelection | None:
        """The selection saved in the store for the user's current profile version, if any."""
        if self._memory.reads.snapshot_ttl_s <= 0:
            return None
        key = self._snapshot_key(options)
        version, payload, tag = await self._memory.store.asnapshot(user, key)
        if cached.profile is None and cached.version is None:
            cached.version = version
        if payload is None or not version:
            return None
        now = self._memory.clock()
        if tag == version:
            found = load_selection(payload, user_id=user, options=options, now=now)
            if found is not None:
                return found
        head = load_head(payload, user_id=user)
        if head is None:
            return None
        return await self._from_head(user, cached, (options, self._memory.template), version, head)

    async def _from_head(
        self, user: str, cached: _Cached, key: _Key, version: str, head: Head
    ) -> ProfileSelection | None:
        """The selection of the profile at ``version`` from a ranking head saved with an
        older snapshot: what the log gained since the head's fold, applied to the head as
        changed entries (``Ranking.update_head``), chosen from as from the whole ranking,
        and saved as the snapshot of ``version`` (with the head moved on). ``version`` was
        read before the log, as a full load reads it first. None when the head cannot tell
        (the log lost events or gained old ones, the head no longer holds the pool): the
        caller loads the whole profile. See docs/design.md, "A ranking head"."""
        store = self._memory.store
        delta = await store.adelta(user, head.coverage)
        if delta is None:
            return None
        options = key[0]
        now = self._memory.clock()
        items = [ranked(e, options) for e in head.entries]
        ranking = Ranking(options, items, incremental=True, now=now, beyond=head.beyond)
        ranking.update_head(delta.changes)
        if not ranking.answers:
            return None
        pool = [r.entry for r in ranking.pool()]
        found = await store.aentry_vectors(pool)

        def vectors(ids: list[str]) -> np.ndarray:
            return np.stack([found[i] for i in ids]) if ids else np.zeros((0, 0), np.float32)

        selection = self._selection(user, ranking, vectors)
        moved = Head(tuple(ranking.held()), ranking.beyond, delta.coverage)
        seen = await self._save(user, cached, key, version, selection, moved)
        if seen is not None and seen != version:
            return None  # written (or forgotten) meanwhile: load it whole
        return selection

    def _head_cut(self, ranking: Ranking, fold: Fold | None) -> _HeadCut | None:
        """A ranking head to save beside the snapshot of a large profile's full ranking: twice
        what a choice sees (so writes can take entries from it and it still answers),
        with the events of the fold it came from (its coverage). None without snapshots,
        for a profile less than :data:`HEAD_MIN_RATIO` times the head, or for a fold a head
        cannot describe (bases from before the log, a forget not finished)."""
        options = ranking.options
        eligible, rest = 2 * (options.pool_size + LEFT_OUT_KEPT), 2 * LEFT_OUT_KEPT
        if self._memory.reads.snapshot_ttl_s <= 0 or fold is None or fold.bases:
            return None
        if fold.forgotten or ranking.total <= HEAD_MIN_RATIO * (eligible + rest):
            return None
        found = ranking.head(eligible, rest)
        if found is None:
            return None
        items, beyond = found
        return _HeadCut(tuple(i.entry for i in items), beyond, tuple(fold.events.values()))

    async def _fresh_selection(
        self, user: str, cached: _Cached, options: SelectionOptions, key: _Key
    ) -> tuple[_Cached, ProfileSelection, int]:
        """Rank and pack the whole profile; save the result for later cold reads, and keep
        the ranking for deltas. When the version moved while this read ran, start over from
        a new read state (see the module docstring). Returns the state the selection belongs
        to and its generation before the profile was loaded: a delta taken meanwhile (this
        memory's own write) means the ranking may predate that write, so neither it nor the
        selection is kept, and the snapshot, tagged with the version the profile was loaded
        at, is refused by the store (the write moved that version)."""
        for attempt in range(1, _ATTEMPTS + 1):
            generation = cached.generation
            profile, version, fold = await self._loaded(user, cached)
            ranking, vectors = await self._ranking(profile, options, None)
            selection = self._selection(user, ranking, vectors)
            cut = self._head_cut(ranking, fold)
            head = None if cut is None else cut.head()
            seen = await self._save(user, cached, key, version, selection, head)
            moved = seen is not None and seen != version
            if not moved or attempt == _ATTEMPTS or (attempt > 1 and seen):
                break
            cached = self._restart(user, cached)
        if ranking.incremental:
            with self._lock, cached.lock:
                if self._unchanged(user, cached, generation) and key not in cached.rankings:
                    cached.rankings[key] = ranking
                    self._add_held(cached, len(ranking))
        return cached, selection, generation

    async def _fresh_ranking(
        self, user: str, cached: _Cached, options: SelectionOptions, query: str | None
    ) -> tuple[Ranking, Vectors]:
        """Load (once per state) and rank the whole profile."""
        return await self._ranking((await self._loaded(user, cached))[0], options, query)

    async def _ranking(
        self, profile: StoredProfile, options: SelectionOptions, query: str | None
    ) -> tuple[Ranking, Vectors]:
        query_vector = await self._query_vector(query) if query else None
        ranking = rank(profile, options, now=self._memory.clock(), query_vector=query_vector)
        return ranking, profile_vectors(profile)

    async def _query_vector(self, query: str) -> np.ndarray:
        """The query's style vector (awaited from the embedder with an async client)."""
        store = self._memory.store
        if store.is_async:
            vector = await store.embeddings.aembed_query(query)
        else:
            vector = store.embeddings.embed_query(query)
        return np.asarray(vector, dtype=np.float32)

    def _save_current(
        self,
        user: str,
        cached: _Cached,
        key: _Key,
        selection: ProfileSelection,
        version: str | None,
        cut: _HeadCut | None = None,
    ) -> None:
        """Save a selection packed from an updated ranking as the snapshot of ``version``
        (with the ranking's head, for a large profile: its coverage is computed there too),
        the one the ranking was current for (once per version and key), in the reader's
        background thread: the read that packed it returns at once (the save is three small
        reads and a write of the store; its version checks make it safe whenever it runs).
        With an async client the save is a task of the running event loop instead."""
        if self._memory.reads.snapshot_ttl_s <= 0 or not version:
            return
        self.in_background(self._save_moved(user, cached, key, version, selection, cut))

    def in_background(self, work: Coroutine[Any, Any, Any]) -> None:
        """Run a store coroutine off the caller's path: in the reader's background thread
        (a synchronous client), or as a task of the running event loop (an async client).
        :meth:`flush` / :meth:`aflush` wait for it and raise what it raised."""
        with self._lock:
            self._saves = [f for f in self._saves if not f.done()]
            if self._memory.store.is_async:
                self._saves.append(asyncio.ensure_future(work))
                return
            if self._saver is None:
                self._saver = ThreadPoolExecutor(1, thread_name_prefix="outprofile-background")
            self._saves.append(self._saver.submit(run_sync, work))

    async def _save_moved(
        self,
        user: str,
        cached: _Cached,
        key: _Key,
        version: str,
        selection: ProfileSelection,
        cut: _HeadCut | None,
    ) -> None:
        head = None if cut is None else cut.head()
        seen = await self._save(user, cached, key, version, selection, head)
        if seen is not None and seen != version:  # a write came after: catch up next read
            with cached.lock:
                if cached.version == version:
                    cached.writes += 1

    def flush(self) -> None:
        """Wait for the snapshots being saved in the background (tests, and before exit;
        the interpreter also waits for them when it exits)."""
        with self._lock:
            pending = list(self._saves)
        for future in pending:
            future.result()

    async def aflush(self) -> None:
        """Wait for the snapshots being saved in the background, on the event loop (the
        saves of an async client are its tasks; the thread's of a sync one are awaited on a
        worker thread)."""
        with self._lock:
            pending = list(self._saves)
        for future in pending:
            await (future if isinstance(future, asyncio.Future) else asyncio.wrap_future(future))

    async def _save(
        self,
        user: str,
        cached: _Cached,
        key: _Key,
        version: str | None,
        selection: ProfileSelection,
        head: Head | None = None,
    ) -> str | None:
        """Save the selection as the snapshot of ``version`` (the store refuses it, or
        takes it back, if that version moved), with the ranking head it came from when
        given, and return the user's version after the save. None when nothing is saved:
        snapshots are off, or the version is '' (an unknown or forgotten user, whose read
        writes nothing)."""
        if self._memory.reads.snapshot_ttl_s <= 0 or not version:
            return None
        # the scores and ages a snapshot shows move on; its block does not until a write,
        # or until an entry of its ranking expires
        until = self._memory.clock() + self._memory.reads.snapshot_ttl_s
        payload = dump_selection(
            selection, until=min(until, selection.choice.valid_until), head=head
        )
        store = self._memory.store
        await store.asave_snapshot(user, self._snapshot_key(key[0]), version, payload)
        seen = await store.aversion(user)
        if seen == version:
            with cached.lock:
                if cached.version == version:
                    cached.saved.add(key)
        return seen

    def _selection(self, user: str, ranking: Ranking, vectors: Vectors) -> ProfileSelection:
        """Diversify and pack a ranking, and render the block."""
        memory = self._memory
        template, counter = memory.template, memory.counter
        options = ranking.options

        def entry_cost(entry: ProfileEntry) -> int:
            # numbered as the largest position the block can have, so no entry is under-counted
            widest = options.pool_size
            return counter.count(render_entry(entry, widest, options.fields, template) + "\n")

        def fits(entries: Sequence[ProfileEntry]) -> bool:
            return counter.count(render_block(entries, options.fields, template)) <= (
                options.max_tokens
            )

        choice = choose_from(
            ranking,
            vectors=vectors,
            counter=counter,
            fixed_cost=counter.count(f"{template.header}\n{template.footer}"),
            entry_cost=entry_cost,
            fits=fits,
            now=memory.clock(),
        )
        text = render_block([c.entry for c in choice.chosen], options.fields, template)
        return ProfileSelection(
            user_id=user,
            text=text,
            tokens=counter.count(text) if text else 0,
            choice=choice,
            encoding=counter.name,
        )

    def _vectors_of(self, cached: _Cached) -> Vectors:
        """Style vectors for a kept ranking: from the profile it was built from, else by id
        from the store (an id hashes its user in; the ranking only holds this user's ids).
        Fetched rows are kept in the state."""
        known, profile = cached.vectors, cached.base
        store = self._memory.store

        def vectors(ids: list[str]) -> np.ndarray:
            missing = [i for i in ids if i not in known]
            if missing and profile is not None:
                if cached.positions is None:
                    cached.positions = {e.id: n for n, e in enumerate(profile.entries)}
                position = cached.positions
                inside = [i for i in missing if i in position]
                if inside:
                    rows = profile.vectors_for([position[i] for i in inside])
                    known.update(zip(inside, rows, strict=True))
                    missing = [i for i in missing if i not in known]
            if missing:  # with an async client, _fetch_pool_vectors fetched them first
                known.update(zip(missing, store.vectors(missing), strict=True))
            return np.stack([known[i] for i in ids]) if ids else np.zeros((0, 0), np.float32)

        return vectors

    async def _fetch_pool_vectors(self, cached: _Cached, ranking: Ranking) -> None:
        """With an async client: fetch the vectors of the ranking's candidate pool that
        neither the state nor the profile it was built from holds (entries a delta added),
        so packing, which cannot wait for I/O, finds them all. A synchronous client's
        packing fetches them itself."""
        if not self._memory.store.is_async:
            return
        with cached.lock:
            base = cached.base
            inside = set() if base is None else {e.id for e in base.entries}
            missing = [
                r.entry.id
                for r in ranking.pool()
                if r.entry.id not in cached.vectors and r.entry.id not in inside
            ]
        if missing:
            rows = await self._memory.store.avectors(missing)
            with cached.lock:
                cached.vectors.update(zip(missing, rows, strict=True))

    async def _cached(self, user: str) -> _Cached:
        """The user's read state. Within ``cache_ttl_s`` of its last check, and with no
        block-changing write of this memory since, it is served as is; else it is
        revalidated (:meth:`_revalidated`) or replaced."""
        now, ttl = self._memory.monotonic(), self._memory.reads.cache_ttl_s
        with self._lock:
            self._sweep(now, ttl)
            hit = self._cache.get(user)
            if hit is not None:
                self._cache.move_to_end(user)
                if now - hit.checked_at < ttl and hit.writes == hit.caught:
                    return hit
        if hit is not None and await self._revalidated(user, hit, now):
            return hit
        with self._lock:
            if self._cache.get(user) is hit:
                self._drop(user)
            fresh = _Cached(now, caught_at=now)
            if ttl <= 0:
                return fresh
            self._cache[user] = fresh
            while len(self._cache) > self._memory.reads.cache_size:
                self._drop(next(iter(self._cache)))
        return fresh

    async def _revalidated(self, user: str, state: _Cached, now: float) -> bool:
        """Whether ``state`` can serve again: one read of the user's version shows nothing
        was written, in any process (then its check time is renewed); or the state holds
        rankings and their fold, which catch up with the log (:meth:`_catch_up`)."""
        writes = state.writes
        version = await self._version(user)
        full = now - state.caught_at >= _FULL_CHECK_S
        if version is not None and version == state.version and writes == state.caught and not full:
            state.checked_at = now
            return True
        if state.fold is None or not state.rankings:
            return False
        await self._catch_up(user, state, version, writes, now, full=full)
        return True

    async def _catch_up(
        self,
        user: str,
        state: _Cached,
        version: str | None,
        writes: int,
        now: float,
        *,
        full: bool,
    ) -> None:
        """Move the state's rankings by what the log gained or lost since their fold: the
        reads first, then the fold, the rankings and the version in one step under the
        state's lock (no thread lock is held across I/O). ``version`` was read before the
        log, so every write that set a version before it is in what the log showed."""
        fold = state.fold
        assert fold is not None
        since = None if full else min(fold.latest, self._memory.clock()) - _WINDOW_S
        caught = await self._memory.store.acatch_up(fold, since=since)
        with state.lock:
            if state.fold is not fold:
                return
            touched = fold.add(caught.events) | fold.remove(caught.gone)
            state.vectors.update(caught.vectors)
            self._move(state, fold, touched, version_moved=version != state.version)
            state.version = version
            state.caught = max(state.caught, writes)
            state.checked_at = now
            if caught.full:
                state.caught_at = now
        self._recount(user, state)

    def _sweep(self, now: float, ttl: float) -> None:
        """Without snapshots (no version to revalidate with), drop every state past the ttl,
        at most once per ttl. Under the lock."""
        if self._memory.reads.snapshot_ttl_s > 0 or now - self._swept_at < ttl:
            return
        self._swept_at = now
        for expired in [u for u, s in self._cache.items() if now - s.checked_at >= ttl]:
            self._drop(expired)

    def _restart(self, user: str, stale: _Cached) -> _Cached:
        """A new read state for a read that found the version moved under it. The stale
        state leaves the cache (other reads must not rank its profile); the new one is not
        cached: the next read builds its own."""
        with self._lock:
            if self._cache.get(user) is stale:
                self._drop(user)
        return _Cached(stale.checked_at)

    async def _loaded(
        self, user: str, cached: _Cached
    ) -> tuple[StoredProfile, str | None, Fold | None]:
        """The user's whole profile, loaded once per read state (version read first), the
        version it was loaded at, and the fold it was loaded from when this call loaded it
        (None when the state held the profile already)."""
        with cached.lock:
            if cached.profile is not None:
                return cached.profile, cached.profile_version, None
            version, generation = cached.version, cached.generation
        if version is None:  # read outside the state's lock: no thread lock is held across I/O
            found = await self._version(user)
            with cached.lock:
                if cached.version is None:
                    cached.version = found
                version = cached.version
        # a read never writes: stale pending entries are never selected, and go later
        profile, fold = await self._memory.store.aload_fold(user)
        if fold.forgotten:  # a forget was interrupted: it reads as done; finish it too
            self.in_background(self._memory.store.afinish_forgets(user))
        with self._lock, cached.lock:
            # a delta taken meanwhile may postdate what this load read: not kept
            fresh = cached.generation == generation and cached.version == version
            if cached.profile is None and fresh:
                cached.profile = cached.base = profile
                cached.profile_version = version
                cached.positions = None
                if cached.fold is None:
                    cached.fold = fold
                if self._cache.get(user) is cached:
                    self._add_held(cached, len(profile.entries))
        return profile, version, fold

    def _add_held(self, cached: _Cached, count: int) -> None:
        """Count ``count`` more entries held by ``cached`` (in the cache), then drop the least
        recently used states until the count is within ``cache_entries`` (the newest state
        too, when it alone is larger). Called under the lock."""
        cached.held += count
        self._held += count
        while self._held > self._memory.reads.cache_entries and self._cache:
            self._drop(next(iter(self._cache)))

    def _drop(self, user: str) -> None:
        """Remove a user's read state from the cache, if any (under the lock)."""
        state = self._cache.pop(user, None)
        if state is not None:
            self._held -= state.held

    async def _version(self, user: str) -> str | None:
        """The profile version a snapshot would be tagged with (None: snapshots are off)."""
        if self._memory.reads.snapshot_ttl_s <= 0:
            return None
        return await self._memory.store.aversion(user)

    def written(self, written: Written) -> None:
        """Take a write through this memory: a user's cached rankings take the events it
        added and removed at once, as a delta (no I/O); and when it renewed the user's
        version, the next read also catches up with the log, for any other writer's events
        that landed meanwhile (their version may be the one this write replaced)."""
        added: dict[str, list[Event]] = {}
        for event in written.events:
            added.setdefault(event.user_id, []).append(event)
        for user in set(added) | set(written.removed) | written.moved:
            with self._lock:
                state = self._cache.get(user)
            if state is None:
                continue
            with state.lock:
                if user in written.moved:
                    state.writes += 1
                fold = state.fold
                if fold is None or not state.rankings:
                    continue
                # removed first: a write may replace an event under its own id (a run's
                # claim that an edit moves to the edited text)
                touched = fold.remove(written.dropped)
                touched |= fold.add(added.get(user, []))
                self._move(state, fold, touched, version_moved=False)
            self._recount(user, state)

    def _move(self, state: _Cached, fold: Fold, touched: set[str], *, version_moved: bool) -> None:
        """Move the state's rankings by the entries ``touched`` in its fold (under the
        state's lock)."""
        changed = [e for i in sorted(touched) if (e := fold.entry(i)) is not None]
        removed = [i for i in sorted(touched) if fold.entry(i) is None]
        moved = [r.update(changed, removed) for r in state.rankings.values()]
        if any(moved) or version_moved:
            state.selections.clear()
            state.saved.clear()
            state.profile = None
            state.generation += 1

    def _recount(self, user: str, state: _Cached) -> None:
        """Count the entries a state holds again, after a delta."""
        with state.lock:
            held = sum(len(r) for r in state.rankings.values())
        with self._lock:
            if self._cache.get(user) is not state:
                return
            self._held -= state.held
            state.held = 0
            self._add_held(state, held)
            for selection in state.selections.values():
                self._add_held(state, len(selection.choice.chosen) + len(selection.choice.left_out))
            if state.profile is not None:
                self._add_held(state, len(state.profile.entries))

    def invalidate(self, users: Iterable[str]) -> None:
        """Drop the read state of users written in a way no delta describes."""
        with self._lock:
            for user in users:
                self._drop(user)
