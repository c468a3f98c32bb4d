"""State: per-user profile versions and saved selections, in the ``<collection>.state``
collection beside the entries.

Every write of a user gives the user's profile a new random *version* (after the entries
are written); a selection saved from a profile is tagged with the version read *before*
loading it, so it is served only while nothing changed (see docs/design.md, "Snapshots").
``forget`` removes every state row of the user, the version row too: a forgotten user reads
as one never written (version ''), and nothing is saved for version ''.

A user's snapshots live in :data:`SNAPSHOT_SLOTS` rows (the slot is a hash of the options
key; the full key is kept in the row and checked on read, so two keys sharing a slot are a
miss, never the other's block). The payload is a metadata value, not a document: Chroma
full-text indexes every document (trigrams of the whole text) and cannot be told not to
in embedded mode. Ids hash the user in and every row read back is checked for its
``user_id``. A row whose metadata lost a key reads as if absent (no version, no user) and the
next write replaces it.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from typing import Any, TypeVar

import numpy as np

from langchain_outprofile.store.io import hold, settle
from langchain_outprofile.validation import validate_user_id

__all__ = [
    "MAX_PINS_PER_USER",
    "SNAPSHOT_SLOTS",
    "STATE_SUFFIX",
    "StateRows",
    "batches",
    "snapshot_slot",
]

_T = TypeVar("_T")

STATE_SUFFIX = ".state"
SNAPSHOT_SLOTS = 8
"""Snapshot rows a user can have, whatever the number of option keys read."""
_METADATAS: Any = ["metadatas"]
_NO_FIELDS: Any = []
_PAGE = 5000
_DOUBTED = "doubted"
"""Version-row key: the user may have no entry row left (see :meth:`StateRows.listed`)."""
MAX_PINS_PER_USER = 256
"""Thread pins one user keeps: past it, the pins expiring first go (a thread whose pin went
gets the current block, as a new thread does)."""


class StateRows:
    """Versions and snapshots of every user of one entries collection.

    Every method is a coroutine of the store's logic (``store/io.py``): the store runs it
    to its end at once with a synchronous client, or awaits it with an async one.

    Args:
        collection: the chromadb collection ``<name>.state`` (sync or async).
        lock: what the store's reads hold (every call to Chroma holds it).
        max_batch: the largest write the store makes.
        page: the most results one read may return (None: no limit but this module's page).
    """

    def __init__(
        self, collection: Any, lock: Any, max_batch: int, *, page: int | None = None
    ) -> None:
        self._collection = collection
        self._lock = lock
        self._max_batch = max_batch
        self._page = min(_PAGE, page or _PAGE)
        self._versioned: set[str] = set()  # users seen with a version row by this object

    @property
    def name(self) -> str:
        """Name of the state collection."""
        return str(self._collection.name)

    async def touch(self, users: Iterable[str], *, doubted: bool = False) -> None:
        """Give each user's profile a new version, so selections stored for the old one go
        stale. Called after the entries are written: a reader that saw the old version
        cannot have missed them. (``emptied`` is written False: an upsert keeps the keys it
        leaves out, and releases before this one flagged forgotten users that way.)
        ``doubted`` is written too: see :meth:`listed` (False once the users' entry rows are
        written; True when they may have none)."""
        ordered = sorted(set(users))
        async with hold(self._lock):
            for batch in batches(ordered, self._max_batch):
                await self._upsert(
                    [state_id("v", user) for user in batch],
                    [
                        {
                            "user_id": u,
                            "version": uuid.uuid4().hex,
                            "emptied": False,
                            _DOUBTED: doubted,
                        }
                        for u in batch
                    ],
                )
        self._versioned.update(ordered)

    async def ensure(self, users: Iterable[str]) -> None:
        """Give a version row to each of ``users`` that has none (``users()`` lists users by
        it), leaving existing versions alone. Users this object saw with a version are not
        read again."""
        unknown = sorted(set(users) - self._versioned)
        if not unknown:
            return
        async with hold(self._lock):
            found = await self._versions(unknown)
            self._versioned.update(found)
            missing = [user for user in unknown if user not in found]
            if missing:
                await self.touch(missing)

    async def _versions(self, users: Sequence[str]) -> dict[str, str]:
        """The current version of each of ``users`` that has one (one read by id)."""
        ids = {state_id("v", user): user for user in users}
        found = await self._get(ids=list(ids), include=_METADATAS)
        versions = {}
        for id_, meta in zip(found["ids"], found["metadatas"] or [], strict=True):
            user = ids.get(id_)
            if user is not None and meta and meta.get("user_id") == user:
                version = _version_in({id_: meta}, id_)
                if version:
                    versions[user] = version
        return versions

    async def drop(self, user: str) -> None:
        """After a delete: remove the user's stored selections and pins (they may quote
        deleted text) and start a new version (a forgotten user gets none: see
        :meth:`forget`)."""
        async with hold(self._lock):
            await self.forget(user)
            await self.touch([user], doubted=True)  # maybe its last entry went

    async def doubt(self, users: Iterable[str]) -> None:
        """Flag the version rows of ``users`` ``doubted``: a write removed entry rows of
        theirs, maybe the last, and left the version alone (expired pending outputs, an
        edit that took back a run's text). :meth:`listed` says to confirm them. Only the flag
        is written (an update keeps the version and leaves a user without a row alone)."""
        ids = [state_id("v", user) for user in sorted(set(users))]
        for batch in batches(ids, self._max_batch):
            async with hold(self._lock):
                await settle(
                    self._collection.update(
                        ids=list(batch), metadatas=[{_DOUBTED: True} for _ in batch]
                    )
                )

    async def forget(self, user_id: str) -> None:
        """Remove every state row of the user: the version row, every snapshot and every
        thread pin. No row names the user afterwards, and the user reads as never written
        (version '') until a write sets a new random version. Snapshots in flight are
        handled by :meth:`save_snapshot`, which never keeps one whose version is gone."""
        user = validate_user_id(user_id)
        own = [state_id("v", user), *(_slot_id(user, n) for n in range(SNAPSHOT_SLOTS))]
        async with hold(self._lock):
            await self._delete(ids=own)  # also rows whose metadata lost the user
            await self._delete(where={"user_id": user})  # pins, rows of older releases
        self._versioned.discard(user)

    async def pin(
        self, user_id: str, thread: str, key: str, *, now: float
    ) -> tuple[str, float] | None:
        """The payload pinned for ``thread`` under ``key`` and when it expires, unless it
        did by ``now`` (one read by id; the row is checked for its user, thread and key)."""
        user = validate_user_id(user_id)
        pin_id = _pin_id(user, thread, key)
        meta = (await self._rows(user, [pin_id])).get(pin_id)
        if meta is None or meta.get("thread") != thread or meta.get("key") != key:
            return None
        payload, expires = meta.get("payload"), meta.get("expires_at")
        if not isinstance(payload, str) or not isinstance(expires, float) or expires <= now:
            return None
        return payload, expires

    async def save_pin(
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
        """Pin ``payload`` (computed at profile ``version``) for ``thread`` under ``key``
        until ``expires_at``, unless the thread holds a pin already, and return what the
        thread is pinned to: the first pin written wins (``add`` leaves a row it holds) and
        every process reads the winner, so every worker serves the same bytes. Pins of the
        user that expired by ``now`` are deleted first (pins of ended threads go this way,
        or with ``forget``). None when nothing is pinned: the user has no version (never
        written, or forgotten), or a ``forget`` came between (its version is gone after the
        write: the pin is taken back)."""
        user = validate_user_id(user_id)
        if not version:
            return None
        version_id, pin_id = state_id("v", user), _pin_id(user, thread, key)
        meta = {
            "user_id": user,
            "thread": thread,
            "key": key,
            "payload": payload,
            "expires_at": float(expires_at),
        }
        if not await self._current(user, version_id):
            return None
        await self._delete(
            where={"$and": [{"user_id": user}, {"expires_at": {"$lte": float(now)}}]}
        )
        await self._bound_pins(user)
        async with hold(self._lock):
            await settle(
                self._collection.add(
                    ids=[pin_id], metadatas=[meta], embeddings=np.ones((1, 1), dtype=np.float32)
                )
            )
        held = await self.pin(user, thread, key, now=now)
        if await self._current(user, version_id):
            return held
        await self._delete(ids=[pin_id])
        return None

    async def drop_pin(self, user_id: str, thread: str, key: str) -> None:
        """Delete the pin of ``thread`` under ``key`` (one that names what is gone)."""
        user = validate_user_id(user_id)
        await self._delete(ids=[_pin_id(user, thread, key)])

    async def _bound_pins(self, user: str) -> None:
        """Keep at most :data:`MAX_PINS_PER_USER` - 1 pins of the user before a new one:
        the ones expiring first go (threads that ended long ago)."""
        found = await self._get(  # a page holds them all: pins never pass the bound
            where={"$and": [{"user_id": user}, {"expires_at": {"$gt": 0.0}}]},
            include=_METADATAS,
            limit=self._page,
        )
        held = sorted(
            zip(found["ids"], found["metadatas"] or [], strict=True),
            key=lambda row: (float((row[1] or {}).get("expires_at", 0.0)), row[0]),
        )
        excess = len(held) - (MAX_PINS_PER_USER - 1)
        if excess > 0:
            await self._delete(ids=[id_ for id_, _ in held[:excess]])

    async def snapshot(self, user_id: str, key: str) -> tuple[str, str | None, str]:
        """The user's profile version, the payload saved under ``key`` whatever version it
        was saved for, and that version ('' and None when the slot holds none or another
        key). A payload of an older version is never served as is; a reader may bring what
        it holds up to date (a ranking head, ``memory/reader.py``). Two reads by id."""
        user = validate_user_id(user_id)
        version_id, slot_id = state_id("v", user), snapshot_id(user, key)
        rows = await self._rows(user, [version_id, slot_id])
        version = _version_in(rows, version_id)
        meta = rows.get(slot_id) or {}
        payload, tag = meta.get("payload"), meta.get("version")
        if meta.get("key") != key or not isinstance(payload, str) or not isinstance(tag, str):
            return version, None, ""
        return version, payload, tag

    async def version(self, user_id: str) -> str:
        """The user's profile version: a new random token after every write ('' before any,
        and after ``forget``)."""
        user = validate_user_id(user_id)
        return await self._current(user, state_id("v", user))

    async def save_snapshot(self, user_id: str, key: str, version: str, payload: str) -> bool:
        """Keep ``payload`` for ``key`` as computed from the profile at ``version``. Returns
        whether it was kept: False when ``version`` is '' (an unknown or forgotten user: a
        read of one writes nothing), or when the user's version is no longer ``version``.

        Under the location lock: check that the version is still ``version``, write the
        row, read the version again, and delete the row just written if it moved. The second
        check is for writers the lock does not hold (another client of a server): a
        ``forget`` that deleted the user's state rows between the first check and the write
        left this row behind, so it is taken back at once. It could never have been served
        (a snapshot serves only while the version equals its tag, and versions never
        repeat). See ``memory/reader.py`` for every interleaving with ``forget``.
        """
        user = validate_user_id(user_id)
        if not version:
            return False
        version_id, slot_id = state_id("v", user), snapshot_id(user, key)
        async with hold(self._lock):
            if await self._current(user, version_id) != version:
                return False
            await self._upsert(
                [slot_id], [{"user_id": user, "version": version, "key": key, "payload": payload}]
            )
            if await self._current(user, version_id) == version:
                return True
            await self._delete(ids=[slot_id], where={"version": version})
        return False

    async def users(self, page_size: int | None = None) -> set[str]:
        """Users with a version row: see :meth:`listed`."""
        return set(await self.listed(page_size))

    async def listed(self, page_size: int | None = None) -> dict[str, bool]:
        """Users with a version row, each with whether it is *doubted*: the user may have no
        entry left, so a listing of users with entries must confirm that one. Two reads per
        page of state rows, whatever the number of users: the ids (no payload of a
        snapshot or pin is read), then the metadata of the version rows among them. A row
        without a ``user_id``, or flagged ``emptied`` by an older release's ``forget``, is
        skipped; a row of an earlier release, which has no flag, is doubted.

        The flag is correct without a shared lock: every write that removes entry rows
        flags the user *after* removing them (``drop``, :meth:`doubt`), and a write clears
        it only *after* writing entry rows of the user (:meth:`touch`), so whichever lands
        last describes rows that exist."""
        found: dict[str, bool] = {}
        async for page in self._pages(page_size or self._page, _NO_FIELDS):
            versions = [id_ for id_ in page["ids"] if id_.startswith("v:")]
            if not versions:
                continue
            rows = await self._get(ids=versions, include=_METADATAS)
            for meta in rows["metadatas"] or []:
                if meta and not meta.get("emptied"):
                    user = meta.get("user_id")
                    if isinstance(user, str) and user:
                        found[user] = meta.get(_DOUBTED) is not False
        return found

    async def _pages(self, page_size: int, include: Any) -> AsyncIterator[Any]:
        offset = 0
        while True:
            page = await self._get(include=include, limit=page_size, offset=offset)
            if not page["ids"]:
                return
            yield page
            if len(page["ids"]) < page_size:  # the last page: no read of an empty one
                return
            offset += len(page["ids"])

    async def _current(self, user: str, version_id: str) -> str:
        return _version_in(await self._rows(user, [version_id]), version_id)

    async def _rows(self, user: str, ids: list[str]) -> dict[str, Any]:
        """Metadata of the rows ``ids`` that belong to ``user``."""
        found = await self._get(ids=ids, include=_METADATAS)
        return {
            id_: meta
            for id_, meta in zip(found["ids"], found["metadatas"] or [], strict=True)
            if meta and meta.get("user_id") == user
        }

    # -- the calls to Chroma: each holds the lock ---------------------------------------

    async def _get(self, **query: Any) -> Any:
        async with hold(self._lock):
            return await settle(self._collection.get(**query))

    async def _delete(self, **which: Any) -> None:
        async with hold(self._lock):
            await settle(self._collection.delete(**which))

    async def _upsert(self, ids: list[str], metadatas: list[dict[str, Any]]) -> None:
        """State rows carry a one-number vector: Chroma needs one, and none is searched."""
        async with hold(self._lock):
            await settle(
                self._collection.upsert(
                    ids=ids,
                    metadatas=metadatas,
                    embeddings=np.ones((len(ids), 1), dtype=np.float32),
                )
            )


def state_id(kind: str, user: str, key: str = "") -> str:
    """Id of a user's version row (``v``), or of another row of the user under ``key``."""
    digest = hashlib.sha256(f"{user}\x00{key}".encode()).hexdigest()[:32]
    return f"{kind}:{digest}"


def snapshot_slot(key: str) -> int:
    """The slot (``0 <= slot < SNAPSHOT_SLOTS``) a snapshot under ``key`` is kept in."""
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % SNAPSHOT_SLOTS


def snapshot_id(user: str, key: str) -> str:
    """Id of the row holding the user's snapshot under ``key`` (shared by the keys of one
    slot; the row records which key it holds)."""
    return _slot_id(user, snapshot_slot(key))


def _slot_id(user: str, slot: int) -> str:
    return state_id(f"s{slot}", user)


def _pin_id(user: str, thread: str, key: str) -> str:
    return state_id("p", user, f"{thread}\x00{key}")


def _version_in(rows: dict[str, Any], version_id: str) -> str:
    """The version in the user's version row: '' when there is none, or it was left by an
    older release's ``forget`` (flagged ``emptied``)."""
    meta = rows.get(version_id)
    if meta is None or meta.get("emptied"):
        return ""
    return str(meta.get("version", ""))


def batches(items: Sequence[_T], size: int) -> Iterator[Sequence[_T]]:
    """``items`` in consecutive slices of at most ``size``."""
    for start in range(0, len(items), size):
        yield items[start : start + size]
