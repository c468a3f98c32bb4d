"""Runner: bring the memory to each target's moment, build every block, score it, cache it.

The score cache is a JSONL file keyed by (target, strategy, fields, budget, placement,
model, frame), the placement carrying the static system prompt's size when there is one
(``leading@sys300``: :meth:`EvalConfig.placement_key`); a run that stops can be started
again with the same ``out`` directory and continues where it was. ``none`` has no block, so
it is scored once per target (budget 0, placement ``-``). A target whose every cell is
cached is not replayed at all; the next one replays everything before it, so resuming
costs only the memory writes.

For choice tasks (CoAuthor) every candidate is scored after the same prompt (the KV cache
keeps the prompt, so each extra candidate costs only its own tokens): ``choices`` holds each
candidate's (NLL, tokens) and ``chosen`` the accepted one's index.
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

from langchain_outprofile.memory import OutputProfileMemory
from langchain_outprofile.types import Fields
from outprofile_lab.evaluation.data import LampExample
from outprofile_lab.evaluation.prefix import static_prefix
from outprofile_lab.evaluation.scoring import Message, NllScore, Scorer
from outprofile_lab.evaluation.strategies import Placement, messages_for
from outprofile_lab.evaluation.tasks import EvalTask, LampTask, Target

__all__ = [
    "FIELD_STRATEGIES",
    "EvalConfig",
    "ScoreCache",
    "ScoreRow",
    "append_jsonl",
    "pair_accuracy",
    "placed_where",
    "read_jsonl",
    "run_eval",
    "run_task",
    "score_choices",
]

CacheKey = tuple[str, str, str, int, str, str, str, int]
FIELD_STRATEGIES = frozenset({"output-profile"})
"""Strategies that take ``--fields``; the others always show outputs."""


@dataclass(frozen=True)
class EvalConfig:
    """What to score: strategies x fields x budgets x placements, for every target."""

    strategies: tuple[str, ...] = ("none", "output-profile", "bm25-query")
    budgets: tuple[int, ...] = (200, 400)
    placements: tuple[Placement, ...] = ("leading",)
    seed: int = 0
    fields: tuple[Fields, ...] = ("output",)
    frame: str = "compact"
    """The block's frame (``evaluation.command.FRAMES``), part of every cache key."""
    system_prompt_tokens: int = 0
    """A static system prompt of about this many tokens (``evaluation.prefix``) in every
    prompt, ``none``'s too; part of every cache key through :func:`placement_key`."""

    def placement_key(self, placement: str) -> str:
        """``placement`` as rows and cache keys record it: as it is without a static
        prompt (so caches written before keep their keys), else ``<placement>@sys<N>``.

        Example:
            ```python
            EvalConfig(system_prompt_tokens=300).placement_key("leading")  # "leading@sys300"
            ```
        """
        n = self.system_prompt_tokens
        return f"{placement}@sys{n}" if n else placement


def placed_where(key: str) -> str:
    """The placement a :meth:`EvalConfig.placement_key` names (``-``, ``none``'s, reads as
    ``leading``: it has no block to place)."""
    placement = key.split("@sys", 1)[0]
    return "leading" if placement == "-" else placement


SELECTION_RULE = 2
"""How blocks are chosen, in every cache key: 1 = near-duplicates by style cosine alone (rows
written before this was recorded), 2 = style cosine and shared word trigrams
(``select.SHARED_TRIGRAMS``). A change to what a strategy's block holds bumps it, so a cache
never serves a score of one rule for the other."""


def cache_key(
    target: str,
    strategy: str,
    fields: str,
    budget: int,
    placement: str,
    model: str,
    frame: str,
    selection: int = SELECTION_RULE,
) -> CacheKey:
    """The key of one scored prompt. ``none``'s holds no frame and no selection rule (its
    prompt has no block), so runs in different frames or rules share its scores."""
    if strategy == "none":
        frame, selection = "", 0
    return (target, strategy, fields, budget, placement, model, frame, selection)


@dataclass(frozen=True)
class ScoreRow:
    """One scored prompt (``user`` = the target id; ``group`` = whose it is, for the bootstrap)."""

    user: str
    strategy: str
    budget: int
    placement: str
    model: str
    nll: float
    tokens: int
    block_tokens: int = 0
    entries: int = 0
    fields: str = "output"
    group: str = ""
    choices: tuple[tuple[float, int], ...] = ()
    chosen: int = -1
    frame: str = "legacy"
    """The frame the block was rendered in; rows of caches written before frames were
    recorded were all scored with the 59-token frame of earlier commits, named ``legacy``
    here so that no run now is served them."""
    selection: int = 1
    """The :data:`SELECTION_RULE` the block was chosen by (1 for rows written before it was
    recorded)."""

    @property
    def key(self) -> CacheKey:
        """The cache key."""
        return cache_key(
            self.user,
            self.strategy,
            self.fields,
            self.budget,
            self.placement,
            self.model,
            self.frame,
            self.selection,
        )

    @property
    def mean(self) -> float:
        """Mean NLL per gold token."""
        return self.nll / self.tokens

    @property
    def owner(self) -> str:
        """The bootstrap unit: the group, else the target itself (LaMP: one per user)."""
        return self.group or self.user

    @property
    def pair_acc(self) -> float | None:
        """Share of (accepted, other) candidate pairs where the accepted one has the lower
        mean NLL per token (ties count half); None when the row has no choices."""
        return pair_accuracy(self.choices, self.chosen)


def pair_accuracy(choices: Sequence[tuple[float, int]], chosen: int) -> float | None:
    """Share of (accepted, other) candidate pairs where the accepted one (``chosen``) has
    the lower mean NLL per token (ties count half); None without two choices.

    Example:
        ```python
        pair_accuracy([(2.0, 2), (3.0, 2), (1.0, 2)], 0)  # 0.5
        ```
    """
    if chosen < 0 or len(choices) < 2:
        return None
    means = [nll / max(tokens, 1) for nll, tokens in choices]
    gold = means[chosen]
    others = [m for i, m in enumerate(means) if i != chosen]
    wins = sum(1.0 if gold < m else 0.5 if gold == m else 0.0 for m in others)
    return wins / len(others)


def score_choices(
    scorer: Scorer,
    messages: Sequence[Message],
    gold: NllScore,
    candidates: Sequence[str],
    chosen: int,
) -> tuple[tuple[float, int], ...]:
    """Each candidate's (NLL, tokens) after the same prompt (``gold``, the accepted one's
    score, is reused at ``chosen``); () without candidates.

    Example:
        ```python
        choices = score_choices(scorer, messages, scorer.score(messages, gold), shown, 1)
        ```
    """
    scores = [
        gold if i == chosen else scorer.score(messages, text) for i, text in enumerate(candidates)
    ]
    return tuple((s.nll, s.tokens) for s in scores)


@dataclass
class ScoreCache:
    """Append-only JSONL of :class:`ScoreRow`; reloaded on start so runs resume.

    Example:
        ```python
        cache = ScoreCache(Path("out/scores.jsonl"))
        cache.get(("lamp-1", "none", "output", 0, "-", "llama:SmolLM2", "compact"))
        ```
    """

    path: Path
    rows: dict[CacheKey, ScoreRow] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for raw in read_jsonl(self.path):
            try:
                raw["choices"] = tuple(tuple(c) for c in raw.get("choices", ()))
                row = ScoreRow(**raw)
            except (TypeError, AttributeError):
                continue  # not a row of this cache
            self.rows[row.key] = row

    def get(self, key: CacheKey) -> ScoreRow | None:
        """The cached row, if any."""
        return self.rows.get(key)

    def put(self, row: ScoreRow) -> None:
        """Store and append one row (flushed at once)."""
        self.rows[row.key] = row
        append_jsonl(self.path, row.__dict__)


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """The JSON objects of a cache file, one per line; a line cut by a killed run is
    skipped, and ended, or the next row appended would be glued to it and lost too."""
    if not path.exists():
        return
    text = path.read_text(encoding="utf-8")
    if text and not text.endswith("\n"):
        with path.open("a", encoding="utf-8") as handle:
            handle.write("\n")
    for line in text.splitlines():
        if line.strip():
            try:
                raw = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(raw, dict):
                yield raw


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON object as a line (flushed when the file closes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")


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
    """LaMP: :func:`run_task` on a :class:`LampTask` of ``examples``.

    Example:
        ```python
        rows, timing = run_eval(examples, LlamaScorer(), memory, EvalConfig(), cache)
        ```
    """
    task = LampTask(memory, examples, config.seed)
    return run_task(
        task, scorer, config, cache, show_progress=show_progress, cached_only=cached_only
    )


def run_task(
    task: EvalTask,
    scorer: Scorer,
    config: EvalConfig,
    cache: ScoreCache,
    *,
    show_progress: bool = True,
    cached_only: bool = False,
) -> tuple[list[ScoreRow], dict[str, Any]]:
    """Set up, then score every (target, strategy, fields, budget, placement) in target order.

    With ``cached_only`` nothing new is scored: the report covers what the cache holds.
    """
    started = time.perf_counter()
    prefix = static_prefix(task.memory.counter.count, config.system_prompt_tokens)
    stored = task.setup()
    setup_s = time.perf_counter() - started
    targets = task.targets()
    jobs = list(_jobs(targets, config, replays=task.replays))
    rows: list[ScoreRow] = []
    scored = 0
    prepared = ""
    with _progress(show_progress, len(jobs)) as advance:
        for target, strategy, fields, budget, placement in jobs:
            key = cache_key(
                target.id, strategy, fields, budget, placement, scorer.name, config.frame
            )
            row = cache.get(key)
            if row is None and not cached_only:
                if prepared != target.id:
                    task.prepare(target)
                    prepared = target.id
                cell = (strategy, fields, budget, placement)
                row = _score(task, scorer, target, cell, config.frame, prefix)
                if row is not None:
                    cache.put(row)
                    scored += 1
            if row is not None:
                rows.append(row)
            advance()
    timing = {
        "users": len({t.user for t in targets}),
        "targets": len(targets),
        "entries_stored": stored,
        "ingest_s": round(setup_s, 2),
        "scored_now": scored,
        "from_cache": len(rows) - scored,
        "total_s": round(time.perf_counter() - started, 2),
    }
    return rows, timing


PREFIX_GROUP = 16
"""Targets whose prefix-sharing prompts are scored back to back, before their leading ones."""


def _jobs(
    targets: Sequence[Target], config: EvalConfig, *, replays: bool = True
) -> Iterator[tuple[Target, str, Fields, int, str]]:
    """Every job once, ordered so that the scorer's KV cache reuses shared prefixes.

    Per target: ``none`` once, then each placement's strategies, fields and budgets. With a
    static system prompt, every prompt except a ``leading`` block's starts with that prompt;
    for tasks that do not replay history in time order, each group of :data:`PREFIX_GROUP`
    targets scores those prompts first and its ``leading`` ones after, so the static prompt
    is evaluated about once per group instead of twice per target. Scores do not depend on
    the order; a run stopped part-way has whole groups paired.
    """
    if replays or not config.system_prompt_tokens:
        for target in targets:
            yield from _target_jobs(target, config, config.placements, with_none=True)
        return
    after = tuple(p for p in config.placements if p != "leading")
    leading = tuple(p for p in config.placements if p == "leading")
    for start in range(0, len(targets), PREFIX_GROUP):
        group = targets[start : start + PREFIX_GROUP]
        for target in group:
            yield from _target_jobs(target, config, after, with_none=True)
        for target in group:
            yield from _target_jobs(target, config, leading, with_none=False)


def _target_jobs(
    target: Target, config: EvalConfig, placements: Sequence[str], *, with_none: bool
) -> Iterator[tuple[Target, str, Fields, int, str]]:
    if with_none and "none" in config.strategies:
        yield target, "none", "output", 0, config.placement_key("-")
    for placement in map(config.placement_key, placements):
        for strategy in config.strategies:
            if strategy == "none":
                continue
            modes = config.fields if strategy in FIELD_STRATEGIES else ("output",)
            for fields in modes:
                for budget in sorted(config.budgets):
                    yield target, strategy, fields, budget, placement


def _score(
    task: EvalTask,
    scorer: Scorer,
    target: Target,
    cell: tuple[str, Fields, int, str],
    frame: str,
    prefix: str = "",
) -> ScoreRow | None:
    strategy, fields, budget, placement = cell
    block = task.block(target, strategy, fields, budget)
    if block is None:
        return None
    where = placed_where(placement)
    messages = messages_for(target.request, block, where, prefix)  # type: ignore[arg-type]
    score = scorer.score(messages, target.gold)
    choices = score_choices(scorer, messages, score, target.candidates, target.chosen)
    return ScoreRow(
        user=target.id,
        strategy=strategy,
        budget=budget,
        placement=placement,
        model=scorer.name,
        nll=score.nll,
        tokens=score.tokens,
        block_tokens=task.memory.counter.count(block) if block else 0,
        entries=block.count("<entry n="),
        fields=fields,
        group=target.user if target.user != target.id else "",
        choices=choices,
        chosen=target.chosen,
        frame=frame,
        selection=SELECTION_RULE,
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
