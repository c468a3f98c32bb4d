"""Capture: the rules that turn what happened (an add, a tracked run, feedback) into entries.

Which signal a piece of feedback means, what a run id may be, when a tracked output that
never got feedback is stale, and how an item of ``add_many`` becomes a validated entry.
Pure functions: nothing here reads or writes the store.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from langchain_outprofile.errors import InvalidInputError
from langchain_outprofile.types import ProfileEntry, ProfileSelection, Signal
from langchain_outprofile.validation import (
    clamp_to_now,
    encodable,
    validate_entry_id,
    validate_items,
)

__all__ = [
    "FEEDBACK_SIGNALS",
    "MAX_SERVED",
    "coerce_item",
    "feedback_signal",
    "is_stale_pending",
    "pending_cutoff",
    "served_ids",
    "timely",
    "validate_run_id",
]

MAX_SERVED = 1_000
"""The most entries a run's block can be recorded to hold (a 4,000-token block of one-token
entries would hold fewer)."""

FEEDBACK_SIGNALS = frozenset({Signal.ENDORSED, Signal.REJECTED, Signal.RATING, Signal.ACCEPTED})


def pending_cutoff(now: float, pending_ttl_s: float) -> float:
    """Tracked outputs last touched before this time are stale."""
    return now - pending_ttl_s


def is_stale_pending(entry: ProfileEntry, now: float, pending_ttl_s: float) -> bool:
    """The one staleness rule: a pending entry not touched for ``pending_ttl_s`` is stale
    (never selected, never answered; deleted on the next write or ``expire_pending``).

    Example:
        ```python
        is_stale_pending(entry, now=time.time(), pending_ttl_s=7 * 86_400)
        ```
    """
    return entry.pending and entry.updated_at < pending_cutoff(now, pending_ttl_s)


def timely(entry: ProfileEntry, now: float) -> ProfileEntry:
    """``entry`` with the caller's times clamped to ``now`` (see
    :func:`~langchain_outprofile.validation.clamp_to_now`; a time further ahead raises)."""
    created = clamp_to_now(entry.created_at, now, "created_at")
    updated = clamp_to_now(entry.updated_at, now, "updated_at")
    if (created, updated) == (entry.created_at, entry.updated_at):
        return entry
    return replace(entry, created_at=created, updated_at=updated)


def validate_run_id(run_id: object) -> str:
    """A run id as text (a UUID or a non-empty string) or :class:`InvalidInputError`."""
    if isinstance(run_id, uuid.UUID):
        return str(run_id)
    # a lone surrogate (a request's JSON "\ud800") cannot be stored or hashed as UTF-8
    if isinstance(run_id, str) and run_id.strip() and len(run_id) <= 256 and encodable(run_id):
        return run_id
    raise InvalidInputError(
        "run_id must be a UUID or a non-empty string of at most 256 characters of valid "
        f"Unicode; got {run_id!r:.80}"
    )


def feedback_signal(
    signal: Signal | str | None, rating: float | None, edited: str | None
) -> Signal:
    """The signal a piece of feedback means, or :class:`InvalidInputError` when the
    arguments do not make sense together.

    Example:
        ```python
        feedback_signal(None, 5, None)  # Signal.RATING
        feedback_signal(None, None, "my text")  # Signal.EDITED
        ```
    """
    parsed = None if signal is None else Signal.parse(signal)
    if edited is not None:
        if parsed not in (None, Signal.EDITED) or rating is not None:
            raise InvalidInputError(
                "edited= stands alone: do not combine it with a signal or rating"
            )
        return Signal.EDITED
    if parsed is Signal.EDITED:
        raise InvalidInputError("signal='edited' needs edited='the corrected text'")
    if rating is not None:
        if parsed not in (None, Signal.RATING):
            raise InvalidInputError(f"rating= goes with signal='rating'; got {parsed.value!r}")
        return Signal.RATING
    if parsed is None:
        raise InvalidInputError(
            "give feedback: a signal ('endorsed', 'rejected', 'accepted'), rating=1..5, "
            "or edited='the corrected text'"
        )
    if parsed not in FEEDBACK_SIGNALS or parsed is Signal.RATING:
        raise InvalidInputError(
            f"feedback signal must be endorsed, rejected or accepted (or rating=, edited=); "
            f"got {parsed.value!r}"
        )
    return parsed


def coerce_item(
    item: ProfileEntry | Mapping[str, Any],
    index: int,
    build: Callable[..., ProfileEntry],
    max_chars: int,
) -> ProfileEntry:
    """One item of ``add_many`` as a validated entry: a :class:`ProfileEntry` is checked
    field by field and gets the id its (user, text) call for; a dict goes through ``build``
    (the memory's :meth:`entry`). Errors name the item.
    """
    try:
        if isinstance(item, ProfileEntry):
            return item.validated(max_chars)
        if not isinstance(item, Mapping) or "text" not in item or "user_id" not in item:
            raise InvalidInputError("must be a ProfileEntry or a dict with 'text' and 'user_id'")
        fields = dict(item)
        return build(fields.pop("text"), user_id=fields.pop("user_id"), **fields)
    except TypeError as error:
        raise InvalidInputError(f"entries[{index}]: {error}") from None
    except InvalidInputError as error:
        raise InvalidInputError(f"entries[{index}]: {error}") from None


def served_ids(served: ProfileSelection | object, user_id: str) -> tuple[str, ...]:
    """The entry ids of the block a tracked run was served: a :class:`ProfileSelection` of
    the run's own user, or entry ids (an iterable of strings); none when ``served`` is None.

    Raises:
        InvalidInputError: a selection of another user, or something that is not entry ids.

    Example:
        ```python
        served_ids(memory.select("ana"), "ana")  # the ids of ana's block, in block order
        ```
    """
    if served is None:
        return ()
    if isinstance(served, ProfileSelection):
        if served.user_id != user_id:
            raise InvalidInputError(
                f"served= is the block of user {served.user_id!r}, not of {user_id!r}, whose "
                "run this is: pass the selection made for the run's own user"
            )
        return tuple(e.id for e in served.entries)
    ids = [validate_entry_id(i) for i in validate_items(served, "served")]
    if len(ids) > MAX_SERVED:
        raise InvalidInputError(
            f"served= names {len(ids)} entries; a block holds at most {MAX_SERVED}"
        )
    return tuple(dict.fromkeys(ids))
