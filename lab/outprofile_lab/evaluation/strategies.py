"""Strategies: how each block is built, always from profiles stored in the real memory.

Every strategy reads the user's entries back from Chroma through :class:`OutputProfileMemory`
and renders them with :func:`render_block`, under the same token budget counted by the
memory's own counter. ``output-profile``, ``recency``, ``other-user``, ``full``,
``input-only`` and ``op-diverse`` are ``memory.select`` calls; ``random``, ``bm25-query``,
``op-short``, ``op-typical`` and ``op-specific`` order the stored entries their own way and
pack them with :func:`pack`.

``random-<k>`` (``k`` = 0, 1, ...) is the ``k``-th of several seeded random draws of one
user's entries (:func:`draw_order`): seeded by the user and ``k`` only, not by ``--seed``, so
the strategy's name, which is in the score-cache key, fixes its block. The report sets the
mean of the draws and the best of them per user beside the other strategies (the headroom of
any query-free pick).
"""

from __future__ import annotations

import math
import random as random_module
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Literal

import numpy as np

from langchain_outprofile.errors import InvalidInputError
from langchain_outprofile.memory import OutputProfileMemory
from langchain_outprofile.render import render_block
from langchain_outprofile.types import Fields, ProfileEntry
from outprofile_lab.evaluation.data import LampExample

__all__ = [
    "BASE_SYSTEM",
    "PLACEMENTS",
    "STRATEGIES",
    "Placement",
    "bm25_order",
    "build_block",
    "draw_index",
    "draw_names",
    "draw_order",
    "ingest",
    "messages_for",
    "other_users",
    "pack",
    "parse_names",
    "parse_strategies",
    "shuffled",
    "specific_order",
    "word_counts",
    "words_in",
]

STRATEGIES = (
    "none",
    "output-profile",
    "recency",
    "random",
    "bm25-query",
    "other-user",
    "full",
    "input-only",
    "op-short",
    "op-diverse",
    "op-typical",
    "op-flat",
    "op-nodup",
    "all-outputs-bm25",
    "other-rewriter",
    "op-specific",
    "other-writer",
)
PLACEMENTS = ("leading", "middle", "trailing", "after-system")
Placement = Literal["leading", "middle", "trailing", "after-system"]
BASE_SYSTEM = "You are a helpful assistant."
EPOCH = 1_700_000_000.0
_DAY_S = 86_400.0
_WORD = re.compile(r"[#@]?\w+(?:'\w+)?")
_DRAW = re.compile(r"random-(0|[1-9][0-9]*)")
SMOOTHING_WORDS = 10.0
"""How many words of population prior ``op-specific`` mixes into a user's word distribution."""


def parse_names(text: str, allowed: Sequence[str], what: str) -> list[str]:
    """Split a comma list and check every name (``InvalidInputError`` names the bad one)."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in names if n not in allowed]
    if bad or not names:
        raise InvalidInputError(f"unknown {what} {bad or text!r}; choose from {', '.join(allowed)}")
    return list(dict.fromkeys(names))


def draw_index(strategy: str) -> int | None:
    """The draw index of a ``random-<k>`` strategy, else None.

    Example:
        ```python
        draw_index("random-3"), draw_index("random"), draw_index("random-03")  # 3, None, None
        ```
    """
    match = _DRAW.fullmatch(strategy)
    return int(match.group(1)) if match else None


def draw_names(draws: int) -> list[str]:
    """``random-0`` ... ``random-<draws - 1>``."""
    return [f"random-{k}" for k in range(draws)]


def parse_strategies(text: str, draws: int = 0) -> list[str]:
    """:func:`parse_names` of :data:`STRATEGIES` and ``random-<k>`` names, then the ``draws``
    names of :func:`draw_names` (``--random-draws``) appended."""
    if draws < 0:
        raise InvalidInputError(f"--random-draws must be >= 0; got {draws}")
    named = [n.strip() for n in text.split(",") if draw_index(n.strip()) is not None]
    names = parse_names(text, [*STRATEGIES, *named], "strategy")
    return list(dict.fromkeys([*names, *draw_names(draws)]))


def shuffled(entries: Iterable[ProfileEntry], key: str) -> list[ProfileEntry]:
    """``entries`` in id order, shuffled by ``random.Random(key)`` (the same key, the same
    order, in any process)."""
    order = sorted(entries, key=lambda e: e.id)
    random_module.Random(key).shuffle(order)
    return order


def draw_order(entries: Iterable[ProfileEntry], user: str, draw: int) -> list[ProfileEntry]:
    """The ``draw``-th seeded random order of ``user``'s entries (``random-<draw>``).

    Example:
        ```python
        draw_order(entries, "u1", 0) == draw_order(entries, "u1", 0)  # True, in any run
        ```
    """
    return shuffled(entries, f"draw:{draw}:{user}")


def ingest(memory: OutputProfileMemory, examples: Sequence[LampExample]) -> int:
    """Store every example's profile as authored entries (one ``add_many`` per user).

    Items keep their file order as time: item ``i`` is ``i`` days after the first, so the
    last item is the newest (LaMP-7 items carry no dates).
    """
    stored = 0
    for example in examples:
        records = [
            {
                "text": item.output,
                "user_id": example.user_id,
                "signal": "authored",
                "task": example.task,
                "source_input": item.input or None,
                "created_at": EPOCH + i * _DAY_S,
            }
            for i, item in enumerate(example.profile)
        ]
        stored += len(memory.add_many(records))
    return stored


def other_users(examples: Sequence[LampExample], seed: int) -> dict[str, str]:
    """A seeded derangement: each user is paired with a different user's profile."""
    users = [e.user_id for e in examples]
    if len(users) < 2:
        return {}
    shuffled = users[:]
    random_module.Random(seed).shuffle(shuffled)
    return {u: shuffled[(i + 1) % len(shuffled)] for i, u in enumerate(shuffled)}


def build_block(
    memory: OutputProfileMemory,
    example: LampExample,
    strategy: str,
    budget: int,
    *,
    seed: int = 0,
    partner: str | None = None,
    population: Counter[str] | None = None,
) -> str | None:
    """The block text of one strategy for one user ('' for ``none``; None when not applicable).
    ``population`` (every user's profile words, :func:`word_counts`) is what ``op-specific``
    compares the user's words with.

    Example:
        ```python
        text = build_block(memory, example, "bm25-query", 200)
        ```
    """
    user = example.user_id
    if strategy == "none":
        return ""
    if strategy in ("full", "input-only"):
        if not example.has_inputs:
            return None
        fields: Fields = "full" if strategy == "full" else "input"
        return memory.select(user, max_tokens=budget, fields=fields).text
    selectors: dict[str, Callable[[], str]] = {
        "output-profile": lambda: memory.select(user, max_tokens=budget).text,
        "recency": lambda: (
            memory.select(user, max_tokens=budget, mmr_lambda=1.0, duplicate_threshold=1.0).text
        ),
        "op-diverse": lambda: memory.select(user, max_tokens=budget, mmr_lambda=0.3).text,
        "op-flat": lambda: (
            memory.select(user, max_tokens=budget, half_life_days=None, mmr_lambda=1.0).text
        ),
        "op-nodup": lambda: (
            memory.select(
                user,
                max_tokens=budget,
                half_life_days=None,
                mmr_lambda=1.0,
                duplicate_threshold=1.0,
            ).text
        ),
        "other-user": lambda: memory.select(partner, max_tokens=budget).text if partner else "",
    }
    if strategy in selectors:
        return selectors[strategy]()
    return _ordered_block(memory, example, strategy, budget, seed, population)


def _ordered_block(
    memory: OutputProfileMemory,
    example: LampExample,
    strategy: str,
    budget: int,
    seed: int,
    population: Counter[str] | None,
) -> str:
    profile = memory.store.load(example.user_id)
    entries = [e for e in profile.entries if e.selectable]
    keep = [i for i, e in enumerate(profile.entries) if e.selectable]
    vectors = profile.vectors[keep] if len(keep) else profile.vectors
    draw = draw_index(strategy)
    if strategy == "random":
        order = shuffled(entries, f"{seed}:{example.user_id}")
    elif draw is not None:
        order = draw_order(entries, example.user_id, draw)
    elif strategy == "bm25-query":
        order = bm25_order(entries, example.input)
    elif strategy == "op-short":
        order = sorted(entries, key=lambda e: (memory.counter.count(e.text), e.id))
    elif strategy == "op-typical":
        order = _typical_order(entries, vectors)
    elif strategy == "op-specific":
        if population is None:
            raise InvalidInputError("op-specific needs population= (word_counts of every profile)")
        order = specific_order(entries, population)
    else:
        raise InvalidInputError(f"unknown strategy {strategy!r}; choose from {STRATEGIES}")
    return render_block(pack(memory, order, budget), "output", memory.template)


def pack(
    memory: OutputProfileMemory, ordered: Sequence[ProfileEntry], budget: int
) -> list[ProfileEntry]:
    """Greedy whole-entry packing in the given order: take each entry whose block still fits."""
    chosen: list[ProfileEntry] = []
    for entry in ordered:
        trial = [*chosen, entry]
        if memory.counter.count(render_block(trial, "output", memory.template)) <= budget:
            chosen = trial
    return chosen


def bm25_order(entries: Sequence[ProfileEntry], query: str) -> list[ProfileEntry]:
    """The entries most similar to ``query`` first (LaMP's BM25 retriever, bm25s)."""
    import bm25s

    if not entries:
        return []
    corpus = [f"{e.source_input} {e.text}".strip() for e in entries]
    retriever = bm25s.BM25()
    retriever.index(
        bm25s.tokenize(corpus, stopwords="en", show_progress=False), show_progress=False
    )
    query_tokens = bm25s.tokenize([query], stopwords="en", show_progress=False)
    if not query_tokens.vocab:
        return list(entries)
    docs, _ = retriever.retrieve(query_tokens, k=len(entries), show_progress=False)
    return [entries[int(i)] for i in docs[0]]


def words_in(text: str) -> list[str]:
    """The lower-cased words of ``text`` in order (hashtags and mentions keep their sign).

    Example:
        ```python
        words_in("Don't stop, don't! #Mondays")  # ["don't", "stop", "don't", "#mondays"]
        ```
    """
    return [word.lower() for word in _WORD.findall(text)]


def word_counts(texts: Iterable[str]) -> Counter[str]:
    """How often each word occurs in ``texts``."""
    return Counter(word for text in texts for word in words_in(text))


def specific_order(entries: Sequence[ProfileEntry], population: Counter[str]) -> list[ProfileEntry]:
    """The entries most specific to their user first: by the mean, over an entry's words, of
    ``log P_user(w) - log P_population(w)``, where ``P_user`` counts the user's *other*
    entries (leave-one-out, so an entry never vouches for itself) smoothed toward the
    population with :data:`SMOOTHING_WORDS` words of prior, and ``P_population`` is add-one
    smoothed. Entries without words go last; ties keep id order.

    Example:
        ```python
        population = word_counts(all_profile_texts)
        specific_order(entries, population)[0]  # the entry most "like this user, unlike others"
        ```
    """
    own = word_counts(e.text for e in entries)
    total, size = sum(own.values()), sum(population.values()) + len(population) + 1

    def score(entry: ProfileEntry) -> float:
        words = words_in(entry.text)
        if not words:
            return -math.inf
        mine = Counter(words)
        rest = total - len(words)
        logs = []
        for word in words:
            prior = (population[word] + 1) / size
            user = (own[word] - mine[word] + SMOOTHING_WORDS * prior) / (rest + SMOOTHING_WORDS)
            logs.append(math.log(user / prior))
        return sum(logs) / len(logs)

    return sorted(sorted(entries, key=lambda e: e.id), key=score, reverse=True)


def _typical_order(entries: Sequence[ProfileEntry], vectors: np.ndarray) -> list[ProfileEntry]:
    """Entries closest to the user's style centroid first."""
    if not entries:
        return []
    centroid = vectors.mean(axis=0)
    similarity = vectors @ centroid
    ranked = sorted(range(len(entries)), key=lambda i: (-float(similarity[i]), entries[i].id))
    return [entries[i] for i in ranked]


def messages_for(
    request: str, block: str, placement: Placement, prefix: str = ""
) -> list[tuple[str, str]]:
    """Chat messages with the block ``leading`` (top of the system message, as the memory
    injects it by default), in the ``middle`` (after the instructions, before the request),
    ``trailing`` (after the request) or ``after-system`` (its own system message after the
    app's, as ``placement="after_system"`` injects it).

    ``prefix`` is an app's static system prompt (``--system-prompt-tokens``), after
    :data:`BASE_SYSTEM` in the system message, and there with or without a block (``none``
    gets it too, so a lift compares like with like).

    Example:
        ```python
        messages_for("Paraphrase: ...", "<user_profile>...", "after-system", "Be brief.")
        # [("system", "You are a helpful assistant.\n\nBe brief."),
        #  ("system", "<user_profile>..."), ("user", "Paraphrase: ...")]
        ```
    """
    system = f"{BASE_SYSTEM}\n\n{prefix}" if prefix else BASE_SYSTEM
    if not block:
        return [("system", system), ("user", request)]
    if placement == "leading":
        return [("system", f"{block}\n\n{system}"), ("user", request)]
    if placement == "middle":
        return [("system", f"{system}\n\n{block}"), ("user", request)]
    if placement == "trailing":
        return [("system", system), ("user", f"{request}\n\n{block}")]
    if placement == "after-system":
        return [("system", system), ("system", block), ("user", request)]
    raise InvalidInputError(f"placement must be one of {PLACEMENTS}; got {placement!r}")
