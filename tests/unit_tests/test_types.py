"""Records and signals: strengths, combination, identity, and validation of every input."""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from langchain_outprofile import (
    InvalidInputError,
    OutputProfileMemory,
    ProfileEntry,
    Signal,
    SignalStrengths,
)
from langchain_outprofile.types import combine_strengths
from langchain_outprofile.validation import entry_id
from tests.conftest import ManualClock, MemoryFactory
from tests.fakes import RecordingChatModel

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("signal", "rating", "strength"),
    [
        ("authored", None, 1.0),
        ("edited", None, 1.0),
        ("endorsed", None, 0.8),
        ("accepted", None, 0.4),
        ("rating", 5, 1.0),
        ("rating", 3, 0.5),
        (None, 3, 0.5),
        ("rating", 4, 0.75),
        ("rejected", None, 0.0),
        ("pending", None, 0.0),
    ],
)
def test_default_strengths(signal: str | None, rating: float | None, strength: float) -> None:
    entry = ProfileEntry.create("text", user_id="ana", signal=signal, rating=rating)
    assert entry.strength == pytest.approx(strength)


@pytest.mark.parametrize("stars", [1, 2, 2.5])
def test_one_or_two_stars_reject_the_output(stars: float) -> None:
    """A person reads 1-2 stars as "not like this": such a rating rejects the entry, even one
    approved before, and it is never selected."""
    rated = ProfileEntry.create("text", user_id="ana", rating=stars)
    assert rated.signal is Signal.REJECTED and rated.strength == 0.0 and not rated.selectable
    endorsed = ProfileEntry.create("text", user_id="ana", signal="endorsed")
    assert not endorsed.merged_with(rated).selectable


def test_two_stars_on_a_tracked_output_leave_it_out_as_rejected(
    make_memory: MemoryFactory,
) -> None:
    """End to end: a tracked run's output rated 2 stars is never selected; 3 stars is."""
    memory = make_memory(clock=ManualClock(NOW))
    tracked = memory.track(RecordingChatModel())
    low, high = uuid.uuid4(), uuid.uuid4()
    tracked.invoke("q1", config={"configurable": {"user_id": "ana"}, "run_id": low})
    tracked.invoke("q2", config={"configurable": {"user_id": "ana"}, "run_id": high})
    rated = memory.feedback(low, rating=2)
    memory.feedback(high, rating=3)
    selection = memory.select("ana")
    assert [e.text for e in selection.entries] == ["reply 2"]
    reasons = {c.entry.text: c.reason for c in selection.choice.left_out}
    assert reasons == {"reply 1": "rejected"}
    assert "'reply 1': rejected" in selection.explain()
    assert rated.text == "reply 1" and rated.signal is Signal.REJECTED and not rated.pending


def test_strengths_are_configurable() -> None:
    strengths = SignalStrengths(accepted=0.3)
    entry = ProfileEntry.create("t", user_id="ana", signal=Signal.ACCEPTED, strengths=strengths)
    assert entry.strength == pytest.approx(0.3)


def test_repeated_positive_signals_combine() -> None:
    assert combine_strengths([0.8, 0.4]) == pytest.approx(1 - 0.2 * 0.6)
    endorsed = ProfileEntry.create("t", user_id="ana", signal="endorsed")
    accepted = ProfileEntry.create("t", user_id="ana", signal="accepted")
    assert endorsed.merged_with(accepted).strength == pytest.approx(0.88)


def test_a_later_rejection_wins() -> None:
    approved = ProfileEntry.create("t", user_id="ana", signal="endorsed")
    rejected = approved.merged_with(ProfileEntry.create("t", user_id="ana", signal="rejected"))
    assert rejected.rejected and not rejected.selectable


def test_pending_turns_into_the_feedback_signal() -> None:
    pending = ProfileEntry.create("t", user_id="ana", signal="pending", run_id="r")
    assert pending.pending and not pending.selectable
    endorsed = pending.merged_with(ProfileEntry.create("t", user_id="ana", signal="endorsed"))
    assert endorsed.signals == (Signal.ENDORSED,) and endorsed.strength == pytest.approx(0.8)


def test_identity_folds_whitespace_but_keeps_case() -> None:
    assert entry_id("ana", "Hi  there\n") == entry_id("ana", "Hi there")
    assert entry_id("ana", "HI THERE") != entry_id("ana", "Hi there")
    assert entry_id("bob", "Hi there") != entry_id("ana", "Hi there")


def test_record_round_trip() -> None:
    entry = ProfileEntry.create(
        "Cheers", user_id="ana", task="email", metadata={"k": 1, "ok": True}, created_at=5.0
    )
    assert ProfileEntry.from_dict(entry.to_dict()) == entry


BAD_ADDS: list[tuple[str, dict[str, Any], str]] = [
    ("empty text", {"text": ""}, "empty"),
    ("whitespace text", {"text": " \n\t "}, "empty"),
    ("non-string text", {"text": 42}, "text must be a string"),
    ("bytes text", {"text": b"hi"}, "text must be a string"),
    ("lone surrogate", {"text": "bad \ud800 text"}, "surrogates"),
    ("huge text", {"text": "x" * 20_001}, "over the limit"),
    ("empty user", {"user_id": ""}, "user_id"),
    ("blank user", {"user_id": "   "}, "user_id"),
    ("non-string user", {"user_id": 7}, "user_id"),
    ("unknown signal", {"signal": "loved"}, "signal must be one of"),
    ("rating too high", {"rating": 6}, "rating must be"),
    ("rating too low", {"rating": 0}, "rating must be"),
    ("NaN rating", {"rating": math.nan}, "rating must be"),
    ("bool rating", {"rating": True}, "rating must be"),
    ("rating on authored", {"signal": "authored", "rating": 4}, "rating= goes with"),
    ("rating signal without rating", {"signal": "rating"}, "rating must be"),
    ("dict metadata value", {"metadata": {"a": {"b": 1}}}, "scalars only"),
    ("None metadata value", {"metadata": {"a": None}}, "metadata"),
    ("list metadata value", {"metadata": {"a": []}}, "metadata"),
    ("NaN metadata value", {"metadata": {"a": math.nan}}, "finite"),
    ("non-dict metadata", {"metadata": [("a", 1)]}, "metadata must be a dict"),
    ("negative created_at", {"created_at": -1}, "created_at"),
    ("non-string task", {"task": 3}, "task"),
]


@pytest.mark.parametrize(("case", "changes", "message"), BAD_ADDS, ids=[c[0] for c in BAD_ADDS])
def test_bad_input_is_refused_and_changes_nothing(
    ephemeral_memory: OutputProfileMemory, case: str, changes: dict[str, Any], message: str
) -> None:
    ephemeral_memory.add("kept", user_id="ana")
    before = ephemeral_memory.export("ana")
    arguments: dict[str, Any] = {"text": "new text", "user_id": "ana", **changes}
    text = arguments.pop("text")
    with pytest.raises(InvalidInputError, match=message):
        ephemeral_memory.add(text, **arguments)
    assert ephemeral_memory.export("ana") == before


BAD_BATCH_CALLS: list[tuple[str, Callable[[OutputProfileMemory], object], str]] = [
    (
        "batch with one bad item",
        lambda m: m.add_many([{"text": "fine", "user_id": "ana"}, {"text": "", "user_id": "ana"}]),
        "entries\\[1\\]",
    ),
    ("batch item without user", lambda m: m.add_many([{"text": "x"}]), "'text' and 'user_id'"),
    (
        "unknown option in batch",
        lambda m: m.add_many([{"text": "x", "user_id": "a", "x": 1}]),
        "entries\\[0\\]",
    ),
    (
        "import with bad strength",
        lambda m: m.import_(
            [{"user_id": "ana", "text": "t", "signals": ["authored"], "strength": 3}]
        ),
        "strength",
    ),
    ("import of a non-dict", lambda m: m.import_(["just a string"]), "must be a dict"),
    ("unknown select option", lambda m: m.select("ana", colour="red"), "unknown selection option"),
    ("zero budget", lambda m: m.select("ana", max_tokens=0), "max_tokens"),
    ("bad order", lambda m: m.select("ana", order="random"), "order"),
]


@pytest.mark.parametrize(
    ("case", "call", "message"), BAD_BATCH_CALLS, ids=[c[0] for c in BAD_BATCH_CALLS]
)
def test_bad_batches_and_options_change_nothing(
    ephemeral_memory: OutputProfileMemory,
    case: str,
    call: Callable[[OutputProfileMemory], object],
    message: str,
) -> None:
    ephemeral_memory.add("kept", user_id="ana")
    before = ephemeral_memory.export("ana")
    with pytest.raises(InvalidInputError, match=message):
        call(ephemeral_memory)
    assert ephemeral_memory.export("ana") == before
