"""Each dataset's people as rounds of the closed loop (``loop.py``): POPQUORN users and
CoAuthor writers mapped onto the shapes LAMP edits load as (:class:`EditWriter` of
:class:`WriterEdit`), so one loop runs them all. What a round's request, replayed output and
feedback are for each dataset is in ``loop.py``'s module docstring."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from outprofile_lab.evaluation.data import (
    EditWriter,
    RewriteUser,
    SuggestionList,
    WriterEdit,
    WritingSession,
)
from outprofile_lab.evaluation.tasks import continue_request, list_target, rewrite_request

__all__ = ["coauthor_writers", "popquorn_writers"]


def popquorn_writers(users: Sequence[RewriteUser]) -> list[EditWriter]:
    """POPQUORN users as loop writers (``pq-<user>``): each pair, in data order, is a round
    whose request is the static task's (:func:`tasks.rewrite_request` of the email), whose
    replayed output is the email unchanged (``preedit``: a null rewriter) and whose
    feedback is the user's rewrite (``postedit``). ``paragraph_id`` is the email's
    instance id (two users rewrote some emails).

    Example:
        ```python
        writers = popquorn_writers(load_popquorn("popquorn_users.jsonl", limit=60))
        ```
    """
    return [
        EditWriter(
            f"pq-{user.user}",
            tuple(
                WriterEdit(
                    id=f"pq-{user.user}/{pair.instance_id}",
                    instruction=None,
                    preedit=pair.input,
                    postedit=pair.output,
                    paragraph_id=pair.instance_id,
                    request=rewrite_request(pair.input),
                )
                for pair in user.pairs
            ),
            dataset="popquorn",
        )
        for user in users
    ]


def coauthor_writers(
    sessions: Sequence[WritingSession], *, limit: int | None = None
) -> list[EditWriter]:
    """CoAuthor writers as loop writers (``co-<writer>``): every list they accepted or
    dismissed, over all their sessions in time order, is a round (see the module docstring).

    ``limit`` keeps N lists in all, dealt round-robin over the writers (in id order), each
    writer keeping the first of their lists in time order, so a short run covers every
    writer evenly, as the static task's ``--limit`` does.

    Example:
        ```python
        writers = coauthor_writers(load_coauthor("coauthor_sessions.jsonl.gz"), limit=600)
        ```
    """
    by_writer: dict[str, list[tuple[float, WriterEdit]]] = defaultdict(list)
    for session in sessions:
        for index, event in enumerate(session.events):
            if isinstance(event, SuggestionList):
                edit = _list_round(session, index, event)
                if edit is not None:
                    by_writer[session.writer].append((event.t, edit))
    rounds = {w: [e for _, e in sorted(items, key=_first)] for w, items in by_writer.items()}
    keep = _dealt({w: len(r) for w, r in rounds.items()}, limit)
    return [
        EditWriter(f"co-{w}", tuple(rounds[w][: keep[w]]), dataset="coauthor")
        for w in sorted(rounds)
        if keep[w]
    ]


def _first(item: tuple[float, WriterEdit]) -> float:
    return item[0]


def _list_round(session: WritingSession, index: int, event: SuggestionList) -> WriterEdit | None:
    """One list as a round, or None when the writer neither accepted nor dismissed it."""
    shown = tuple(c for c in event.candidates if c.strip())
    if event.chosen is not None:
        output = event.candidates[event.chosen]
    elif event.closed_by == "user" and shown:
        output = shown[0]  # a dismissed list: the first candidate shown stands for it
    else:
        return None
    if not output.strip():
        return None
    accepted = event.chosen is not None
    edit = event.edited_to if accepted and event.edited_to and event.edited_to.strip() else None
    return WriterEdit(
        id=f"co-{session.session}-{index}",
        instruction=None,
        preedit=output,
        postedit=output,
        paragraph_id=None,
        request=continue_request(event.context),
        feedback="accepted" if accepted else "rejected",
        candidates=shown,
        chosen=shown.index(output) if accepted else -1,
        scorable=list_target(session, index, event) is not None,
        t=event.t,
        later_edit=edit if edit != output else None,
        later_edit_at=session.ended_at,
    )


def _dealt(sizes: dict[str, int], limit: int | None) -> dict[str, int]:
    """How many rounds each writer keeps when ``limit`` are dealt round-robin."""
    if limit is None:
        return dict(sizes)
    keep, left = dict.fromkeys(sizes, 0), limit
    while left > 0 and any(keep[w] < n for w, n in sizes.items()):
        for writer in sorted(sizes):
            if left > 0 and keep[writer] < sizes[writer]:
                keep[writer] += 1
                left -= 1
    return keep
