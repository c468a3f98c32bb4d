"""Strategies build their blocks from the real memory on real Chroma, within the budget."""

from __future__ import annotations

import uuid
from collections import Counter
from pathlib import Path

import chromadb
import pytest

from langchain_outprofile import OutputProfileMemory, parse_block
from langchain_outprofile.errors import InvalidInputError
from langchain_outprofile.types import ProfileEntry
from outprofile_lab.evaluation.data import load_lamp
from outprofile_lab.evaluation.strategies import (
    BASE_SYSTEM,
    build_block,
    draw_index,
    draw_order,
    ingest,
    messages_for,
    other_users,
    parse_names,
    parse_strategies,
    specific_order,
    word_counts,
    words_in,
)
from outprofile_lab.evaluation.tasks import (
    COAUTHOR_STRATEGIES,
    LAMP_EDITS_STRATEGIES,
    POPQUORN_STRATEGIES,
)

ALL = [
    "output-profile",
    "recency",
    "random",
    "bm25-query",
    "op-short",
    "op-diverse",
    "op-typical",
    "op-flat",
    "op-nodup",
    "op-specific",
    "random-0",
    "random-7",
]


def test_every_strategy_stays_in_budget_and_uses_only_the_users_own_texts(
    ephemeral_memory: OutputProfileMemory, tiny_lamp7: Path
) -> None:
    examples = load_lamp(tiny_lamp7)
    assert ingest(ephemeral_memory, examples) == sum(len(e.profile) for e in examples)
    population = word_counts(p.output for e in examples for p in e.profile)
    for example in examples:
        own = {p.output for p in example.profile}
        for strategy in ALL:
            for budget in (90, 150):  # the header and footer alone are ~60 tokens
                block = build_block(
                    ephemeral_memory, example, strategy, budget, seed=1, population=population
                )
                assert block, (strategy, budget)
                assert ephemeral_memory.counter.count(block) <= budget
                texts = parse_block(block)
                assert texts and set(texts) <= own, (strategy, texts)


def test_none_is_empty_and_input_fields_need_a_task_with_inputs(
    ephemeral_memory: OutputProfileMemory, tiny_lamp7: Path, tiny_lamp4: tuple[Path, Path]
) -> None:
    tweets, headlines = load_lamp(tiny_lamp7), load_lamp(tiny_lamp4[0])
    ingest(ephemeral_memory, [*tweets, *headlines])
    assert build_block(ephemeral_memory, tweets[0], "none", 200) == ""
    assert build_block(ephemeral_memory, tweets[0], "full", 200) is None
    full = build_block(ephemeral_memory, headlines[0], "full", 400)
    inputs = build_block(ephemeral_memory, headlines[0], "input-only", 400)
    assert full and inputs
    item = headlines[0].profile[0]
    assert item.input in full and item.output in full and "Request:" in full
    assert item.input in inputs and item.output not in inputs


def test_other_user_is_a_seeded_derangement_and_uses_the_partners_texts(
    ephemeral_memory: OutputProfileMemory, tiny_lamp7: Path
) -> None:
    examples = load_lamp(tiny_lamp7)
    ingest(ephemeral_memory, examples)
    partners = other_users(examples, seed=5)
    assert partners == other_users(examples, seed=5)
    assert sorted(partners) == sorted(partners.values()) == sorted(e.user_id for e in examples)
    assert all(user != partner for user, partner in partners.items())
    by_user = {e.user_id: e for e in examples}
    for example in examples:
        partner = partners[example.user_id]
        block = build_block(ephemeral_memory, example, "other-user", 200, partner=partner)
        assert block
        assert set(parse_block(block)) <= {p.output for p in by_user[partner].profile}


def test_bm25_puts_the_entry_sharing_the_requests_words_first(
    ephemeral_memory: OutputProfileMemory, tiny_lamp7: Path
) -> None:
    example = load_lamp(tiny_lamp7)[0]  # the request mentions a late ferry
    ingest(ephemeral_memory, [example])
    block = build_block(ephemeral_memory, example, "bm25-query", 100)
    assert block and "ferry" in parse_block(block)[0]
    assert (
        "ferry" not in parse_block(build_block(ephemeral_memory, example, "op-short", 100) or "")[0]
    )


def test_random_is_seeded(ephemeral_memory: OutputProfileMemory, tiny_lamp7: Path) -> None:
    example = load_lamp(tiny_lamp7)[1]
    ingest(ephemeral_memory, [example])
    blocks = {s: build_block(ephemeral_memory, example, "random", 110, seed=s) for s in range(6)}
    assert blocks[0] == build_block(ephemeral_memory, example, "random", 110, seed=0)
    assert len(set(blocks.values())) > 1


def test_random_draws_differ_by_index_and_repeat_in_a_fresh_memory_whatever_the_seed(
    ephemeral_memory: OutputProfileMemory, tiny_lamp7: Path
) -> None:
    example = load_lamp(tiny_lamp7)[0]
    ingest(ephemeral_memory, [example])
    names = [f"random-{k}" for k in range(8)]
    first = {n: build_block(ephemeral_memory, example, n, 110, seed=0) for n in names}
    assert len(set(first.values())) >= 4  # 8 entries, about 2 fit: the draws differ
    other = OutputProfileMemory.from_client(
        chromadb.EphemeralClient(), collection_name=f"d-{uuid.uuid4().hex}"
    )
    ingest(other, [example])
    again = {n: build_block(other, example, n, 110, seed=5) for n in names}
    assert again == first  # the name alone (in the cache key) fixes the block
    entries = ephemeral_memory.store.load(example.user_id).entries
    order = draw_order(entries, example.user_id, 3)
    assert draw_order(list(reversed(entries)), example.user_id, 3) == order
    assert sorted(e.id for e in order) == sorted(e.id for e in entries)
    assert draw_order(entries, "someone-else", 3) != order


def test_random_draw_names() -> None:
    assert [draw_index(n) for n in ("random-0", "random-12", "random", "random-03", "random-")] == [
        0,
        12,
        None,
        None,
        None,
    ]
    assert parse_strategies("none,random-5,none", 3) == [
        "none",
        "random-5",
        "random-0",
        "random-1",
        "random-2",
    ]
    assert parse_strategies("random-1", 2) == ["random-1", "random-0"]
    with pytest.raises(InvalidInputError, match="random-x"):
        parse_strategies("none,random-x")
    with pytest.raises(InvalidInputError, match="random-draws"):
        parse_strategies("none", -1)


def test_placements() -> None:
    block, request = "<user_profile>\nB\n</user_profile>", "Rewrite this."
    leading = messages_for(request, block, "leading")
    assert leading[0] == ("system", f"{block}\n\n{BASE_SYSTEM}") and leading[1] == ("user", request)
    assert messages_for(request, block, "middle")[0][1].endswith(block)
    assert messages_for(request, block, "trailing")[1] == ("user", f"{request}\n\n{block}")
    assert messages_for(request, "", "trailing") == [("system", BASE_SYSTEM), ("user", request)]


def test_unknown_names_are_refused() -> None:
    assert parse_names("none, bm25-query,none", ["none", "bm25-query"], "strategy") == [
        "none",
        "bm25-query",
    ]
    with pytest.raises(InvalidInputError, match=r"unknown strategy \['bm25'\]"):
        parse_names("none,bm25", ["none", "bm25-query"], "strategy")


def test_typicality_option_ranks_like_the_op_typical_strategy(
    ephemeral_memory: OutputProfileMemory, tiny_lamp7: Path
) -> None:
    examples = load_lamp(tiny_lamp7)
    ingest(ephemeral_memory, examples)
    for example in examples:
        evaluated = parse_block(build_block(ephemeral_memory, example, "op-typical", 400) or "")
        selected = ephemeral_memory.select(
            example.user_id,
            max_tokens=400,
            typicality_weight=1.0,
            mmr_lambda=1.0,
            duplicate_threshold=1.0,
            half_life_days=None,
        )
        assert [e.text for e in selected.entries] == evaluated
        default = ephemeral_memory.select(example.user_id, max_tokens=400)
        assert [e.text for e in default.entries] != evaluated or len(evaluated) < 2


def test_words_are_lower_cased_with_hashtags_mentions_and_apostrophes() -> None:
    assert words_in("Don't STOP, don't! #Mondays @Ana 🔥") == [
        "don't",
        "stop",
        "don't",
        "#mondays",
        "@ana",
    ]
    assert word_counts(["a b", "A"]) == Counter({"a": 2, "b": 1})


def test_specific_order_ranks_the_users_recurring_words_over_one_off_rare_ones() -> None:
    """By hand, population {tea: 50, zebra: 1, rain: 949} (size 1000 + 3 + 1 = 1004):
    an entry "tea" sees the user's other "tea" (1 of 2 other words), so P_user(tea) =
    (1 + 10 * 51/1004) / 12 = 0.126 against P_pop 0.051: log-ratio +0.91. "zebra" is rare
    in the population, but the user never uses it elsewhere: (0 + 10 * 2/1004) / 12 against
    2/1004, log-ratio log(10/12) = -0.18. Without leaving the entry out, zebra would win."""
    entries = [ProfileEntry.create(t, user_id="u") for t in ("zebra", "tea", "Tea!")]
    population = Counter({"tea": 50, "zebra": 1, "rain": 949})
    assert [e.text for e in specific_order(entries, population)][-1] == "zebra"
    assert {e.text for e in specific_order(entries, population)[:2]} == {"tea", "Tea!"}


def test_op_specific_needs_a_population(
    ephemeral_memory: OutputProfileMemory, tiny_lamp7: Path
) -> None:
    example = load_lamp(tiny_lamp7)[0]
    ingest(ephemeral_memory, [example])
    with pytest.raises(InvalidInputError, match="population"):
        build_block(ephemeral_memory, example, "op-specific", 200)


@pytest.mark.parametrize(
    "task_strategies", [POPQUORN_STRATEGIES, COAUTHOR_STRATEGIES, LAMP_EDITS_STRATEGIES]
)
def test_the_command_line_accepts_every_strategy_a_task_offers(
    task_strategies: tuple[str, ...],
) -> None:
    """`--strategies` is parsed before the task is known: each task's names must pass it."""
    assert parse_strategies(",".join(task_strategies)) == list(task_strategies)
