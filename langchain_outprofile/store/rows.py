"""Rows: how one profile entry is laid out in a Chroma row, and back.

No chromadb import here: this module turns entries into the metadata the store writes,
and rows the store read back into entries (row format 2: docs/design.md).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from langchain_outprofile.types import ProfileEntry, stored_entry

__all__ = [
    "EXPIRY_KEY",
    "LOG_MARK",
    "OWN_ROWS",
    "PAYLOAD_KEY",
    "Row",
    "entries_from",
    "own_where",
    "rows_from",
    "to_metadata",
]

LOG_MARK = "lg"
"""Metadata key of a row written since the signal log (``log.py``): its payload is a
writer's cache, not a base to fold."""
PAYLOAD_KEY = "e"
OWN_ROWS: dict[str, Any] = {"pending": {"$in": [True, False]}}
"""The ``where`` that matches only rows this package wrote: every row of every format it has
written carries ``pending`` as a boolean. A collection brought from the app (a
``langchain_chroma.Chroma``) also holds the app's own documents, which may carry a
``user_id`` too; Chroma then never returns them to a read of a user nor to a delete of one.
(Chroma has no "key exists" operator, and ``$ne`` matches rows without the key, so the mark
is a positive match on a boolean.) Rows that pass and still do not read as entries are
skipped by :func:`rows_from`."""


def own_where(where: Any = None) -> dict[str, Any]:
    """``where`` restricted to this package's own rows (:data:`OWN_ROWS`)."""
    return dict(OWN_ROWS) if not where else {"$and": [where, OWN_ROWS]}


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
    """Entries from a ``collection.get`` result; rows that do not read as this package's
    entries (an app's documents in a brought collection) are left out."""
    return [row.entry for row in rows_from(result)]


def _all_entries(result: Any) -> list[ProfileEntry]:
    """Every row of a result as an entry, in one ``json.loads`` for all payloads (a cold
    rebuild parses thousands of them); raises on the first row that is not an entry."""
    metadatas = result["metadatas"] or []
    payloads = json.loads("[" + ",".join(m[PAYLOAD_KEY] for m in metadatas) + "]")
    return [
        stored_entry(id_, str(meta["user_id"]), payload)
        for id_, meta, payload in zip(result["ids"], metadatas, payloads, strict=True)
    ]


def _own_entry(id_: str, meta: Any) -> ProfileEntry | None:
    """One row as an entry, or None when it is not a row this package wrote."""
    if not isinstance(meta, dict) or not isinstance(meta.get("pending"), bool):
        return None
    if not isinstance(meta.get("user_id"), str):
        return None
    try:
        payload = json.loads(meta[PAYLOAD_KEY])
        if not isinstance(payload, dict):
            return None
        return stored_entry(id_, meta["user_id"], payload)
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


@dataclass(frozen=True)
class Row:
    """One entry row as read: its entry (the payload), and whether it was written before
    the signal log, so that its payload is the entry's *base* (``legacy``)."""

    id: str
    entry: ProfileEntry
    legacy: bool


def rows_from(result: Any) -> list[Row]:
    """Rows from a ``collection.get`` result that included metadatas. A row that does not
    read as this package's entry (no boolean ``pending`` mark, no readable payload: an app's
    document in a brought collection) is skipped, never raised on nor returned."""
    metadatas = result["metadatas"] or []
    try:
        entries = _all_entries(result)
        if all(isinstance((m or {}).get("pending"), bool) for m in metadatas):
            return [
                Row(entry.id, entry, LOG_MARK not in (meta or {}))
                for entry, meta in zip(entries, metadatas, strict=True)
            ]
    except (KeyError, TypeError, ValueError, AttributeError):
        pass  # some row is not ours: read them one by one
    rows = []
    for id_, meta in zip(result["ids"], metadatas, strict=True):
        entry = _own_entry(id_, meta)
        if entry is not None:
            rows.append(Row(id_, entry, LOG_MARK not in meta))
    return rows
