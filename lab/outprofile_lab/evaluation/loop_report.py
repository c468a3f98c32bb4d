"""The closed loop's report: per round and arm, mean NLL and lift; the last round, paired.

Every value is first a per-writer mean over the golds scored for that writer at that round
(``none``: its scores of the same golds), so each writer counts once; intervals are seeded
percentile bootstraps over writers (:func:`stats.bootstrap_mean`, 2,000 resamples). On
POPQUORN a writer is a user; the report names the dataset (``meta.dataset``).

On CoAuthor the same tables are made a second time for ``pair_acc`` (the static task's: the
share of (accepted, other shown) candidate pairs where the block makes the model prefer the
accepted one), under ``pair_acc`` in ``report.json`` and a section of its own in
``report.md``; there higher is better, and every difference is signed so that > 0 means
``a`` is better, as for NLL.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from outprofile_lab.evaluation.loop import ARMS, SIMILARITY, LoopRow
from outprofile_lab.evaluation.stats import bootstrap_mean

__all__ = [
    "DATASET_NAMES",
    "LAST_ROUND_PAIRS",
    "METRICS",
    "loop_markdown",
    "loop_summary",
    "write_loop_report",
]

DATASET_NAMES = {
    "lamp-edits": ("LAMP edits", "writer", "edit"),
    "popquorn": ("POPQUORN", "user", "rewrite"),
    "coauthor": ("CoAuthor", "writer", "accepted list"),
}
"""Per dataset: its name in the report, what one of its writers is called and what one of
their edits is (a report without ``meta.dataset`` is LAMP edits': every loop run before the
loop ran on POPQUORN was)."""

LAST_ROUND_PAIRS = (
    ("credit", SIMILARITY),
    ("no-credit", SIMILARITY),
    ("credit", "no-credit"),
    ("credit", "random"),
    ("no-credit", "random"),
)
"""The arms compared at each writer's last scored round, ``a`` against ``b``."""

# (writer, round) -> arm -> gold -> mean NLL per token (or pair_acc)
Table = dict[tuple[str, int], dict[str, dict[str, float]]]
METRICS: dict[str, tuple[Callable[[LoopRow], float | None], float]] = {
    "nll": (lambda row: row.mean, -1.0),
    "pair_acc": (lambda row: row.pair_acc, 1.0),
}
"""Per metric, its value of a row (None: not scored) and its sign (+1: higher is better)."""


def _interval(values: Sequence[float], seed: int) -> dict[str, Any]:
    got = bootstrap_mean(np.array(values, dtype=np.float64), seed=seed)
    if got.n == 0:
        return {"mean": None, "lo": None, "hi": None, "n": 0, "wins": None}
    wins = None if math.isnan(got.wins) else got.wins
    return {"mean": got.mean, "lo": got.low, "hi": got.high, "n": got.n, "wins": wins}


def _table(
    rows: Sequence[LoopRow], metric: str = "nll"
) -> tuple[Table, dict[tuple[str, str], float]]:
    value_of = METRICS[metric][0]
    table: Table = defaultdict(lambda: defaultdict(dict))
    none: dict[tuple[str, str], float] = {}
    for row in rows:
        value = value_of(row)
        if value is None:
            continue
        if row.arm == "none":
            none[(row.writer, row.gold)] = value
        else:
            table[(row.writer, row.round)][row.arm][row.gold] = value
    # none is one score per gold: it is shown at every round that scored that gold
    for (writer, _), arms in table.items():
        golds = {g for scores in arms.values() for g in scores}
        found = {g: none[(writer, g)] for g in golds if (writer, g) in none}
        if found:
            arms["none"] = found
    return table, none


def _mean(scores: dict[str, float], golds: set[str]) -> float:
    return float(np.mean([scores[g] for g in golds]))


def _paired(arms: dict[str, dict[str, float]], a: str, b: str, sign: float = -1.0) -> float | None:
    """``a`` minus ``b`` over the golds both scored, signed so that > 0 means a is better
    (NLL, ``sign`` -1: NLL(b) - NLL(a)), or None."""
    if a not in arms or b not in arms:
        return None
    golds = set(arms[a]) & set(arms[b])
    return sign * (_mean(arms[a], golds) - _mean(arms[b], golds)) if golds else None


def loop_summary(
    rows: Sequence[LoopRow], *, arms: Sequence[str] = ARMS, seed: int = 0
) -> dict[str, Any]:
    """``{"rounds": [...], "last_round": {...}, "growth": {...}}`` from loop rows.

    ``rounds``: per round, the writers scored there and per arm its mean NLL and its lift
    over ``none`` (NLL(none) - NLL(arm), > 0 = better), each a bootstrap over writers.
    ``last_round``: each writer's last scored round: per arm the same, and ``pairs`` (``a``
    minus ``b`` as NLL(b) - NLL(a), > 0 = a better) for :data:`LAST_ROUND_PAIRS`.
    ``growth``: per arm, its lift at the writer's last scored round minus at the first
    (writers scored at two rounds or more).
    ``pair_acc`` (CoAuthor rows only): the same three for the static task's ``pair_acc``
    (``mean_pair_acc``, lift = pair_acc(arm) - pair_acc(none), pairs a - b).

    Example:
        ```python
        summary = loop_summary(rows)
        summary["last_round"]["pairs"][0]  # credit vs all-outputs-bm25
        ```
    """
    summary = _metric_summary(rows, arms, seed, "nll")
    if any(row.pair_acc is not None for row in rows):
        summary["pair_acc"] = _metric_summary(rows, arms, seed, "pair_acc")
    return summary


def _metric_summary(
    rows: Sequence[LoopRow], arms: Sequence[str], seed: int, metric: str
) -> dict[str, Any]:
    table, _ = _table(rows, metric)
    sign = METRICS[metric][1]
    shown = [a for a in arms if a != "none"]
    rounds_out = []
    for round_ in sorted({r for _, r in table}):
        cells = {k: v for k, v in table.items() if k[1] == round_}
        stats = _arm_stats(cells, arms, seed, metric)
        rounds_out.append({"round": round_, "writers": len(cells), **stats})
    last: dict[tuple[str, int], dict[str, dict[str, float]]] = {}
    first: dict[tuple[str, int], dict[str, dict[str, float]]] = {}
    for writer in sorted({w for w, _ in table}):
        mine = sorted(r for w, r in table if w == writer)
        last[(writer, mine[-1])] = table[(writer, mine[-1])]
        first[(writer, mine[0])] = table[(writer, mine[0])]
    pairs = []
    for a, b in LAST_ROUND_PAIRS:
        values = [v for cell in last.values() if (v := _paired(cell, a, b, sign)) is not None]
        if values:
            pairs.append({"a": a, "b": b, "metric": metric, **_interval(values, seed)})
    growth = {}
    # a writer scored at one round only (two edits) has no growth to show: left out
    early_cells = {w: (r, cell) for (w, r), cell in first.items()}
    for arm in shown:
        values = []
        for (writer, round_), cell in last.items():
            start, early = early_cells[writer]
            if start == round_:
                continue
            late, before = _paired(cell, arm, "none", sign), _paired(early, arm, "none", sign)
            if late is not None and before is not None:
                values.append(late - before)
        growth[arm] = _interval(values, seed)
    return {
        "rounds": rounds_out,
        "last_round": {
            "writers": len(last),
            **_arm_stats(last, arms, seed, metric),
            "pairs": pairs,
        },
        "growth": growth,
    }


def _arm_stats(
    cells: dict[tuple[str, int], dict[str, dict[str, float]]],
    arms: Sequence[str],
    seed: int,
    metric: str = "nll",
) -> dict[str, Any]:
    sign = METRICS[metric][1]
    out: dict[str, Any] = {}
    for arm in arms:
        means = [_mean(c[arm], set(c[arm])) for c in cells.values() if arm in c]
        lifts = [v for c in cells.values() if (v := _paired(c, arm, "none", sign)) is not None]
        if means:
            out[arm] = {
                f"mean_{metric}": _interval(means, seed),
                "lift_vs_none": _interval(lifts, seed) if arm != "none" else None,
            }
    return {"arms": out}


def _ci(value: dict[str, Any] | None, fmt: str = "+.3f") -> str:
    if not value or value.get("mean") is None:
        return "—"
    return f"{value['mean']:{fmt}} [{value['lo']:{fmt}}, {value['hi']:{fmt}}]"


def _names(meta: dict[str, Any]) -> tuple[str, str, str]:
    dataset = str(meta.get("dataset", "lamp-edits"))
    return DATASET_NAMES.get(dataset, (dataset, "writer", "edit"))


SKIPPED = {"coauthor": "no accepted list to score after their first round"}
"""Why a writer has no round to score, where it is not "fewer than two edits"."""


def loop_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: per-round means, the last round and its pairs, growth (and
    the same for ``pair_acc`` when the report has it: CoAuthor)."""
    meta = report.get("meta", {})
    arms = list(meta.get("arms", ARMS))
    name, who, edit = _names(meta)
    golds = (
        f"the next {meta['gold_next']} {edit}s" if meta.get("gold_next") else f"every later {edit}"
    )
    skipped = SKIPPED.get(str(meta.get("dataset")), f"fewer than two {edit}s")
    lines = [
        f"# Closed loop: {name}",
        "",
        f"Model `{meta.get('model')}`, mode `{meta.get('mode')}`, budget {meta.get('budget')}, "
        f"placement `{meta.get('placement')}`, gold = {golds}, scored every "
        f"{meta.get('score_every')} rounds; {meta.get('writers')} {who}s "
        f"({meta.get('writers_skipped')} with {skipped} skipped); "
        f"{meta.get('total_s')} s.",
        "",
    ]
    lines += _metric_markdown(report, arms, who, "nll")
    if "pair_acc" in report:
        lines += [
            "",
            "# pair_acc: does the block make the model prefer the accepted candidate?",
            "",
            "Per gold, the share of (accepted, other shown) candidate pairs where the accepted "
            "one has the lower mean NLL per token after the block (ties half; 0.5 = no "
            "preference); lift and differences > 0: a better.",
            "",
        ]
        lines += _metric_markdown(report["pair_acc"], arms, who, "pair_acc")
    return "\n".join(lines) + "\n"


def _metric_markdown(
    summary: dict[str, Any], arms: Sequence[str], who: str, metric: str
) -> list[str]:
    label = "NLL per token" if metric == "nll" else "pair_acc"
    difference = "NLL(b) - NLL(a)" if metric == "nll" else "pair_acc(a) - pair_acc(b)"
    key = f"mean_{metric}"
    lines = [
        f"## Mean {label} by round (mean over {who}s)",
        "",
        f"| round | {who}s | " + " | ".join(f"`{a}`" for a in arms) + " |",
        "| ---: | ---: | " + " | ".join("---:" for _ in arms) + " |",
    ]
    for entry in summary.get("rounds", []):
        cells = [
            f"{entry['arms'][a][key]['mean']:.3f}" if a in entry["arms"] else "—" for a in arms
        ]
        lines.append(f"| {entry['round']} | {entry['writers']} | " + " | ".join(cells) + " |")
    last = summary.get("last_round", {})
    lines += [
        "",
        f"## Each {who}'s last scored round ({last.get('writers', 0)} {who}s; 95 % CI)",
        "",
        f"| arm | mean {label.split()[0]} | lift vs none | lift grows (last - first round) |",
        "| --- | ---: | ---: | ---: |",
    ]
    for arm in arms:
        stats = last.get("arms", {}).get(arm)
        if stats:
            growth = summary.get("growth", {}).get(arm)
            lines.append(
                f"| `{arm}` | {_ci(stats[key], '.3f')} | {_ci(stats['lift_vs_none'])} "
                f"| {_ci(growth)} |"
            )
    lines += ["", f"| a - b ({difference}, > 0: a better) | mean [95 % CI] | a better for |"]
    lines += ["| --- | ---: | ---: |"]
    for pair in last.get("pairs", []):
        wins = "—" if pair.get("wins") is None else f"{pair['wins']:.0%}"
        lines.append(f"| `{pair['a']}` - `{pair['b']}` | {_ci(pair)} | {wins} |")
    return lines


def plot_loop(report: dict[str, Any], path: Path) -> None:
    """Mean lift over ``none`` by round, one line per arm (writers present at each round);
    a second panel for ``pair_acc`` when the report has it (CoAuthor)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    meta = report.get("meta", {})
    panels = [(report, "NLL lift vs none (nats/token, higher = better)")]
    if "pair_acc" in report:
        panels.append((report["pair_acc"], "pair_acc lift vs none (higher = better)"))
    figure, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 4.5), squeeze=False)
    arms = [a for a in meta.get("arms", ARMS) if a != "none"]
    for axis, (summary, label) in zip(axes[0], panels, strict=True):
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        for arm in arms:
            points = [
                (e["round"], e["arms"][arm]["lift_vs_none"]["mean"])
                for e in summary.get("rounds", [])
                if arm in e["arms"] and e["arms"][arm]["lift_vs_none"]["mean"] is not None
            ]
            if points:
                axis.plot([x for x, _ in points], [y for _, y in points], marker="o", label=arm)
        axis.axhline(0.0, color="grey", linewidth=0.8)
        axis.set_xlabel("round (rounds of feedback so far: round + 1)")
        axis.set_ylabel(label)
        axis.set_title(f"Closed loop, {_names(meta)[0]}, {meta.get('model', '')}")
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def write_loop_report(summary: dict[str, Any], meta: dict[str, Any], out: Path) -> list[Path]:
    """Write ``report.json``, ``report.md`` and ``loop.png`` into ``out``; returns the paths."""
    out.mkdir(parents=True, exist_ok=True)
    report = {"meta": meta, **summary}
    paths = [out / "report.json", out / "report.md", out / "loop.png"]
    paths[0].write_text(json.dumps(report, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    paths[1].write_text(loop_markdown(report), encoding="utf-8")
    plot_loop(report, paths[2])
    return paths
