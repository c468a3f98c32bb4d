"""Store: one Chroma collection holding many users' profile entries.

This is the only module that imports chromadb. Every read, delete and export is
filtered by ``user_id`` here; there is no unfiltered read path for entry content.
Embeddings are always passed explicitly, so Chroma's default embedding function (which
downloads a model) never runs.
"""

from __future__ import annotations

import hashlib
import re
import threading
import uuid
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import chromadb
import numpy as np
from chromadb.api import ClientAPI
from chromadb.config import Settings
from langchain_core.embeddings import Embeddings
from platformdirs import user_data_dir

from langchain_outprofile.embeddings import StyleEmbeddings
from langchain_outprofile.records import (
    InvalidInputError,
    OutprofileError,
    ProfileEntry,
    validate_user_id,
)
from langchain_outprofile.rows import StoredProfile, entries_from, to_metadata

__all__ = [
    "DEFAULT_COLLECTION",
    "SCHEMA_VERSION",
    "EmbeddingMismatchError",
    "ProfileStore",
    "StoreUnavailableError",
    "StoredProfile",
    "default_path",
    "http_client",
]

_T = TypeVar("_T")

SCHEMA_VERSION = 2
_READABLE_SCHEMAS = (1, 2)  # row format 1 is still read; every write uses format 2
# The vector index only serves direct similarity queries (selection never searches it), so
# it is built cheaply: ef_construction and M well below Chroma's defaults of 100 and 16.
_HNSW = {"hnsw:space": "cosine", "hnsw:construction_ef": 32, "hnsw:M": 8}
DEFAULT_COLLECTION = "outprofile"
_STATE_SUFFIX = ".state"
# leaves room for the state collection's suffix within Chroma's 512 characters
_COLLECTION_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9._-]{1,504}[a-zA-Z0-9]")
_INCLUDE_ALL: Any = ["documents", "metadatas"]
_READ_PAGE = 10_000


class EmbeddingMismatchError(OutprofileError):
    """The collection was written with another embedder or schema than the one given."""


def default_path() -> Path:
    """Where the embedded store lives when no ``path`` or ``client`` is given."""
    return Path(user_data_dir("langchain-outprofile", appauthor=False)) / "chroma"


class StoreUnavailableError(OutprofileError):
    """No Chroma server answers at the given URL."""


def http_client(url: str) -> ClientAPI:
    """A chromadb ``HttpClient`` for a ``chroma run`` server at ``http(s)://host:port``.

    Raises:
        InvalidInputError: when ``url`` is not an http(s) URL with a host.
        StoreUnavailableError: when no server answers there.

    Example:
        ```python
        memory = OutputProfileMemory(client=http_client("http://127.0.0.1:8000"))
        ```
    """
    bad = InvalidInputError(f"a Chroma URL looks like http://host:port; got {url!r}")
    if not isinstance(url, str):
        raise bad
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:  # a port that is not a number in range
        raise bad from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise bad
    secure = parts.scheme == "https"
    try:
        return chromadb.HttpClient(
            host=parts.hostname,
            port=port or (443 if secure else 8000),
            ssl=secure,
            settings=Settings(anonymized_telemetry=False),
        )
    except ValueError as error:  # chromadb's "Could not connect to a Chroma server"
        raise StoreUnavailableError(f"no Chroma server answers at {url}: {error}") from None


class ProfileStore:
    """Per-user profile entries in one Chroma collection.

    Args:
        path: directory of an embedded ``PersistentClient`` (default: the user data dir).
        client: any chromadb client instead (``EphemeralClient``, ``HttpClient``, ...).
        collection_name: the collection holding every user.
        embeddings: a LangChain ``Embeddings``; default :class:`StyleEmbeddings`.

    Example:
        ```python
        store = ProfileStore(client=chromadb.EphemeralClient(), collection_name="t1")
        store.upsert([ProfileEntry.create("Hi!", user_id="ana")])
        store.load("ana").entries[0].text  # "Hi!"
        ```
    """

    eager_rows: int = 512
    """Profiles up to this many entries load with their vectors in one read (a larger one
    fetches only the vectors selection asks for)."""

    def __init__(
        self,
        *,
        path: str | Path | None = None,
        client: ClientAPI | None = None,
        collection_name: str = DEFAULT_COLLECTION,
        embeddings: Embeddings | None = None,
    ) -> None:
        if path is not None and client is not None:
            raise InvalidInputError("pass either path= or client=, not both")
        if client is None:
            client = chromadb.PersistentClient(
                path=str(path or default_path()), settings=Settings(anonymized_telemetry=False)
            )
        self.client = client
        self.embeddings = embeddings or StyleEmbeddings()
        self._fingerprint, self._dimension = _fingerprint(self.embeddings)
        self._collection = self._open_collection(collection_name)
        self._state = client.get_or_create_collection(
            name=f"{collection_name}{_STATE_SUFFIX}",
            metadata={"outprofile_state": SCHEMA_VERSION},
            embedding_function=None,
        )
        self._max_batch = max(1, int(client.get_max_batch_size()))
        self._write_lock = threading.RLock()

    @property
    def collection_name(self) -> str:
        """Name of the Chroma collection in use."""
        return str(self._collection.name)

    def _open_collection(self, name: str) -> Any:
        if not isinstance(name, str) or not _COLLECTION_NAME.fullmatch(name):
            raise InvalidInputError(
                f"collection_name must be 3-506 characters of [a-zA-Z0-9._-], starting and "
                f"ending with a letter or digit; got {name!r}"
            )
        wanted = {
            "outprofile_schema": SCHEMA_VERSION,
            "embedding": self._fingerprint,
            "dimension": self._dimension,
            **_HNSW,
        }
        collection = self.client.get_or_create_collection(
            name=name, metadata=wanted, embedding_function=None
        )
        found = dict(collection.metadata or {})
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
        return collection

    # -- writes ---------------------------------------------------------------------------

    def upsert(self, entries: Sequence[ProfileEntry]) -> list[ProfileEntry]:
        """Store entries, folding each into any stored entry with the same id.

        Returns the entries as stored. Writes go in batches under the client's maximum.
        """
        merged_all: list[ProfileEntry] = []
        with self._write_lock:
            for batch in _batches(_fold_duplicates(entries), self._max_batch):
                stored = {e.id: e for e in self._get_by_ids([e.id for e in batch])}
                self._write([e for e in batch if e.id not in stored])
                merged = [stored[e.id].merged_with(e) if e.id in stored else e for e in batch]
                self._write_metadata([m for m in merged if m.id in stored])
                merged_all.extend(merged)
            self._touch(e.user_id for e in merged_all)
        return merged_all

    def replace(self, entries: Sequence[ProfileEntry]) -> None:
        """Store entries exactly as given (no folding): for imports and feedback rewrites.

        When several entries share an id, the last one wins (Chroma refuses duplicate ids).
        """
        last = list({e.id: e for e in entries}.values())
        with self._write_lock:
            for batch in _batches(last, self._max_batch):
                self._write(batch)
            self._touch(e.user_id for e in last)

    def _write(self, batch: Sequence[ProfileEntry]) -> None:
        if not batch:
            return
        self._collection.upsert(
            ids=[e.id for e in batch],
            metadatas=[to_metadata(e) for e in batch],
            embeddings=self._embed([e.text for e in batch]),
        )

    def _write_metadata(self, merged: Sequence[ProfileEntry]) -> None:
        """Rewrite the rows of entries folded into stored ones: same id, so same text and
        vector; only signals, strength and fields change (no embedding, no index update)."""
        if merged:
            self._collection.update(
                ids=[e.id for e in merged], metadatas=[to_metadata(e) for e in merged]
            )

    def _embed(self, texts: list[str]) -> np.ndarray:
        if isinstance(self.embeddings, StyleEmbeddings):
            return self.embeddings.embed_array(texts)  # skips a round trip through lists
        return np.asarray(self.embeddings.embed_documents(texts), dtype=np.float32)

    def delete(self, user_id: str, ids: Iterable[str]) -> int:
        """Delete the given entries of one user; ids of other users are left alone."""
        user = validate_user_id(user_id)
        with self._write_lock:
            owned = [e.id for e in self._get_by_ids(list(ids)) if e.user_id == user]
            for batch in _batches(owned, self._max_batch):
                self._collection.delete(ids=batch, where={"user_id": user})
            if owned:
                self._drop_state(user)
        return len(owned)

    def delete_user(self, user_id: str) -> int:
        """Hard-delete every entry of one user, pending ones included."""
        user = validate_user_id(user_id)
        with self._write_lock:
            ids = self._ids_where({"user_id": user})
            for batch in _batches(ids, self._max_batch):
                self._collection.delete(ids=batch, where={"user_id": user})
            self._drop_state(user)
        return len(ids)

    def drop(self) -> None:
        """Delete this store's collections (every user's entries and state). Irreversible."""
        with self._write_lock:
            self.client.delete_collection(self._state.name)
            self.client.delete_collection(self._collection.name)

    # -- profile versions and stored selections ------------------------------------------

    def _touch(self, users: Iterable[str]) -> None:
        """Give each user's profile a new version, so selections stored for the old one go
        stale. Called after the entries are written: a reader that saw the old version
        cannot have missed them (see docs/design.md, "Snapshots")."""
        ordered = sorted(set(users))
        for batch in _batches(ordered, self._max_batch):
            self._state.upsert(
                ids=[_state_id("v", user) for user in batch],
                metadatas=[{"user_id": u, "version": uuid.uuid4().hex} for u in batch],
                embeddings=np.ones((len(batch), 1), dtype=np.float32),
            )

    def _drop_state(self, user: str) -> None:
        """After a delete: remove the user's stored selections (they may quote deleted text)
        and start a new version."""
        self._state.delete(where={"user_id": user})
        self._touch([user])

    def snapshot(self, user_id: str, key: str) -> tuple[str, str | None]:
        """The user's profile version, and the payload saved under ``key`` for exactly that
        version (None when there is none, or it was saved for an older version).

        Two reads by id in one call: the cost does not grow with the collection.
        """
        user = validate_user_id(user_id)
        version_id, snapshot_id = _state_id("v", user), _state_id("s", user, key)
        rows = self._state_rows(user, [version_id, snapshot_id])
        version = _version_in(rows, version_id)
        document, meta = rows.get(snapshot_id, (None, {}))
        if document is None or meta.get("version") != version:
            return version, None
        return version, document

    def version(self, user_id: str) -> str:
        """The user's profile version: a new random token after every write ('' before any)."""
        user = validate_user_id(user_id)
        version_id = _state_id("v", user)
        return _version_in(self._state_rows(user, [version_id]), version_id)

    def _state_rows(self, user: str, ids: list[str]) -> dict[str, tuple[str | None, Any]]:
        with self._write_lock:
            found = self._state.get(ids=ids, include=_INCLUDE_ALL)
        return {
            id_: (document, meta)
            for id_, document, meta in zip(
                found["ids"], found["documents"] or [], found["metadatas"] or [], strict=True
            )
            if meta and meta.get("user_id") == user
        }

    def save_snapshot(self, user_id: str, key: str, version: str, payload: str) -> None:
        """Keep ``payload`` for ``key`` as computed from the profile at ``version``."""
        user = validate_user_id(user_id)
        with self._write_lock:
            self._state.upsert(
                ids=[_state_id("s", user, key)],
                documents=[payload],
                metadatas=[{"user_id": user, "version": version}],
                embeddings=np.ones((1, 1), dtype=np.float32),
            )

    # -- reads ----------------------------------------------------------------------------

    def load(self, user_id: str, *, with_vectors: bool = True) -> StoredProfile:
        """Every entry of one user (and its style vector), oldest first.

        A profile of up to ``eager_rows`` entries comes back with its vectors in one read;
        a larger one reads texts and metadata only and fetches vectors by id when asked.
        """
        user = validate_user_id(user_id)
        where = {"user_id": user}
        if with_vectors:
            include: Any = [*_INCLUDE_ALL, "embeddings"]
            first = self._read(where=where, include=include, limit=self.eager_rows + 1)
            if len(first["ids"]) <= self.eager_rows:
                return self._eager_profile(first)
        entries = self._entries_where(where)
        entries.sort(key=lambda e: (e.created_at, e.id))
        if not with_vectors:
            return StoredProfile(
                tuple(entries), np.zeros((len(entries), self._dimension), np.float32)
            )
        return StoredProfile(
            tuple(entries), fetch=lambda ids: self._vectors(user, ids), dimension=self._dimension
        )

    def _eager_profile(self, result: Any) -> StoredProfile:
        entries = entries_from(result)
        vectors = np.zeros((len(entries), self._dimension), dtype=np.float32)
        if entries:
            vectors[:] = np.asarray(result["embeddings"], dtype=np.float32)
        order = sorted(range(len(entries)), key=lambda i: (entries[i].created_at, entries[i].id))
        return StoredProfile(tuple(entries[i] for i in order), vectors[order])

    def _vectors(self, user: str, ids: list[str]) -> np.ndarray:
        """Style vectors of one user's entries, rows in the order of ``ids`` (zeros if gone).

        ``ids`` come from a read filtered by ``user`` and every id hashes its user in, so a
        plain id lookup stays inside the user: adding ``where`` here makes Chroma scan the
        collection (seconds at 10k entries) for no gain in isolation.
        """
        rows = np.zeros((len(ids), self._dimension), dtype=np.float32)
        position = {id_: i for i, id_ in enumerate(ids)}
        for batch in _batches(ids, self._max_batch):
            found = self._read(ids=list(batch), include=["embeddings"])
            for id_, vector in zip(found["ids"], found["embeddings"], strict=True):
                rows[position[id_]] = vector
        return rows

    def get(self, user_id: str, entry_id: str) -> ProfileEntry | None:
        """One entry of one user, or None."""
        user = validate_user_id(user_id)
        found = [e for e in self._get_by_ids([entry_id]) if e.user_id == user]
        return found[0] if found else None

    def find_run(self, run_id: str, user_id: str | None = None) -> ProfileEntry | None:
        """The entry recorded for a tracked run (run ids are unguessable UUIDs)."""
        where: dict[str, Any] = {"run_id": run_id}
        if user_id is not None:
            where = {"$and": [where, {"user_id": validate_user_id(user_id)}]}
        found = entries_from(self._read(where=where, include=_INCLUDE_ALL))
        found = [e for e in found if e.run_id == run_id]
        return max(found, key=lambda e: e.updated_at) if found else None

    def pending_older_than(self, user_id: str, cutoff: float) -> list[str]:
        """Ids of one user's pending entries last touched before ``cutoff``."""
        user = validate_user_id(user_id)
        where = {"$and": [{"user_id": user}, {"pending": True}, {"updated_at": {"$lt": cutoff}}]}
        return self._ids_where(where)

    def count(self, user_id: str) -> int:
        """Number of entries stored for one user."""
        return len(self._ids_where({"user_id": validate_user_id(user_id)}))

    def total(self) -> int:
        """Number of entries in the whole collection (all users; no content is read)."""
        return int(self._collection.count())

    def user_ids(self) -> list[str]:
        """The users that have entries (reads only the ``user_id`` field)."""
        users: set[str] = set()
        for page in self._pages(include=["metadatas"]):
            users.update(str(m["user_id"]) for m in page["metadatas"] or [])
        return sorted(users)

    def _pages(self, include: Any, page_size: int = 5000) -> Iterator[Any]:
        offset = 0
        while True:
            page = self._read(include=include, limit=page_size, offset=offset)
            if not page["ids"]:
                return
            yield page
            offset += len(page["ids"])

    def _entries_where(self, where: Any) -> list[ProfileEntry]:
        """Every entry matching ``where``. Chroma's SQLite fails a read of more rows than it
        has SQL variables for ("too many SQL variables" at 100k rows), so a result larger
        than one page is read as ids first, then by id, a page at a time."""
        first = self._read(where=where, include=_INCLUDE_ALL, limit=_READ_PAGE + 1)
        if len(first["ids"]) <= _READ_PAGE:
            return entries_from(first)
        ids = self._ids_where(where)
        return [e for page in _batches(ids, _READ_PAGE) for e in self._get_by_ids(list(page))]

    def _get_by_ids(self, ids: list[str]) -> list[ProfileEntry]:
        if not ids:
            return []
        return entries_from(self._read(ids=ids, include=_INCLUDE_ALL))

    def _read(self, **query: Any) -> Any:
        """``collection.get`` under the write lock: embedded Chroma can fail a read that races
        a write of another thread ("Error finding id"; see docs/reliability.md)."""
        with self._write_lock:
            return self._collection.get(**query)

    def _ids_where(self, where: Any) -> list[str]:
        return list(self._read(where=where, include=[])["ids"])


def _fingerprint(embeddings: Embeddings) -> tuple[str, int]:
    if isinstance(embeddings, StyleEmbeddings):
        return embeddings.fingerprint, embeddings.dimension
    dimension = len(embeddings.embed_query("outprofile fingerprint probe"))
    return f"{type(embeddings).__module__}.{type(embeddings).__qualname__}", dimension


def _state_id(kind: str, user: str, key: str = "") -> str:
    digest = hashlib.sha256(f"{user}\x00{key}".encode()).hexdigest()[:32]
    return f"{kind}:{digest}"


def _version_in(rows: dict[str, tuple[str | None, Any]], version_id: str) -> str:
    return str(rows[version_id][1]["version"]) if version_id in rows else ""


def _fold_duplicates(entries: Sequence[ProfileEntry]) -> list[ProfileEntry]:
    """Merge entries of one batch that share an id, in the order given."""
    folded: dict[str, ProfileEntry] = {}
    for entry in entries:
        folded[entry.id] = folded[entry.id].merged_with(entry) if entry.id in folded else entry
    return list(folded.values())


def _batches(items: Sequence[_T], size: int) -> Iterator[Sequence[_T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
