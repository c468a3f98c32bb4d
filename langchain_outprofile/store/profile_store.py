"""Profile store: one Chroma collection holding many users' profile entries.

The one place the memory writes entries to Chroma and reads them back (the repair, which
rebuilds a damaged store, and the purge, which makes Chroma drop freed rows, also touch the
collections; the memory imports chromadb at run time only in this package, the benchmarks
open their own clients). Every read, delete and export of a user's entries is filtered by
``user_id`` here, or names ids that hash the user in; the lookups by run id are the one
read of entry content across users (a run id is claimed by one run of one user, and
feedback checks their owner against the caller's user when one is named). Embeddings are
always passed explicitly, so Chroma's default embedding function (which downloads a model)
never runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
from chromadb.api import AsyncClientAPI, ClientAPI
from langchain_core.embeddings import Embeddings

from langchain_outprofile.bridge import run_sync
from langchain_outprofile.embeddings import StyleEmbeddings
from langchain_outprofile.errors import (
    AsyncClientError,
    EmbeddingMismatchError,
    InvalidInputError,
    RunIdConflictError,
)
from langchain_outprofile.store.clients import (
    AsyncGuardedCollection,
    GuardedCollection,
    Retries,
    StoreDamagedError,
    StoreFullError,
    check_no_unfinished_repair,
    checked_retry_s,
    default_path,
    failure_kind,
    location_lock,
    persistent_client,
    repair_hint,
    server_of,
    unreachable,
)
from langchain_outprofile.store.io import (
    NoLock,
    hold,
    pause,
    settle,
)
from langchain_outprofile.store.log import (
    BASE_AT,
    EXPIRY_KEY,
    LOG_MARK,
    LOG_SUFFIX,
    Coverage,
    Event,
    Fold,
    base_event_id,
    coverage_of,
    credit_event,
    event_id,
    event_metadata,
    events_from,
    ids_digest,
    named_entries,
    pending_hash,
    put_events,
    run_event_id,
)
from langchain_outprofile.store.rows import Row, own_where, rows_from, to_metadata
from langchain_outprofile.store.state import STATE_SUFFIX, StateRows, batches
from langchain_outprofile.types import ProfileEntry, StoredProfile
from langchain_outprofile.validation import DEFAULT_COLLECTION, validate_user_id

__all__ = [
    "CLOUD_LIMITS",
    "DEFAULT_COLLECTION",
    "SCHEMA_VERSION",
    "CallLimits",
    "Caught",
    "ProfileStore",
    "Written",
]

SCHEMA_VERSION = 2
# The vector index only serves direct similarity queries (selection never searches it), so
# it is built cheaply: ef_construction and M well below Chroma's defaults of 100 and 16.
_HNSW = {"hnsw:space": "cosine", "hnsw:construction_ef": 32, "hnsw:M": 8}
# leaves room for the state collection's suffix within Chroma's 512 characters
_COLLECTION_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9._-]{1,504}[a-zA-Z0-9]")
_METADATAS: Any = ["metadatas"]
_WHERE_IN = 100  # entry ids per ``$in`` filter of the log
_STALE_AT = "stale_at"
"""Log key: when a process first found a pending event stale, by its own clock."""
_READ_PAGE = 1_000
"""Rows a read of texts and metadata returns at most (more are read by id, a page at a
time). Chroma's SQLite fails past its SQL variables ("too many SQL variables" at 100k
rows), and what a read allocates on Chroma's side stays in the process's peak RSS: reading
a 20,000-event log by id raised it by 132 MB in pages of 10,000, 56 MB in pages of 2,000
and 5 MB in pages of 500, in the same time (issue 24, item 21)."""
# Set on a collection this package adopted (one a ``langchain_chroma.Chroma`` made, say): it
# may hold the app's own documents, so reads not by id match only the package's rows.
_SHARED_KEY = "outprofile_shared"
LIMITS_ENV = "OUTPROFILE_CHROMA_LIMITS"
"""Set to ``cloud`` to keep every call within Chroma Cloud's limits on any client."""
_INLINE_EMBEDS = 64  # an async write embeds up to this many texts on the loop itself
_T = TypeVar("_T")


@dataclass(frozen=True)
class CallLimits:
    """The largest Chroma call the store makes: records per write and results per read
    (None: the client's own maximum, no paging). Chroma Cloud documents 300 of each
    (:data:`CLOUD_LIMITS`); a self-hosted server and embedded Chroma have none."""

    records_per_write: int | None = None
    results_per_read: int | None = None


CLOUD_LIMITS = CallLimits(records_per_write=300, results_per_read=300)
"""Chroma Cloud's documented per-call limits (the store's ``where`` filters use at most 3
predicates of Cloud's 8, and its rows at most 7 metadata keys of 32)."""


@dataclass(frozen=True)
class Written:
    """What one write did: the entries as this writer folds them (another writer's signal
    landing at the same moment may be missing here; readers fold the log), the ids
    removed (by user), the users whose profile version the write renewed (their blocks
    may have changed), and the events it added to and removed from the log (a reader
    holding the user's fold takes them at once, without I/O)."""

    entries: list[ProfileEntry]
    removed: dict[str, list[str]]
    moved: set[str]
    events: list[Event] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Caught:
    """What :meth:`ProfileStore.acatch_up` found in the log for a fold: events it lacks,
    ids of events it holds that the log no longer does, and the vectors of the entries the
    new events name."""

    events: list[Event]
    gone: list[str]
    vectors: dict[str, np.ndarray]
    full: bool = True
    """Whether every event id of the user was compared (else only recent ones)."""


@dataclass(frozen=True)
class Delta:
    """What the log gained since a fold of known :class:`Coverage` (:meth:`ProfileStore.adelta`):
    each entry it changed, as it was folded then and as it folds now (None: absent), and
    the coverage of the fold with those events."""

    changes: list[tuple[ProfileEntry | None, ProfileEntry | None]]
    coverage: Coverage


class ProfileStore:
    """Per-user profile entries in one Chroma collection.

    Args:
        path: directory of an embedded ``PersistentClient`` (default: the user data dir).
        client: any chromadb client instead (``EphemeralClient``, ``HttpClient``, ...), or
            an async one (``await chromadb.AsyncHttpClient(...)``): then only the
            ``a``-prefixed methods work, after ``await store.aopen()``, and none of them
            blocks the event loop (every operation is one coroutine, ``store/io.py``).
        collection_name: the collection holding every user. A collection this package did
            not create (one a ``langchain_chroma.Chroma`` made, say) is adopted: its rows stay
            as they are (no read here matches a row without a ``user_id``) and its metadata
            gains this package's keys.
        embeddings: a LangChain ``Embeddings``; default :class:`StyleEmbeddings`.
        documents: also write each entry's text as the row's Chroma document, so Chroma's
            own similarity search (``langchain_chroma.Chroma.similarity_search`` with
            ``filter={"user_id": ...}``) finds the entries; off by default, since Chroma
            full-text indexes every document (docs/benchmarks.md measures the cost).
        retry_s: how long, in all, a call waits for a ``chroma run`` server it cannot reach
            (one restarting) before it raises :class:`StoreUnavailableError` (default 10 s;
            0: no wait). Only calls whose repeat is safe are sent again (``Retries``).
        lock_timeout_s: the longest wait for the lock of an embedded store's directory
            (another process holds it), then :class:`StoreBusyError` (default 30 s, or
            ``OUTPROFILE_LOCK_TIMEOUT_S``). The lock is one per directory per process, so
            this sets its bound for every store of the process on that directory.

    Example:
        ```python
        store = ProfileStore(client=chromadb.EphemeralClient(), collection_name="t1")
        store.upsert([ProfileEntry.create("Hi!", user_id="ana")])
        store.load("ana").entries[0].text  # "Hi!"

        astore = ProfileStore(client=await chromadb.AsyncHttpClient(port=8000))
        await astore.aopen()
        (await astore.aload("ana")).entries
        ```
    """

    eager_rows: int = 512
    """Profiles up to this many entries load with their vectors in one read (a larger one
    fetches only the vectors selection asks for)."""

    delete_batch: int = 1000
    """Entries ``delete_user`` deletes per hold of the lock (reads of others go between)."""

    write_batch: int = 250
    """Entries a write stores per batch (at most Chroma's batch size); other users' reads
    go between two batches. One Chroma call of Chroma's 5,461 rows held embedded Chroma for
    seconds: during a 10,000-entry ``add_many`` another user's read waited up to 4.5 s.
    Smaller is kinder to reads and slower to write (50,000 entries, embedded, on a loaded
    machine: 100 rows, p99 132 ms in 116 s; 250, 207 ms in 89 s; 500, 375 ms in 74 s)."""

    def __init__(
        self,
        *,
        path: str | Path | None = None,
        client: ClientAPI | AsyncClientAPI | None = None,
        collection_name: str = DEFAULT_COLLECTION,
        embeddings: Embeddings | None = None,
        documents: bool = False,
        retry_s: float | None = None,
        lock_timeout_s: float | None = None,
    ) -> None:
        if path is not None and client is not None:
            raise InvalidInputError("pass either path= or client=, not both")
        self.retry_s = checked_retry_s(retry_s)
        if client is None:
            client = persistent_client(path or default_path(), lock_timeout_s=lock_timeout_s)
        self.client: Any = client  # ClientAPI, or AsyncClientAPI when ``is_async``
        self.documents = documents
        self.embeddings = embeddings or StyleEmbeddings()
        self.is_async = isinstance(client, AsyncClientAPI)
        self._fingerprint, self._dimension = _fingerprint(self.embeddings)
        self._name = collection_name
        self._shared = True  # whether the app's documents may be beside ours (_open_collection)
        self._location = location = location_lock(client)  # type: ignore[arg-type]
        location.bound(lock_timeout_s)
        # Embedded Chroma needs its calls serialized (threads, and the processes of its
        # directory); a server needs nothing: no write reads-folds-writes (store/log.py)
        self._write_lock: Any = (
            NoLock(on_loop=self.is_async) if self.is_async or location.free else location
        )
        # what reads hold: the whole lock on an embedded store, nothing on a server
        self._reads: Any = NoLock() if self.is_async or location.free else location.reads
        self._collection: Any = _Unopened()
        self._log: Any = _Unopened()
        self._opening: asyncio.Lock | None = None
        self.clock: Callable[[], float] = time.time
        """The time events are stamped with (the memory sets its own clock here)."""
        self.limits = CLOUD_LIMITS if _is_cloud(client) else CallLimits()
        """The largest call the store makes (:class:`CallLimits`); set before the store
        opens, or through ``OUTPROFILE_CHROMA_LIMITS=cloud``."""
        if os.environ.get(LIMITS_ENV, "").strip().lower() == "cloud":
            self.limits = CLOUD_LIMITS
        self._last_at = 0.0
        self._stamp_lock = threading.Lock()
        if not self.is_async:
            with location:
                location.refresh(server_of(client))
                run_sync(self._open(collection_name))

    async def aopen(self) -> None:
        """Open the collections of a store given an async client (once; what the memory's
        ``a``-prefixed methods do first). Nothing to do for a synchronous client."""
        if not isinstance(self._collection, _Unopened):
            return
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if isinstance(self._collection, _Unopened):
                async with hold(self._write_lock):
                    await self._open(self._name)

    async def _open(self, collection_name: str) -> None:
        """Open (or create) the entries collection and the state collection beside it."""
        # an interrupted repair leaves a half-rebuilt collection: refuse, naming the command
        check_no_unfinished_repair(self._location, collection_name)
        client = self.client
        collection = await self._open_collection(collection_name)
        most = max(1, int(await settle(client.get_max_batch_size())))
        self._max_batch = min(most, self.limits.records_per_write or most)
        state_name = f"{collection_name}{STATE_SUFFIX}"
        state_rows = await self._opened(
            state_name,
            lambda: client.get_or_create_collection(
                name=state_name,
                metadata={"outprofile_state": SCHEMA_VERSION},
                embedding_function=None,
            ),
        )
        log_name = f"{collection_name}{LOG_SUFFIX}"
        log = await self._opened(
            log_name,
            lambda: client.get_or_create_collection(
                name=log_name,
                metadata={"outprofile_log": SCHEMA_VERSION, **_HNSW},
                embedding_function=None,
            ),
        )
        # a damaged store fails here, naming the repair, not in the middle of a write
        await settle(collection.count())
        await settle(state_rows.count())
        await settle(log.count())
        self.state = StateRows(
            state_rows, self._reads, self._max_batch, page=self.limits.results_per_read
        )
        self._log = log
        self._collection = collection
        await self.afinish_forgets()  # one a killed process left part-way

    @property
    def collection_name(self) -> str:
        """Name of the Chroma collection in use."""
        return self._name

    async def _open_collection(self, name: str) -> Any:
        if not isinstance(name, str) or not _COLLECTION_NAME.fullmatch(name):
            raise InvalidInputError(
                f"collection_name must be 3-506 characters of [a-zA-Z0-9._-], starting and "
                f"ending with a letter or digit; got {name!r}"
            )
        for suffix in (STATE_SUFFIX, LOG_SUFFIX):
            if name.endswith(suffix):
                raise InvalidInputError(
                    f"collection_name {name!r} ends with {suffix!r}, which names the "
                    f"{suffix[1:]} collection kept beside every entries collection; choose "
                    "another name"
                )
        wanted = {
            "outprofile_schema": SCHEMA_VERSION,
            "embedding": self._fingerprint,
            "dimension": self._dimension,
            **_HNSW,
        }
        client = self.client
        collection = await self._opened(
            name,
            lambda: client.get_or_create_collection(
                name=name, metadata=wanted, embedding_function=None
            ),
        )
        found = dict(collection.metadata or {})
        if "outprofile_schema" not in found:
            found = await self._adopted(collection, found, wanted)
        if found.get("outprofile_schema") != SCHEMA_VERSION:
            raise EmbeddingMismatchError(
                f"collection {name!r} has outprofile_schema={found.get('outprofile_schema')!r}; "
                f"this version reads {SCHEMA_VERSION}: upgrade langchain-outprofile, "
                "or use another collection_name"
            )
        for key in ("embedding", "dimension"):
            if found.get(key) != wanted[key]:
                raise EmbeddingMismatchError(
                    f"collection {name!r} was written with {key}={found.get(key)!r}, but this "
                    f"memory uses {key}={wanted[key]!r}; open it with the embedder it was "
                    "written with, or use another collection_name"
                )
        self._shared = _shared(found)
        return collection

    async def _adopted(
        self, collection: Any, found: dict[str, Any], wanted: dict[str, Any]
    ) -> dict[str, Any]:
        """Give a collection this package did not create its metadata keys (its index
        settings stay: Chroma cannot change them), and return its metadata."""
        ours = {k: v for k, v in wanted.items() if not k.startswith("hnsw:")}
        ours[_SHARED_KEY] = True  # the app's documents stay beside ours: see _read
        merged = {**{k: v for k, v in found.items() if not k.startswith("hnsw:")}, **ours}
        await settle(collection.modify(metadata=merged))
        return {**found, **ours}

    async def _opened(self, name: str, open_: Callable[[], Any]) -> Any:
        """``open_()``'s collection, guarded (see :class:`GuardedCollection`); Chroma's
        failures of a damaged store or a full disk while opening are typed as in a call."""
        client = self.client
        lock = self._location
        retries = Retries(lock.location, "open", self.retry_s)
        while True:
            try:
                collection = await settle(open_())
                break
            except Exception as error:
                pause = retries.pause(error)
                if pause is None:
                    typed = self._open_failure(name, error, retries)
                    if typed is None:
                        raise
                    raise typed from error
            if self.is_async:
                await asyncio.sleep(pause)
            else:
                time.sleep(pause)

        def reopen() -> Any:
            return client.get_collection(name, embedding_function=None)

        if self.is_async:
            return AsyncGuardedCollection(collection, lock, reopen, retry_s=self.retry_s)
        return GuardedCollection(collection, lock, reopen, retry_s=self.retry_s)

    def _open_failure(self, name: str, error: Exception, retries: Retries) -> Exception | None:
        """What opening collection ``name`` raises after ``error``: typed when the server
        cannot be reached, the store is damaged or its disk is full; else None (``error``
        itself)."""
        if unreachable(error):
            return retries.failure(error)
        lock = self._location
        kind = failure_kind(error, lock)
        if kind is None:
            return None
        where = lock.location
        if kind == "full":
            return StoreFullError(f"the disk of the store at {where} is full: {error}")
        return StoreDamagedError(
            f"the store at {where} is damaged: opening collection {name!r} fails with "
            f"{error}; {repair_hint(where, name)}"
        )

    def _run(self, operation: Coroutine[Any, Any, _T]) -> _T:
        """Run one of this store's coroutines for its synchronous method."""
        return run_sync(operation, async_io=self.is_async)

    # -- writes ---------------------------------------------------------------------------

    def upsert(self, entries: Sequence[ProfileEntry]) -> list[ProfileEntry]:
        """Store entries, folding each into any stored entry with the same id.

        Returns the entries as stored (see :meth:`write` for what else a write reports).
        """
        return self.write(entries).entries

    def write(self, entries: Sequence[ProfileEntry], **options: Any) -> Written:
        """Store entries as signals of their users: see :meth:`awrite`."""
        return self._run(self.awrite(entries, **options))

    async def awrite(
        self,
        entries: Sequence[ProfileEntry],
        *,
        event_ids: Sequence[str] | None = None,
        claim: bool = False,
        served: Sequence[str] = (),
    ) -> Written:
        """Store entries: each one is a signal, added to the log as an event of its own.

        No read-fold-write: the event is *added* (Chroma ignores an id it holds, so a
        retried write adds nothing) and every reader folds an entry's events in one order
        (``log.py``), so writers on any number of machines need no shared lock. Then the
        entry rows are written: a new entry's text and vector, or an existing row's
        metadata (the row also keeps this writer's fold as a cache, for the value returned,
        never read as the truth). Last, the version of each user whose block the write can
        change is renewed: an entry not selectable before (or new) and after the write
        (pending, rejected) leaves it alone, so a tracked run's output keeps every saved
        selection valid.

        Args:
            entries: the signals, in order (one write may hold several of one entry).
            event_ids: ids for the events, when a retry must name the same ones (feedback
                on a run, a run's output); default: new random ids.
            claim: read the events back and raise :class:`RunIdConflictError` when one of
                them was held already by another user or entry (a run id claimed first by
                another run), before any entry row or version is written.
            served: with ``claim``, the entries of the block the run was served, kept on
                its claim for the credit its feedback gives them (:meth:`acredit`).

        Returns:
            What the write did (:class:`Written`).
        """
        at = self._stamp()
        events = put_events(entries, at=at, ids=event_ids)
        if served:
            events = [replace(e, entries=tuple(served)) for e in events]
        parts = list(batches(events, max(1, min(self._max_batch, self.write_batch))))
        stored: list[ProfileEntry] = []
        moved: set[str] = set()
        try:
            for number, batch in enumerate(parts):
                if len(parts) > 1:  # a writer killed part-way leaves no old snapshot current
                    if number:
                        await pause(self._write_lock)
                    # before the batch's rows: doubted, as they may never land
                    await self.state.touch({e.user_id for e in batch}, doubted=True)
                folded, renew = await self._put(
                    batch, claim=claim, named=event_ids is not None, long=len(parts) > 1
                )
                stored.extend(folded)
                moved |= renew
        except BaseException:
            with contextlib.suppress(Exception):  # best effort: the first error is the news
                await self.state.touch({e.user_id for e in entries}, doubted=True)
            raise
        users = {e.user_id for e in entries}
        await self.state.touch(moved)
        await self.state.ensure(users - moved)
        return Written(stored, {}, moved, events)

    async def _put(
        self, events: Sequence[Event], *, claim: bool, named: bool, long: bool = False
    ) -> tuple[list[ProfileEntry], set[str]]:
        """Add one batch of ``put`` events, then write their entry rows. Returns the entries
        as this writer folds them and the users whose block may have changed. Events with
        ids the caller ``named`` (feedback on a run) that the log holds already are a replay:
        they count once, so this writer's fold leaves them out too."""
        wanted = list(dict.fromkeys(e.entry_id for e in events))
        rows = {r.id: r for r in await self._rows_by_id(wanted)}
        replayed: set[str] = set()
        if named and not claim:
            found = await self._log_get(ids=[e.id for e in events], include=[])
            replayed = set(found["ids"])
        bases = [
            Event(
                base_event_id(r.entry.id), r.entry.user_id, r.entry.id, "put", BASE_AT, 0, r.entry
            )
            for r in rows.values()
            if r.legacy
        ]
        await self._add_events([*bases, *events])
        if long:  # a read waiting since the events went in goes before the rows
            await pause(self._write_lock)
        if claim:
            await self._check_claims(events)
        cache: dict[str, ProfileEntry] = {i: r.entry for i, r in rows.items()}
        before = {i: e.selectable for i, e in cache.items()}
        folded = []
        for event in events:
            assert event.record is not None
            held = cache.get(event.entry_id)
            if event.id in replayed and held is not None:
                folded.append(held)
                continue
            cache[event.entry_id] = now = (
                event.record if held is None else held.merged_with(event.record)
            )
            folded.append(now)
        fresh = [cache[i] for i in wanted if i not in rows]
        await self._write(fresh)
        await self._write_metadata([cache[i] for i in wanted if i in rows])
        moved = {cache[i].user_id for i in wanted if cache[i].selectable or before.get(i, False)}
        return folded, moved

    async def _check_claims(self, events: Sequence[Event]) -> None:
        """After adding claiming events (a run's output under the run's id): raise
        :class:`RunIdConflictError` when another user's event holds an id (the first to
        claim a run id keeps it; nothing of this write is stored), and let a retried run of
        the same user replace the output its earlier try recorded (the id is its run)."""
        found = await self._log_get(ids=[e.id for e in events], include=_METADATAS)
        held = {e.id: e for e in events_from(found)}
        replaced = []
        for event in events:
            winner = held.get(event.id)
            if winner is None or winner.entry_id == event.entry_id:
                continue
            if winner.user_id != event.user_id:
                raise RunIdConflictError(
                    "this run id already identifies a tracked run of another user; a run id "
                    "must identify one run of one user: pass a fresh uuid4() as "
                    "config['run_id'] (nothing was stored)"
                )
            replaced.append((event, winner))
        if not replaced:
            return
        await settle(
            self._log.upsert(
                ids=[e.id for e, _ in replaced],
                metadatas=[event_metadata(e) for e, _ in replaced],
                embeddings=np.ones((len(replaced), 1), dtype=np.float32),
            )
        )
        user = events[0].user_id
        earlier = [w.entry_id for _, w in replaced]
        fold = await self._fold_of(user, earlier)
        emptied = [i for i in earlier if fold.entry(i) is None]
        await self._drop_rows(emptied)
        if emptied:  # maybe the user's last rows: listings confirm the user again
            await self.state.doubt([user])

    def credit(
        self, user_id: str, run_id: str, entries: Sequence[str], credit: int, *, why: str
    ) -> Written:
        """Credit the entries of a run's block: see :meth:`acredit`."""
        return self._run(self.acredit(user_id, run_id, entries, credit, why=why))

    async def acredit(
        self, user_id: str, run_id: str, entries: Sequence[str], credit: int, *, why: str
    ) -> Written:
        """Add one ``credit`` event: the feedback ``why`` on run ``run_id`` credits (+1) or
        debits (-1) each of ``entries``, the block the run was served. Its id comes from
        the user, the run and ``why``, so replayed feedback counts once; each entry folds a
        run's latest credit only (``log.py``). The user's version moves: the credit may
        change a block that weighs it. No entry row is rewritten (rows are caches the
        fold never reads), so feedback costs one row, whatever the block held."""
        user = validate_user_id(user_id)
        if credit not in (1, -1) or not entries:
            raise InvalidInputError(f"a credit is +1 or -1 for one or more entries; got {credit}")
        event = credit_event(user, run_id, entries, credit, at=self._stamp(), why=why)
        await self._add_events([event])
        await self.state.touch({user})
        return Written([], {}, {user}, [event])

    def replace(self, entries: Sequence[ProfileEntry]) -> None:
        """Store entries exactly as given (no folding): see :meth:`areplace`."""
        self._run(self.areplace(entries))

    async def areplace(self, entries: Sequence[ProfileEntry]) -> None:
        """Store entries exactly as given (no folding): for imports and repairs.

        Each entry gets a ``delete`` event and then a ``put`` of the record, so whatever
        the log held for it before, it now folds to the record given. When several entries
        share an id, the last one wins.
        """
        unique = list({e.id: e for e in entries}.values())
        at = self._stamp()
        nonce = uuid.uuid4().hex
        for batch in batches(unique, self._max_batch // 2):
            events: list[Event] = []
            for n, entry in enumerate(batch):
                gone = event_id(entry.user_id, entry.id, at, 2 * n, nonce)
                events.append(Event(gone, entry.user_id, entry.id, "delete", at, 2 * n))
                events.extend(put_events([entry], at=at, ids=[event_id(gone, "put")]))
                events[-1] = replace(events[-1], seq=2 * n + 1)
            await self._add_events(events)
            await self._write(batch)
        await self.state.touch({e.user_id for e in unique})

    def write_rows(self, entries: Sequence[ProfileEntry]) -> None:
        """See :meth:`awrite_rows`."""
        self._run(self.awrite_rows(entries))

    async def awrite_rows(self, entries: Sequence[ProfileEntry]) -> None:
        """Write entry rows (text, vector, the fold as a cache) and renew their users'
        versions, adding no event: for a repair, which rebuilds the rows from the log as
        it folds now. An event here (as :meth:`areplace` adds) could void a signal an app
        wrote meanwhile; rows are caches, so a stale one is harmless."""
        await self._write(entries)
        await self.state.touch({e.user_id for e in entries})

    def _stamp(self) -> float:
        """The time of a write's events: the clock, but never before this store's previous
        write, so one process's writes fold in the order they were made."""
        with self._stamp_lock:
            self._last_at = max(self.clock(), self._last_at + 1e-6)
            return self._last_at

    async def _add_events(self, events: Sequence[Event]) -> None:
        """Add events to the log: insert-if-absent (Chroma's ``add`` leaves an id it holds)."""
        for batch in batches(events, self._max_batch):
            await settle(
                self._log.add(
                    ids=[e.id for e in batch],
                    metadatas=[event_metadata(e) for e in batch],
                    embeddings=np.ones((len(batch), 1), dtype=np.float32),
                )
            )

    async def _write(self, batch: Sequence[ProfileEntry]) -> None:
        """Write entry rows whole: text, vector and this writer's fold (a cache)."""
        for part in batches(batch, self._max_batch):
            texts = [e.text for e in part]
            await settle(
                self._collection.upsert(
                    ids=[e.id for e in part],
                    metadatas=[{**to_metadata(e), LOG_MARK: True} for e in part],
                    embeddings=await self._embed(texts),
                    **({"documents": texts} if self.documents else {}),
                )
            )

    async def _write_metadata(self, merged: Sequence[ProfileEntry]) -> None:
        """Rewrite the rows of entries folded into stored ones: same id, so same text and
        vector; only the cached fold changes (no embedding, no index update)."""
        for part in batches(merged, self._max_batch):
            await settle(
                self._collection.update(
                    ids=[e.id for e in part],
                    metadatas=[{**to_metadata(e), LOG_MARK: True} for e in part],
                )
            )

    async def _embed(self, texts: list[str]) -> np.ndarray:
        """Style vectors of ``texts``. With an async client the embedder's own coroutine
        is awaited (a remote embedder), and a large batch of the offline embedder runs on a
        worker thread (its CPU time would stall the loop)."""
        if not texts:
            return np.zeros((0, self._dimension), dtype=np.float32)
        if isinstance(self.embeddings, StyleEmbeddings):
            if self.is_async and len(texts) > _INLINE_EMBEDS:
                return await asyncio.to_thread(self.embeddings.embed_array, texts)
            return self.embeddings.embed_array(texts)  # skips a round trip through lists
        if self.is_async:
            rows = await self.embeddings.aembed_documents(texts)
        else:
            rows = self.embeddings.embed_documents(texts)
        return np.asarray(rows, dtype=np.float32)

    def delete(self, user_id: str, ids: Iterable[str]) -> int:
        """Delete the given entries of one user; ids of other users are left alone. The
        user's saved selections go too (they may quote deleted text)."""
        return sum(len(ids) for ids in self.remove(user_id, ids).removed.values())

    def remove(self, user_id: str, ids: Iterable[str], *, pending_only: bool = False) -> Written:
        """Delete the given entries of one user: see :meth:`aremove`."""
        return self._run(self.aremove(user_id, ids, pending_only=pending_only))

    async def aremove(
        self, user_id: str, ids: Iterable[str], *, pending_only: bool = False
    ) -> Written:
        """Delete the given entries of one user (ids of other users are left alone) and
        report which existed.

        A delete adds a ``delete`` event (a later signal of the same text starts it
        afresh), then removes the entry's earlier events and its row, and renews the user's
        version after removing their saved selections and pins (they may quote the text).
        When a later signal of the entry landed meanwhile, its row is written back.

        With ``pending_only``, ``ids`` are ids of *events*: tracked outputs that expired or
        were replaced by an edit (see :meth:`aremove_pending`).
        """
        user = validate_user_id(user_id)
        wanted = list(dict.fromkeys(ids))
        if pending_only:
            return await self.aremove_pending(user, wanted)
        fold = await self._fold_of(user, wanted)
        existing = [i for i in wanted if fold.entry(i) is not None]
        return await self._void(user, fold, existing, "delete")

    async def _void(
        self, user: str, fold: Fold, existing: list[str], kind: Literal["delete", "expire"]
    ) -> Written:
        """Add a ``delete`` (or ``expire``) event per entry, then remove the entries'
        earlier events and rows (writing back any a later signal kept), and the user's saved
        selections and pins, which may quote the text."""
        if not existing:
            return Written([], {}, set())
        at = self._stamp()
        nonce = uuid.uuid4().hex
        tombstones = [
            Event(event_id(user, i, at, n, nonce), user, i, kind, at, n)
            for n, i in enumerate(existing)
        ]
        await self._add_events(tombstones)
        voided = [x for i in existing for x in fold.event_ids(i)]
        await self._drop_events(voided)
        await self._drop_rows(existing)
        await self._restore_rows(user, existing)
        await self.state.drop(user)
        return Written([], {user: existing}, {user}, tombstones, voided)

    def expire(self, user_id: str | None = None, *, now: float) -> Written:
        """Delete expired entries: see :meth:`aexpire`."""
        return self._run(self.aexpire(user_id, now=now))

    async def aexpire(self, user_id: str | None = None, *, now: float) -> Written:
        """Delete the entries (of one user, or of every user) that expired by ``now``.

        One ``where`` on the log finds the signals that named an expiry before ``now`` (and
        one on the entry rows, the bases a repair wrote); their entries are folded, and
        those whose fold has expired get an ``expire`` event and are removed as a delete
        removes them (events, rows, saved selections, pins). An ``expire`` event only voids
        an entry that had expired by its time, so a signal extending the expiry that lands
        meanwhile keeps the entry (``log.py``)."""
        found: dict[str, set[str]] = {}
        where: dict[str, Any] = {EXPIRY_KEY: {"$lte": float(now)}}
        if user_id is not None:
            where = {"$and": [{"user_id": validate_user_id(user_id)}, where]}
        for event in events_from(await self._log_get(where=where, include=_METADATAS)):
            found.setdefault(event.user_id, set()).add(event.entry_id)
        for row in rows_from(await self._read(where=where, include=_METADATAS)):
            found.setdefault(row.entry.user_id, set()).add(row.id)  # a repair's rows: bases
        removed: dict[str, list[str]] = {}
        moved: set[str] = set()
        events: list[Event] = []
        dropped: list[str] = []
        for user in sorted(found):
            ids = sorted(found[user])
            fold = await self._fold_of(user, ids)
            expired = [i for i in ids if (e := fold.entry(i)) is not None and e.expired(now)]
            done = await self._void(user, fold, expired, "expire")
            removed.update(done.removed)
            moved |= done.moved
            events += done.events
            dropped += done.dropped
        return Written([], removed, moved, events, dropped)

    async def aremove_pending(self, user_id: str, event_ids: Sequence[str]) -> Written:
        """Remove tracked outputs still pending: the given ``pending`` events of one user
        (each run's own record, so another run of the same text keeps its own), and the
        rows of entries that then hold nothing. The version stays: a pending output is
        never in a block. Feedback on the same entry is an event of its own, which this
        leaves, and which folds to the same entry whether it landed before or after."""
        user = validate_user_id(user_id)
        found = await self._log_get(ids=list(event_ids), include=_METADATAS)
        pending = [e for e in events_from(found) if e.user_id == user and e.pending]
        if not pending:
            return Written([], {}, set())
        await self._drop_events([e.id for e in pending])
        entries = list(dict.fromkeys(e.entry_id for e in pending))
        fold = await self._fold_of(user, entries)
        emptied = [i for i in entries if fold.entry(i) is None]
        await self._drop_rows(emptied)
        if emptied:  # maybe the user's last rows: listings confirm the user again
            await self.state.doubt([user])
        gone = [e.id for e in pending]
        return Written([], {user: emptied} if emptied else {}, set(), [], gone)

    def supersede(
        self, user_id: str, run_id: str, *, entries: Sequence[str], output: ProfileEntry
    ) -> Written:
        """Take back what a run said before an edit: see :meth:`asupersede`."""
        return self._run(self.asupersede(user_id, run_id, entries=entries, output=output))

    async def asupersede(
        self, user_id: str, run_id: str, *, entries: Sequence[str], output: ProfileEntry
    ) -> Written:
        """After an edit of a run's output, take back every other signal the run gave: an
        edit says "not this, this", so the run's output, the feedback on it and the run's
        earlier edits stop counting, and the run's claim now records ``output`` (the
        edit, pending: the run id stays the user's, a later edit or feedback finds the
        edited text, and the claim expires like any pending output). Signals of the same
        texts from elsewhere (the user wrote it, another run) stay. ``entries`` names
        entries whose events may lack the run key (the output of a run recorded before it).

        The voided events are deleted, rows of entries left with none go (the pre-edit
        text leaves the store), the others' cached folds are rewritten, and when a
        selectable entry changed the version moves. Thread pins stay: a pin naming an
        entry that went is dropped when it is next read (``memory/pins.py``), so only the
        threads whose block held the superseded text get a new one.
        """
        user, claim_id = validate_user_id(user_id), run_event_id(run_id)
        held = events_from(await self._log_get(ids=[claim_id], include=_METADATAS))
        claim = next((e for e in held if e.user_id == user), None)
        if claim is None:  # expired meanwhile: the edit stands alone
            return Written([], {}, set())
        found = await self._log_get(
            where={"$and": [{"user_id": user}, {"run": run_id}]}, include=_METADATAS
        )
        named = {e.entry_id for e in events_from(found) if e.user_id == user}
        wanted = named | set(entries) | {claim.entry_id, output.id}
        fold = await self._fold_of(user, sorted(wanted))
        voided = [
            e.id
            for e in fold.events.values()
            if e.record is not None
            and e.record.run_id == run_id
            and e.entry_id != output.id
            and e.id != claim_id
        ]
        affected = sorted({fold.events[i].entry_id for i in voided} | {claim.entry_id})
        was_selectable = any((e := fold.entry(i)) is not None and e.selectable for i in affected)
        moved_claim = replace(claim, entry_id=output.id, record=output)
        await settle(
            self._log.upsert(
                ids=[claim_id],
                metadatas=[event_metadata(moved_claim)],
                embeddings=np.ones((1, 1), dtype=np.float32),
            )
        )
        await self._drop_events(voided)
        fold.remove([*voided, claim_id])
        fold.add([moved_claim])
        emptied = [i for i in affected if fold.entry(i) is None]
        await self._drop_rows(emptied)
        kept = [e for i in [*affected, output.id] if (e := fold.entry(i)) is not None]
        await self._write_metadata(list({e.id: e for e in kept}.values()))
        moved = {user} if was_selectable else set()
        await self.state.touch(moved)  # pins stay: one naming a text gone is dropped when read
        if emptied:  # maybe the user's last rows: listings confirm the user again
            await self.state.doubt([user])
        removed = {user: emptied} if emptied else {}
        return Written([], removed, moved, [moved_claim], [*voided, claim_id])

    async def _restore_rows(self, user: str, entry_ids: Sequence[str]) -> None:
        """Write back the rows of entries a later signal brought back while they were being
        deleted (their events hold the text; the vector is computed again)."""
        fold = await self._fold_of(user, entry_ids)
        back = [e for i in entry_ids if (e := fold.entry(i)) is not None]
        await self._write(back)

    async def _fold_of(self, user: str, entry_ids: Sequence[str]) -> Fold:
        """The fold of some entries of one user: their rows' bases and their events."""
        rows = [r for r in await self._rows_by_id(list(entry_ids)) if r.entry.user_id == user]
        fold = Fold(user, {r.id: r.entry for r in rows if r.legacy})
        for part in batches(list(entry_ids), _WHERE_IN):
            found = await self._log_get(where={"entry": {"$in": list(part)}}, include=_METADATAS)
            fold.add(e for e in events_from(found) if e.user_id == user)
        return fold

    async def _drop_events(self, ids: Sequence[str]) -> None:
        for batch in batches(list(ids), self._max_batch):
            await settle(self._log.delete(ids=list(batch)))

    async def _drop_rows(self, ids: Sequence[str]) -> None:
        """Delete entry rows by id, only those this package wrote: a brought collection's
        own documents are never deleted, even one carrying the ``pending`` mark (the
        rows are read first; ``rows_from`` keeps only rows that read as entries)."""
        for batch in batches(list(ids), self._max_batch):
            own = [r.id for r in await self._rows_by_id(list(batch))]
            if own:
                await settle(self._collection.delete(ids=own))  # ids checked as the user's

    async def adelete_user(self, user_id: str) -> int:
        """Hard-delete everything of one user, pending entries included; returns how many
        entries went.

        First a ``forget`` event: every event of the user before it folds to nothing, on
        every machine, whatever is still on disk. Then the user's state rows, entry rows and
        earlier events are deleted, ``delete_batch`` at a time (reads of other users go
        between), the state rows once more, and last the ``forget`` event itself, so no row
        names the user afterwards. A write of the user that started before the forget and
        lands after it ends may survive it: forget again once that user's writers stopped.

        A forget interrupted part-way (the process killed) leaves its event: the user is
        served nothing meanwhile (every read folds it), and the next open of the store, the
        next read of the user or the next ``forget`` finishes it (:meth:`afinish_forgets`).
        """
        user = validate_user_id(user_id)
        at = self._stamp()
        forget = Event(event_id(user, "forget", at, uuid.uuid4().hex), user, "", "forget", at)
        await self._add_events([forget])
        removed = await self._purge_before(forget)
        await self.afinish_forgets(user)  # an earlier, interrupted forget of the user
        return removed

    def finish_forgets(self, user_id: str | None = None) -> int:
        """Finish forgets that were interrupted: see :meth:`afinish_forgets`."""
        return self._run(self.afinish_forgets(user_id))

    async def afinish_forgets(self, user_id: str | None = None) -> int:
        """Finish every ``forget`` still in the log (of one user, or of all): a forget whose
        process died part-way leaves its event, so its user reads as empty but rows naming
        the user may remain. Each is done again (idempotent) and its event removed. Returns
        how many entry rows went. One ``where`` on the log when there is none."""
        where: dict[str, Any] = {"kind": "forget"}
        if user_id is not None:
            where = {"$and": [where, {"user_id": validate_user_id(user_id)}]}
        found = events_from(await self._log_get(where=where, include=_METADATAS))
        removed = 0
        for forget in sorted(found, key=lambda e: e.order):
            removed += await self._purge_before(forget)
        return removed

    async def _purge_before(self, forget: Event) -> int:
        """Delete what ``forget`` voids (the user's state rows, entry rows and earlier
        events), then the forget event itself. Returns how many entry rows went."""
        user = forget.user_id
        await self.state.forget(user)
        # the user's row ids are read whole and deleted a batch at a time, then read again
        # for rows a racing write added: reading the first ``delete_batch`` ids again per
        # batch (what this did) makes Chroma filter every row the user has left each time.
        # Ids read once and never deleted (an app's document, checked by _drop_rows) are
        # not tried again.
        user_where: dict[str, Any] = {"user_id": user}
        tried: set[str] = set()
        while ids := [i for i in await self._ids_where(user_where) if i not in tried]:
            tried.update(ids)
            for batch in batches(ids, self.delete_batch):
                await self._drop_rows(batch)
                await pause(self._write_lock)
        removed = len(tried)
        # events stamped before the forget are voided whatever they hold: their ids alone
        # are read (every event's text and metadata were half of a forget's reads and its
        # memory, issue 24, item 21); only those stamped at or after it are read in full,
        # to order ties and to find the writes that came after it
        early = await self._log_ids_where({"$and": [user_where, {"at": {"$lt": forget.at}}]})
        late = {"$and": [user_where, {"at": {"$gte": forget.at}}]}
        events = events_from(await self._log_get(where=late, include=_METADATAS))
        events = [e for e in events if e.user_id == user]
        voided = early + [e.id for e in events if e.order < forget.order]
        for batch in batches(voided, self.delete_batch):
            await self._drop_events(batch)
            await pause(self._write_lock)
        await self.state.forget(user)  # every state row: no row names a forgotten user
        later = Fold(user)
        later.add(e for e in events if e.order > forget.order and e.kind != "forget")
        back = list(later.entries().values())
        if back:  # the user wrote again before this forget was finished
            await self._write(back)
            await self.state.touch([user])  # only with rows: a version row lists the user
        await self._drop_events([forget.id])
        return removed

    def drop(self) -> None:
        """Delete this store's collections (every user's entries and state). Irreversible."""
        self._run(self.adrop())

    async def adrop(self) -> None:
        """Delete this store's collections (every user's entries and state). Irreversible."""
        client = self.client
        async with hold(self._write_lock):
            if not self.is_async:
                self._location.note_write(server_of(client))
            await settle(client.delete_collection(self.state.name))
            await settle(client.delete_collection(self._log.name))
            await settle(client.delete_collection(self._collection.name))

    # -- profile versions, stored selections and thread pins -----------------------------

    async def asnapshot(self, user_id: str, key: str) -> tuple[str, str | None, str]:
        """See :meth:`StateRows.snapshot`."""
        return await self.state.snapshot(user_id, key)

    def version(self, user_id: str) -> str:
        """See :meth:`StateRows.version`."""
        return self._run(self.aversion(user_id))

    async def aversion(self, user_id: str) -> str:
        """See :meth:`StateRows.version`."""
        return await self.state.version(user_id)

    def save_snapshot(self, user_id: str, key: str, version: str, payload: str) -> None:
        """See :meth:`asave_snapshot`."""
        self._run(self.asave_snapshot(user_id, key, version, payload))

    async def asave_snapshot(self, user_id: str, key: str, version: str, payload: str) -> None:
        """See :meth:`StateRows.save_snapshot`. A snapshot only saves later reads work, so
        one the disk has no room for is skipped: a full disk fails writes, not reads."""
        try:
            await self.state.save_snapshot(user_id, key, version, payload)
        except StoreFullError:
            return

    async def apin(
        self, user_id: str, thread: str, key: str, *, now: float
    ) -> tuple[str, float] | None:
        """See :meth:`StateRows.pin`."""
        return await self.state.pin(user_id, thread, key, now=now)

    async def adrop_pin(self, user_id: str, thread: str, key: str) -> None:
        """See :meth:`StateRows.drop_pin`."""
        await self.state.drop_pin(user_id, thread, key)

    async def asave_pin(
        self,
        user_id: str,
        thread: str,
        key: str,
        payload: str,
        *,
        version: str,
        now: float,
        expires_at: float,
    ) -> tuple[str, float] | None:
        """See :meth:`StateRows.save_pin`."""
        return await self.state.save_pin(
            user_id, thread, key, payload, version=version, now=now, expires_at=expires_at
        )

    # -- reads ----------------------------------------------------------------------------

    def entries_by_id(self, user_id: str, ids: Sequence[str]) -> dict[str, ProfileEntry]:
        """Entries of one user by id: see :meth:`aentries_by_id`."""
        return self._run(self.aentries_by_id(user_id, ids))

    async def aentries_by_id(self, user_id: str, ids: Sequence[str]) -> dict[str, ProfileEntry]:
        """The entries named by ``ids`` that still have a row and belong to the user (one
        read by id): what a thread pin names, checked before it is served. A deleted or
        forgotten entry has no row; the record is the row's cached fold (its text and
        input never change under one id)."""
        user = validate_user_id(user_id)
        rows = await self._rows_by_id(list(dict.fromkeys(ids)))
        return {r.id: r.entry for r in rows if r.entry.user_id == user}

    def load(self, user_id: str, *, with_vectors: bool = True) -> StoredProfile:
        """Every entry of one user (and its style vector), oldest first: see :meth:`aload`."""
        return self._run(self.aload(user_id, with_vectors=with_vectors))

    async def aload(self, user_id: str, *, with_vectors: bool = True) -> StoredProfile:
        """Every entry of one user (and its style vector), oldest first."""
        return (await self.aload_fold(user_id, with_vectors=with_vectors))[0]

    def load_many(self, user_ids: Sequence[str]) -> dict[str, tuple[ProfileEntry, ...]]:
        """Entries of several users at once: see :meth:`aload_many`."""
        return self._run(self.aload_many(user_ids))

    async def aload_many(self, user_ids: Sequence[str]) -> dict[str, tuple[ProfileEntry, ...]]:
        """Every entry of each of ``user_ids`` (no vectors), oldest first, folded as
        :meth:`aload` folds one user's: two reads for the whole group (a ``$in`` of the users
        on the rows and on the log; more, a page at a time, past ``_READ_PAGE`` results),
        where one :meth:`aload` per user costs two reads each. Callers pass groups of a
        hundred or so users (``outprofile stats`` over every user)."""
        users = [validate_user_id(u) for u in dict.fromkeys(user_ids)]
        if not users:
            return {}
        where = {"user_id": users[0]} if len(users) == 1 else {"user_id": {"$in": users}}
        folds = {user: Fold(user) for user in users}
        for row in await self._rows_where(where):
            fold = folds.get(row.entry.user_id)
            if fold is not None and row.legacy:
                fold.bases[row.id] = row.entry
        events = await self._log_get(where=where, include=_METADATAS, limit=_READ_PAGE + 1)
        if len(events["ids"]) > _READ_PAGE:  # read by id, a page at a time
            ids = (await self._log_get(where=where, include=[]))["ids"]
            pages = [
                await self._log_get(ids=list(p), include=_METADATAS)
                for p in batches(ids, _READ_PAGE)
            ]
        else:
            pages = [events]
        for page in pages:
            for event in events_from(page):
                fold = folds.get(event.user_id)
                if fold is not None:
                    fold.add([event])
        return {
            user: tuple(sorted(fold.entries().values(), key=lambda e: (e.created_at, e.id)))
            for user, fold in folds.items()
        }

    async def aload_fold(
        self, user_id: str, *, with_vectors: bool = True
    ) -> tuple[StoredProfile, Fold]:
        """Every entry of one user not expired by the store's clock, oldest first, folded
        from the user's events (and the bases of rows written before the log), and the fold
        itself (a reader keeps it to
        take later events as deltas: :meth:`acatch_up`).

        A profile of up to ``eager_rows`` entries comes back with its vectors in one read;
        a larger one reads metadata only and fetches vectors by id when asked (with an
        async client, at once: selection asks for them in code that cannot wait for I/O).
        An entry whose row a racing delete removed gets its vector computed again.
        """
        user = validate_user_id(user_id)
        where = {"user_id": user}
        eager: Any = None
        if with_vectors:
            include: Any = [*_METADATAS, "embeddings"]
            first = await self._read(where=where, include=include, limit=self.eager_rows + 1)
            if len(first["ids"]) <= self.eager_rows:
                eager = first
        if eager is not None:
            rows = rows_from(eager)
            row_ids = {r.id for r in rows}
        else:
            row_ids, rows = await self._row_ids_and_bases(where)
        fold = Fold(user, {r.id: r.entry for r in rows if r.legacy and r.entry.user_id == user})
        fold.add(await self._user_events(user))
        now = self.clock()  # an expired entry reads as gone, before any expiry deletes it
        live = [e for e in fold.entries().values() if not e.expired(now)]
        entries = sorted(live, key=lambda e: (e.created_at, e.id))
        if not with_vectors:
            zeros = np.zeros((len(entries), self._dimension), np.float32)
            return StoredProfile(tuple(entries), zeros), fold
        lost = [e for e in entries if e.id not in row_ids]
        known = dict(
            zip([e.id for e in lost], await self._embed([e.text for e in lost]), strict=True)
        )
        if eager is not None:
            known.update(
                zip(eager["ids"], np.asarray(eager["embeddings"], np.float32), strict=True)
            )
            vectors = np.zeros((len(entries), self._dimension), dtype=np.float32)
            for n, entry in enumerate(entries):
                vectors[n] = known[entry.id]
            return StoredProfile(tuple(entries), vectors), fold
        if self.is_async:
            found = await self.avectors([e.id for e in entries if e.id not in known])
            known.update(zip([e.id for e in entries if e.id not in known], found, strict=True))
            rows_of = np.stack([known[e.id] for e in entries]) if entries else None
            vectors = rows_of if rows_of is not None else np.zeros((0, self._dimension), np.float32)
            return StoredProfile(tuple(entries), vectors), fold

        def fetch(ids: list[str]) -> np.ndarray:
            asked = [i for i in ids if i not in known]
            fetched = dict(zip(asked, self.vectors(asked), strict=True)) if asked else {}
            return np.stack([known[i] if i in known else fetched[i] for i in ids])

        return StoredProfile(tuple(entries), fetch=fetch, dimension=self._dimension), fold

    def catch_up(self, fold: Fold, *, since: float | None = None) -> Caught:
        """See :meth:`acatch_up`."""
        return self._run(self.acatch_up(fold, since=since))

    async def acatch_up(self, fold: Fold, *, since: float | None = None) -> Caught:
        """What the log holds for ``fold``'s user that the fold does not, and what it holds
        no more: one read of the user's event ids, then the new events by id, and the
        vectors of the entries they name. Reads only: the caller applies the result
        (:meth:`Fold.add`, :meth:`Fold.remove`) in one step, so a reader moves its rankings
        by the delta instead of loading the profile again, whichever process wrote.

        With ``since``, only the ids of events stamped at or after it are read (a user's
        recent events, not all of them), after one read by id shows the fold's oldest event
        (or base row) is still there: a ``forget`` or a repair, which remove every older
        event, make the read whole again. A ``delete`` needs no such check (its own event
        is recent, and voids the older ones it removes); an expiry only removes pending
        outputs, which no block holds."""
        user = fold.user_id
        if since is not None and not await self._still_there(fold):
            since = None
        if since is None:
            ids = await self._log_ids(user)
        else:
            where = {"$and": [{"user_id": user}, {"at": {"$gte": float(since)}}]}
            ids = list((await self._log_get(where=where, include=[]))["ids"])
        held = set(ids)
        new = [i for i in ids if i not in fold.events]
        gone = [
            i
            for i, event in list(fold.events.items())
            if i not in held and (since is None or event.at >= since)
        ]
        found: list[Event] = []
        for part in batches(new, self._max_batch):
            result = await self._log_get(ids=list(part), include=_METADATAS)
            found.extend(e for e in events_from(result) if e.user_id == user)
        named = {e.record.id: e.record for e in found if e.record is not None}
        vectors = await self.aentry_vectors(list(named.values()))
        return Caught(found, gone, vectors, full=since is None)

    async def adelta(self, user_id: str, coverage: Coverage) -> Delta | None:
        """What the user's log gained since a fold with ``coverage`` was made, as changed
        entries, or None when it cannot be told that way: the log lost an event, or gained
        one stamped before the boundary (a writer whose clock is behind), a pending event
        changed, or a ``forget`` came. Then the caller loads the whole profile.

        Two reads of the log, then one of the changed entries' events: the ids of the
        events before the boundary (counted and digested); the events after it,
        every pending one and every ``credit`` event (which name their entries in a list
        no ``where`` matches); then every event of the entries the new events name, to
        fold each with and without what is new."""
        user = validate_user_id(user_id)
        before = {"$and": [{"user_id": user}, {"at": {"$lt": coverage.boundary}}]}
        old = (await self._log_get(where=before, include=[]))["ids"]
        if len(old) != coverage.count or ids_digest(old) != coverage.digest:
            return None
        # one read for the events after the boundary, every pending one and every credit
        wanted = [{"at": {"$gte": coverage.boundary}}, {"pending": True}, {"kind": "credit"}]
        found = await self._events_where(user, {"$and": [{"user_id": user}, {"$or": wanted}]})
        recent = [e for e in found if not e.pending and e.at >= coverage.boundary]
        pending = [e for e in found if e.pending]
        credits = [e for e in found if e.kind == "credit"]
        held = {e.id for e in recent}
        if not coverage.recent <= held:
            # an event after the boundary went without a new one (every delete adds its
            # own event, and an edit rewrites a pending claim: a guard, e.g. for a repair)
            return None
        hashes = {e.id: pending_hash(e) for e in pending}
        if any(hashes.get(i) != h for i, h in coverage.pending.items()):
            return None  # a pending event went (expired, edited away) or was rewritten
        new = [e for e in recent if e.id not in coverage.recent]
        new += [e for e in pending if e.id not in coverage.pending]
        if any(e.user_id != user or e.kind == "forget" for e in new):
            return None
        touched = sorted({i for e in new for i in named_entries(e)})
        fold = await self._fold_of(user, touched)
        fold.add(credits)
        then = Fold(user, fold.bases)
        fresh = {e.id for e in new}
        then.add(e for e in fold.events.values() if e.id not in fresh)
        changes = [(then.entry(i), fold.entry(i)) for i in touched]
        return Delta(changes, coverage_of(old, [*recent, *pending], floor=coverage.boundary))

    async def _still_there(self, fold: Fold) -> bool:
        """Whether the fold's probe (:meth:`Fold.probe`) is still in the store."""
        probe = fold.probe()
        if probe is None:
            return False
        kind, id_ = probe
        read = self._log_get if kind == "event" else self._read
        return bool((await read(ids=[id_], include=[]))["ids"])

    async def aentry_vectors(self, entries: Sequence[ProfileEntry]) -> dict[str, np.ndarray]:
        """Style vectors of some entries of one user, by id: their rows', or computed again
        from the text for an entry whose row is gone (as a load does)."""
        known = await self._stored_vectors([e.id for e in entries])
        lost = [e for e in entries if e.id not in known]
        known.update(
            zip([e.id for e in lost], await self._embed([e.text for e in lost]), strict=True)
        )
        return known

    async def _stored_vectors(self, ids: Sequence[str]) -> dict[str, np.ndarray]:
        """The vectors the rows of ``ids`` hold, by id (ids without a row are missing).

        ``ids`` come from a read filtered by ``user`` and every id hashes its user in, so a
        plain id lookup stays inside the user: adding ``where`` here makes Chroma scan the
        collection (seconds at 10k entries) for no gain in isolation.
        """
        known: dict[str, np.ndarray] = {}
        for part in batches(list(ids), self._max_batch):
            found = await self._read(ids=list(part), include=["embeddings"])
            known.update(
                zip(found["ids"], np.asarray(found["embeddings"], np.float32), strict=True)
            )
        return known

    def vectors(self, ids: list[str]) -> np.ndarray:
        """Style vectors of the given entry ids of one user: see :meth:`avectors`."""
        return self._run(self.avectors(ids))

    async def avectors(self, ids: list[str]) -> np.ndarray:
        """Style vectors of one user's entries, rows in the order of ``ids`` (zeros if gone)."""
        known = await self._stored_vectors(ids)
        rows = np.zeros((len(ids), self._dimension), dtype=np.float32)
        for n, id_ in enumerate(ids):
            if id_ in known:
                rows[n] = known[id_]
        return rows

    def run(self, run_id: str) -> Event | None:
        """See :meth:`arun`."""
        return self._run(self.arun(run_id))

    async def arun(self, run_id: str) -> Event | None:
        """The output recorded under a run id (its ``pending`` event), read by id: a run id
        is claimed by the first run that records it, so it names one run of one user."""
        found = events_from(await self._log_get(ids=[run_event_id(run_id)], include=_METADATAS))
        return found[0] if found else None

    async def afind_runs(self, run_id: str, user_id: str | None = None) -> list[ProfileEntry]:
        """Entries whose rows carry a run id (of one user, when given), as they fold now,
        newest first: outputs tracked before the log (and entries added with a run id),
        which no claim names. A metadata scan of the entries: :meth:`arun` is the read by
        id that tracked runs use."""
        owner = None if user_id is None else validate_user_id(user_id)
        rows = rows_from(await self._read(where={"run_id": run_id}, include=_METADATAS))
        found: list[ProfileEntry] = []
        for user in sorted({r.entry.user_id for r in rows} - {""}):
            if owner not in (None, user):
                continue
            ids = [r.id for r in rows if r.entry.user_id == user]
            fold = await self._fold_of(user, ids)
            found.extend(e for i in ids if (e := fold.entry(i)) is not None and e.run_id == run_id)
        return sorted(found, key=lambda e: (-e.updated_at, e.id))

    async def aentry(self, user_id: str, entry_id: str) -> ProfileEntry | None:
        """One entry of one user as its events fold now (None when it does not exist)."""
        user = validate_user_id(user_id)
        return (await self._fold_of(user, [entry_id])).entry(entry_id)

    async def astale_pending(
        self, user_id: str | None, *, now: float, ttl_s: float
    ) -> dict[str, list[str]]:
        """Ids of ``pending`` events (tracked outputs) of one user, or of every user (one
        ``where`` either way), by user, that are stale by two
        clocks: recorded more than ``ttl_s`` before ``now`` by the clock of the process
        that recorded them, and *seen* so at least ``ttl_s`` ago by the clock of the
        process judging (``now``). The first sighting marks the event (``stale_at``) and
        keeps it; a later look deletes it. So a worker whose clock is days slow records
        outputs that a healthy worker keeps for ``ttl_s`` of its own time, not zero, and an
        output lives between ``ttl_s`` and twice that (plus the time between checks)."""
        user = None if user_id is None else validate_user_id(user_id)
        cutoff = float(now - ttl_s)
        where: dict[str, Any] = {"$and": [{"pending": True}, {"at": {"$lt": cutoff}}]}
        if user is not None:
            where["$and"].insert(0, {"user_id": user})
        found = await self._log_get(where=where, include=_METADATAS)
        stale: dict[str, list[str]] = {}
        unmarked = []
        for id_, meta in zip(found["ids"], found["metadatas"] or [], strict=True):
            owner = (meta or {}).get("user_id")
            if not isinstance(owner, str) or user not in (None, owner):
                continue
            if not meta or not meta.get("pending"):
                continue
            seen = meta.get(_STALE_AT)
            if not isinstance(seen, float):
                unmarked.append(id_)
            elif seen <= cutoff:
                stale.setdefault(owner, []).append(id_)
        for batch in batches(unmarked, self._max_batch):
            marks: list[Any] = [{_STALE_AT: float(now)} for _ in batch]
            await settle(self._log.update(ids=list(batch), metadatas=marks))
        return stale

    def count(self, user_id: str) -> int:
        """Number of entries stored for one user."""
        return self._run(self.acount(user_id))

    async def acount(self, user_id: str) -> int:
        """Number of entries stored for one user (their rows: no fold; rows that carry the
        package's mark but do not read as entries, an app's in a brought collection, are
        not counted)."""
        return len(await self._rows_where({"user_id": validate_user_id(user_id)}))

    def total(self) -> int:
        """Number of entries in the whole collection (all users; no content is read)."""
        return self._run(self.atotal())

    async def atotal(self) -> int:
        """Number of entries in the whole collection (all users; no content is read)."""
        async with hold(self._reads):
            return int(await settle(self._collection.count()))

    def user_ids(self) -> list[str]:
        """The users that have entries: see :meth:`auser_ids`."""
        return self._run(self.auser_ids())

    async def auser_ids(self) -> list[str]:
        """The users that have entries (pending outputs count: their rows are entries).
        Reads the small version rows of the state collection, two reads per page of state
        rows (no entry text); only a user whose row is *doubted* (a delete, an expiry or an
        edit may have taken the last entry; rows of earlier releases) is confirmed with a
        read of one entry id. A forgotten user has no version row: not listed. At 10,000
        users this was 10,000 reads, one per user (41 s).
        """
        listed = await self.state.listed()
        found = [user for user, doubted in listed.items() if not doubted]
        for user in (user for user, doubted in listed.items() if doubted):
            if await self._ids_where({"user_id": user}, limit=1):
                found.append(user)
        return sorted(found)

    async def _rows_where(self, where: Any) -> list[Row]:
        """Every entry row matching ``where``. Chroma's SQLite fails a read of more rows than
        it has SQL variables for ("too many SQL variables" at 100k rows), so a result larger
        than one page is read as ids first, then by id, a page at a time."""
        first = await self._read(where=where, include=_METADATAS, limit=_READ_PAGE + 1)
        if len(first["ids"]) <= _READ_PAGE:
            return rows_from(first)
        ids = await self._ids_where(where)
        return [r for page in batches(ids, _READ_PAGE) for r in await self._rows_by_id(list(page))]

    async def _row_ids_and_bases(self, where: Any) -> tuple[set[str], list[Row]]:
        """The ids of the entry rows matching ``where`` (this package's), and those rows
        read in full that hold a base: written before the log (no ``lg`` mark). A row
        written since the log is a writer's cache of the fold, which a load computes from
        the events anyway, so its text and metadata are not read: two reads of ids (every
        row, the marked rows), then the few unmarked rows by id. Reading every row in full
        was a third of a cold read and a second copy of every text in memory (issue 24,
        item 21). Chroma's ``$ne`` would match rows without the mark in one read, but that
        it matches a missing key is not documented, and a base missed is an entry lost."""
        ids = await self._ids_where(where)
        marked = set(await self._ids_where({"$and": [where, {LOG_MARK: True}]}))
        rows = [
            r
            for page in batches([i for i in ids if i not in marked], _READ_PAGE)
            for r in await self._rows_by_id(list(page))
        ]
        return marked | {r.id for r in rows}, rows

    async def _rows_by_id(self, ids: list[str]) -> list[Row]:
        if not ids:
            return []
        return rows_from(await self._read(ids=ids, include=_METADATAS))

    async def _user_events(self, user: str) -> list[Event]:
        """Every event of one user."""
        return await self._events_where(user, {"user_id": user})

    async def _events_where(self, user: str, where: Any) -> list[Event]:
        """The events of one user matching ``where``, paged as :meth:`_rows_where` pages
        rows (Chroma fails a read of too many rows at once)."""
        first = await self._log_get(where=where, include=_METADATAS, limit=_READ_PAGE + 1)
        if len(first["ids"]) <= _READ_PAGE:
            return [e for e in events_from(first) if e.user_id == user]
        found: list[Event] = []
        for page in batches(await self._log_ids_where(where), _READ_PAGE):
            result = await self._log_get(ids=list(page), include=_METADATAS)
            found.extend(e for e in events_from(result) if e.user_id == user)
        return found

    async def _log_ids(self, user: str) -> list[str]:
        return await self._log_ids_where({"user_id": user})

    async def _log_ids_where(self, where: Any) -> list[str]:
        return list((await self._log_get(where=where, include=[]))["ids"])

    async def _log_get(self, **query: Any) -> Any:
        return await self._get(self._log, query)

    async def _read(self, **query: Any) -> Any:
        """A read of the entries collection. In a collection the app brought (``_shared``),
        every read not by id (by user, by run, a scan) matches only this package's own rows
        (``rows.OWN_ROWS``), so Chroma never returns the app's documents, whatever
        ``user_id`` they carry, to a read, a count, a listing or a user's delete. The filter
        costs (a user's ids: 15 -> 48 ms at 5,000 rows), so a collection this package
        created goes without; there, and for reads by id, ``rows_from`` still skips any row
        that is not its own, and in a brought collection ``_drop_rows`` deletes only rows
        that are."""
        if self._shared and "ids" not in query:
            query["where"] = own_where(query.get("where"))
        return await self._get(self._collection, query)

    async def _get(self, collection: Any, query: dict[str, Any]) -> Any:
        """``collection.get`` under the location's read lock (embedded Chroma can fail a read
        that races a write of another thread or process: "Error finding id"; see
        docs/reliability.md), within ``limits.results_per_read``: ids asked for in pieces,
        a ``where`` read in pages (``limit`` / ``offset``)."""
        page = self.limits.results_per_read
        if page is None:
            async with hold(self._reads):
                return await settle(collection.get(**query))
        if "ids" in query:
            ids = list(query.pop("ids"))
            pieces = []
            for part in list(batches(ids, page)) or [[]]:
                async with hold(self._reads):
                    pieces.append(await settle(collection.get(**query, ids=list(part))))
            return _merged(pieces)
        wanted, offset = query.pop("limit", None), int(query.pop("offset", None) or 0)
        pages: list[Any] = []
        got = 0
        while True:
            take = page if wanted is None else min(page, wanted - got)
            async with hold(self._reads):
                found = await settle(collection.get(**query, limit=take, offset=offset + got))
            pages.append(found)
            got += len(found["ids"])
            if len(found["ids"]) < take or (wanted is not None and got >= wanted):
                return _merged(pages)

    async def _ids_where(self, where: Any, limit: int | None = None) -> list[str]:
        return list((await self._read(where=where, include=[], limit=limit))["ids"])


class _Unopened:
    """The collection of a store given an async client before :meth:`ProfileStore.aopen`."""

    def __getattr__(self, name: str) -> Any:
        raise AsyncClientError(
            "this store was given an async Chroma client and is not open yet: "
            "await store.aopen() (the memory's a-prefixed methods do) before using it"
        )


def _merged(results: Sequence[Any]) -> dict[str, Any]:
    """Several ``get`` results as one (their lists end to end)."""
    first = results[0]
    if len(results) == 1:
        return dict(first)
    merged: dict[str, Any] = {"ids": [i for r in results for i in r["ids"]]}
    for key in ("metadatas", "documents", "embeddings"):
        if first.get(key) is not None:
            merged[key] = [row for r in results for row in r[key]]
        else:
            merged[key] = None
    return merged


def _shared(metadata: dict[str, Any]) -> bool:
    """Whether a collection may hold documents that are not this package's: one it adopted
    (marked since), or one whose index settings are not the ones it creates collections
    with (adopted by a release before the mark)."""
    if metadata.get(_SHARED_KEY) is True:
        return True
    return any(metadata.get(key) != value for key, value in _HNSW.items())


def _is_cloud(client: Any) -> bool:
    """Whether a client talks to Chroma Cloud (its per-call limits apply)."""
    try:
        host = str(getattr(client.get_settings(), "chroma_server_host", "") or "")
    except Exception:  # a client without settings: not one of Chroma's own
        return False
    return host.endswith("trychroma.com")


def _fingerprint(embeddings: Embeddings) -> tuple[str, int]:
    if isinstance(embeddings, StyleEmbeddings):
        return embeddings.fingerprint, embeddings.dimension
    dimension = len(embeddings.embed_query("outprofile fingerprint probe"))
    return f"{type(embeddings).__module__}.{type(embeddings).__qualname__}", dimension
