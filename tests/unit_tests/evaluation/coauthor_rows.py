"""Invented CoAuthor rows (the shapes of ``coauthor_sessions.jsonl.gz``), for the static
CoAuthor task's tests and the closed loop's: every text is made up."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def typed_row(t: float, text: str) -> dict[str, Any]:
    """A sentence the writer typed, finished at ``t``."""
    return {"kind": "typed", "t": t, "text": text}


def list_row(
    t: float,
    candidates: Sequence[str],
    chosen: int | None,
    closed_by: str,
    edited_to: str | None = None,
) -> dict[str, Any]:
    """A suggestion list opened at ``t``: ``chosen`` is the accepted candidate's index (None:
    none), ``closed_by`` how it closed, ``edited_to`` a later edit of the accepted text."""
    return {
        "kind": "suggestions",
        "t": t,
        "context": f"An invented story, as it stood at {t}. " * 3,
        "candidates": list(candidates),
        "chosen": chosen,
        "closed_by": closed_by,
        "kept_verbatim": chosen is not None and not edited_to,
        "edited_to": edited_to or None,
    }


def session_row(
    writer: str, session: str, start: float, events: list[dict[str, Any]]
) -> dict[str, Any]:
    """One writing session of ``writer`` holding ``events`` in time order."""
    return {
        "writer": writer,
        "session": session,
        "genre": "creative",
        "prompt_code": "x",
        "started_at": start,
        "prompt": "An invented prompt.",
        "events": events,
        "final_text": "unused",
    }
