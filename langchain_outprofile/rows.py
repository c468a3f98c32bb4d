"""Rows: how one profile entry is laid out in a Chroma row, and a user's loaded profile.

No chromadb import here: this module turns entries into the ids, documents and metadata
the store writes, and rows the store read back into entries. :class:`StoredProfile` holds
one user's entries with their style vectors, fetched lazily for large profiles.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from functools import lru_cache
from typing import Any

import numpy as np

from langchain_outprofile.records import InvalidInputError, ProfileEntry, Signal

__all__ = ["StoredProfile", "entries_from", "to_metadata"]

META_PREFIX = "m."  # row format 1: one metadata key per user metadata field
PAYLOAD_KEY = "e"


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


def to_metadata(entry: ProfileEntry) -> dict[str, Any]:
    """The Chroma metadata of one entry (row format 2).

    Everything the store never filters on, the text included, travels in one JSON field
    (``e``): Chroma indexes every metadata key and full-text indexes every document, and
    those indexes were most of the cost of a write (docs/benchmarks.md). Only the filtered
    fields are keys of their own: ``user_id`` and ``pending`` always, ``run_id`` for tracked
    outputs, ``updated_at`` for pending ones. Chroma's upsert keeps keys a write leaves out,
    so readers check the payload: a leftover ``run_id`` or ``updated_at`` only widens a
    filter, never decides.
    """
    payload = {
        "text": entry.text,
        "signals": ",".join(s.value for s in entry.signals),
        "strength": float(entry.strength),
        "task": entry.task,
        "source_input": entry.source_input,
        "created_at": float(entry.created_at),
        "updated_at": float(entry.updated_at),
        "run_id": entry.run_id,
        "metadata": dict(entry.metadata),
    }
    metadata: dict[str, Any] = {
        "user_id": entry.user_id,
        PAYLOAD_KEY: json.dumps(payload),
        "pending": entry.pending,  # always written: an upsert keeps keys it does not set
    }
    if entry.run_id:  # the payload holds the truth; a stale key only widens a filter
        metadata["run_id"] = entry.run_id
    if entry.pending:
        metadata["updated_at"] = float(entry.updated_at)
    return metadata


def entries_from(result: Any) -> list[ProfileEntry]:
    """Entries from a ``collection.get`` result (row format 2, or 1 as written before)."""
    metadatas = result["metadatas"] or []
    documents = result["documents"] or [None] * len(metadatas)
    # one json.loads for every payload: a cold rebuild parses thousands of them
    payloads = iter(
        json.loads("[" + ",".join(m[PAYLOAD_KEY] for m in metadatas if PAYLOAD_KEY in m) + "]")
    )
    return [
        _from_payload(id_, meta, next(payloads))
        if PAYLOAD_KEY in meta
        else _from_metadata(id_, doc, meta)
        for id_, doc, meta in zip(result["ids"], documents, metadatas, strict=True)
    ]


def _from_payload(id_: str, meta: Any, payload: dict[str, Any]) -> ProfileEntry:
    return ProfileEntry(
        id=id_,
        user_id=str(meta["user_id"]),
        text=str(payload["text"]),
        signals=_signals_of(str(payload["signals"])),
        strength=float(payload["strength"]),
        task=str(payload["task"]),
        source_input=str(payload["source_input"]),
        created_at=float(payload["created_at"]),
        updated_at=float(payload["updated_at"]),
        run_id=str(payload["run_id"]),
        metadata=dict(payload["metadata"]),
    )


@lru_cache(maxsize=1024)
def _signals_of(value: str) -> tuple[Signal, ...]:
    """Parse a stored signal list once per distinct value (a cold read builds thousands)."""
    return tuple(Signal(s) for s in value.split(",") if s)


def _from_metadata(id_: str, document: str, meta: Any) -> ProfileEntry:
    """An entry written in row format 1 (text as the document, one key per field)."""
    extra = {k[len(META_PREFIX) :]: v for k, v in meta.items() if k.startswith(META_PREFIX)}
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
