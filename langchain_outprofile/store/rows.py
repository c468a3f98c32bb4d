"""Rows: how one profile entry is laid out in a Chroma row, and back.

No chromadb import here: this module turns entries into the metadata the store writes,
and rows the store read back into entries (row format 2, and format 1 as written by
earlier releases).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from langchain_outprofile.types import ProfileEntry, stored_entry

__all__ = [
    "EXPIRY_KEY",
    "LOG_MARK",
    "PAYLOAD_KEY",
    "Row",
    "entries_from",
    "rows_from",
    "to_metadata",
]

LOG_MARK = "lg"
"""Metadata key of a row written since the signal log (``log.py``): its payload is a
writer's cache, not a base to fold."""
META_PREFIX = "m."  # row format 1: one metadata key per user metadata field
PAYLOAD_KEY = "e"
EXPIRY_KEY = "exp"
"""Key of the expiry, on a log row of a ``put`` that names one and on an entry row (where
``expire`` looks; the fold decides)."""


def to_metadata(entry: ProfileEntry) -> dict[str, Any]:
    """The Chroma metadata of one entry (row format 2).

    Everything the store never filters on, the text included, travels in one JSON field
    (``e``): Chroma indexes every metadata key and full-text indexes every document, and
    those indexes were most of the cost of a write (docs/benchmarks.md). Only the filtered
    fields are keys of their own: ``user_id`` and ``pending`` always, ``run_id`` for tracked
    outputs, ``updated_at`` for pending ones, ``exp`` for expiring ones. Chroma's upsert
    keeps keys a write leaves out, so readers check the payload: a leftover ``run_id``,
    ``updated_at`` or ``exp`` only widens a filter, never decides.
    """
    payload = entry.to_dict()
    del payload["id"], payload["user_id"]
    payload["signals"] = ",".join(payload["signals"])
    metadata: dict[str, Any] = {
        "user_id": entry.user_id,
        PAYLOAD_KEY: json.dumps(payload),
        "pending": entry.pending,  # always written: an upsert keeps keys it does not set
    }
    if entry.run_id:  # the payload holds the truth; a stale key only widens a filter
        metadata["run_id"] = entry.run_id
    if entry.pending:
        metadata["updated_at"] = float(entry.updated_at)
    if entry.expires_at is not None:  # an expiry sweep finds a row a repair wrote by it
        metadata[EXPIRY_KEY] = float(entry.expires_at)
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
        stored_entry(id_, str(meta["user_id"]), next(payloads))
        if PAYLOAD_KEY in meta
        else _from_format_1(id_, doc, meta)
        for id_, doc, meta in zip(result["ids"], documents, metadatas, strict=True)
    ]


def _from_format_1(id_: str, document: str, meta: Any) -> ProfileEntry:
    """An entry written in row format 1 (text as the document, one key per field)."""
    extra = {k[len(META_PREFIX) :]: v for k, v in meta.items() if k.startswith(META_PREFIX)}
    return stored_entry(id_, str(meta["user_id"]), {**meta, "text": document, "metadata": extra})


@dataclass(frozen=True)
class Row:
    """One entry row as read: its entry (the payload), and whether it was written before
    the signal log, so that its payload is the entry's *base* (``legacy``)."""

    id: str
    entry: ProfileEntry
    legacy: bool


def rows_from(result: Any) -> list[Row]:
    """Rows from a ``collection.get`` result that included metadatas."""
    metadatas = result["metadatas"] or []
    return [
        Row(entry.id, entry, LOG_MARK not in (meta or {}))
        for entry, meta in zip(entries_from(result), metadatas, strict=True)
    ]
