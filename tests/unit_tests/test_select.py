"""Preference selection and the rendered block, on real Chroma and real tiktoken."""

from __future__ import annotations

import random
import warnings
from collections.abc import Sequence
from typing import Any

import chromadb
import numpy as np
import pytest
import tiktoken

from langchain_outprofile import (
    BlockTemplate,
    OutputProfileMemory,
    ReadOptions,
    SelectionOptions,
    StyleEmbeddings,
    parse_block,
)
from langchain_outprofile.memory import BudgetTooSmallWarning
from langchain_outprofile.render import DEFAULT_TEMPLATE, render_block
from langchain_outprofile.select import LEFT_OUT_KEPT, choose_from, profile_vectors, rank
from langchain_outprofile.tokens import OFFLINE_ENCODING, TokenCounter
from langchain_outprofile.types import ProfileEntry, StoredProfile
from tests.conftest import ManualClock, MemoryFactory, unique_name

DAY = 86_400.0
NOW = 1_700_000_000.0  # in the past: callers' times past now + 24 h are refused

SENTENCES = [
    "Ship it today, polish tomorrow.",
    "honestly?? best coffee in town lol",
    "Kindly find the report attached; comments welcome.",
    "nope. not doing meetings before 10.",
    "We should measure before we optimise anything.",
    "OMG the new album!!! 🔥🔥",
    "Thanks, that works for me - see you Thursday.",
    "Bullet points first; prose only if someone asks.",
]


WORDS = [
    "meeting",
    "coffee",
    "report",
    "deadline",
    "album",
    "weekend",
    "budget",
    "draft",
    "launch",
    "review",
    "bug",
    "fix",
    "lunch",
    "train",
    "rain",
    "game",
    "movie",
    "plan",
    "idea",
    "garden",
    "email",
    "call",
    "summary",
    "invoice",
    "trip",
    "party",
    "code",
    "test",
]


def _note(user: str, i: int) -> str:
    """A distinct, varied sentence (seeded by i) so that entries are not near-duplicates."""
    rng = random.Random(i)
    words = rng.sample(WORDS, rng.randint(3, 9))
    return f"{SENTENCES[i % len(SENTENCES)]} {' '.join(words)} ({user} note {i})"


def _fill(memory: OutputProfileMemory, user: str, n: int, **fields: object) -> None:
    memory.add_many(
        [
            {"text": _note(user, i), "user_id": user, "created_at": NOW - i * DAY, **fields}
            for i in range(n)
        ]
    )


class CountingEmbeddings(StyleEmbeddings):
    """The real style embedder, counting its calls on every path the store may take:
    ``embed_array`` (what the store calls for StyleEmbeddings), ``embed_documents`` and
    ``embed_query`` (what it calls for any other ``Embeddings``)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: dict[str, int] = {"embed_array": 0, "embed_documents": 0, "embed_query": 0}

    def embed_array(self, texts: list[str]) -> np.ndarray:
        self.calls["embed_array"] += 1
        return super().embed_array(texts)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        self.calls["embed_documents"] += 1
        return super().embed_documents(texts)

    def embed_query(self, text: str) -> list[float]:
        self.calls["embed_query"] += 1
        return super().embed_query(text)

    @property
    def total(self) -> int:
        return sum(self.calls.values())


def test_block_is_exactly_counted_and_within_budget(make_memory: MemoryFactory) -> None:
    memory = make_memory(clock=ManualClock(NOW))  # ages from the data's own "now", not today's date
    _fill(memory, "ana", 60)
    independent = tiktoken.get_encoding(memory.counter.encoding_name)  # not the memo'd counter
    for budget in (120, 300, 600):
        selection = memory.select("ana", max_tokens=budget)
        assert selection.tokens == len(independent.encode_ordinary(selection.text))
        assert 0 < selection.tokens <= budget
        if budget >= 300:  # whole ~20-token entries cannot fill a tiny budget to the token
            assert selection.tokens >= 0.95 * budget
        assert parse_block(selection.text) == [e.text for e in selection.entries]


def test_block_does_not_depend_on_the_query(memory: OutputProfileMemory) -> None:
    _fill(memory, "ana", 30)
    a = memory.select("ana", max_tokens=200, query="coffee")
    b = memory.select("ana", max_tokens=200, query="quarterly report")
    assert a.text == b.text and a.text


def test_relevance_weight_lets_the_query_in(make_memory: MemoryFactory) -> None:
    memory = make_memory(reads=ReadOptions(cache_ttl_s=0))
    memory.add_many([{"text": t, "user_id": "ana", "created_at": NOW} for t in SENTENCES])
    options: dict[str, Any] = {"max_tokens": 90, "relevance_weight": 1.0, "mmr_lambda": 1.0}
    shouty = memory.select("ana", query="OMG!!! 🔥🔥 album", **options)
    formal = memory.select("ana", query="Kindly find the attached report", **options)
    assert "OMG" in shouty.entries[0].text
    assert "Kindly" in formal.entries[0].text


def test_rejected_and_pending_are_never_selected(memory: OutputProfileMemory) -> None:
    memory.add("keep me", user_id="ana")
    memory.add("thumbs down later", user_id="ana", signal="endorsed")
    memory.add("thumbs down later", user_id="ana", signal="rejected")
    memory.add("awaiting feedback", user_id="ana", signal="pending", run_id="run-1")
    selection = memory.select("ana")
    assert [e.text for e in selection.entries] == ["keep me"]
    reasons = {c.entry.text: c.reason for c in selection.choice.left_out}
    assert reasons == {"thumbs down later": "rejected"}  # a pending output is no candidate
    assert selection.choice.left_out_total == 1


def test_stronger_signals_come_first(memory: OutputProfileMemory) -> None:
    memory.add("accepted once, meh", user_id="ana", created_at=NOW, signal="accepted")
    memory.add("I wrote this myself!", user_id="ana", created_at=NOW)
    memory.add("Endorsed: crisp and short.", user_id="ana", created_at=NOW, signal="endorsed")
    texts = [e.text for e in memory.select("ana").entries]
    assert texts == ["I wrote this myself!", "Endorsed: crisp and short.", "accepted once, meh"]


def test_recency_decay_and_turning_it_off(make_memory: MemoryFactory) -> None:
    memory = make_memory(clock=ManualClock(NOW))
    memory.add("an old habit of mine", user_id="ana", created_at=NOW - 400 * DAY)
    memory.add("a fresh, merely accepted reply", user_id="ana", created_at=NOW, signal="accepted")
    decayed = memory.select("ana", half_life_days=90.0)
    assert decayed.entries[0].text == "a fresh, merely accepted reply"
    flat = memory.select("ana", options=SelectionOptions(half_life_days=None))
    assert flat.entries[0].text == "an old habit of mine"


def test_task_scope_then_fill_from_the_profile(memory: OutputProfileMemory) -> None:
    _fill(memory, "ana", 10, task="chat")
    memory.add(
        "Dear team, please find the summary below.",
        user_id="ana",
        task="email",
        created_at=NOW - 900 * DAY,
    )
    scoped = memory.select("ana", task="email", max_tokens=150)
    assert scoped.entries[0].task == "email"
    assert len(scoped.entries) > 1
    only = memory.select("ana", task="email", max_tokens=150, fill_from_profile=False)
    assert [e.task for e in only.entries] == ["email"]


def test_near_duplicates_do_not_crowd_the_budget(memory: OutputProfileMemory) -> None:
    for i in range(12):
        memory.add(f"Great job team!!! Keep going!!! #{i}", user_id="ana", created_at=NOW)
    memory.add("A calmer note: the deadline moves to May.", user_id="ana", created_at=NOW - DAY)
    selection = memory.select("ana", max_tokens=400)
    texts = [e.text for e in selection.entries]
    assert "A calmer note: the deadline moves to May." in texts
    assert sum(t.startswith("Great job") for t in texts) < 12
    assert any(c.reason.startswith("near-duplicate") for c in selection.choice.left_out)


LONG_TEXT_WORDS = (
    "the keeper walked along harbour wall while gulls circled over grey water and she "
    "thought about her sister letters kept in drawer near window light fading slowly"
)


def _paragraph(seed: int) -> str:
    """~180 words of one style (one small vocabulary), different wording per seed."""
    rng, words = random.Random(seed), LONG_TEXT_WORDS.split(" ")
    sentences = (
        " ".join(rng.choice(words) for _ in range(rng.randint(9, 16))).capitalize() + "."
        for _ in range(14)
    )
    return " ".join(sentences)


def test_long_texts_in_one_style_are_not_near_duplicates_unless_worded_alike(
    memory: OutputProfileMemory,
) -> None:
    paragraphs = [_paragraph(seed) for seed in range(4)]
    vectors = np.array(memory.store.embeddings.embed_documents(paragraphs))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    assert (vectors @ vectors.T).min() >= 0.92  # as alike in style as the default threshold
    for i, text in enumerate(paragraphs):
        memory.add(text, user_id="ana", created_at=NOW - i * DAY)
    resaved = paragraphs[0].replace("Gulls", "Terns", 1) + " Again."
    memory.add(resaved, user_id="ana", created_at=NOW - 10 * DAY)
    selection = memory.select("ana", max_tokens=4_000, max_entry_tokens=400)
    texts = [e.text for e in selection.entries]
    assert sorted(texts) == sorted(paragraphs)
    (duplicate,) = [c for c in selection.choice.left_out if c.reason.startswith("near-dup")]
    assert duplicate.entry.text == resaved


def test_long_entries_are_cut_at_a_sentence_boundary(memory: OutputProfileMemory) -> None:
    long_text = " ".join(f"Sentence number {i} is here." for i in range(80))
    memory.add(long_text, user_id="ana")
    selection = memory.select("ana", max_entry_tokens=40, max_tokens=400)
    (entry,) = selection.entries
    assert entry.text.endswith("is here.") and long_text.startswith(entry.text)
    assert memory.counter.count(entry.text) <= 40
    assert selection.choice.chosen[0].cut


def test_text_without_boundaries_is_cut_by_tokens_not_characters(
    make_memory: MemoryFactory,
) -> None:
    """The last-resort cut (no sentence end, no space) keeps the longest prefix within
    ``max_entry_tokens`` tokens: 40 emoji are about 120 tokens, not 40."""
    memory = make_memory(clock=ManualClock(NOW))
    emoji = "🔥😀🦄🫠🎉" * 40
    memory.add(emoji, user_id="ana", created_at=NOW)
    selection = memory.select("ana", max_entry_tokens=40, max_tokens=400)
    (entry,) = selection.entries
    independent = tiktoken.get_encoding(memory.counter.encoding_name)
    kept = len(independent.encode_ordinary(entry.text))
    assert emoji.startswith(entry.text) and 0 < kept <= 40
    longer = emoji[: len(entry.text) + 1]  # the longest such prefix: one more character is over
    assert len(independent.encode_ordinary(longer)) > 40
    assert selection.choice.chosen[0].cut
    assert selection.tokens == len(independent.encode_ordinary(selection.text)) <= 400


def test_stable_order_appends_new_entries(make_memory: MemoryFactory) -> None:
    memory = make_memory()
    for i, text in enumerate(SENTENCES[:4]):
        memory.add(text, user_id="ana", created_at=NOW + i)
    before = memory.select("ana", order="stable", max_tokens=2000).text
    memory.add("a brand-new, weaker entry", user_id="ana", created_at=NOW + 10, signal="accepted")
    after = memory.select("ana", order="stable", max_tokens=2000).text
    assert after.startswith(before.removesuffix(DEFAULT_TEMPLATE.footer))
    assert after.count("<entry") == 5


def test_fields_for_ablations(memory: OutputProfileMemory) -> None:
    memory.add("Sure - Tuesday works.", user_id="ana", source_input="Can we meet Tuesday?")
    memory.add("No input stored for this one.", user_id="ana")
    assert parse_block(memory.select("ana").text) == [
        "Sure - Tuesday works.",
        "No input stored for this one.",
    ] or parse_block(memory.select("ana").text) == [
        "No input stored for this one.",
        "Sure - Tuesday works.",
    ]
    assert parse_block(memory.select("ana", fields="input").text) == ["Can we meet Tuesday?"]
    full = memory.select("ana", fields="full").text
    assert "Request: Can we meet Tuesday?\nUser's text: Sure - Tuesday works." in full
    assert "Can we meet" not in memory.select("ana").text


def test_same_state_gives_a_byte_identical_block(make_memory: MemoryFactory) -> None:
    first = make_memory()
    _fill(first, "ana", 40)
    second = make_memory()  # same collection, its own cache
    assert first.select("ana", max_tokens=300).text == second.select("ana", max_tokens=300).text


def test_read_path_makes_no_embedding_call(make_memory: MemoryFactory) -> None:
    """Embedding happens on writes only: reads (warm, cold in a new memory, from a snapshot
    or ranked afresh, after a write) embed nothing, with or without a query."""
    embedder = CountingEmbeddings()
    memory = make_memory(embeddings=embedder, clock=ManualClock(NOW))
    _fill(memory, "ana", 20)
    assert embedder.total > 0  # the counter sees the store's own embedding of the writes

    def reads(reader: OutputProfileMemory) -> None:
        reader.select("ana", max_tokens=200)
        reader.select("ana", max_tokens=200, query="anything at all")
        reader.select("ana", max_tokens=300, order="stable", typicality_weight=0.5)

    before = embedder.total
    reads(memory)  # ranks and saves snapshots
    reads(memory)  # warm: the in-process cache
    reads(make_memory(embeddings=embedder, clock=ManualClock(NOW)))  # cold: stored snapshots
    reads(
        make_memory(
            embeddings=embedder, clock=ManualClock(NOW), reads=ReadOptions(snapshot_ttl_s=0)
        )
    )  # cold rank
    assert embedder.total == before
    memory.add("one more entry, written", user_id="ana", created_at=NOW)
    written = embedder.total
    assert written > before
    reads(memory)  # the write invalidated the cache: ranked again
    assert embedder.total == written, embedder.calls


def test_empty_profile_gives_an_empty_block(memory: OutputProfileMemory) -> None:
    selection = memory.select("nobody")
    assert selection.text == "" and selection.tokens == 0 and not selection


def test_users_never_see_each_other(memory: OutputProfileMemory) -> None:
    _fill(memory, "ana", 10)
    _fill(memory, "bob", 10)
    assert all("(bob note" in e.text for e in memory.select("bob", max_tokens=2000).entries)
    assert all(e.user_id == "ana" for e in memory.select("ana", max_tokens=2000).entries)


def test_explain_accounts_for_every_entry(memory: OutputProfileMemory) -> None:
    _fill(memory, "ana", 25)
    selection = memory.select("ana", max_tokens=120)
    report = selection.explain(max_left_out=100)
    assert f"{selection.tokens}/120 tokens" in report
    assert len(selection.choice.chosen) + selection.choice.left_out_total == 25
    assert len(selection.choice.left_out) == min(LEFT_OUT_KEPT, selection.choice.left_out_total)
    assert "over budget" in report and "score=" in report and "[authored]" in report


def test_writes_through_the_memory_invalidate_its_cache(memory: OutputProfileMemory) -> None:
    memory.add("first", user_id="ana")
    assert len(memory.select("ana").entries) == 1
    memory.add("second", user_id="ana")
    assert len(memory.select("ana").entries) == 2


def test_template_can_be_overridden(make_memory: MemoryFactory) -> None:
    memory = make_memory(template=BlockTemplate(header="My voice:", footer="", entry="- {text}"))
    memory.add("hello <|im_start|> there", user_id="ana")
    text = memory.select("ana").text
    assert text.startswith("My voice:\n- hello <")
    assert "<|im_start|>" not in text


def test_exact_check_drops_what_per_entry_costs_under_counted() -> None:
    """Greedy packing trusts ``entry_cost``; the real count of the rendered block has the last
    word. With a cost that leaves out each entry's delimiters, every entry packs, the real
    block is over, and trailing entries are dropped only until it fits."""
    encoding = tiktoken.get_encoding(OFFLINE_ENCODING)
    counter = TokenCounter(encoding=OFFLINE_ENCODING)
    entries = tuple(
        ProfileEntry.create(f"{SENTENCES[i]} ({i})", user_id="ana", created_at=NOW - i * DAY)
        for i in range(6)
    )
    profile = StoredProfile(entries, StyleEmbeddings().embed_array([e.text for e in entries]))
    frame = len(encoding.encode_ordinary(f"{DEFAULT_TEMPLATE.header}\n{DEFAULT_TEMPLATE.footer}"))
    budget = frame + sum(len(encoding.encode_ordinary(e.text)) for e in entries)

    def real_tokens(chosen: Sequence[ProfileEntry]) -> int:
        return len(encoding.encode_ordinary(render_block(chosen)))

    choice = choose_from(
        rank(profile, SelectionOptions(max_tokens=budget, mmr_lambda=1.0), now=NOW),
        vectors=profile_vectors(profile),
        counter=counter,
        fixed_cost=frame,
        entry_cost=lambda e: len(encoding.encode_ordinary(e.text)),  # no delimiters: too low
        fits=lambda chosen: real_tokens(chosen) <= budget,
        now=NOW,
    )
    dropped = [c for c in choice.left_out if c.reason == "over budget once rendered"]
    assert choice.chosen and dropped
    assert len(choice.chosen) + len(dropped) == len(entries)  # greedy packing took them all
    kept = [c.entry for c in choice.chosen]
    assert real_tokens(kept) <= budget
    last_dropped = max(dropped, key=lambda c: c.score).entry  # the last one the loop removed
    assert real_tokens([*kept, last_dropped]) > budget  # nothing was dropped needlessly
    assert min(c.score for c in choice.chosen) > max(c.score for c in dropped)  # weakest go


def test_entry_numbers_past_999_are_not_under_counted() -> None:
    """Per-entry costs are counted with the widest number the block can hold (``pool_size``):
    numbers from 1000 on cost one more token each, and packing already knows it, so no
    packed block goes over (it used to count every entry as number 999, and only the exact
    check caught the difference)."""
    memory = OutputProfileMemory.from_client(
        chromadb.EphemeralClient(),
        collection_name=unique_name(),
        clock=ManualClock(NOW),
        reads=ReadOptions(cache_ttl_s=0, snapshot_ttl_s=0),
    )
    total = 1_020
    memory.add_many(
        [{"text": f"n{i}", "user_id": "ana", "created_at": NOW - i} for i in range(total)]
    )
    encoding = tiktoken.get_encoding(memory.counter.encoding_name)
    options: dict[str, Any] = {"pool_size": 2_000, "duplicate_threshold": 1.0, "mmr_lambda": 1.0}
    everything = memory.select("ana", max_tokens=1_000_000, **options)
    assert len(everything.entries) == total
    budget = len(encoding.encode_ordinary(everything.text)) - 1  # the whole block is 1 over
    selection = memory.select("ana", max_tokens=budget, **options)
    reasons = [c.reason for c in selection.choice.left_out]
    assert reasons and set(reasons) == {"over budget"}  # packing, not the exact check
    assert len(selection.entries) + selection.choice.left_out_total == total
    assert len(encoding.encode_ordinary(selection.text)) <= budget
    assert parse_block(selection.text) == [e.text for e in selection.entries]


def _frame_tokens(memory: OutputProfileMemory) -> int:
    """Tokens of the default block's header and footer, counted independently."""
    frame = f"{DEFAULT_TEMPLATE.header}\n{DEFAULT_TEMPLATE.footer}"
    return len(tiktoken.get_encoding(memory.counter.encoding_name).encode_ordinary(frame))


@pytest.mark.parametrize("below_frame", [None, 20, 0])
def test_budget_smaller_than_the_frame_says_so(
    make_memory: MemoryFactory, below_frame: int | None
) -> None:
    """A budget up to the frame (header and footer) can hold no entry. The block is empty,
    the read warns, and ``explain()`` names the cause, also when a new memory serves the
    selection from its stored snapshot."""
    memory = make_memory(clock=ManualClock(NOW))
    memory.add("hi", user_id="ana", created_at=NOW)
    budget = 1 if below_frame is None else _frame_tokens(memory) - below_frame
    with pytest.warns(BudgetTooSmallWarning, match=f"max_tokens={budget} does not exceed"):
        selection = memory.select("ana", max_tokens=budget)
    assert selection.text == "" and selection.tokens == 0
    assert f"note: max_tokens={budget} does not exceed the block's frame" in selection.explain()
    assert "raise max_tokens" in selection.choice.note
    cold = make_memory(clock=ManualClock(NOW)).select("ana", max_tokens=budget)  # a stored snapshot
    assert cold.choice.note == selection.choice.note and "note: " in cold.explain()


def test_a_budget_that_holds_the_block_has_no_note(make_memory: MemoryFactory) -> None:
    memory = make_memory(clock=ManualClock(NOW))
    memory.add("hi", user_id="ana", created_at=NOW)
    encoding = tiktoken.get_encoding(memory.counter.encoding_name)
    with warnings.catch_warnings():
        warnings.simplefilter("error", BudgetTooSmallWarning)
        roomy = memory.select("ana", max_tokens=600)
        exact = len(encoding.encode_ordinary(roomy.text))  # the smallest budget that holds it
        tight = memory.select("ana", max_tokens=exact)
    for selection in (roomy, tight):
        assert [e.text for e in selection.entries] == ["hi"]
        assert selection.choice.note == "" and "note:" not in selection.explain()


def test_a_budget_that_holds_the_frame_but_no_entry_says_so(make_memory: MemoryFactory) -> None:
    memory = make_memory(clock=ManualClock(NOW))
    memory.add(
        "A long enough sentence that costs a couple dozen tokens at the least.", user_id="ana"
    )
    frame = memory.counter.count(f"{DEFAULT_TEMPLATE.header}\n{DEFAULT_TEMPLATE.footer}")
    selection = memory.select("ana", max_tokens=frame + 3)
    assert selection.text == ""
    assert "no entry fits in max_tokens=" in selection.choice.note
    assert "no entry fits" in selection.explain()
