"""Log: every signal as a row of its own, and a user's entries as the fold of their rows.

Writers on several machines share no lock, and Chroma has no compare-and-set (``add`` of an
existing id is ignored, ``upsert`` is last-writer-wins). So a write never reads, folds and
writes back: it *adds* one row per signal (an **event**) to the ``<collection>.log``
collection, under an id that is the same when the same write is retried, and an entry's
state is computed by whoever reads it, as the fold of its events in one total order
(event time, then position in its write, then id). Any interleaving of any number of
writers therefore ends in the same stored events, and every reader folds them to the same
entries. Nothing here imports chromadb: this module lays events out as rows and folds them.

Kinds of event:

- ``put``: a record of the entry as one write gave it (text, signal, strength, fields), as
  an ``add`` (any signal) / tracked output / feedback made it. Folded with
  :meth:`ProfileEntry.merged_with`, so strengths combine as 1 - Π(1 - sᵢ) and a later
  ``rejected`` wins, whatever order the rows arrived in.
- ``delete``: the entry is gone; a later ``put`` starts it afresh.
- ``expire``: a delete that holds only if the entry, as folded up to it, had expired by the
  event's time (``expires_at <= at``): a signal that extended the expiry and was stamped
  before it (a writer racing the expirer) keeps the entry, in every reader's fold.
- ``forget``: every entry of the user before it is gone (a user-level event; ``forget``
  removes it again once it has deleted the rows it voids).
- ``credit``: feedback on a tracked run, credited (+1) or debited (-1) to every entry of
  the block that run was served (``entries``; the run's claim recorded them). One row per
  piece of feedback, naming no entry in ``entry``, so deleting one entry's events leaves
  the others' credit; the entry's ``delete`` voids it in the fold like any earlier event.
  An entry counts each run once, by the run's latest credit event.

An entry row written by a release before the log (no ``lg`` mark) holds its folded record
itself: that record is the entry's *base*, folded before every event; a writer that adds an
event to such an entry first copies the base into the log as an event of its own (same id
from every writer), so the base survives the row's rewrite.
"""

from __future__ import annotations

import hashlib
import json
import math
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from langchain_outprofile.store.rows import EXPIRY_KEY, LOG_MARK
from langchain_outprofile.types import ProfileEntry, stored_entry

__all__ = [
    "BASE_AT",
    "EXPIRY_KEY",
    "LOG_MARK",
    "LOG_SUFFIX",
    "Coverage",
    "Event",
    "Fold",
    "base_event_id",
    "coverage_of",
    "credit_event",
    "event_id",
    "event_metadata",
    "events_from",
    "feedback_event_id",
    "ids_digest",
    "named_entries",
    "pending_hash",
    "put_events",
    "run_event_id",
]

LOG_SUFFIX = ".log"
BASE_AT = -1.0
"""Event time of a base copied from a row of a release before the log (before any event)."""

Kind = Literal["put", "delete", "forget", "expire", "credit"]
_KINDS = ("put", "delete", "forget", "expire", "credit")


@dataclass(frozen=True)
class Event:
    """One signal (or delete, or forget) of one user, as stored in the log.

    ``entry_id`` is empty for a ``forget`` and a ``credit``; ``record`` is the entry as the
    write gave it (``put`` only). ``entries`` names, on a run's claim, the entries of the
    block the run was served, and on a ``credit``, the entries it credits (``credit``: +1
    or -1) for the run ``run``. ``order`` is the total order every reader folds in.
    """

    id: str
    user_id: str
    entry_id: str
    kind: Kind
    at: float
    seq: int = 0
    record: ProfileEntry | None = None
    entries: tuple[str, ...] = ()
    credit: int = 0
    run: str = ""

    @property
    def order(self) -> tuple[float, int, str]:
        """Fold order: event time, position within its write, id."""
        return (self.at, self.seq, self.id)

    @property
    def pending(self) -> bool:
        """Whether this is a tracked run's pending output."""
        return self.record is not None and self.record.pending


def event_id(*parts: object) -> str:
    """A log row id from what identifies the event: the same parts give the same id, so a
    retried write adds nothing (``add`` ignores an id that exists)."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).hexdigest()
    return f"ev:{digest[:40]}"


def base_event_id(entry_id: str) -> str:
    """Id of the event a base (the record of a row written before the log) is copied to."""
    return event_id("base", entry_id)


def run_event_id(run_id: str) -> str:
    """Id of the event recording a tracked run's output: the run id's claim (the first run
    to record it holds it; every other reads the winner)."""
    return event_id("run", run_id)


def feedback_event_id(run_id: str, *what: object) -> str:
    """Id of the event a piece of feedback on a run adds: replayed, it counts once."""
    return event_id("feedback", run_id, *what)


def credit_event(
    user_id: str, run_id: str, entries: Sequence[str], credit: int, *, at: float, why: str
) -> Event:
    """The ``credit`` event of one piece of feedback (``why``: what was said) on a run whose
    block held ``entries``: replayed, it has the same id and counts once."""
    return Event(
        id=event_id("credit", user_id, run_id, why),
        user_id=user_id,
        entry_id="",
        kind="credit",
        at=at,
        entries=tuple(dict.fromkeys(entries)),
        credit=credit,
        run=run_id,
    )


def put_events(
    entries: Sequence[ProfileEntry], *, at: float, ids: Sequence[str] | None = None
) -> list[Event]:
    """One ``put`` event per entry of one write, at ``at``, in the order given. Ids are
    random per write unless ``ids`` gives them (feedback on a run: replayed, it counts once)."""
    nonce = uuid.uuid4().hex
    return [
        Event(
            id=ids[n] if ids is not None else event_id(e.user_id, e.id, at, n, nonce),
            user_id=e.user_id,
            entry_id=e.id,
            kind="put",
            at=at,
            seq=n,
            record=e,
        )
        for n, e in enumerate(entries)
    ]


def event_metadata(event: Event) -> dict[str, Any]:
    """The Chroma metadata of one log row: the filtered fields as keys, the record as one
    JSON payload (``e``; see ``rows.py`` for why)."""
    meta: dict[str, Any] = {
        "user_id": event.user_id,
        "entry": event.entry_id,
        "kind": event.kind,
        "at": float(event.at),
        "seq": event.seq,
        "pending": event.pending,
    }
    if event.entries:
        meta["entries"] = json.dumps(list(event.entries))
    if event.kind == "credit":
        meta["credit"], meta["run"] = event.credit, event.run
    if event.record is not None:
        if event.record.run_id:  # an edit of the run's output finds what the run said
            meta["run"] = event.record.run_id
        if event.record.expires_at is not None:  # an expiry sweep finds it by a where
            meta[EXPIRY_KEY] = float(event.record.expires_at)
        payload = event.record.to_dict()
        del payload["id"], payload["user_id"]
        meta["e"] = json.dumps(payload)
    return meta


def events_from(result: Any) -> list[Event]:
    """Events from a ``get`` of the log (rows missing a field are skipped: not ours).

    The payloads of a page are decoded in one ``json.loads``: a cold read of a big user
    decodes one per event (200,000 calls were a tenth of its time, issue 24, item 21)."""
    rows = list(zip(result["ids"], result["metadatas"] or [], strict=True))
    payloads = [m["e"] for _, m in rows if _kind(m) == "put" and isinstance(m.get("e"), str)]
    try:
        together = json.loads("[" + ",".join(payloads) + "]")
    except ValueError:
        together = None
    if not isinstance(together, list) or len(together) != len(payloads):
        # one payload is not a JSON value of its own ("1, 2" decodes as two): each alone,
        # so one that is not JSON raises as it always did
        together = [json.loads(p) for p in payloads]
    decoded: Iterator[Any] = iter(together)
    found = []
    for id_, meta in rows:
        event = _event(id_, meta, decoded)
        if event is not None:
            found.append(event)
    return found


def _kind(meta: Mapping[str, Any] | None) -> str | None:
    kind = meta.get("kind") if meta else None
    return kind if kind in _KINDS else None


def _event(id_: str, meta: Mapping[str, Any] | None, decoded: Iterator[Any]) -> Event | None:
    """The event of one row; ``decoded`` yields the payloads of the page's ``put`` rows that
    carry one, in order (this row's is next when it is such a row)."""
    if not meta or _kind(meta) is None:
        return None
    payload = next(decoded) if meta["kind"] == "put" and isinstance(meta.get("e"), str) else None
    user, entry = meta.get("user_id"), meta.get("entry")
    if not isinstance(user, str) or not isinstance(entry, str):
        return None
    record = None
    if meta["kind"] == "put":
        if payload is None:
            return None
        record = stored_entry(entry, user, payload)
    entries = _entries(meta.get("entries"))
    credit = meta.get("credit", 0)
    if meta["kind"] == "credit" and (not entries or credit not in (1, -1)):
        return None
    return Event(
        id=id_,
        user_id=user,
        entry_id=entry,
        kind=meta["kind"],
        at=float(meta.get("at", 0.0)),
        seq=int(meta.get("seq", 0)),
        record=record,
        entries=entries,
        credit=int(credit) if meta["kind"] == "credit" else 0,
        run=str(meta.get("run", "")),
    )


def _entries(value: object) -> tuple[str, ...]:
    """The entry ids a row names (a JSON list of strings), or none when it names none."""
    if not isinstance(value, str):
        return ()
    try:
        ids = json.loads(value)
    except ValueError:
        return ()
    if not isinstance(ids, list):
        return ()
    return tuple(i for i in ids if isinstance(i, str))


class Fold:
    """One user's entries as the fold of their events (and of bases from rows written before
    the log). Events can be added and removed in any order; :meth:`entries` is always the
    fold of what is held, so two folds holding the same events give the same entries.

    Example:
        ```python
        fold = Fold("ana")
        fold.add(put_events([ProfileEntry.create("Hi", user_id="ana")], at=1.0))
        [e.text for e in fold.entries().values()]  # ["Hi"]
        ```
    """

    def __init__(self, user_id: str, bases: Mapping[str, ProfileEntry] | None = None) -> None:
        self.user_id = user_id
        self.bases: dict[str, ProfileEntry] = dict(bases or {})
        self.events: dict[str, Event] = {}
        self._by_entry: dict[str, list[Event]] = {}
        self._forgets: list[Event] = []

    def add(self, events: Iterable[Event]) -> set[str]:
        """Hold more events (ones held already are skipped). Returns the ids of the entries
        whose fold they may change (every entry, for a ``forget``)."""
        touched: set[str] = set()
        for event in events:
            if event.id in self.events or event.user_id != self.user_id:
                continue
            self.events[event.id] = event
            if event.kind == "forget":
                self._forgets.append(event)
                touched |= self._all_entries()
            else:
                for entry_id in named_entries(event):
                    self._by_entry.setdefault(entry_id, []).append(event)
                    touched.add(entry_id)
        return touched

    def remove(self, ids: Iterable[str]) -> set[str]:
        """Stop holding the events ``ids`` (deleted from the log). Returns the entries whose
        fold may change."""
        touched: set[str] = set()
        for id_ in ids:
            event = self.events.pop(id_, None)
            if event is None:
                continue
            if event.kind == "forget":
                self._forgets.remove(event)
                touched |= self._all_entries()
                continue
            for entry_id in named_entries(event):
                held = self._by_entry[entry_id]
                held.remove(event)
                if not held:
                    del self._by_entry[entry_id]
                touched.add(entry_id)
        return touched

    def _all_entries(self) -> set[str]:
        return set(self._by_entry) | set(self.bases)

    def entry(self, entry_id: str) -> ProfileEntry | None:
        """The entry as its events fold, or None when it does not exist (never put, deleted,
        forgotten)."""
        events = sorted([*self._by_entry.get(entry_id, ()), *self._forgets], key=_order)
        # a base already copied into the log is folded once, as its event (its id is
        # hashed only for an entry with a base: one per entry was a tenth of a cold read)
        state = self.bases.get(entry_id)
        if state is not None and base_event_id(entry_id) in self.events:
            state = None
        runs: dict[str, int] = {}  # the latest credit of each run, since the entry began
        for event in events:
            if event.kind == "credit":
                if state is not None:
                    runs[event.run] = event.credit
            elif event.kind == "expire":  # a conditional delete: see the module docstring
                if state is not None and state.expired(event.at):
                    state, runs = None, {}
            elif event.kind != "put":
                state, runs = None, {}
            elif event.record is not None:
                state = event.record if state is None else state.merged_with(event.record)
        if state is None or not runs:
            return state
        up = sum(1 for c in runs.values() if c > 0)
        return replace(state, credited=state.credited + up, debited=state.debited + len(runs) - up)

    def entries(self) -> dict[str, ProfileEntry]:
        """Every existing entry of the user, by id."""
        folded = {}
        for entry_id in self._all_entries():
            entry = self.entry(entry_id)
            if entry is not None:
                folded[entry_id] = entry
        return folded

    def event_ids(self, entry_id: str) -> list[str]:
        """Ids of the events held for this entry alone (a ``credit`` names others too)."""
        return [e.id for e in self._by_entry.get(entry_id, ()) if e.kind != "credit"]

    @property
    def forgotten(self) -> bool:
        """Whether a ``forget`` is held: one not finished yet (see ``adelete_user``)."""
        return bool(self._forgets)

    @property
    def latest(self) -> float:
        """The time of the newest event held (0 with none)."""
        return max((e.at for e in self.events.values()), default=0.0)

    def probe(self) -> tuple[str, str] | None:
        """Something the fold holds that only a purge of the whole user removes from the
        store (a ``forget``, a repair): ``("event", id)`` of its oldest event, or
        ``("row", id)`` of a base's row; None when it holds nothing."""
        if self.events:
            return "event", min(self.events.values(), key=_order).id
        if self.bases:
            return "row", min(self.bases)
        return None


def _order(event: Event) -> tuple[float, int, str]:
    return event.order


def named_entries(event: Event) -> tuple[str, ...]:
    """The entries whose fold an event (not a ``forget``) takes part in."""
    return event.entries if event.kind == "credit" else (event.entry_id,)


COVERAGE_WINDOW_S = 300.0
"""Events stamped this long before a fold's newest are named one by one in its coverage;
older ones only through their count and digest."""
COVERAGE_NAMED = 200
"""At most this many settled events are named one by one (a bulk write stamps thousands
within the window, most with one time): the boundary moves up past the rest."""


@dataclass(frozen=True)
class Coverage:
    """Exactly which events of one user a fold holds, compactly, so that a reader holding
    only what was derived from it (a ranking head beside a snapshot) can tell what the log
    gained since, and that it lost nothing:

    - events stamped before ``boundary``: their ``count`` and a ``digest`` of their
      sorted ids (those are read back as ids only);
    - settled events (not pending) at or after it: their ids (``recent``);
    - pending events (a tracked run's output, whatever its time): id and a hash of what
      they hold, since they are the only events rewritten in place (an edit moves a run's
      claim to the edited text; a run-id race replaces a claim).

    Settled events are never rewritten (their ids come from what they say, and ``add``
    ignores an id it holds), so an event with the same id holds the same thing."""

    boundary: float
    count: int
    digest: str
    recent: frozenset[str]
    pending: Mapping[str, str]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able form (see :meth:`from_dict`)."""
        return {
            "boundary": self.boundary,
            "count": self.count,
            "digest": self.digest,
            "recent": sorted(self.recent),
            "pending": dict(self.pending),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Coverage:
        """The coverage :meth:`to_dict` wrote (KeyError, TypeError or ValueError if damaged)."""
        return cls(
            boundary=float(data["boundary"]),
            count=int(data["count"]),
            digest=str(data["digest"]),
            recent=frozenset(str(i) for i in data["recent"]),
            pending={str(k): str(v) for k, v in dict(data["pending"]).items()},
        )


def ids_digest(ids: Iterable[str]) -> str:
    """A digest of a set of event ids (order does not matter)."""
    return hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()


def pending_hash(event: Event) -> str:
    """What a pending event holds, hashed: a rewrite in place changes it."""
    return hashlib.sha256(json.dumps(event_metadata(event), sort_keys=True).encode()).hexdigest()[
        :32
    ]


def coverage_of(
    before: Iterable[str],
    events: Iterable[Event],
    *,
    floor: float = -math.inf,
    window_s: float = COVERAGE_WINDOW_S,
) -> Coverage:
    """The coverage of a fold holding ``events`` and, besides them, events known only by id
    (``before``: stamped before ``floor``, the boundary of the coverage they come from).
    The boundary is ``window_s`` before the newest event, or later, so that at most
    :data:`COVERAGE_NAMED` events are named, and never below ``floor``."""
    held = list(events)
    boundary = max(max((e.at for e in held), default=0.0) - window_s, floor)
    times = sorted((e.at for e in held if not e.pending and e.at >= boundary), reverse=True)
    if len(times) > COVERAGE_NAMED:  # name only events stamped after the first one left out
        boundary = math.nextafter(times[COVERAGE_NAMED], math.inf)
    old = list(before)
    old += [e.id for e in held if e.at < boundary]
    return Coverage(
        boundary=boundary,
        count=len(old),
        digest=ids_digest(old),
        recent=frozenset(e.id for e in held if not e.pending and e.at >= boundary),
        pending={e.id: pending_hash(e) for e in held if e.pending},
    )
