"""Runner: ingest users into the real memory, build every block, score it, cache the score.

The score cache is a JSONL file keyed by (user, strategy, budget, placement, model); a run
that stops can be started again with the same ``out`` directory and continues where it was.
``none`` has no block, so it is scored once per user (budget 0, placement ``-``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from langchain_outprofile.evaluation.data import LampExample
from langchain_outprofile.evaluation.scoring import Scorer
from langchain_outprofile.evaluation.strategies import (
    Placement,
    build_block,
    ingest,
    messages_for,
    other_users,
)
from langchain_outprofile.memory import OutputProfileMemory

__all__ = ["EvalConfig", "ScoreCache", "ScoreRow", "run_eval"]

CacheKey = tuple[str, str, int, str, str]


@dataclass(frozen=True)
class EvalConfig:
    """What to score: strategies x budgets x placements, for every user."""

    strategies: tuple[str, ...] = ("none", "output-profile", "bm25-query")
    budgets: tuple[int, ...] = (200, 400)
    placements: tuple[Placement, ...] = ("leading",)
    seed: int = 0


@dataclass(frozen=True)
class ScoreRow:
    """One scored prompt."""

    user: str
    strategy: str
    budget: int
    placement: str
    model: str
    nll: float
    tokens: int
    block_tokens: int = 0
    entries: int = 0

    @property
    def key(self) -> CacheKey:
        """The cache key."""
        return (self.user, self.strategy, self.budget, self.placement, self.model)

    @property
    def mean(self) -> float:
        """Mean NLL per gold token."""
        return self.nll / self.tokens


@dataclass
class ScoreCache:
    """Append-only JSONL of :class:`ScoreRow`; reloaded on start so runs resume.

    Example:
        ```python
        cache = ScoreCache(Path("out/scores.jsonl"))
        cache.get(("lamp-1", "none", 0, "-", "llama:SmolLM2"))
        ```
    """

    path: Path
    rows: dict[CacheKey, ScoreRow] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.path.exists():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    try:
                        row = ScoreRow(**json.loads(line))
                    except (json.JSONDecodeError, TypeError):
                        continue  # a line cut by an interrupted run
                    self.rows[row.key] = row

    def get(self, key: CacheKey) -> ScoreRow | None:
        """The cached row, if any."""
        return self.rows.get(key)

    def put(self, row: ScoreRow) -> None:
        """Store and append one row (flushed at once)."""
        self.rows[row.key] = row
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(row.__dict__) + "\n")


def run_eval(
    examples: Sequence[LampExample],
    scorer: Scorer,
    memory: OutputProfileMemory,
    config: EvalConfig,
    cache: ScoreCache,
    *,
    show_progress: bool = True,
    cached_only: bool = False,
) -> tuple[list[ScoreRow], dict[str, Any]]:
    """Ingest, then score every (user, strategy, budget, placement); returns rows and timings.

    With ``cached_only`` nothing new is scored: the report covers what the cache holds.

    Example:
        ```python
        rows, timing = run_eval(examples, LlamaScorer(), memory, EvalConfig(), cache)
        ```
    """
    started = time.perf_counter()
    stored = ingest(memory, examples)
    ingest_s = time.perf_counter() - started
    partners = other_users(examples, config.seed)
    jobs = list(_jobs(examples, config))
    rows: list[ScoreRow] = []
    scored = 0
    with _progress(show_progress, len(jobs)) as advance:
        for example, strategy, budget, placement in jobs:
            key = (example.user_id, strategy, budget, placement, scorer.name)
            row = cache.get(key)
            if row is None and not cached_only:
                row = _score(
                    memory,
                    scorer,
                    example,
                    strategy,
                    budget,
                    placement,
                    config,
                    partners.get(example.user_id),
                )
                if row is not None:
                    cache.put(row)
                    scored += 1
            if row is not None:
                rows.append(row)
            advance()
    timing = {
        "users": len(examples),
        "entries_stored": stored,
        "ingest_s": round(ingest_s, 2),
        "scored_now": scored,
        "from_cache": len(rows) - scored,
        "total_s": round(time.perf_counter() - started, 2),
    }
    return rows, timing


def _jobs(
    examples: Sequence[LampExample], config: EvalConfig
) -> Iterator[tuple[LampExample, str, int, str]]:
    """Per user: ``none`` once, then each strategy's budgets ascending (shared KV prefixes)."""
    for example in examples:
        if "none" in config.strategies:
            yield example, "none", 0, "-"
        for placement in config.placements:
            for strategy in config.strategies:
                if strategy == "none":
                    continue
                for budget in sorted(config.budgets):
                    yield example, strategy, budget, placement


def _score(
    memory: OutputProfileMemory,
    scorer: Scorer,
    example: LampExample,
    strategy: str,
    budget: int,
    placement: str,
    config: EvalConfig,
    partner: str | None,
) -> ScoreRow | None:
    block = build_block(memory, example, strategy, budget, seed=config.seed, partner=partner)
    if block is None:
        return None
    where = "leading" if placement == "-" else placement
    messages = messages_for(example.input, block, where)  # type: ignore[arg-type]
    score = scorer.score(messages, example.output)
    return ScoreRow(
        user=example.user_id,
        strategy=strategy,
        budget=budget,
        placement=placement,
        model=scorer.name,
        nll=score.nll,
        tokens=score.tokens,
        block_tokens=memory.counter.count(block) if block else 0,
        entries=block.count("<entry n="),
    )


@contextmanager
def _progress(show: bool, total: int) -> Iterator[Any]:
    if not show:
        yield lambda: None
        return
    columns = (TextColumn("scoring"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, transient=False) as progress:
        task = progress.add_task("scoring", total=total)
        yield lambda: progress.advance(task)
