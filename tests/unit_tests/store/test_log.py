"""The signal log's fold: hand-computed cases, and the same entries whatever order events
arrive in (the property that makes writers on many machines need no lock)."""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from langchain_outprofile.store.log import (
    BASE_AT,
    Event,
    Fold,
    base_event_id,
    credit_event,
    event_id,
    event_metadata,
    events_from,
    put_events,
)
from langchain_outprofile.types import ProfileEntry, Signal


def _signal(signal: str, at: float, text: str = "Short answer first.") -> Event:
    entry = ProfileEntry.create(text, user_id="ana", signal=signal, created_at=at)
    return put_events([entry], at=at)[0]


def _delete(at: float, text: str = "Short answer first.") -> Event:
    entry = ProfileEntry.create(text, user_id="ana")
    return Event(event_id("del", at), "ana", entry.id, "delete", at)


def _forget(at: float) -> Event:
    return Event(event_id("forget", at), "ana", "", "forget", at)


def _only(fold: Fold) -> ProfileEntry | None:
    entries = list(fold.entries().values())
    assert len(entries) <= 1
    return entries[0] if entries else None


def test_repeated_approvals_combine_and_a_later_reject_wins() -> None:
    fold = Fold("ana")
    fold.add([_signal("endorsed", 1.0), _signal("accepted", 2.0)])
    entry = _only(fold)
    assert entry is not None
    assert entry.strength == pytest.approx(1 - (1 - 0.8) * (1 - 0.4))  # 0.88
    fold.add([_signal("rejected", 3.0)])
    entry = _only(fold)
    assert entry is not None and entry.rejected and entry.strength == 0.0
    fold.add([_signal("endorsed", 4.0)])  # an approval after the reject lifts it again
    entry = _only(fold)
    assert entry is not None and entry.selectable and entry.strength == pytest.approx(0.8)


def test_the_fold_is_the_same_whatever_order_the_events_arrive_in() -> None:
    events = [_signal("endorsed", 1.0), _signal("rejected", 2.0), _signal("accepted", 3.0)]
    folds = []
    for order in itertools.permutations(events):
        fold = Fold("ana")
        for event in order:
            fold.add([event])
        folds.append(_only(fold))
    assert all(f == folds[0] for f in folds)
    assert folds[0] is not None and folds[0].strength == pytest.approx(0.4)


def test_a_replayed_event_counts_once() -> None:
    event = _signal("endorsed", 1.0)
    fold = Fold("ana")
    assert fold.add([event]) == {event.entry_id}
    assert fold.add([event]) == set()
    entry = _only(fold)
    assert entry is not None and entry.strength == pytest.approx(0.8)


def test_a_delete_voids_what_came_before_and_a_later_put_starts_afresh() -> None:
    fold = Fold("ana")
    fold.add([_signal("endorsed", 1.0), _delete(2.0)])
    assert _only(fold) is None
    fold.add([_signal("accepted", 3.0)])
    entry = _only(fold)
    assert entry is not None and entry.signals == (Signal.ACCEPTED,)
    fold.add([_signal("authored", 1.5)])  # late, but before the delete: voided
    entry = _only(fold)
    assert entry is not None and entry.signals == (Signal.ACCEPTED,)


def test_a_forget_voids_every_entry_before_it() -> None:
    fold = Fold("ana")
    fold.add([_signal("authored", 1.0), _signal("authored", 1.0, "Another text.")])
    fold.add([_forget(2.0)])
    assert fold.entries() == {}
    fold.add([_signal("authored", 3.0, "Another text.")])
    assert [e.text for e in fold.entries().values()] == ["Another text."]
    fold.remove([e.id for e in fold.events.values() if e.kind == "forget"])
    assert len(fold.entries()) == 2


def test_a_base_is_folded_once_even_when_its_copy_is_held() -> None:
    base = ProfileEntry.create("Short answer first.", user_id="ana", signal="endorsed")
    fold = Fold("ana", {base.id: base})
    copy = Event(base_event_id(base.id), "ana", base.id, "put", BASE_AT, 0, base)
    fold.add([copy, _signal("accepted", 1.0)])
    entry = _only(fold)
    assert entry is not None
    assert entry.strength == pytest.approx(1 - (1 - 0.8) * (1 - 0.4))


def test_events_of_another_user_are_never_held() -> None:
    bob = put_events([ProfileEntry.create("Bob's.", user_id="bob")], at=1.0)
    fold = Fold("ana")
    assert fold.add(bob) == set() and fold.entries() == {}


def test_an_event_survives_its_row_format() -> None:
    event = _signal("endorsed", 1.0)
    event = replace(
        event, record=ProfileEntry.create("Short answer first.", user_id="ana", rating=4)
    )
    meta = event_metadata(event)
    [back] = events_from({"ids": [event.id], "metadatas": [meta]})
    assert back == event
    assert events_from({"ids": ["x"], "metadatas": [{"user_id": "ana"}]}) == []


KINDS = st.sampled_from(["authored", "endorsed", "accepted", "rejected", "delete"])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(KINDS, st.integers(0, 20)), min_size=1, max_size=8), st.randoms())
def test_any_arrival_order_folds_to_the_same_entry(
    steps: list[tuple[str, int]], rng: st.SearchStrategy[object]
) -> None:
    events = [
        _delete(float(at)) if kind == "delete" else _signal(kind, float(at)) for kind, at in steps
    ]
    one, other = Fold("ana"), Fold("ana")
    one.add(events)
    shuffled = list(events)
    rng.shuffle(shuffled)  # type: ignore[attr-defined]
    for event in shuffled:
        other.add([event])
    assert one.entries() == other.entries()


def _expiring(at: float, expires_at: float | None, text: str = "Short answer first.") -> Event:
    entry = ProfileEntry.create(text, user_id="ana", created_at=at, expires_at=expires_at)
    return put_events([entry], at=at)[0]


def _expire(at: float, text: str = "Short answer first.") -> Event:
    entry = ProfileEntry.create(text, user_id="ana")
    return Event(event_id("exp", at), "ana", entry.id, "expire", at)


def test_the_latest_put_naming_an_expiry_sets_it_in_any_arrival_order() -> None:
    events = [_expiring(1.0, 100.0), _expiring(2.0, None), _expiring(3.0, 50.0)]
    for order in itertools.permutations(events):
        fold = Fold("ana")
        fold.add(order)
        entry = _only(fold)
        assert entry is not None and entry.expires_at == 50.0
    fold = Fold("ana")
    fold.add(events[:2])
    assert (entry := _only(fold)) is not None and entry.expires_at == 100.0  # None keeps it


def test_an_expire_event_voids_only_an_entry_that_had_expired_by_its_time() -> None:
    expired = [_expiring(1.0, 10.0), _expire(20.0)]
    extended = [*expired, _expiring(5.0, 100.0)]  # a writer racing the expirer, stamped first
    for events, gone in ((expired, True), (extended, False)):
        for order in itertools.permutations(events):
            fold = Fold("ana")
            fold.add(order)
            assert (_only(fold) is None) is gone
    fold = Fold("ana")
    fold.add([*expired, _expiring(30.0, None)])  # a later put starts afresh
    assert (entry := _only(fold)) is not None and entry.expires_at is None
    meta = event_metadata(_expiring(1.0, 10.0))
    assert meta["exp"] == 10.0  # what an expiry sweep's where finds
    assert events_from({"ids": ["x"], "metadatas": [event_metadata(_expire(20.0))]})[0].kind == (
        "expire"
    )


def _credit(at: float, run: str, credit: int, *texts: str, why: str = "endorsed") -> Event:
    ids = [ProfileEntry.create(t, user_id="ana").id for t in texts]
    return credit_event("ana", run, ids, credit, at=at, why=f"{why}@{at}")


def test_credit_counts_each_run_once_by_its_latest_feedback() -> None:
    """Hand-computed: run r1 approved, then rejected (its latest counts: a debit); r2
    approved twice (once); r3 approved. Credit = (1 + 2) / (2 + 3) = 0.6."""
    fold = Fold("ana")
    fold.add([_signal("endorsed", 1.0)])
    text = "Short answer first."
    fold.add(
        [
            _credit(2.0, "r1", +1, text),
            _credit(3.0, "r1", -1, text, why="rejected"),
            _credit(4.0, "r2", +1, text),
            _credit(5.0, "r2", +1, text, why="accepted"),
            _credit(6.0, "r3", +1, text),
        ]
    )
    entry = _only(fold)
    assert entry is not None
    assert (entry.credited, entry.debited) == (2, 1)
    assert entry.credit == pytest.approx(0.6)


def test_a_delete_voids_earlier_credit_and_one_credit_names_many_entries() -> None:
    one, two = "Short answer first.", "Bullets, no fluff."
    fold = Fold("ana")
    fold.add([_signal("endorsed", 1.0, one), _signal("endorsed", 1.0, two)])
    shared = _credit(2.0, "r1", +1, one, two)
    assert fold.add([shared]) == {ProfileEntry.create(t, user_id="ana").id for t in (one, two)}
    fold.add([_delete(3.0, one), _signal("endorsed", 4.0, one)])
    credits = {e.text: (e.credited, e.debited) for e in fold.entries().values()}
    assert credits == {one: (0, 0), two: (1, 0)}
    # a credit event is not an event of one entry alone: deleting an entry leaves it
    assert shared.id not in fold.event_ids(ProfileEntry.create(two, user_id="ana").id)
    fold.remove([shared.id])
    assert {e.credited for e in fold.entries().values()} == {0}


def test_credit_of_an_entry_never_put_or_of_another_user_changes_nothing() -> None:
    fold = Fold("ana")
    fold.add([_signal("endorsed", 1.0)])
    stranger = ProfileEntry.create("Not hers.", user_id="bob").id
    fold.add([credit_event("ana", "r1", [stranger], +1, at=2.0, why="x")])
    fold.add([credit_event("bob", "r2", [_only(fold).id], +1, at=2.0, why="x")])  # type: ignore[union-attr]
    assert [(e.credited, e.debited) for e in fold.entries().values()] == [(0, 0)]


def test_a_credit_event_survives_its_row_and_a_malformed_one_is_skipped() -> None:
    event = _credit(2.0, "r1", -1, "Short answer first.", "Bullets, no fluff.")
    meta = event_metadata(event)
    back = events_from({"ids": [event.id], "metadatas": [meta]})
    assert back == [replace(event, record=None)]
    broken = {**meta, "credit": 7}
    empty = {**meta, "entries": "[]"}
    assert events_from({"ids": ["a", "b"], "metadatas": [broken, empty]}) == []
