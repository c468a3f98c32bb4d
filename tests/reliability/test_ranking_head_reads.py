"""Cold reads from a ranking head: a large profile's snapshot keeps the head of its ranking
and the coverage of the events it was folded from, so a cold read after a write (another
process, or a memory without a cache) applies what the log gained to the head instead of
loading the whole profile, and must choose exactly what a full load chooses.

Three memories share one collection and one clock: ``live`` writes (random sequences of
the incremental test's operations), ``cold`` reads with snapshots on and no cache (every
read is a cold read), ``fresh`` loads and ranks the whole profile every time. After each
step ``cold`` and ``fresh`` must give the same block, candidates and totals; and ``cold``
must have read from the head for most steps, not loaded the profile.
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
from langchain_outprofile.memory import reader as reader_module
from langchain_outprofile.memory.reader import ProfileReader
from langchain_outprofile.tokens import OFFLINE_ENCODING
from tests.reliability.test_incremental import USER, WORDS, Pair, _facts, operations

HEAD_OPTIONS = (
    SelectionOptions(max_tokens=120, pool_size=4, max_entry_tokens=12),
    SelectionOptions(max_tokens=200, pool_size=8, half_life_days=None, mmr_lambda=0.5),
    SelectionOptions(max_tokens=120, pool_size=5, credit_weight=1.5, explore=True),
)
"""Options a head serves (no task scope, no blended keys) with a small pool, so that a
profile of a few hundred entries is large next to its head."""
SEED_ENTRIES = 260


@pytest.fixture(autouse=True)
def _small_heads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Heads for profiles twice their size (the default waits for eight times, a few
    thousand entries at the default pool): these profiles stay small and fast."""
    monkeypatch.setattr(reader_module, "HEAD_MIN_RATIO", 2)


class Trio(Pair):
    """The incremental test's pair (``live`` writes, ``fresh`` re-ranks), plus ``cold``: no
    cache, snapshots on. Counts ``cold``'s full loads and its reads served by a head."""

    def __init__(
        self, client: chromadb.api.ClientAPI, options: tuple[SelectionOptions, ...] = HEAD_OPTIONS
    ) -> None:
        super().__init__(client)
        self.options = options
        self.cold = OutputProfileMemory.from_client(
            client,
            collection_name=self.collection,
            clock=self.clock,
            tokens=OFFLINE_ENCODING,
            reads=ReadOptions(cache_ttl_s=0),
        )
        self.cold_loads = self.from_head = 0
        load = self.cold.store.aload_fold

        async def counted_load(*args: Any, **kwargs: Any) -> Any:
            self.cold_loads += 1
            return await load(*args, **kwargs)

        self.cold.store.aload_fold = counted_load  # type: ignore[method-assign]
        reader: ProfileReader = self.cold._reader
        from_head = reader._from_head

        async def counted_head(*args: Any, **kwargs: Any) -> Any:
            found = await from_head(*args, **kwargs)
            self.from_head += found is not None
            return found

        reader._from_head = counted_head  # type: ignore[method-assign]

    def seed(
        self, signals: tuple[str, ...] = ("authored", "endorsed", "accepted", "edited", "rejected")
    ) -> None:
        """A profile several times its heads' size, of these signals in turn."""
        self.live.add_many(
            [
                {
                    "text": f"{WORDS[n % len(WORDS)]} {WORDS[(n * 7) % len(WORDS)]} seed {n}",
                    "user_id": USER,
                    "signal": signals[n % len(signals)],
                    "created_at": self.clock() - n * 3600.0,
                }
                for n in range(SEED_ENTRIES)
            ]
        )

    def check(self, step: Any) -> None:
        """``cold`` chooses what ``fresh`` does. A read served by a current snapshot is
        compared on its block only: a write that cannot change a block (a new rejected
        text, a pending output) keeps the version, and the snapshot keeps the left-out
        candidates it was saved with; a read from a head or a load, on everything."""
        for options in self.options:
            worked = self.from_head + self.cold_loads
            with warnings.catch_warnings():  # a small budget may leave the block empty
                warnings.simplefilter("ignore", BudgetTooSmallWarning)
                cold = self.cold.select(USER, options=options)
                fresh = self.fresh.select(USER, options=options)
            if self.from_head + self.cold_loads > worked:
                assert _facts(cold) == _facts(fresh), (step, options)
            else:
                assert _facts(cold)[:3] == _facts(fresh)[:3], (step, options)


def _check_sequence(
    client: chromadb.api.ClientAPI,
    steps: list[tuple[Any, ...]],
    options: tuple[SelectionOptions, ...] = HEAD_OPTIONS,
) -> Trio:
    trio = Trio(client, options)
    trio.seed()
    trio.check("seeded")  # the first cold reads load the profile and save heads
    for step in steps:
        trio.apply(step)
        trio.check(step)
    return trio


@pytest.fixture(scope="module")
def client() -> Iterator[chromadb.api.ClientAPI]:
    yield chromadb.EphemeralClient()


def test_cold_reads_after_writes_come_from_the_head_and_match_a_full_load(
    client: chromadb.api.ClientAPI,
) -> None:
    """Adds of every signal, a rating, tracked runs with feedback (credit), an edit and a
    delete: every cold read matches a full load, and the writes that only add to the log
    (all but the edit and the delete, which remove events) are read from the head, not by
    loading 260 entries again."""
    steps: list[tuple[Any, ...]] = [
        ("add", "ship it today", "endorsed", None, ""),
        ("add", "bullets first", "authored", None, "the request"),
        ("rate", "no fluff", 5),
        ("track", "cheers thanks", True),
        ("feedback", 0, "endorsed"),
        ("track", "thanks no", True),
        ("feedback", 1, "rejected"),
        ("add", "seed 3", "rejected", None, ""),
        ("wait", 2.0),
        ("add", "first answer", "accepted", None, ""),
        ("edit", 0, "cheers cheers"),
        ("delete", 5),
        ("add", "it ship", "edited", None, ""),
    ]
    # one set of options: two keys can share one of a user's 8 snapshot slots, and then
    # take it from each other (a miss, as for any snapshot)
    trio = _check_sequence(client, steps, HEAD_OPTIONS[1:2])
    # 13 steps: 8 read from the head; the 2 tracked outputs keep the version (the
    # snapshot serves); the edit and the delete remove events, so they and the first read
    # load the profile
    assert (trio.from_head, trio.cold_loads) == (8, 3)


def test_an_event_stamped_before_the_boundary_sends_the_read_to_a_full_load(
    client: chromadb.api.ClientAPI,
) -> None:
    """A writer whose clock runs an hour behind adds an event older than the head's
    boundary: the digest of the settled events no longer matches, so the cold read loads
    the whole profile (and still matches), instead of missing the write."""
    trio = Trio(client, HEAD_OPTIONS[1:2])
    trio.seed()
    trio.check("seeded")
    loads = trio.cold_loads
    slow = OutputProfileMemory.from_client(
        client,
        collection_name=trio.collection,
        clock=lambda: trio.clock() - 3600.0,
        tokens=OFFLINE_ENCODING,
    )
    slow.add("a late writer's answer, ship it", user_id=USER, signal="endorsed")
    heads = trio.from_head
    trio.check("late write")
    assert trio.from_head == heads and trio.cold_loads == loads + 1


@settings(max_examples=8, deadline=None)
@given(steps=st.lists(operations, min_size=1, max_size=12))
def test_random_write_sequences_read_cold_from_heads_as_full_loads_do(
    client: chromadb.api.ClientAPI, steps: list[tuple[Any, ...]]
) -> None:
    _check_sequence(client, steps)


@pytest.mark.slow
@settings(max_examples=150, deadline=None)
@given(steps=st.lists(operations, min_size=1, max_size=25))
def test_many_random_write_sequences_read_cold_from_heads_as_full_loads_do(
    client: chromadb.api.ClientAPI, steps: list[tuple[Any, ...]]
) -> None:
    _check_sequence(client, steps)


def test_another_users_head_is_never_read(client: chromadb.api.ClientAPI) -> None:
    """Heads live in the user's own snapshot slots; a user without a profile gets an
    empty block from the cold memory even right after a large user's head was saved."""
    trio = Trio(client)
    trio.seed()
    trio.check("seeded")
    other = f"other-{uuid.uuid4().hex[:6]}"
    assert trio.cold.select(other, options=HEAD_OPTIONS[0]).text == ""


def test_an_edit_that_moves_a_runs_claim_sends_the_read_to_a_full_load(
    client: chromadb.api.ClientAPI,
) -> None:
    """A run's output is a text the user also wrote (so the entry is chosen, and carries the
    run's id); an edit of the run moves its claim, a pending event rewritten under its own
    id, to the edited text: no event is added and none removed, yet the entry changed. The
    pending events' hashes tell, and the cold read loads the profile."""
    trio = Trio(client, HEAD_OPTIONS[1:2])
    trio.seed(("accepted", "endorsed"))  # weaker than what the user wrote
    text = "ship it today, the user's own words"
    trio.live.add(text, user_id=USER, signal="authored")
    trio.check("seeded")
    run = str(uuid.uuid4())
    trio.live.record_output(text, user_id=USER, run_id=run)
    trio.clock.advance(1.0)
    trio.check("tracked")
    chosen = trio.cold.select(USER, options=HEAD_OPTIONS[1]).choice.chosen
    assert any(c.entry.text == text and c.entry.run_id == run for c in chosen)
    loads = trio.cold_loads
    trio.live.feedback(run, edited="cheers, shipped", user_id=USER)
    trio.clock.advance(1.0)
    trio.check("edited")
    assert trio.cold_loads == loads + 1


def test_a_forget_racing_a_read_from_the_head_leaves_nothing_of_the_user(
    client: chromadb.api.ClientAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The user is forgotten right after the cold read took its version and the stale
    snapshot with the head: the read must not serve the head's texts, nor save them again
    (the race the snapshot design walks through, with a head in the payload)."""
    trio = Trio(client, HEAD_OPTIONS[1:2])
    trio.seed()
    trio.check("seeded")
    trio.live.add("a write, so the next cold read uses the head", user_id=USER)
    real = trio.cold.store.asnapshot

    async def then_forget(user_id: str, key: str) -> Any:
        found = await real(user_id, key)
        monkeypatch.setattr(trio.cold.store, "asnapshot", real)
        trio.live.forget(USER)
        return found

    monkeypatch.setattr(trio.cold.store, "asnapshot", then_forget)
    raced = trio.cold.select(USER, options=HEAD_OPTIONS[1])
    trio.cold._reader.flush()
    assert "seed" not in raced.text
    state = trio.live.store.state._collection
    assert state.get(where={"user_id": USER}, include=[])["ids"] == []
    assert trio.cold.select(USER, options=HEAD_OPTIONS[1]).text == ""


def test_a_warm_memory_saves_its_ranking_head_with_each_snapshot(
    client: chromadb.api.ClientAPI,
) -> None:
    """A long-lived worker ranks once, then takes its own writes as deltas and saves each
    new selection as a snapshot: with the head of its kept ranking, so another process's
    read after the next write is still served from a head (a snapshot saved without one
    would have replaced the head the first load saved)."""
    trio = Trio(client, HEAD_OPTIONS[1:2])
    trio.seed()
    options = HEAD_OPTIONS[1]
    trio.live.select(USER, options=options)  # loads and ranks: a head is saved
    trio.live.add("cheers, a write the worker takes as a delta", user_id=USER)
    trio.live.select(USER, options=options)  # packed from the kept ranking, saved anew
    trio.live.flush()
    trio.live.add("ship it, a second write", user_id=USER)
    trio.check("after the worker's writes")
    assert (trio.from_head, trio.cold_loads) == (1, 0)
