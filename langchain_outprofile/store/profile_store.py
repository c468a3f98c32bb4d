"""Profile store: one Chroma collection holding many users' profile entries.

The only place entries are written to and read from Chroma (with ``clients.py``, ``rows.py``
and ``state.py`` beside it, this package is the only chromadb import). Every read, delete
and export is filtered by ``user_id`` here; there is no unfiltered read path for entry
content. Embeddings are always passed explicitly, so Chroma's default embedding function
(which downloads a model) never runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Awaitable, Callable, Collection, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from chromadb.api import AsyncClientAPI, ClientAPI
from langchain_core.embeddings import Embeddings

from langchain_outprofile.embeddings import StyleEmbeddings
from langchain_outprofile.errors import AsyncClientError, EmbeddingMismatchError, InvalidInputError
from langchain_outprofile.store.clients import (
    AsyncGuardedCollection,
    GuardedCollection,
    StoreDamagedError,
    StoreFullError,
    default_path,
    failure_kind,
    location_lock,
    persistent_client,
    repair_hint,
    server_of,
)
from langchain_outprofile.store.io import (
    AsyncWriteLock,
    NoLock,
    drive,
    hold,
    pause,
    run_now,
    settle,
)
from langchain_outprofile.store.rows import entries_from, to_metadata
from langchain_outprofile.store.state import STATE_SUFFIX, StateRows, batches
from langchain_outprofile.types import ProfileEntry, StoredProfile
from langchain_outprofile.validation import DEFAULT_COLLECTION, validate_user_id

__all__ = ["DEFAULT_COLLECTION", "SCHEMA_VERSION", "ProfileStore", "Written"]

SCHEMA_VERSION = 2
_READABLE_SCHEMAS = (1, 2)  # row format 1 is still read; every write uses format 2
# The vector index only serves direct similarity queries (selection never searches it), so
# it is built cheaply: ef_construction and M well below Chroma's defaults of 100 and 16.
_HNSW = {"hnsw:space": "cosine", "hnsw:construction_ef": 32, "hnsw:M": 8}
# leaves room for the state collection's suffix within Chroma's 512 characters
_COLLECTION_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9._-]{1,504}[a-zA-Z0-9]")
_INCLUDE_ALL: Any = ["documents", "metadatas"]
_READ_PAGE = 10_000
# Set on collections created by a release that writes a version row for every user it
# writes. A collection without it (written before version rows existed) may hold users with
# no version row: ``user_ids`` then scans the entries once and writes the missing rows.
_VERSIONED_KEY = "outprofile_versioned"
_BACKFILL_MARK = "versions-backfilled"
_SCAN_PAGE = 5000
_INLINE_EMBEDS = 64  # an async write embeds up to this many texts on the loop itself
_T = TypeVar("_T")


@dataclass(frozen=True)
class Written:
    """What one write did: the entries as now stored, the ids removed (by user), and for
    each user whose profile version it renewed, ``(version before, version after)`` read
    and set in the same hold of the lock (a reader that cached the user's profile at the
    version before may apply the change instead of reading the profile again)."""

    entries: list[ProfileEntry]
    removed: dict[str, list[str]]
    versions: dict[str, tuple[str | None, str]]
    """``{user: (version before, version after)}``; the version before is None for a user
    the write was not asked to watch."""


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

    def __init__(
        self,
        *,
        path: str | Path | None = None,
        client: ClientAPI | AsyncClientAPI | None = None,
        collection_name: str = DEFAULT_COLLECTION,
        embeddings: Embeddings | None = None,
        documents: bool = False,
    ) -> None:
        if path is not None and client is not None:
            raise InvalidInputError("pass either path= or client=, not both")
        if client is None:
            client = persistent_client(path or default_path())
        self.client: Any = client  # ClientAPI, or AsyncClientAPI when ``is_async``
        self.documents = documents
        self.embeddings = embeddings or StyleEmbeddings()
        self.is_async = isinstance(client, AsyncClientAPI)
        self._fingerprint, self._dimension = _fingerprint(self.embeddings)
        self._name = collection_name
        self._versioned = False  # set by _open_collection
        self._location = location = location_lock(client)  # type: ignore[arg-type]
        self._write_lock: Any = AsyncWriteLock(location) if self.is_async else location
        # what reads hold: the whole lock on an embedded store, the thread part on a server,
        # nothing with an async client (a server orders its own reads)
        self._reads: Any = NoLock() if self.is_async else location.reads
        self._collection: Any = _Unopened()
        self._opening: asyncio.Lock | None = None
        if not self.is_async:
            with location:
                location.refresh(server_of(client))
                drive(self._open(collection_name))

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
        client = self.client
        collection = await self._open_collection(collection_name)
        self._max_batch = max(1, int(await settle(client.get_max_batch_size())))
        state_name = f"{collection_name}{STATE_SUFFIX}"
        state_rows = await self._opened(
            state_name,
            lambda: client.get_or_create_collection(
                name=state_name,
                metadata={"outprofile_state": SCHEMA_VERSION},
                embedding_function=None,
            ),
        )
        # a damaged store fails here, naming the repair, not in the middle of a write
        await settle(collection.count())
        await settle(state_rows.count())
        self.state = StateRows(state_rows, self._reads, self._max_batch)
        self._collection = collection

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
        if name.endswith(STATE_SUFFIX):
            raise InvalidInputError(
                f"collection_name {name!r} ends with {STATE_SUFFIX!r}, which names the state "
                "collection kept beside every entries collection; choose another name"
            )
        wanted = {
            "outprofile_schema": SCHEMA_VERSION,
            "embedding": self._fingerprint,
            "dimension": self._dimension,
            _VERSIONED_KEY: True,
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
        if found.get("outprofile_schema") not in _READABLE_SCHEMAS:
            raise EmbeddingMismatchError(
                f"collection {name!r} has outprofile_schema={found.get('outprofile_schema')!r}; "
                f"this version reads {list(_READABLE_SCHEMAS)}: upgrade langchain-outprofile, "
                "or use another collection_name"
            )
        for key in ("embedding", "dimension"):
            if found.get(key) != wanted[key]:
                raise EmbeddingMismatchError(
                    f"collection {name!r} was written with {key}={found.get(key)!r}, but this "
                    f"memory uses {key}={wanted[key]!r}; open it with the embedder it was "
                    "written with, or use another collection_name"
                )
        self._versioned = found.get(_VERSIONED_KEY) is True
        return collection

    async def _adopted(
        self, collection: Any, found: dict[str, Any], wanted: dict[str, Any]
    ) -> dict[str, Any]:
        """Give a collection this package did not create its metadata keys (its index
        settings stay: Chroma cannot change them), and return its metadata."""
        ours = {k: v for k, v in wanted.items() if not k.startswith("hnsw:")}
        merged = {**{k: v for k, v in found.items() if not k.startswith("hnsw:")}, **ours}
        await settle(collection.modify(metadata=merged))
        return {**found, **ours}

    async def _opened(self, name: str, open_: Callable[[], Any]) -> Any:
        """``open_()``'s collection, guarded (see :class:`GuardedCollection`); Chroma's
        failures of a damaged store or a full disk while opening are typed as in a call."""
        client = self.client
        lock = self._location
        try:
            collection = await settle(open_())
        except Exception as error:
            kind = failure_kind(error, lock)
            if kind is None:
                raise
            where = lock.location
            if kind == "full":
                raise StoreFullError(f"the disk of the store at {where} is full: {error}") from (
                    error
                )
            raise StoreDamagedError(
                f"the store at {where} is damaged: opening collection {name!r} fails with "
                f"{error}; {repair_hint(where, name)}"
            ) from error

        def reopen() -> Any:
            return client.get_collection(name, embedding_function=None)

        if self.is_async:
            return AsyncGuardedCollection(collection, lock, reopen)
        return GuardedCollection(collection, lock, reopen)

    def _run(self, operation: Coroutine[Any, Any, _T]) -> _T:
        """Run one of this store's coroutines for its synchronous method."""
        return run_now(operation, async_client=self.is_async)

    # -- writes ---------------------------------------------------------------------------

    def upsert(self, entries: Sequence[ProfileEntry]) -> list[ProfileEntry]:
        """Store entries, folding each into any stored entry with the same id.

        Returns the entries as stored (see :meth:`write` for what else a write reports).
        """
        return self.write(entries).entries

    def write(self, entries: Sequence[ProfileEntry], *, watch: Collection[str] = ()) -> Written:
        """Store entries, folding each into any stored entry with the same id, and report
        the entries as stored and the users whose profile version moved (see :meth:`awrite`)."""
        return self._run(self.awrite(entries, watch=watch))

    async def awrite(
        self, entries: Sequence[ProfileEntry], *, watch: Collection[str] = ()
    ) -> Written:
        """Store entries, folding each into any stored entry with the same id, and report
        the entries as stored and the users whose profile version moved.

        Writes go in batches under the client's maximum; each batch's read-fold-write holds
        the location's lock, which the other processes of this machine take too, so no
        concurrent fold is lost. A one-batch write renews, in the same hold of the lock, the
        version of each user for whom it can change a block: an entry that is not selectable
        before (or new) and after the write (pending, rejected) leaves the version alone, so
        a tracked run's pending output keeps every saved selection valid. For the users in
        ``watch`` the version before is read too (one more read: see :class:`Written`). See
        :meth:`_batched` for writes of several batches.
        """
        merged_all: list[ProfileEntry] = []
        moved: set[str] = set()

        async def fold(batch: Sequence[ProfileEntry]) -> None:
            stored = {e.id: e for e in await self._get_by_ids([e.id for e in batch])}
            await self._write([e for e in batch if e.id not in stored])
            merged = [stored[e.id].merged_with(e) if e.id in stored else e for e in batch]
            await self._write_metadata([m for m in merged if m.id in stored])
            merged_all.extend(merged)
            moved.update(
                m.user_id
                for m in merged
                if m.selectable or (m.id in stored and stored[m.id].selectable)
            )

        versions = await self._batched(_fold_duplicates(entries), fold, moved, watch)
        return Written(merged_all, {}, versions)

    def replace(self, entries: Sequence[ProfileEntry]) -> None:
        """Store entries exactly as given (no folding): see :meth:`areplace`."""
        self._run(self.areplace(entries))

    async def areplace(self, entries: Sequence[ProfileEntry]) -> None:
        """Store entries exactly as given (no folding): for imports and feedback rewrites.

        When several entries share an id, the last one wins (Chroma refuses duplicate ids).
        """
        unique = list({e.id: e for e in entries}.values())
        await self._batched(unique, self._write, {e.user_id for e in unique}, ())

    async def _batched(
        self,
        entries: Sequence[ProfileEntry],
        write: Callable[[Sequence[ProfileEntry]], Awaitable[None]],
        moved: set[str],
        watch: Collection[str],
    ) -> dict[str, tuple[str | None, str]]:
        """``write`` each batch under the lock, then renew the versions of the users in
        ``moved`` (which ``write`` may fill in) and make sure every other written user has
        a version row. Returns ``{user: (version before, version after)}`` of the renewed.

        A call of several batches releases the lock between them (:meth:`LocationLock.pause`:
        waiting readers go first) and renews the versions of every written user before every
        batch and at the end, so a process killed part-way leaves no selection of the old
        profile current. A call that fails renews them on the way out (the batches before
        the failure did land).
        """
        parts = list(batches(entries, self._max_batch))
        several = len(parts) > 1
        users = {e.user_id for e in entries}
        try:
            for number, batch in enumerate(parts):
                if number:
                    await pause(self._write_lock)
                async with hold(self._write_lock):
                    if several:
                        await self.state.touch(e.user_id for e in batch)
                    await write(batch)
                    if not several:
                        return await self._settle(users, moved, watch)
        except BaseException:
            with contextlib.suppress(Exception):  # best effort: the first error is the news
                await self._touch(entries)
            raise
        async with hold(self._write_lock):
            return await self._settle(users, users, ())

    async def _touch(self, written: Sequence[ProfileEntry]) -> None:
        """New versions for the users just written, after their entries (design.md)."""
        if written:
            async with hold(self._write_lock):
                await self.state.touch(e.user_id for e in written)

    async def _settle(
        self, users: set[str], moved: set[str], watch: Collection[str]
    ) -> dict[str, tuple[str | None, str]]:
        """After the entries: renew the versions of ``moved``; the other ``users`` only need
        a version row to exist (``user_ids`` lists users by it). Under the lock."""
        renewed = await self.state.touch(moved & users, watch) if moved & users else {}
        await self.state.ensure(users - moved)
        return renewed

    async def _write(self, batch: Sequence[ProfileEntry]) -> None:
        if not batch:
            return
        texts = [e.text for e in batch]
        await settle(
            self._collection.upsert(
                ids=[e.id for e in batch],
                metadatas=[to_metadata(e) for e in batch],
                embeddings=await self._embed(texts),
                **({"documents": texts} if self.documents else {}),
            )
        )

    async def _write_metadata(self, merged: Sequence[ProfileEntry]) -> None:
        """Rewrite the rows of entries folded into stored ones: same id, so same text and
        vector; only signals, strength and fields change (no embedding, no index update)."""
        if merged:
            await settle(
                self._collection.update(
                    ids=[e.id for e in merged], metadatas=[to_metadata(e) for e in merged]
                )
            )

    async def _embed(self, texts: list[str]) -> np.ndarray:
        """Style vectors of ``texts``. With an async client the embedder's own coroutine
        is awaited (a remote embedder), and a large batch of the offline embedder runs on a
        worker thread (its CPU time would stall the loop)."""
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

    def remove(
        self, user_id: str, ids: Iterable[str], *, pending_only: bool = False, watch: bool = False
    ) -> Written:
        """Delete the given entries of one user: see :meth:`aremove`."""
        return self._run(self.aremove(user_id, ids, pending_only=pending_only, watch=watch))

    async def aremove(
        self, user_id: str, ids: Iterable[str], *, pending_only: bool = False, watch: bool = False
    ) -> Written:
        """Delete the given entries of one user (ids of other users are left alone) and
        report what went. With ``pending_only``, only entries still pending when the lock is
        held go, and the profile version stays: a pending entry is never in a block, so no
        saved selection changes. Otherwise the user's saved selections and pins are removed
        and the version renewed (the version before read only with ``watch``)."""
        user = validate_user_id(user_id)
        async with hold(self._write_lock):
            found = [e for e in await self._get_by_ids(list(ids)) if e.user_id == user]
            owned = [e.id for e in found if e.pending or not pending_only]
            for batch in batches(owned, self._max_batch):
                # ids only: checked as the user's
                await settle(self._collection.delete(ids=list(batch)))
            versions = (
                await self.state.drop(user, watch=watch) if owned and not pending_only else {}
            )
        return Written([], {user: owned} if owned else {}, versions)

    def delete_user(self, user_id: str) -> int:
        """Hard-delete every entry of one user: see :meth:`adelete_user`."""
        return self._run(self.adelete_user(user_id))

    async def adelete_user(self, user_id: str) -> int:
        """Hard-delete every entry of one user, pending ones included.

        Deletes by id, ``delete_batch`` entries at a time, releasing the location's lock
        between batches so reads of other users do not wait for a large profile (a Chroma
        delete given ``where=`` as well as ids costs far more). The user's state rows go
        before the first batch as well as after the last: while it runs, and after a forget
        killed part-way (rerun it to finish), no saved selection quoting the user is served
        or saved. Entries the user gains while it runs may be left: forget again once that
        user's writers stopped.
        """
        user = validate_user_id(user_id)
        removed = 0
        while True:
            async with hold(self._write_lock):
                ids = await self._ids_where({"user_id": user}, limit=self.delete_batch)
                if ids and not removed:
                    await self.state.forget(user)
                if ids:
                    await settle(self._collection.delete(ids=ids))
            removed += len(ids)
            if len(ids) < self.delete_batch:
                break
            await pause(self._write_lock)
        async with hold(self._write_lock):
            await self.state.forget(user)  # every state row: no row names a forgotten user
        return removed

    def drop(self) -> None:
        """Delete this store's collections (every user's entries and state). Irreversible."""
        self._run(self.adrop())

    async def adrop(self) -> None:
        """Delete this store's collections (every user's entries and state). Irreversible."""
        client = self.client
        async with hold(self._write_lock):
            if not self.is_async:
                self._write_lock.note_write(server_of(client))
            await settle(client.delete_collection(self.state.name))
            await settle(client.delete_collection(self._collection.name))

    # -- profile versions, stored selections and thread pins -----------------------------

    def snapshot(self, user_id: str, key: str) -> tuple[str, str | None]:
        """See :meth:`StateRows.snapshot`."""
        return self._run(self.asnapshot(user_id, key))

    async def asnapshot(self, user_id: str, key: str) -> tuple[str, str | None]:
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
    ) -> bool:
        """See :meth:`StateRows.save_pin`."""
        return await self.state.save_pin(
            user_id, thread, key, payload, version=version, now=now, expires_at=expires_at
        )

    # -- reads ----------------------------------------------------------------------------

    def load(self, user_id: str, *, with_vectors: bool = True) -> StoredProfile:
        """Every entry of one user (and its style vector), oldest first: see :meth:`aload`."""
        return self._run(self.aload(user_id, with_vectors=with_vectors))

    async def aload(self, user_id: str, *, with_vectors: bool = True) -> StoredProfile:
        """Every entry of one user (and its style vector), oldest first.

        A profile of up to ``eager_rows`` entries comes back with its vectors in one read;
        a larger one reads texts and metadata only and fetches vectors by id when asked
        (with an async client, at once: selection asks for them in code that cannot wait
        for I/O).
        """
        user = validate_user_id(user_id)
        where = {"user_id": user}
        if with_vectors:
            include: Any = [*_INCLUDE_ALL, "embeddings"]
            first = await self._read(where=where, include=include, limit=self.eager_rows + 1)
            if len(first["ids"]) <= self.eager_rows:
                return self._eager_profile(first)
        entries = await self._entries_where(where)
        entries.sort(key=lambda e: (e.created_at, e.id))
        if not with_vectors:
            return StoredProfile(
                tuple(entries), np.zeros((len(entries), self._dimension), np.float32)
            )
        if self.is_async:
            return StoredProfile(tuple(entries), await self.avectors([e.id for e in entries]))
        return StoredProfile(tuple(entries), fetch=self.vectors, dimension=self._dimension)

    def _eager_profile(self, result: Any) -> StoredProfile:
        entries = entries_from(result)
        vectors = np.zeros((len(entries), self._dimension), dtype=np.float32)
        if entries:
            vectors[:] = np.asarray(result["embeddings"], dtype=np.float32)
        order = sorted(range(len(entries)), key=lambda i: (entries[i].created_at, entries[i].id))
        return StoredProfile(tuple(entries[i] for i in order), vectors[order])

    def vectors(self, ids: list[str]) -> np.ndarray:
        """Style vectors of the given entry ids of one user: see :meth:`avectors`."""
        return self._run(self.avectors(ids))

    async def avectors(self, ids: list[str]) -> np.ndarray:
        """Style vectors of one user's entries, rows in the order of ``ids`` (zeros if gone).

        ``ids`` come from a read filtered by ``user`` and every id hashes its user in, so a
        plain id lookup stays inside the user: adding ``where`` here makes Chroma scan the
        collection (seconds at 10k entries) for no gain in isolation.
        """
        rows = np.zeros((len(ids), self._dimension), dtype=np.float32)
        position = {id_: i for i, id_ in enumerate(ids)}
        for batch in batches(ids, self._max_batch):
            found = await self._read(ids=list(batch), include=["embeddings"])
            for id_, vector in zip(found["ids"], found["embeddings"], strict=True):
                rows[position[id_]] = vector
        return rows

    def find_runs(self, run_id: str, user_id: str | None = None) -> list[ProfileEntry]:
        """The entries recorded under a run id: see :meth:`afind_runs`."""
        return self._run(self.afind_runs(run_id, user_id))

    async def afind_runs(self, run_id: str, user_id: str | None = None) -> list[ProfileEntry]:
        """The entries recorded under a run id (of one user, when given), newest first.

        Run ids come from callers (``config["run_id"]``), so more than one user may hold
        one: the caller decides what an ambiguous id means; this returns every match. The
        store is asked by run id alone and the user is checked here: a ``$and`` with
        ``user_id`` makes Chroma intersect with every row of the user (12 ms against 3 ms
        at 10k entries, docs/benchmarks.md).
        """
        owner = None if user_id is None else validate_user_id(user_id)
        found = entries_from(await self._read(where={"run_id": run_id}, include=_INCLUDE_ALL))
        matches = [e for e in found if e.run_id == run_id and owner in (None, e.user_id)]
        return sorted(matches, key=lambda e: (-e.updated_at, e.id))

    def pending_older_than(self, user_id: str, cutoff: float) -> list[str]:
        """Ids of one user's pending entries last touched before ``cutoff``."""
        return self._run(self.apending_older_than(user_id, cutoff))

    async def apending_older_than(self, user_id: str, cutoff: float) -> list[str]:
        """Ids of one user's pending entries last touched before ``cutoff``."""
        user = validate_user_id(user_id)
        where = {"$and": [{"user_id": user}, {"pending": True}, {"updated_at": {"$lt": cutoff}}]}
        return await self._ids_where(where)

    def count(self, user_id: str) -> int:
        """Number of entries stored for one user."""
        return self._run(self.acount(user_id))

    async def acount(self, user_id: str) -> int:
        """Number of entries stored for one user."""
        return len(await self._ids_where({"user_id": validate_user_id(user_id)}))

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
        """The users that have entries. Reads the small version rows of the state collection
        (no entry text); each listed user is confirmed to have an entry.

        A collection written before version rows existed is scanned once (its entries'
        metadata, as earlier releases listed users) and the missing rows are written.
        """
        if not self._versioned:
            await self._backfill_versions()
        return sorted(
            [u for u in await self.state.users() if await self._ids_where({"user_id": u}, limit=1)]
        )

    async def _backfill_versions(self) -> None:
        """Give every user found in the entries a version row, once per collection.

        Users written while the scan runs get their rows from the write itself (every write
        sets its users' versions after the entries), so the scan only has to find the users
        written before version rows existed.
        """
        if await self.state.has_mark(_BACKFILL_MARK):
            self._versioned = True
            return
        found: set[str] = set()
        offset = 0
        while True:
            page = await self._read(include=["metadatas"], limit=_SCAN_PAGE, offset=offset)
            if not page["ids"]:
                break
            found.update(str(m["user_id"]) for m in page["metadatas"] or [] if m)
            offset += len(page["ids"])
        missing = found - await self.state.users()
        if missing:
            await self.state.touch(missing)
        await self.state.mark(_BACKFILL_MARK)
        self._versioned = True

    async def _entries_where(self, where: Any) -> list[ProfileEntry]:
        """Every entry matching ``where``. Chroma's SQLite fails a read of more rows than it
        has SQL variables for ("too many SQL variables" at 100k rows), so a result larger
        than one page is read as ids first, then by id, a page at a time."""
        first = await self._read(where=where, include=_INCLUDE_ALL, limit=_READ_PAGE + 1)
        if len(first["ids"]) <= _READ_PAGE:
            return entries_from(first)
        ids = await self._ids_where(where)
        return [e for page in batches(ids, _READ_PAGE) for e in await self._get_by_ids(list(page))]

    async def _get_by_ids(self, ids: list[str]) -> list[ProfileEntry]:
        if not ids:
            return []
        return entries_from(await self._read(ids=ids, include=_INCLUDE_ALL))

    async def _read(self, **query: Any) -> Any:
        """``collection.get`` under the location's read lock: embedded Chroma can fail a read
        that races a write of another thread or process ("Error finding id"; see
        docs/reliability.md)."""
        async with hold(self._reads):
            return await settle(self._collection.get(**query))

    async def _ids_where(self, where: Any, limit: int | None = None) -> list[str]:
        return list((await self._read(where=where, include=[], limit=limit))["ids"])


class _Unopened:
    """The collection of a store given an async client before :meth:`ProfileStore.aopen`."""

    def __getattr__(self, name: str) -> Any:
        raise AsyncClientError(
            "this store was given an async Chroma client and is not open yet: "
            "await store.aopen() (the memory's a-prefixed methods do) before using it"
        )


def _fingerprint(embeddings: Embeddings) -> tuple[str, int]:
    if isinstance(embeddings, StyleEmbeddings):
        return embeddings.fingerprint, embeddings.dimension
    dimension = len(embeddings.embed_query("outprofile fingerprint probe"))
    return f"{type(embeddings).__module__}.{type(embeddings).__qualname__}", dimension


def _fold_duplicates(entries: Sequence[ProfileEntry]) -> list[ProfileEntry]:
    """Merge entries of one batch that share an id, in the order given."""
    folded: dict[str, ProfileEntry] = {}
    for entry in entries:
        folded[entry.id] = folded[entry.id].merged_with(entry) if entry.id in folded else entry
    return list(folded.values())
