"""A ranking head (``Ranking.head``): the pool and the best left-out entries of a ranking,
plus counts of what lies beyond them, chooses what the whole ranking chooses, also after
writes applied to it as (old, new) changes, for as long as it says it ``answers``."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from langchain_outprofile import SelectionOptions, StyleEmbeddings
from langchain_outprofile.select import LEFT_OUT_KEPT, Ranking, choose_from, rank
from langchain_outprofile.tokens import OFFLINE_ENCODING, TokenCounter
from langchain_outprofile.types import Choice, ProfileEntry, Signal, StoredProfile

NOW = 1_700_000_000.0
DAY = 86_400.0
WORDS = ("ship", "it", "today", "bullets", "first", "no", "fluff", "cheers", "thanks", "draft")
EMBED = StyleEmbeddings()
COUNTER = TokenCounter(encoding=OFFLINE_ENCODING)


def _entry(rng: random.Random, n: int) -> ProfileEntry:
    text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 8))) + f" #{n}"
    signal = rng.choice(("authored", "endorsed", "accepted", "rejected", "pending"))
    entry = ProfileEntry.create(
        text,
        user_id="ana",
        signal="authored" if signal == "pending" else signal,
        created_at=NOW - rng.uniform(0, 60) * DAY,
        expires_at=NOW + rng.uniform(1, 30) * DAY if rng.random() < 0.1 else None,
    )
    if signal == "pending":
        entry = replace(entry, signals=(Signal.PENDING,), strength=0.0)
    return replace(entry, credited=rng.randint(0, 3), debited=rng.randint(0, 2))


def _changed(rng: random.Random, old: ProfileEntry, n: int) -> ProfileEntry | None:
    """A later state of ``old``: another signal folded in, rejected, deleted or credited."""
    kind = rng.choice(("endorse", "reject", "reject", "delete", "delete", "credit"))
    if kind == "delete":
        return None
    if kind == "credit":
        return replace(old, credited=old.credited + 1)
    signal = "endorsed" if kind == "endorse" else "rejected"
    newer = ProfileEntry.create(old.text, user_id="ana", signal=signal, created_at=NOW - n)
    return old.merged_with(newer)


def _choose(ranking: Ranking, vectors: dict[str, np.ndarray]) -> Choice:
    return choose_from(
        ranking,
        vectors=lambda ids: np.stack([vectors[i] for i in ids]),
        counter=COUNTER,
        fixed_cost=10,
        entry_cost=lambda e: 2 + len(e.text.split()),
        fits=lambda chosen: True,
        now=NOW,
    )


def _facts(choice: Choice) -> tuple[Any, ...]:
    return (
        [(c.entry, c.tokens, c.cut) for c in choice.chosen],
        [(c.entry, c.reason) for c in choice.left_out],
        choice.left_out_total,
    )


def _ranked(entries: Sequence[ProfileEntry], options: SelectionOptions) -> Ranking:
    vectors = EMBED.embed_array([e.text for e in entries]) if entries else np.zeros((0, 1))
    profile = StoredProfile(tuple(entries), np.asarray(vectors, np.float32))
    return rank(profile, options, now=NOW)


def _head_of(ranking: Ranking) -> Ranking | None:
    options = ranking.options
    # twice what a choice sees: the head can lose entries to writes and still answer
    found = ranking.head(2 * (options.pool_size + LEFT_OUT_KEPT), 2 * LEFT_OUT_KEPT)
    if found is None:
        return None
    items, beyond = found
    return Ranking(options, items, incremental=True, now=NOW, beyond=beyond)


def _run(seed: int, size: int, pool: int, writes: int, credit: float) -> tuple[int, int]:
    """Rank ``size`` random entries, take the head, apply ``writes`` random changes to both
    (the whole ranking built again), and compare the choices while the head answers.
    Returns (checks made, writes the head took)."""
    rng = random.Random(seed)
    options = SelectionOptions(max_tokens=60, pool_size=pool, credit_weight=credit)
    entries = {e.id: e for e in (_entry(rng, n) for n in range(size))}
    vectors = dict(zip(entries, EMBED.embed_array([e.text for e in entries.values()]), strict=True))
    head = _head_of(_ranked(list(entries.values()), options))
    assert head is not None and head.answers
    checks = taken = 0
    for n in range(writes):
        changes: list[tuple[ProfileEntry | None, ProfileEntry | None]] = []
        for _ in range(rng.randint(1, 3)):
            old: ProfileEntry | None = None
            if rng.random() < 0.3 or not entries:
                added = _entry(rng, size + n * 10 + len(changes))
                vectors[added.id] = EMBED.embed_array([added.text])[0]
                new: ProfileEntry | None = added
                entries[added.id] = added
            else:
                old = entries[rng.choice(sorted(entries))]
                new = _changed(rng, old, n)
                if new is None:
                    del entries[old.id]
                else:
                    entries[old.id] = new
            changes.append((old, new))
        head.update_head(changes)
        if not head.answers:
            break
        taken += 1
        whole = _ranked(list(entries.values()), options)
        assert head.total == whole.total
        from_head, from_whole = _choose(head, vectors), _choose(whole, vectors)
        assert _facts(from_head) == _facts(from_whole)
        # an entry that left the space beyond the head may have held its earliest expiry:
        # the head's choice may be re-checked sooner, never later
        assert from_head.valid_until <= from_whole.valid_until
        checks += 1
    return checks, taken


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    size=st.integers(0, 120),
    pool=st.integers(1, 8),
    writes=st.integers(1, 80),
    credit=st.sampled_from((0.0, 1.5)),
)
def test_a_head_chooses_what_the_whole_ranking_chooses_after_writes(
    seed: int, size: int, pool: int, writes: int, credit: float
) -> None:
    _run(seed, size, pool, writes, credit)


def test_a_head_takes_many_writes_before_it_must_be_built_again() -> None:
    """The property above holds only while the head answers: here it answers for every one
    of 40 writes to a 300-entry profile (so the comparison really ran), and a head of a
    profile it holds whole never stops answering."""
    assert _run(seed=7, size=300, pool=4, writes=40, credit=0.0) == (40, 40)
    assert _run(seed=8, size=10, pool=4, writes=40, credit=1.5) == (40, 40)


def test_a_head_stops_answering_once_it_no_longer_holds_the_pool() -> None:
    """Rejecting the head's eligible entries one by one empties its pool while entries
    remain beyond it: the head says so instead of choosing from too few."""
    rng = random.Random(3)
    options = SelectionOptions(max_tokens=60, pool_size=2)
    entries = [replace(_entry(rng, n), signals=(Signal.AUTHORED,), strength=0.5) for n in range(80)]
    whole = _ranked(entries, options)
    head = _head_of(whole)
    assert head is not None and head.beyond.eligible > 0
    for item in whole.pool() + whole.left_out_head(2 * (options.pool_size + LEFT_OUT_KEPT)):
        rejected = item.entry.merged_with(
            ProfileEntry.create(item.entry.text, user_id="ana", signal="rejected")
        )
        head.update_head([(item.entry, rejected)])
    assert not head.answers


def test_no_head_for_a_task_scope_or_blended_keys() -> None:
    """Out-of-scope entries rank after every in-scope one yet are shown as left out, and a
    typicality blend moves every key with each write: neither has a head."""
    rng = random.Random(4)
    entries = [_entry(rng, n) for n in range(30)]
    assert _ranked(entries, SelectionOptions(task="email")).head(30, 20) is None
    assert _ranked(entries, SelectionOptions(typicality_weight=0.5)).head(30, 20) is None


def test_an_entry_beyond_the_head_expiring_ends_its_answers() -> None:
    """The head cannot tell which entry beyond it expired, so past the earliest such expiry
    it does not answer (and a choice from it is valid only until then)."""
    rng = random.Random(5)
    options = SelectionOptions(max_tokens=60, pool_size=2)
    entries = [
        replace(_entry(rng, n), signals=(Signal.AUTHORED,), strength=1.0 - n / 100, expires_at=None)
        for n in range(60)
    ]
    entries[-1] = replace(entries[-1], expires_at=NOW + DAY)  # the weakest: beyond the head
    head = _head_of(_ranked(entries, options))
    assert head is not None and head.beyond.expiry == NOW + DAY
    assert head.next_expiry == NOW + DAY and head.answers
    head.expire(NOW + 2 * DAY)
    assert not head.answers
    without = _head_of(_ranked(entries[:-1], options))
    assert without is not None and math.isinf(without.beyond.expiry)


def _graded(n: int, **fields: Any) -> ProfileEntry:
    """Entry ``n`` of a profile whose strengths fall with ``n`` (so ``n`` is its rank)."""
    entry = ProfileEntry.create(f"graded entry {n} " + WORDS[n % len(WORDS)], user_id="ana")
    return replace(entry, strength=0.99 - n / 1000, created_at=NOW, **fields)


def _check(head: Ranking, entries: dict[str, ProfileEntry], options: SelectionOptions) -> bool:
    """Whether the head answers; when it does, that it chooses what the whole ranking does."""
    if not head.answers:
        return False
    vectors = dict(zip(entries, EMBED.embed_array([e.text for e in entries.values()]), strict=True))
    whole = _ranked(list(entries.values()), options)
    from_head, from_whole = _choose(head, vectors), _choose(whole, vectors)
    assert _facts(from_head) == _facts(from_whole)
    assert from_head.valid_until <= from_whole.valid_until
    return True


@pytest.mark.parametrize("beyond", ["eligible", "never eligible"])
def test_writes_that_rank_beyond_the_head_are_counted_there_not_held(beyond: str) -> None:
    """Entries written weaker than the head's last one of their kind (eligible, or never
    eligible: no stored input under ``fields="full"``; one of them expiring) go beyond it.
    Then the head's entries of that kind are deleted, the strongest first, until it stops
    answering: at every step before, it chooses what the whole ranking does, so an entry
    wrongly held would show among the left-out candidates, and an expiry not counted in
    the choice's validity."""
    options = SelectionOptions(max_tokens=60, pool_size=2, fields="full")
    # the kind under test is the strong one, so its best are the left-out candidates shown
    with_input = beyond == "eligible"
    entries = {
        e.id: e
        for e in (
            _graded(n, source_input="the request" if (n < 100) == with_input else "")
            for n in range(200)
        )
    }
    head = _head_of(_ranked(list(entries.values()), options))
    assert head is not None and head.beyond.eligible and head.beyond.rest
    weak = [
        _graded(900, source_input="the request" if with_input else ""),
        _graded(901, source_input="the request" if with_input else "", expires_at=NOW + DAY),
    ]
    head.update_head([(None, e) for e in weak])
    entries.update({e.id: e for e in weak})
    assert _check(head, entries, options)
    steps = 0
    for n in range(100):
        gone = entries.pop(_graded(n).id)
        head.update_head([(gone, None)])
        if not _check(head, entries, options):
            break
        steps += 1
    assert 0 < steps < 99  # it answered for a while, then said it could not
