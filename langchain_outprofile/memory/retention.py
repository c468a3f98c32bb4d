"""Retention: entries that expire, and the sweeps that delete them.

An entry expires at its ``expires_at`` (a per-signal ``expires_at=`` / ``ttl_s=``, or the
memory's ``retention_s`` after the write; the latest signal naming one sets it, see
``types.py``). From then on every read treats it as gone: the store's loads leave it out and
rankings drop it (``select.py``), before anything deletes it. Deleting it is housekeeping:
:meth:`RetentionMixin.expire` does it at once (one user, or all), and a later write of the
user does it now and then, off the request path (the reader's background work), as tracked
outputs that never got feedback are expired (``feedback.py``; ``expire`` removes those
too); :class:`NowAndThen` is the throttle both use.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

from langchain_outprofile.memory.reader import ProfileReader
from langchain_outprofile.store import ProfileStore, Written
from langchain_outprofile.telemetry import OperationSpan
from langchain_outprofile.types import WriteOptions
from langchain_outprofile.validation import validate_user_id

__all__ = ["Expired", "NowAndThen", "RetentionMixin"]

SWEEP_INTERVAL_S = 3600.0
"""Longest time between two background sweeps of one user in one process."""
_KEYS_KEPT = 100_000
"""Users whose last sweep a :class:`NowAndThen` remembers (all are forgotten at once past
this: the next write of each sweeps once more, no harm)."""


@dataclass(frozen=True)
class Expired:
    """What :meth:`RetentionMixin.expire` removed: how many entries past their expiry, how
    many tracked outputs left without feedback past ``pending_ttl_s``, and of whom (both).

    Example:
        ```python
        report = memory.expire()
        report.entries, report.pending, report.by_user  # (2, 1, {"ana": 2, "bo": 1})
        ```
    """

    entries: int = 0
    by_user: dict[str, int] = field(default_factory=dict)
    pending: int = 0

    def __int__(self) -> int:
        return self.entries + self.pending

    @classmethod
    def of(cls, written: Written, pending: Mapping[str, int]) -> Expired:
        """The report of a store's expiry and of the stale tracked outputs removed."""
        by_user = {user: len(ids) for user, ids in written.removed.items() if ids}
        entries = sum(by_user.values())
        for user, count in pending.items():
            if count:
                by_user[user] = by_user.get(user, 0) + count
        return cls(entries, by_user, sum(pending.values()))


class NowAndThen:
    """At most one run per key per ``interval()`` seconds of ``clock``: the throttle of the
    sweeps a write starts (a ``where`` on the log, whose cost grows with the store, need not
    run on every write: what it deletes is never read meanwhile).

    Example:
        ```python
        sweeps = NowAndThen(lambda: 3600.0, time.time)
        sweeps.due("ana"), sweeps.due("ana")  # (True, False)
        ```
    """

    def __init__(self, interval: Callable[[], float], clock: Callable[[], float]) -> None:
        self._interval = interval
        self._clock = clock
        self._last: dict[str, float] = {}

    def due(self, key: str) -> bool:
        """Whether ``key`` is due a run; if so, it counts as run now."""
        last = self._last.get(key)
        if last is not None and self._clock() - last < self._interval():
            return False
        self.ran(key)
        return True

    def ran(self, key: str) -> None:
        """Note a run of ``key`` now (an explicit one: the next is an interval away)."""
        if len(self._last) >= _KEYS_KEPT:
            self._last.clear()
        self._last[key] = self._clock()


class RetentionMixin:
    """Expiry of entries, for :class:`OutputProfileMemory` (which provides the attributes
    and methods annotated here)."""

    store: ProfileStore
    clock: Callable[[], float]
    writes: WriteOptions
    _reader: ProfileReader
    _expiry_sweeps: NowAndThen
    _took: Callable[[Written], Awaitable[int]]
    _invalidate: Callable[[Iterable[str]], None]
    _traced: Callable[..., Any]
    _atraced: Callable[..., Awaitable[Any]]

    if TYPE_CHECKING:  # FeedbackMixin's: a method there, so declared as one here

        async def _expire_pending(self, user_id: str | None) -> dict[str, int]: ...

    def expire(self, user_id: str | None = None) -> Expired:
        """Delete what has run out (of one user, or of every user): the entries past their
        expiry, with their signals, rows and text, as :meth:`delete` removes them, and the
        tracked outputs that got no feedback within ``pending_ttl_s`` (judged by two clocks,
        so an output lives between one and two ``pending_ttl_s``: ``feedback.py``). Neither
        is ever selected even before this runs; writes and tracked runs of a user also run
        it now and then.

        Example:
            ```python
            memory.expire("ana").entries  # 0 when nothing of ana's has expired
            memory.expire().pending  # every user's stale tracked outputs removed
            ```
        """
        expiring = partial(self._expire, user_id)
        return self._traced(  # type: ignore[no-any-return]
            "delete_memory", expiring, _counted, user_id=user_id
        )

    async def aexpire(self, user_id: str | None = None) -> Expired:
        """Async :meth:`expire`."""
        expiring = partial(self._expire, user_id)
        return await self._atraced(  # type: ignore[no-any-return]
            "delete_memory", expiring, _counted, user_id=user_id
        )

    async def _expire(self, user_id: str | None) -> Expired:
        user = None if user_id is None else validate_user_id(user_id)
        if user is not None:
            self._expiry_sweeps.ran(user)
        try:
            written = await self.store.aexpire(user, now=self.clock())
        except BaseException:  # part of it may have run: what the reader holds may be off
            self._invalidate([] if user is None else [user])
            raise
        await self._took(written)
        return Expired.of(written, await self._expire_pending(user))

    def _sweep_now_and_then(self, users: Iterable[str], *, expiring: bool) -> None:
        """After a write: delete the users' expired entries, at most once per
        :data:`SWEEP_INTERVAL_S` (or ``retention_s``, if shorter) per user in this process,
        in the reader's background work (``flush`` waits for it). Only a memory with a
        retention, or a write naming an expiry, sweeps: other users' entries never expire
        unless some writer gave them an expiry (``expire`` deletes those)."""
        if self.writes.retention_s is None and not expiring:
            return
        for user in users:
            if self._expiry_sweeps.due(user):
                self._reader.in_background(self._swept(user))

    async def _swept(self, user: str) -> None:
        await self._took(await self.store.aexpire(user, now=self.clock()))

    def _sweep_interval(self) -> float:
        return min(SWEEP_INTERVAL_S, self.writes.retention_s or SWEEP_INTERVAL_S)


def _counted(span: OperationSpan, expired: Expired) -> None:
    span.counted(int(expired))
