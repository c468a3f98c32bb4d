"""Credit from feedback, replayed offline on a ``--holdout 2 --random-draws K`` score cache.

No model is run. For each user with both held-out texts (``pq-<u>#0``, ``pq-<u>#1``) scored
under all K random draws, ``none`` and ``output-profile``, one text (A) plays the feedback a
product would collect: each of A's K draws is a tracked run, *approved* when its NLL per
token on A beats the user's median draw on A (rule ``median``) or beats ``none`` on A (rule
``none``), else *rejected*. Every entry of an approved draw's block is credited (+1), of a
rejected one debited (-1); an entry's credit is the product's Beta(1 + credited,
1 + debited) mean, ``(1 + up) / (2 + up + down)`` (``ProfileEntry.credit``). On the other
text (B), credit picks the draw whose entries have the highest mean ``log2(2 * credit)``
(the term ``credit_weight`` scales in ``select._key``; ties go to the lower draw index), and
that pick's NLL per token on B is compared with the mean of the K draws on B (a random
pick), the default (``output-profile``) on B, the best draw on B (the per-text oracle) and
the draw that was best on A (the cross-fitted pick of ``headroom_stability.py``). Both
directions (A = #0 and A = #1), each user once per direction; seeded bootstrap 95 % CIs
over users.

Which entries each draw held is rebuilt exactly as the run built it: the task
(``PopquornTask`` with the same seed and holdout) stores every profile in a throw-away
in-memory Chroma, and each draw is packed with ``draw_order`` and ``pack`` under the scoring
model's own tokenizer (loaded vocabulary-only). Every rebuilt block must render to the very
text ``PopquornTask.block`` gives and match the cache row's ``entries`` and ``block_tokens``,
or the script stops. A credit-only re-rank of the whole profile cannot be scored here: its
block was never scored unless it happens to equal a draw.

    python scripts/credit_offline.py /work/eval-out/popquorn-holdout2/scores.jsonl \\
        ../shared/data/popquorn/popquorn_users.jsonl
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import chromadb
import numpy as np

from langchain_outprofile import OutputProfileMemory
from langchain_outprofile.render import render_block
from langchain_outprofile.tokens import TokenSource
from langchain_outprofile.types import ProfileEntry
from outprofile_lab.evaluation.command import FRAMES
from outprofile_lab.evaluation.data import load_popquorn
from outprofile_lab.evaluation.models import resolve_model
from outprofile_lab.evaluation.stats import bootstrap_mean
from outprofile_lab.evaluation.strategies import EPOCH, draw_index, draw_order, pack
from outprofile_lab.evaluation.tasks import MovingClock, PopquornTask, Target

RULES = ("median", "none")
DIRECTIONS = (("#0", "#1"), ("#1", "#0"))
TIE_DIGITS = 12
"""Mean log-credits equal to this many decimals tie (a sum's rounding depends on its order)."""
_NOW = EPOCH + 365 * 86_400.0  # after every stored time, as the eval command's clock
Block = tuple[str, ...]


# -- the credit rule and the pick ------------------------------------------------------------


def verdicts(nll: Sequence[float], rule: str, none: float) -> list[bool]:
    """Which draws' feedback approves them: NLL below the median draw's (``median``) or
    below ``none``'s (``none``); the others are rejected."""
    if rule == "median":
        bar = statistics.median(nll)
    elif rule == "none":
        bar = none
    else:
        raise ValueError(f"unknown rule {rule!r}; choose from {RULES}")
    return [x < bar for x in nll]


def entry_credit(blocks: Sequence[Block], approved: Sequence[bool]) -> dict[str, float]:
    """Each entry's credit after one piece of feedback per block: ``(1 + up) / (2 + up +
    down)``, ``up`` the approved blocks that held it, ``down`` the rejected ones."""
    up: dict[str, int] = defaultdict(int)
    down: dict[str, int] = defaultdict(int)
    for block, good in zip(blocks, approved, strict=True):
        for entry in block:
            (up if good else down)[entry] += 1
    return {e: (1 + up[e]) / (2 + up[e] + down[e]) for e in {*up, *down}}


def block_score(block: Block, credit: Mapping[str, float]) -> float:
    """The mean ``log2(2 * credit)`` of a block's entries (an entry without feedback has
    credit 0.5, so 0; an empty block scores 0)."""
    if not block:
        return 0.0
    return sum(math.log2(2.0 * credit.get(e, 0.5)) for e in block) / len(block)


def credit_pick(blocks: Sequence[Block], credit: Mapping[str, float]) -> int:
    """The draw whose block scores highest (:func:`block_score`); ties go to the lower index."""
    scores = [round(block_score(b, credit), TIE_DIGITS) for b in blocks]
    return scores.index(max(scores))


# -- the analysis ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Text:
    """One held-out text of a user: its K draws' blocks and NLL per token, ``none``'s and the
    default's."""

    blocks: tuple[Block, ...]
    draws: tuple[float, ...]
    none: float
    default: float


COMPARED = ("random mean", "default", "best-on-A pick", "oracle best")


def direction_gains(a: Text, b: Text, rule: str) -> dict[str, float]:
    """Credit learned on ``a``, its pick scored on ``b``: how much lower its NLL per token is
    than each of :data:`COMPARED` on ``b`` (positive: credit's pick is better)."""
    credit = entry_credit(a.blocks, verdicts(a.draws, rule, a.none))
    picked = b.draws[credit_pick(b.blocks, credit)]
    best_on_a = b.draws[a.draws.index(min(a.draws))]
    others = (statistics.fmean(b.draws), b.default, best_on_a, min(b.draws))
    return {name: other - picked for name, other in zip(COMPARED, others, strict=True)}


def load_texts(
    rows: Iterable[Mapping[str, Any]],
    blocks: Mapping[str, Sequence[Block]],
    draws: int,
    budget: int,
) -> dict[str, dict[str, Text]]:
    """Per user (``group``), per target suffix (``#0``, ``#1``): the :class:`Text` of every
    target with all ``draws`` draws, ``none`` and ``output-profile`` at ``budget`` in
    ``rows`` and a rebuilt block per draw in ``blocks`` (keyed by target id)."""
    cells: dict[str, dict[str, float]] = defaultdict(dict)
    group: dict[str, str] = {}
    for row in rows:
        if row.get("fields", "output") != "output":
            continue
        name = row["strategy"]
        if name != "none" and row["budget"] != budget:
            continue
        value = row["nll"] / row["tokens"]
        seen = cells[row["user"]].get(name)
        if seen is not None and seen != value:
            raise SystemExit(f"{row['user']} {name}: two different scores in the cache")
        cells[row["user"]][name] = value
        group[row["user"]] = row["group"]
    texts: dict[str, dict[str, Text]] = defaultdict(dict)
    for target, got in cells.items():
        ks = [f"random-{k}" for k in range(draws)]
        if target not in blocks or not {"none", "output-profile", *ks} <= set(got):
            continue
        suffix = target[len(group[target]) :]
        texts[group[target]][suffix] = Text(
            tuple(blocks[target]), tuple(got[k] for k in ks), got["none"], got["output-profile"]
        )
    return {u: t for u, t in texts.items() if all(s in t for s, _ in DIRECTIONS)}


def gains(texts: Mapping[str, Mapping[str, Text]], rule: str) -> dict[str, dict[str, np.ndarray]]:
    """Per direction (``#0→#1``, ``#1→#0``, ``both`` = a user's mean of the two) and per
    compared cell, the users' gains in user order."""
    users = sorted(texts)
    out: dict[str, dict[str, np.ndarray]] = {}
    for a, b in DIRECTIONS:
        got = [direction_gains(texts[u][a], texts[u][b], rule) for u in users]
        out[f"{a}→{b}"] = {c: np.array([g[c] for g in got]) for c in COMPARED}
    out["both"] = {c: (out["#0→#1"][c] + out["#1→#0"][c]) / 2.0 for c in COMPARED}
    return out


def feedback_summary(texts: Mapping[str, Mapping[str, Text]], rule: str) -> str:
    """How many of a text's draws ``rule`` approves, and how often credit picks, on the
    other text, the draw that was best on this one."""
    approved, same = [], []
    for user in sorted(texts):
        for a, b in DIRECTIONS:
            ta, tb = texts[user][a], texts[user][b]
            votes = verdicts(ta.draws, rule, ta.none)
            approved.append(sum(votes))
            pick = credit_pick(tb.blocks, entry_credit(ta.blocks, votes))
            same.append(pick == ta.draws.index(min(ta.draws)))
    return (
        f"rule {rule}: {statistics.fmean(approved):.2f} of a text's draws approved on average; "
        f"credit picks the draw best on A for {statistics.fmean(same):.0%} of texts"
    )


def table(texts: Mapping[str, Mapping[str, Text]], *, seed: int, resamples: int) -> list[str]:
    """The markdown table of every rule, direction and compared cell."""
    lines = [
        "| feedback rule | A → B | credit's pick vs | users | credit better by (nats/token) "
        "| users where credit is better / the same |",
        "| --- | --- | --- | ---: | ---: | ---: |",
    ]
    for rule in RULES:
        for direction, by_cell in gains(texts, rule).items():
            for cell, values in by_cell.items():
                got = bootstrap_mean(values, seed=seed, resamples=resamples)
                lines.append(
                    f"| {rule} | {direction} | {cell} | {got.n} | {got.mean:+.4f} "
                    f"[{got.low:+.4f}, {got.high:+.4f}] | {got.wins:.0%} / "
                    f"{float(np.mean(values == 0.0)):.0%} |"
                )
    return lines


# -- which entries each draw held ------------------------------------------------------------


def rebuild_blocks(
    task: PopquornTask, targets: Iterable[Target], draws: int, budget: int
) -> dict[str, list[tuple[ProfileEntry, ...]]]:
    """Per target id, the entries each ``random-<k>`` block held, packed as
    ``PopquornTask.block`` packs them; stops unless each renders to that very block."""
    memory = task.memory
    out: dict[str, list[tuple[ProfileEntry, ...]]] = {}
    for target in targets:
        stored = memory.store.load(target.user, with_vectors=False).entries
        entries = sorted((e for e in stored if e.selectable), key=lambda e: e.id)
        out[target.id] = []
        for k in range(draws):
            chosen = tuple(pack(memory, draw_order(entries, target.user, k), budget))
            text = render_block(chosen, "output", memory.template)
            if text != task.block(target, f"random-{k}", "output", budget):
                raise SystemExit(f"{target.id} random-{k}: the rebuilt block is not the task's")
            out[target.id].append(chosen)
    return out


def check_rows(
    rows: Iterable[Mapping[str, Any]],
    blocks: Mapping[str, Sequence[tuple[ProfileEntry, ...]]],
    memory: OutputProfileMemory,
    budget: int,
) -> list[str]:
    """Cache rows of random draws whose ``entries`` or ``block_tokens`` differ from the
    rebuilt block's (one line each; empty when all match)."""
    bad = []
    for row in rows:
        k = draw_index(row["strategy"])
        if k is None or row["budget"] != budget or row["user"] not in blocks:
            continue
        chosen = blocks[row["user"]][k]
        tokens = memory.counter.count(render_block(chosen, "output", memory.template))
        if (len(chosen), tokens) != (row["entries"], row["block_tokens"]):
            bad.append(
                f"{row['user']} {row['strategy']}: rebuilt {len(chosen)} entries, "
                f"{tokens} tokens; the cache has {row['entries']}, {row['block_tokens']}"
            )
    return bad


def popquorn_task(data: Path, tokens: TokenSource, *, seed: int, holdout: int) -> PopquornTask:
    """The run's task over a throw-away in-memory store (every profile stored, as ``setup``)."""
    memory = OutputProfileMemory.from_client(
        chromadb.EphemeralClient(),
        collection_name=f"credit-offline-{uuid.uuid4().hex}",
        clock=MovingClock(_NOW),
        template=FRAMES["compact"],
        tokens=tokens,
    )
    task = PopquornTask(memory, load_popquorn(data), seed, holdout)
    task.setup()
    return task


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scores", type=Path, help="scores.jsonl of a --holdout 2 run")
    parser.add_argument("data", type=Path, help="the POPQUORN users file the run read")
    parser.add_argument("--model", default=None, help="the scoring model (default SmolLM2)")
    parser.add_argument("--draws", type=int, default=8)
    parser.add_argument("--budget", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0, help="the run's --seed")
    parser.add_argument("--resamples", type=int, default=10_000)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    rows = [json.loads(line) for line in args.scores.read_text(encoding="utf-8").splitlines()]
    task = popquorn_task(args.data, resolve_model(args.model), seed=args.seed, holdout=2)
    scored = {r["user"] for r in rows}
    targets = [t for t in task.targets() if t.id in scored]
    rebuilt = rebuild_blocks(task, targets, args.draws, args.budget)
    bad = check_rows(rows, rebuilt, task.memory, args.budget)
    if bad:
        sys.exit("the rebuilt blocks do not match the cache:\n" + "\n".join(bad[:20]))
    checked = sum(draw_index(r["strategy"]) is not None for r in rows if r["user"] in rebuilt)
    rebuilt_s = time.perf_counter() - started
    ids = {t: [tuple(e.id for e in b) for b in bs] for t, bs in rebuilt.items()}
    texts = load_texts(rows, ids, args.draws, args.budget)
    print(
        f"{len(texts)} users with both texts complete; {checked} draw rows rebuilt, every "
        "one matching its cache row's entries and block_tokens"
    )
    for rule in RULES:
        print(feedback_summary(texts, rule))
    print()
    print("\n".join(table(texts, seed=args.seed, resamples=args.resamples)))
    print()
    print(
        "A credit-only re-rank of the whole profile is not scored: no model runs here, and "
        "its block was scored only if it happens to equal one of the draws."
    )
    print(
        f"runtime {time.perf_counter() - started:.1f} s "
        f"(rebuilding and checking the blocks {rebuilt_s:.1f} s)"
    )


if __name__ == "__main__":
    main()
