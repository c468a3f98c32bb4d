"""State: per-user profile versions and saved selections, in the ``<collection>.state``
collection beside the entries.

Every write of a user gives the user's profile a new random *version* (after the entries
are written); a selection saved from a profile is tagged with the version read *before*
loading it, so it is served only while nothing changed (see docs/design.md, "Snapshots").
Ids hash the user in and every row read back is checked for its ``user_id``. A row whose
metadata lost a key reads as if absent (no version, no user) and the next write replaces it.
One-time steps of the whole collection are recorded as *mark* rows, which have no user.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TypeVar

import numpy as np

from langchain_outprofile.validation import validate_user_id

__all__ = ["STATE_SUFFIX", "StateRows", "batches"]

_T = TypeVar("_T")

STATE_SUFFIX = ".state"
_INCLUDE_ALL: Any = ["documents", "metadatas"]


class StateRows:
    """Versions and snapshots of every user of one entries collection.

    Args:
        collection: the chromadb collection ``<name>.state``.
        lock: the store location's lock (every call to Chroma holds it).
        max_batch: the client's largest write.
    """

    def __init__(self, collection: Any, lock: Any, max_batch: int) -> None:
        self._collection = collection
        self._lock = lock
        self._max_batch = max_batch

    @property
    def name(self) -> str:
        """Name of the state collection."""
        return str(self._collection.name)

    def touch(self, users: Iterable[str], *, emptied: bool = False) -> None:
        """Give each user's profile a new version, so selections stored for the old one go
        stale. Called after the entries are written: a reader that saw the old version
        cannot have missed them. ``emptied`` marks users whose profile was forgotten."""
        ordered = sorted(set(users))
        with self._lock:
            for batch in batches(ordered, self._max_batch):
                self._collection.upsert(
                    ids=[state_id("v", user) for user in batch],
                    metadatas=[
                        {"user_id": u, "version": uuid.uuid4().hex, "emptied": emptied}
                        for u in batch
                    ],
                    embeddings=np.ones((len(batch), 1), dtype=np.float32),
                )

    def drop(self, user: str, *, emptied: bool = False) -> None:
        """After a delete: remove the user's stored selections (they may quote deleted text)
        and start a new version."""
        with self._lock:
            self._collection.delete(where={"user_id": user})
            self.touch([user], emptied=emptied)

    def snapshot(self, user_id: str, key: str) -> tuple[str, str | None]:
        """The user's profile version, and the payload saved under ``key`` for exactly that
        version (None when there is none, or it was saved for an older version).

        Two reads by id in one call: the cost does not grow with the collection.
        """
        user = validate_user_id(user_id)
        version_id, snapshot_id = state_id("v", user), state_id("s", user, key)
        rows = self._rows(user, [version_id, snapshot_id])
        version = _version_in(rows, version_id)
        document, meta = rows.get(snapshot_id, (None, {}))
        if document is None or meta.get("version") != version:
            return version, None
        return version, document

    def version(self, user_id: str) -> str:
        """The user's profile version: a new random token after every write ('' before any)."""
        user = validate_user_id(user_id)
        version_id = state_id("v", user)
        return _version_in(self._rows(user, [version_id]), version_id)

    def save_snapshot(self, user_id: str, key: str, version: str, payload: str) -> None:
        """Keep ``payload`` for ``key`` as computed from the profile at ``version``."""
        user = validate_user_id(user_id)
        with self._lock:
            self._collection.upsert(
                ids=[state_id("s", user, key)],
                documents=[payload],
                metadatas=[{"user_id": user, "version": version}],
                embeddings=np.ones((1, 1), dtype=np.float32),
            )

    def users(self, page_size: int = 5000) -> set[str]:
        """Users with a version row that was not left by ``forget`` (metadata only: no
        entry text and no saved block is read). A row without a ``user_id`` is skipped."""
        found: set[str] = set()
        for page in self._pages(page_size):
            for id_, meta in zip(page["ids"], page["metadatas"] or [], strict=True):
                if id_.startswith("v:") and meta and not meta.get("emptied"):
                    user = meta.get("user_id")
                    if isinstance(user, str) and user:
                        found.add(user)
        return found

    def has_mark(self, name: str) -> bool:
        """Whether :meth:`mark` was called for ``name`` on this collection (one id lookup)."""
        with self._lock:
            found = self._collection.get(ids=[_mark_id(name)], include=[])
        return bool(found["ids"])

    def mark(self, name: str) -> None:
        """Record, once per collection, that a one-time step ``name`` is done. Mark rows
        carry no ``user_id``: no per-user read or delete ever matches them."""
        with self._lock:
            self._collection.upsert(
                ids=[_mark_id(name)],
                metadatas=[{"mark": name}],
                embeddings=np.ones((1, 1), dtype=np.float32),
            )

    def _pages(self, page_size: int) -> Iterator[Any]:
        offset = 0
        while True:
            with self._lock:
                page = self._collection.get(include=["metadatas"], limit=page_size, offset=offset)
            if not page["ids"]:
                return
            yield page
            offset += len(page["ids"])

    def _rows(self, user: str, ids: list[str]) -> dict[str, tuple[str | None, Any]]:
        with self._lock:
            found = self._collection.get(ids=ids, include=_INCLUDE_ALL)
        return {
            id_: (document, meta)
            for id_, document, meta in zip(
                found["ids"], found["documents"] or [], found["metadatas"] or [], strict=True
            )
            if meta and meta.get("user_id") == user
        }


def state_id(kind: str, user: str, key: str = "") -> str:
    """Id of a user's version row (``v``) or of a snapshot under ``key`` (``s``)."""
    digest = hashlib.sha256(f"{user}\x00{key}".encode()).hexdigest()[:32]
    return f"{kind}:{digest}"


def _mark_id(name: str) -> str:
    return f"m:{name}"


def _version_in(rows: dict[str, tuple[str | None, Any]], version_id: str) -> str:
    return str(rows[version_id][1].get("version", "")) if version_id in rows else ""


def batches(items: Sequence[_T], size: int) -> Iterator[Sequence[_T]]:
    """``items`` in consecutive slices of at most ``size``."""
    for start in range(0, len(items), size):
        yield items[start : start + size]
