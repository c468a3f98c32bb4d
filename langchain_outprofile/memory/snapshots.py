"""Snapshots: a finished selection kept in the store, for cold reads of an unchanged profile.

The block is query-free, so it stays the same until the profile changes (or recency decay
has moved on). The memory saves every query-free selection it computes under a key of its
options, tagged with the profile version it read *before* loading the entries; every write
gives the user a new version. A later cold read (another process, or after the in-memory
cache expired) that finds a snapshot of the current version serves it from two reads by id
instead of loading and ranking the whole profile.

The payload is compact JSON: no spaces, entry fields at their default ('' or {}) left out,
and the choice's left-out candidates (the first :data:`LEFT_OUT_KEPT`, as ``explain`` shows;
the total is kept) except pending outputs: a pending output is never in a block, so writing
or expiring one leaves the snapshot valid, and none is quoted in it. Format 2 rows live in
per-user slots (``store/state.py``).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from langchain_outprofile.render import BlockTemplate
from langchain_outprofile.select import LEFT_OUT_KEPT, Beyond
from langchain_outprofile.store.log import Coverage
from langchain_outprofile.types import (
    Candidate,
    Choice,
    ProfileEntry,
    ProfileSelection,
    SelectionOptions,
    stored_entry,
)

__all__ = [
    "LEFT_OUT_KEPT",
    "Head",
    "dump_selection",
    "load_head",
    "load_selection",
    "snapshot_key",
    "stored_selection",
]

FORMAT = 2
try:  # a new release may choose differently: its snapshots never serve an older one's
    _RELEASE = version("langchain-outprofile")
except PackageNotFoundError:  # run from a source tree that was never installed
    _RELEASE = "source"
_DEFAULTS: tuple[Any, ...] = ("", {})
"""Entry field values a payload leaves out (``stored_entry`` reads them back as these)."""


def snapshot_key(options: SelectionOptions, template: BlockTemplate, encoding: str) -> str:
    """One key per way of choosing and rendering a block (both are frozen dataclasses whose
    ``repr`` lists every field, so equal settings give equal keys in every process)."""
    settings = repr((FORMAT, _RELEASE, options, template, encoding))
    return hashlib.sha256(settings.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Head:
    """A ranking head kept beside a snapshot (``Ranking.head``): its entries, what lies
    beyond them, and exactly which events of the log the fold they came from held."""

    entries: tuple[ProfileEntry, ...]
    beyond: Beyond
    coverage: Coverage


def dump_selection(selection: ProfileSelection, *, until: float, head: Head | None = None) -> str:
    """The selection as a JSON payload that :func:`load_selection` restores exactly, with
    the ranking head it was chosen from when given (:func:`load_head`)."""
    choice = selection.choice
    data: dict[str, Any] = {
        "format": FORMAT,
        "valid_until": until,
        "text": selection.text,
        "tokens": selection.tokens,
        "encoding": selection.encoding,
        "chosen": [_candidate_dict(c) for c in choice.chosen],
        "left_out": [_candidate_dict(c) for c in choice.left_out if not c.entry.pending],
        "left_out_total": choice.left_out_total,
        "note": choice.note,
    }
    selection_json = json.dumps(data, separators=(",", ":"))
    if head is None:
        return selection_json
    beyond = head.beyond
    head_data = {
        "entries": [_entry_dict(e) for e in head.entries],
        "beyond": [
            beyond.eligible,
            beyond.rest,
            beyond.eligible_cut,
            beyond.rest_cut,
            None if math.isinf(beyond.expiry) else beyond.expiry,
        ],
        "coverage": head.coverage.to_dict(),
    }
    # on a line of its own (compact JSON holds no newline): a read of the current
    # snapshot decodes the selection only, not the head's hundreds of entries
    return selection_json + "\n" + json.dumps(head_data, separators=(",", ":"))


def load_head(payload: str, *, user_id: str) -> Head | None:
    """The ranking head a payload keeps, or None (none kept, damaged, or of another user)."""
    _, newline, head_json = payload.partition("\n")
    if not newline:
        return None
    try:
        data = json.loads(head_json)
        entries = tuple(stored_entry(str(e["id"]), str(e["user_id"]), e) for e in data["entries"])
        eligible, rest, eligible_cut, rest_cut, expiry = data["beyond"]
        beyond = Beyond(
            eligible=int(eligible),
            rest=int(rest),
            eligible_cut=None if eligible_cut is None else _order(eligible_cut, 3),
            rest_cut=None if rest_cut is None else _order(rest_cut, 2),
            expiry=math.inf if expiry is None else float(expiry),
        )
        coverage = Coverage.from_dict(data["coverage"])
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    if any(e.user_id != user_id for e in entries):
        return None
    return Head(entries, beyond, coverage)


def _order(values: Any, size: int) -> Any:
    """A ranking order read back from JSON (a list) as the tuple it was."""
    order = tuple(values)
    if len(order) != size:
        raise ValueError("a damaged ranking order")
    return order


def load_selection(
    payload: str, *, user_id: str, options: SelectionOptions, now: float
) -> ProfileSelection | None:
    """The stored selection, or None when it has expired, is damaged, of another format or
    of another user (ids hash the user in; this is the second check)."""
    try:
        data = json.loads(payload.split("\n", 1)[0])
        if data.get("format") != FORMAT or float(data["valid_until"]) <= now:
            return None
        chosen = tuple(_candidate(c) for c in data["chosen"])
        left_out = tuple(_candidate(c) for c in data["left_out"])
    except (ValueError, KeyError, TypeError, AttributeError):
        return None  # damaged: the caller ranks the profile again and saves a good one
    if any(c.entry.user_id != user_id for c in (*chosen, *left_out)):
        return None
    return stored_selection(
        data,
        user_id=user_id,
        text=str(data["text"]),
        chosen=chosen,
        left_out=left_out,
        options=options,
    )


def stored_selection(
    data: dict[str, Any],
    *,
    user_id: str,
    text: str,
    chosen: tuple[Candidate, ...],
    left_out: tuple[Candidate, ...],
    options: SelectionOptions,
) -> ProfileSelection:
    """A selection from a stored payload's counts (``tokens``, ``encoding``,
    ``left_out_total``, ``note``) and the candidates restored from it (a snapshot's, or a
    pin's, read by id)."""
    choice = Choice(
        chosen,
        left_out,
        options,
        left_out_total=int(data["left_out_total"]),
        note=str(data.get("note", "")),
        valid_until=float(data["valid_until"]),  # at most its ranking's next expiry
    )
    return ProfileSelection(
        user_id=user_id,
        text=text,
        tokens=int(data["tokens"]),
        choice=choice,
        encoding=str(data["encoding"]),
    )


def _entry_dict(entry: ProfileEntry) -> dict[str, Any]:
    return {k: v for k, v in entry.to_dict().items() if v not in _DEFAULTS}


def _candidate_dict(candidate: Candidate) -> dict[str, Any]:
    return {
        "entry": _entry_dict(candidate.entry),
        "score": candidate.score,
        "age_days": candidate.age_days,
        "tokens": candidate.tokens,
        "cut": candidate.cut,
        "reason": candidate.reason,
    }


def _candidate(data: dict[str, Any]) -> Candidate:
    entry = data["entry"]
    return Candidate(
        entry=stored_entry(str(entry["id"]), str(entry["user_id"]), entry),
        score=float(data["score"]),
        age_days=float(data["age_days"]),
        tokens=int(data["tokens"]),
        cut=bool(data["cut"]),
        reason=str(data["reason"]),
    )
