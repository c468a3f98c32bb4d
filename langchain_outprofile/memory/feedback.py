"""Feedback: a memory's tracked outputs and the feedback that turns them into signals.

A tracked run's output is stored as ``pending`` under its run id (:meth:`record_output`);
later, possibly in another process, :meth:`feedback` makes it endorsed / rejected /
rating / accepted, or stores the user's edited text instead. Pending outputs that never
got feedback expire after ``pending_ttl_s``: they are deleted by a later tracked run of that
user (checked at most hourly per process) or by ``expire``, never by a read; a
pending output is never in a block, so none of this changes one.

Credit. A run recorded with the block it was served (``served=``; ``memory.track`` passes
the block its injector or middleware chose) keeps those entry ids on its claim. Feedback on
the run then credits them (approved: endorsed, accepted, edited, 3 stars or more) or debits
them (rejected, 1-2 stars) with one ``credit`` event (``store/log.py``): each entry counts
the run once, by its latest feedback. Selection weighs it with ``credit_weight``.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import replace
from typing import Any

from langchain_outprofile.capture import (
    feedback_signal,
    is_stale_pending,
    served_ids,
    validate_run_id,
)
from langchain_outprofile.errors import AmbiguousRunError, InvalidInputError, UnknownRunError
from langchain_outprofile.memory.reader import ProfileReader
from langchain_outprofile.memory.retention import SWEEP_INTERVAL_S, NowAndThen
from langchain_outprofile.store import ProfileStore, Written
from langchain_outprofile.store.log import Event, feedback_event_id, run_event_id
from langchain_outprofile.telemetry import OperationSpan
from langchain_outprofile.types import ProfileEntry, ProfileSelection, Signal
from langchain_outprofile.validation import validate_user_id

__all__ = ["FeedbackMixin"]


class FeedbackMixin:
    """Tracked outputs and feedback, for :class:`OutputProfileMemory` (which provides the
    attributes and methods annotated here)."""

    store: ProfileStore
    clock: Callable[[], float]
    pending_ttl_s: float
    max_text_chars: int
    entry: Callable[..., ProfileEntry]
    _write_entries: Callable[..., Awaitable[list[ProfileEntry]]]
    _remove_ids: Callable[..., Awaitable[int]]
    _took: Callable[[Written], Awaitable[int]]
    _run: Callable[[Coroutine[Any, Any, Any]], Any]
    _arun: Callable[[Coroutine[Any, Any, Any]], Awaitable[Any]]
    _traced: Callable[..., Any]
    _atraced: Callable[..., Awaitable[Any]]
    _pending_sweeps: NowAndThen
    _reader: ProfileReader

    async def _add(self, text: str, **fields: Any) -> ProfileEntry:
        return (await self._write_entries([self.entry(text, **fields)]))[0]

    def record_output(
        self,
        text: str,
        *,
        user_id: str,
        run_id: str,
        source_input: str | None = None,
        task: str | None = None,
        served: ProfileSelection | Sequence[str] | None = None,
    ) -> ProfileEntry:
        """Store one run's output text as a ``pending`` entry under ``run_id`` (what
        ``memory.track(chain)`` calls after each run); stale pending entries of the user
        are deleted first.

        Args:
            served: the block the run was served (its :class:`ProfileSelection`, or the
                ids of its entries): feedback on the run credits or debits them.

        Raises:
            RunIdConflictError: another user's tracked run already holds ``run_id``.
            InvalidInputError: ``served`` is another user's block, or not entry ids.

        Example:
            ```python
            block = memory.select("ana")
            memory.record_output(
                "Hi Ana,", user_id="ana", run_id=str(uuid.uuid4()), served=block
            )
            ```
        """
        return self._traced(  # type: ignore[no-any-return]
            "upsert_memory",
            lambda: self._record_output(text, user_id, run_id, source_input, task, served),
            OperationSpan.entry,
            **_run_span(user_id, run_id, Signal.PENDING),
        )

    async def arecord_output(
        self,
        text: str,
        *,
        user_id: str,
        run_id: str,
        source_input: str | None = None,
        task: str | None = None,
        served: ProfileSelection | Sequence[str] | None = None,
    ) -> ProfileEntry:
        """Async :meth:`record_output`."""
        return await self._atraced(  # type: ignore[no-any-return]
            "upsert_memory",
            lambda: self._record_output(text, user_id, run_id, source_input, task, served),
            OperationSpan.entry,
            **_run_span(user_id, run_id, Signal.PENDING),
        )

    async def _record_output(
        self,
        text: str,
        user_id: str,
        run_id: str,
        source_input: str | None,
        task: str | None,
        served: ProfileSelection | Sequence[str] | None = None,
    ) -> ProfileEntry:
        user, run = validate_user_id(user_id), validate_run_id(run_id)
        block = served_ids(served, user)
        source = None if source_input is None else source_input[: self.max_text_chars]
        entry = self.entry(
            text, user_id=user, signal=Signal.PENDING, run_id=run, source_input=source, task=task
        )
        await self._expire_now_and_then(user)
        # the run id is claimed by id: two runs racing for it both read the one that won
        stored = await self._write_entries(
            [entry], event_ids=[run_event_id(run)], claim=True, served=block
        )
        return stored[0]

    async def _expire_pending(self, user_id: str | None) -> dict[str, int]:
        """Delete the tracked outputs of one user, or of every user, pending longer than
        ``pending_ttl_s`` (the store's rule of two clocks); how many went, by user."""
        user = None if user_id is None else validate_user_id(user_id)
        if user is not None:
            self._pending_sweeps.ran(user)
        found = await self.store.astale_pending(user, now=self.clock(), ttl_s=self.pending_ttl_s)
        return {
            owner: await self._remove_ids(owner, ids, pending_only=True)
            for owner, ids in found.items()
        }

    async def _expire_now_and_then(self, user: str) -> None:
        """Expire the user's stale tracked outputs at most once per
        :meth:`_pending_interval` per user in this process, and off the tracked run's path
        (the reader's background work, which ``flush`` waits for): the look-up is a
        ``where`` on the log, whose cost grows with the store, and an output is deleted no
        later than one interval after it went stale (it is never selected meanwhile, and
        deleting it changes no block)."""
        if self._pending_sweeps.due(user):
            self._reader.in_background(self._expire_pending(user))

    def _pending_interval(self) -> float:
        return min(self.pending_ttl_s, SWEEP_INTERVAL_S)

    def feedback(
        self,
        run_id: str | uuid.UUID,
        signal: Signal | str | None = None,
        *,
        rating: float | None = None,
        edited: str | None = None,
        user_id: str | None = None,
    ) -> ProfileEntry:
        """Turn a tracked run's output into endorsed / rejected / accepted / rating / edited.

        Args:
            run_id: the run id the tracked chain ran under.
            signal: ``endorsed``, ``rejected``, ``accepted``, ``rating`` or ``edited``.
            rating: 1-5 (implies ``rating``; 1-2 stars reject the output).
            edited: the user's corrected text (implies ``edited``): it is stored as an
                ``edited`` entry with the run's input, and it supersedes what the run said
                before: the output (whatever feedback it had) and the run's earlier edits
                leave the profile, unless the same text has signals from elsewhere.
            user_id: when given, the run must belong to this user.

        Returns:
            The entry as stored.

        Raises:
            UnknownRunError: no tracked output under ``run_id`` (for this user), or it expired.
            AmbiguousRunError: without ``user_id``, when runs of several users hold the id.
            InvalidInputError: the feedback arguments do not make sense together.

        Example:
            ```python
            memory.feedback(rid, "endorsed")
            memory.feedback(rid, rating=4)
            memory.feedback(rid, edited="Hi Ana, short version: yes.")
            ```
        """
        return self._traced(  # type: ignore[no-any-return]
            "update_memory",
            lambda: self._feedback(run_id, signal, rating, edited, user_id),
            OperationSpan.entry,
            **_run_span(user_id, run_id, _given_signal(signal, rating, edited)),
        )

    async def afeedback(
        self,
        run_id: str | uuid.UUID,
        signal: Signal | str | None = None,
        *,
        rating: float | None = None,
        edited: str | None = None,
        user_id: str | None = None,
    ) -> ProfileEntry:
        """Async :meth:`feedback`.

        Example:
            ```python
            await memory.afeedback(rid, "endorsed")
            ```
        """
        return await self._atraced(  # type: ignore[no-any-return]
            "update_memory",
            lambda: self._feedback(run_id, signal, rating, edited, user_id),
            OperationSpan.entry,
            **_run_span(user_id, run_id, _given_signal(signal, rating, edited)),
        )

    async def _feedback(
        self,
        run_id: str | uuid.UUID,
        signal: Signal | str | None,
        rating: float | None,
        edited: str | None,
        user_id: str | None,
    ) -> ProfileEntry:
        chosen = feedback_signal(signal, rating, edited)
        run = validate_run_id(run_id)
        owner = None if user_id is None else validate_user_id(user_id)
        recorded = await self.store.arun(run)
        output = None if recorded is None else recorded.record
        if output is not None and owner not in (None, output.user_id):
            output = None
        claim = None if recorded is None or output is None else recorded.id
        claimed = recorded if claim is not None else None  # the run's claim, if it is the user's
        if output is None:  # a run tracked before the log: found by its rows' run id
            found = await self.store.afind_runs(run, owner)
            if len({e.user_id for e in found}) > 1:
                raise AmbiguousRunError(
                    f"run id {run!r} is held by tracked runs of more than one user; pass "
                    "user_id= to say whose run the feedback is for"
                )
            output = found[0] if found else None
        if output is None:
            raise UnknownRunError(
                f"no tracked output under run id {run!r}"
                + (f" for user {user_id!r}" if user_id is not None else "")
                + "; track the chain with memory.track(chain) and pass the same run id"
            )
        if is_stale_pending(output, self.clock(), self.pending_ttl_s):
            # stale by this clock: expired only once stale by the rule of every expiry
            # (the recording worker's clock may be far behind this one)
            await self._expire_pending(output.user_id)
            if claim is None:
                gone = await self.store.aentry(output.user_id, output.id) is None
            else:
                gone = await self.store.arun(run) is None
            if gone:
                raise UnknownRunError(
                    f"the output of run {run!r} expired after pending_ttl_s="
                    f"{self.pending_ttl_s:g}s without feedback and was deleted"
                )
        # fields as the output was recorded, so a process that never saw the output folds
        # the feedback to the same entry as one that did
        common: dict[str, Any] = {
            "user_id": output.user_id,
            "run_id": run,
            "task": output.task or None,
            "source_input": output.source_input or None,
            "created_at": output.created_at,
        }
        if edited is not None:
            edit = self._now(self.entry(edited, signal=Signal.EDITED, **common))
            stored = await self._write_entries(
                [edit], event_ids=[feedback_event_id(run, "edited", edit.id)]
            )
            if claim is None:  # a run tracked before the log: its pending output goes
                if stored[0].id != output.id:
                    await self._drop_output(output)
            else:  # "not this, this": what the run said before stops counting
                pending = self.entry(edited, signal=Signal.PENDING, **common)
                await self._took(
                    await self.store.asupersede(
                        output.user_id, run, entries=[output.id], output=pending
                    )
                )
            await self._credit(claimed, +1, f"edited:{edit.id}")
            return stored[0]
        made = self._now(self.entry(output.text, signal=chosen, rating=rating, **common))
        ids = [feedback_event_id(run, chosen.value, rating)]
        stored = await self._write_entries([made], event_ids=ids)
        approved = made.signal is not Signal.REJECTED
        await self._credit(claimed, +1 if approved else -1, f"{chosen.value}:{rating}")
        return stored[0]

    async def _credit(self, claim: Event | None, credit: int, why: str) -> None:
        """Credit (or debit) the block the claimed run was served, if it was recorded."""
        if claim is None or not claim.entries:
            return
        written = await self.store.acredit(claim.user_id, claim.run, claim.entries, credit, why=why)
        self._reader.written(written)  # pins stay: credit changes no block's text

    async def _drop_output(self, output: ProfileEntry) -> None:
        """Remove the output of a run tracked before the log that an edit replaced, if it
        is still only pending."""
        now = await self.store.aentry(output.user_id, output.id)
        if now is not None and now.pending:
            await self._remove_ids(output.user_id, [output.id], pending_only=False)

    def _now(self, entry: ProfileEntry) -> ProfileEntry:
        """``entry`` as updated now (its ``created_at`` stays the output's)."""
        return replace(entry, updated_at=max(entry.created_at, self.clock()))


def _run_span(user_id: object, run_id: object, signal: Signal | None) -> dict[str, Any]:
    """The span attributes of an operation on a tracked run (its id as a string, as
    ``validate_run_id`` reads a UUID)."""
    run = str(run_id) if isinstance(run_id, uuid.UUID) else run_id
    return {"user_id": user_id, "run_id": run, "signal": None if signal is None else signal.value}


def _given_signal(signal: object, rating: object, edited: object) -> Signal | None:
    """The signal feedback means (an edit or a rating imply theirs), or None when its
    arguments are refused (inside the span)."""
    try:
        return feedback_signal(signal, rating, edited)  # type: ignore[arg-type]
    except InvalidInputError:
        return None
