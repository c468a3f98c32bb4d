"""Incremental selection: a ranking updated by each write's delta chooses exactly what a
full re-rank of the stored profile chooses, after every step of random write sequences.

Two memories share one collection and one clock: ``live`` keeps its read state and takes
every write as a delta (the path a tracked conversation runs); ``fresh`` has no cache and no
snapshots, so every read loads and ranks the whole profile. After each step both must give
the same block, the same chosen candidates (scores, costs, cuts) and the same left-out
candidates and totals, as entries expire (time passing) and are deleted (``expire``, and
the sweeps a write of an expiring entry starts), and as feedback on runs served a block
credits its entries (options that weigh credit, with and without exploration). ``live``
must load the profile once per options: if a write forced a full re-rank, the load count
would show it.
"""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Iterator
from typing import Any

import chromadb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from langchain_outprofile import OutputProfileMemory, ReadOptions, SelectionOptions
from langchain_outprofile.errors import BudgetTooSmallWarning
from langchain_outprofile.tokens import OFFLINE_ENCODING
from langchain_outprofile.types import Choice, ProfileSelection
from tests.conftest import ManualClock, unique_name

DAY = 86_400.0
START = 1_800_000_000.0
USER = "ana"
WORDS = ("short", "answer", "first", "bullets", "no", "fluff", "cheers", "thanks", "ship", "it")
texts = st.lists(st.sampled_from(WORDS), min_size=1, max_size=12).map(" ".join)
OPTIONS = (
    SelectionOptions(max_tokens=120, pool_size=4, max_entry_tokens=12),
    SelectionOptions(max_tokens=90, pool_size=6, task="email", order="stable"),
    SelectionOptions(max_tokens=200, pool_size=8, half_life_days=None, mmr_lambda=0.5),
    SelectionOptions(max_tokens=150, task="chat", fill_from_profile=False, fields="full"),
    SelectionOptions(max_tokens=120, pool_size=5, credit_weight=1.5, explore=True),
    SelectionOptions(max_tokens=150, credit_weight=4.0, half_life_days=None),
)
SERVING = OPTIONS[4]
"""The options of the block a tracked run is served, which its feedback credits."""


operations = st.one_of(
    st.tuples(
        st.just("add"),
        texts,
        st.sampled_from(("authored", "endorsed", "accepted", "edited", "rejected")),
        st.sampled_from((None, "email", "chat")),
        st.sampled_from(("", "the request")),
    ),
    st.tuples(st.just("rate"), texts, st.integers(1, 5)),
    st.tuples(st.just("track"), texts, st.booleans()),
    st.tuples(st.just("feedback"), st.integers(0, 50), st.sampled_from(("endorsed", "rejected"))),
    st.tuples(st.just("edit"), st.integers(0, 50), texts),
    st.tuples(st.just("delete"), st.integers(0, 50)),
    st.tuples(st.just("wait"), st.floats(0.0, 400.0)),
    # an entry that expires (days from now), then time passing expires it; or expire at once
    st.tuples(st.just("expiring"), texts, st.floats(0.001, 30.0)),
    st.tuples(st.just("expire"), st.booleans()),
)


class Pair:
    """The live memory, the fresh one, and what the sequence has written so far."""

    def __init__(self, client: chromadb.api.ClientAPI) -> None:
        self.clock = ManualClock(START)
        name = self.collection = unique_name("inc")
        common: dict[str, Any] = {
            "collection_name": name,
            "clock": self.clock,
            "tokens": OFFLINE_ENCODING,
        }
        self.live = OutputProfileMemory.from_client(
            client, reads=ReadOptions(cache_ttl_s=3600), **common
        )
        self.fresh = OutputProfileMemory.from_client(
            client, reads=ReadOptions(cache_ttl_s=0, snapshot_ttl_s=0), **common
        )
        self.runs: list[str] = []
        self.loads = 0
        load = self.live.store.aload_fold

        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.loads += kwargs.get("with_vectors", True)  # export loads without vectors
            return await load(*args, **kwargs)

        self.live.store.aload_fold = counted  # type: ignore[method-assign]

    def apply(self, operation: tuple[Any, ...]) -> None:
        kind, *args = operation
        self.clock.advance(1.0)
        memory = self.live
        if kind == "add":
            text, signal, task, source = args
            memory.add(text, user_id=USER, signal=signal, task=task, source_input=source or None)
        elif kind == "rate":
            memory.add(args[0], user_id=USER, signal="rating", rating=args[1])
        elif kind == "track":
            run = str(uuid.uuid4())
            served = memory.select(USER, options=SERVING) if args[1] else None
            memory.record_output(args[0], user_id=USER, run_id=run, task="chat", served=served)
            self.runs.append(run)
        elif kind in ("feedback", "edit") and self.runs:
            run = self.runs[args[0] % len(self.runs)]
            try:
                if kind == "feedback":
                    memory.feedback(run, args[1], user_id=USER)
                else:
                    memory.feedback(run, edited=args[1], user_id=USER)
            except Exception as error:  # the run's entry was deleted or edited away
                assert type(error).__name__ == "UnknownRunError", error
        elif kind == "delete":
            stored = memory.export(USER)
            if stored:
                memory.delete(stored[args[0] % len(stored)]["id"], user_id=USER)
        elif kind == "wait":
            self.clock.advance(args[0] * DAY)
        elif kind == "expiring":
            memory.add(args[0], user_id=USER, signal="endorsed", ttl_s=args[1] * DAY)
        elif kind == "expire":
            memory.expire(USER if args[0] else None)
            memory.flush()  # the sweeps writes start run in the background


def _facts(selection: ProfileSelection) -> tuple[Any, ...]:
    """Everything a selection says except the scores and ages it shows, which a cached
    selection keeps from the time it was made (the block does not move with time)."""
    choice: Choice = selection.choice
    return (
        selection.text,
        selection.tokens,
        [(c.entry, c.tokens, c.cut, c.reason) for c in choice.chosen],
        [(c.entry, c.tokens, c.cut, c.reason) for c in choice.left_out],
        choice.left_out_total,
        choice.note,
    )


def _check_sequence(client: chromadb.api.ClientAPI, steps: list[tuple[Any, ...]]) -> None:
    pair = Pair(client)
    pair.live.add("Seed entry so the user has a version.", user_id=USER)
    for options in OPTIONS:
        pair.live.select(USER, options=options)
    loads = pair.loads
    for step in steps:
        pair.apply(step)
        for options in OPTIONS:
            with warnings.catch_warnings():  # a small budget may leave the block empty
                warnings.simplefilter("ignore", BudgetTooSmallWarning)
                live = pair.live.select(USER, options=options)
                fresh = pair.fresh.select(USER, options=options)
            assert _facts(live) == _facts(fresh), (step, options)
    assert pair.loads == loads, "a write forced the live memory to load the whole profile"


@pytest.fixture(scope="module")
def client() -> Iterator[chromadb.api.ClientAPI]:
    yield chromadb.EphemeralClient()


def test_an_edit_that_moves_a_runs_claim_moves_the_live_ranking_too(
    client: chromadb.api.ClientAPI,
) -> None:
    """Found by 400 sequences: an edit rewrites the run's claim under its own id; the live
    memory took the new event before dropping the old id, so it lost the claim."""
    _check_sequence(
        client,
        [
            ("track", "thanks bullets", False),
            ("add", "cheers", "edited", "chat", "the request"),
            ("wait", 41.57),
            ("edit", 19, "cheers"),
        ],
    )


def test_credit_from_feedback_moves_the_live_ranking_as_a_rerank_does(
    client: chromadb.api.ClientAPI,
) -> None:
    """A run served a block, then approved and rejected: every entry of that block changes
    credit, the live memory by the delta, the fresh one by folding the log."""
    _check_sequence(
        client,
        [
            ("add", "short answer first", "endorsed", None, ""),
            ("add", "bullets no fluff", "authored", None, ""),
            ("add", "cheers thanks", "accepted", "chat", ""),
            ("track", "ship it", True),
            ("feedback", 0, "endorsed"),
            ("track", "no fluff", True),
            ("feedback", 1, "rejected"),
            ("feedback", 1, "rejected"),
            ("delete", 0),
            ("add", "short answer first", "endorsed", None, ""),
        ],
    )


@given(steps=st.lists(operations, min_size=1, max_size=25))
def test_incremental_selection_equals_a_full_rerank(
    client: chromadb.api.ClientAPI, steps: list[tuple[Any, ...]]
) -> None:
    _check_sequence(client, steps)


@pytest.mark.slow
@settings(max_examples=1_000)
@given(steps=st.lists(operations, min_size=1, max_size=30))
def test_incremental_selection_equals_a_full_rerank_slow(
    client: chromadb.api.ClientAPI, steps: list[tuple[Any, ...]]
) -> None:
    _check_sequence(client, steps)
