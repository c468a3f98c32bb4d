"""Store: one Chroma collection holding many users' profile entries.

This is the only module that imports chromadb. Every read, delete and export is
filtered by ``user_id`` here; there is no unfiltered read path for entry content.
Embeddings are always passed explicitly, so Chroma's default embedding function (which
downloads a model) never runs.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import lru_cache
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
    Signal,
    validate_user_id,
)

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

SCHEMA_VERSION = 1
DEFAULT_COLLECTION = "outprofile"
_META_PREFIX = "m."
_COLLECTION_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9._-]{1,510}[a-zA-Z0-9]")
_INCLUDE_ALL: Any = ["documents", "metadatas"]


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


class StoredProfile:
    """Every entry of one user, with the style vectors stored beside them (row i ↔ entry i).

    Vectors may be fetched lazily: a cold read loads texts and metadata only, and selection
    asks :meth:`vectors_for` for the rows of its candidate pool, so a large profile never
    moves every embedding out of Chroma. Fetched rows are kept.

    Args:
        entries: the entries, oldest first.
        vectors: every row at once; or None with ``fetch``.
        fetch: returns the vectors of the given entry ids (rows in that order).
        dimension: vector length, when ``vectors`` is None.

    Example:
        ```python
        profile = StoredProfile((entry,), np.ones((1, 8), dtype=np.float32))
        profile.vectors_for([0]).shape  # (1, 8)
        ```
    """

    def __init__(
        self,
        entries: tuple[ProfileEntry, ...],
        vectors: np.ndarray | None = None,
        *,
        fetch: Callable[[list[str]], np.ndarray] | None = None,
        dimension: int = 0,
    ) -> None:
        if vectors is None and fetch is None:
            raise InvalidInputError("StoredProfile needs vectors or a fetch function")
        self.entries = entries
        self._all = vectors
        self._fetch = fetch
        self._dimension = dimension if vectors is None else int(vectors.shape[1])
        self._rows: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()

    @property
    def vectors(self) -> np.ndarray:
        """Every row (fetched once, on first use, when the profile was loaded lazily)."""
        if self._all is None:
            self._all = self.vectors_for(range(len(self.entries)))
        return self._all

    def vectors_for(self, indices: Iterable[int]) -> np.ndarray:
        """The rows of the given entry indices, fetching only those not seen before."""
        wanted = list(indices)
        if self._all is not None:
            return self._all[wanted]
        with self._lock:
            missing = sorted({i for i in wanted if i not in self._rows})
            if missing and self._fetch is not None:
                rows = self._fetch([self.entries[i].id for i in missing])
                self._rows.update(zip(missing, rows, strict=True))
            if not wanted:
                return np.zeros((0, self._dimension), dtype=np.float32)
            return np.stack([self._rows[i] for i in wanted])


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
        self._max_batch = max(1, int(client.get_max_batch_size()))
        self._write_lock = threading.RLock()

    @property
    def collection_name(self) -> str:
        """Name of the Chroma collection in use."""
        return str(self._collection.name)

    def _open_collection(self, name: str) -> Any:
        if not isinstance(name, str) or not _COLLECTION_NAME.fullmatch(name):
            raise InvalidInputError(
                f"collection_name must be 3-512 characters of [a-zA-Z0-9._-], starting and "
                f"ending with a letter or digit; got {name!r}"
            )
        wanted = {
            "outprofile_schema": SCHEMA_VERSION,
            "embedding": self._fingerprint,
            "dimension": self._dimension,
            "hnsw:space": "cosine",
        }
        collection = self.client.get_or_create_collection(
            name=name, metadata=wanted, embedding_function=None
        )
        found = dict(collection.metadata or {})
        for key in ("outprofile_schema", "embedding", "dimension"):
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
                merged = [stored[e.id].merged_with(e) if e.id in stored else e for e in batch]
                self._write(merged)
                merged_all.extend(merged)
        return merged_all

    def replace(self, entries: Sequence[ProfileEntry]) -> None:
        """Store entries exactly as given (no folding): for imports and feedback rewrites.

        When several entries share an id, the last one wins (Chroma refuses duplicate ids).
        """
        last = list({e.id: e for e in entries}.values())
        with self._write_lock:
            for batch in _batches(last, self._max_batch):
                self._write(batch)

    def _write(self, batch: Sequence[ProfileEntry]) -> None:
        if not batch:
            return
        vectors = self.embeddings.embed_documents([e.text for e in batch])
        self._collection.upsert(
            ids=[e.id for e in batch],
            documents=[e.text for e in batch],
            metadatas=[_to_metadata(e) for e in batch],
            embeddings=np.asarray(vectors, dtype=np.float32),
        )

    def delete(self, user_id: str, ids: Iterable[str]) -> int:
        """Delete the given entries of one user; ids of other users are left alone."""
        user = validate_user_id(user_id)
        with self._write_lock:
            owned = [e.id for e in self._get_by_ids(list(ids)) if e.user_id == user]
            for batch in _batches(owned, self._max_batch):
                self._collection.delete(ids=batch, where={"user_id": user})
        return len(owned)

    def delete_user(self, user_id: str) -> int:
        """Hard-delete every entry of one user, pending ones included."""
        user = validate_user_id(user_id)
        with self._write_lock:
            ids = self._ids_where({"user_id": user})
            for batch in _batches(ids, self._max_batch):
                self._collection.delete(ids=batch, where={"user_id": user})
        return len(ids)

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
        entries = _entries_from(self._read(where=where, include=_INCLUDE_ALL))
        entries.sort(key=lambda e: (e.created_at, e.id))
        if not with_vectors:
            return StoredProfile(
                tuple(entries), np.zeros((len(entries), self._dimension), np.float32)
            )
        return StoredProfile(
            tuple(entries), fetch=lambda ids: self._vectors(user, ids), dimension=self._dimension
        )

    def _eager_profile(self, result: Any) -> StoredProfile:
        entries = _entries_from(result)
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
        found = _entries_from(self._read(where=where, include=_INCLUDE_ALL))
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

    def _get_by_ids(self, ids: list[str]) -> list[ProfileEntry]:
        if not ids:
            return []
        return _entries_from(self._read(ids=ids, include=_INCLUDE_ALL))

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


def _fold_duplicates(entries: Sequence[ProfileEntry]) -> list[ProfileEntry]:
    """Merge entries of one batch that share an id, in the order given."""
    folded: dict[str, ProfileEntry] = {}
    for entry in entries:
        folded[entry.id] = folded[entry.id].merged_with(entry) if entry.id in folded else entry
    return list(folded.values())


def _batches(items: Sequence[_T], size: int) -> Iterator[Sequence[_T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _to_metadata(entry: ProfileEntry) -> dict[str, Any]:
    metadata: dict[str, Any] = {f"{_META_PREFIX}{k}": v for k, v in entry.metadata.items()}
    metadata.update(
        user_id=entry.user_id,
        signals=",".join(s.value for s in entry.signals),
        strength=float(entry.strength),
        selectable=entry.selectable,
        pending=entry.pending,
        task=entry.task,
        source_input=entry.source_input,
        created_at=float(entry.created_at),
        updated_at=float(entry.updated_at),
        run_id=entry.run_id,
    )
    return metadata


def _entries_from(result: Any) -> list[ProfileEntry]:
    documents = result["documents"] or []
    metadatas = result["metadatas"] or []
    return [
        _from_metadata(id_, doc, meta)
        for id_, doc, meta in zip(result["ids"], documents, metadatas, strict=True)
    ]


@lru_cache(maxsize=1024)
def _signals_of(value: str) -> tuple[Signal, ...]:
    """Parse a stored signal list once per distinct value (a cold read builds thousands)."""
    return tuple(Signal(s) for s in value.split(",") if s)


def _from_metadata(id_: str, document: str, meta: Any) -> ProfileEntry:
    extra = {k[len(_META_PREFIX) :]: v for k, v in meta.items() if k.startswith(_META_PREFIX)}
    return ProfileEntry(
        id=id_,
        user_id=str(meta["user_id"]),
        text=document,
        signals=_signals_of(str(meta["signals"])),
        strength=float(meta["strength"]),
        task=str(meta.get("task", "")),
        source_input=str(meta.get("source_input", "")),
        created_at=float(meta.get("created_at", 0.0)),
        updated_at=float(meta.get("updated_at", 0.0)),
        run_id=str(meta.get("run_id", "")),
        metadata=extra,
    )
