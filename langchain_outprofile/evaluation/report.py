"""Report: per budget and strategy, mean NLL and paired lifts, as JSON, Markdown and a plot."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from langchain_outprofile.evaluation.runner import ScoreRow
from langchain_outprofile.evaluation.stats import Interval, bootstrap_mean, paired_lift

__all__ = ["summarize", "write_report"]

BASELINE = "none"
RETRIEVAL = "bm25-query"


def summarize(
    rows: Sequence[ScoreRow],
    *,
    budgets: Sequence[int],
    strategies: Sequence[str],
    placements: Sequence[str],
    seed: int = 0,
) -> dict[str, Any]:
    """``{"placements": {placement: {budget: {strategy: stats}}}, "budgets": <first placement>}``.

    Each strategy's stats: ``mean_nll`` (with a bootstrap interval), ``users`` scored,
    ``lift_vs_none`` and ``lift_vs_bm25-query`` (baseline - strategy NLL per user, positive
    = the strategy predicts the gold output better), each with a 95 % interval.

    Example:
        ```python
        summary = summarize(rows, budgets=[200], strategies=["none", "output-profile"],
                            placements=["leading"])
        summary["budgets"]["200"]["output-profile"]["lift_vs_none"]["mean"]
        ```
    """
    none = {r.user: r.mean for r in rows if r.strategy == BASELINE}
    placed: dict[str, Any] = {}
    for placement in placements:
        by_budget: dict[str, Any] = {}
        for budget in budgets:
            per = {s: _per_user(rows, s, budget, placement) for s in strategies}
            per[BASELINE] = none
            by_budget[str(budget)] = {
                s: _stats(per[s], none, per.get(RETRIEVAL, {}), seed) for s in strategies if per[s]
            }
        placed[placement] = by_budget
    return {"budgets": placed[placements[0]] if placements else {}, "placements": placed}


def _per_user(
    rows: Sequence[ScoreRow], strategy: str, budget: int, placement: str
) -> dict[str, float]:
    return {
        r.user: r.mean
        for r in rows
        if r.strategy == strategy and r.budget == budget and r.placement == placement
    }


def _stats(
    values: dict[str, float], none: dict[str, float], bm25: dict[str, float], seed: int
) -> dict[str, Any]:
    mean = bootstrap_mean(np.array(list(values.values())), seed=seed)
    out: dict[str, Any] = {
        "mean_nll": mean.mean,
        "mean_nll_ci": [mean.low, mean.high],
        "users": mean.n,
        "lift_vs_none": paired_lift(none, values, seed=seed).to_dict(),
    }
    if bm25:
        out[f"lift_vs_{RETRIEVAL}"] = paired_lift(bm25, values, seed=seed).to_dict()
    return out


def write_report(summary: dict[str, Any], meta: dict[str, Any], out: Path) -> list[Path]:
    """Write ``report.json``, ``report.md`` and ``lift.png`` into ``out``; returns the paths."""
    out.mkdir(parents=True, exist_ok=True)
    report = {"meta": meta, **summary}
    paths = [out / "report.json", out / "report.md", out / "lift.png"]
    paths[0].write_text(json.dumps(report, indent=2, allow_nan=False, default=_nan) + "\n")
    paths[1].write_text(markdown(report))
    plot(summary["budgets"], paths[2], title=str(meta.get("model", "")))
    return paths


def _nan(value: object) -> object:
    return None if isinstance(value, float) and math.isnan(value) else str(value)


def _fmt(interval: dict[str, Any] | None) -> str:
    if not interval or interval.get("mean") is None:
        return "—"
    return f"{interval['mean']:+.3f} [{interval['low']:+.3f}, {interval['high']:+.3f}]"


def markdown(report: dict[str, Any]) -> str:
    """The report as Markdown tables, one per placement."""
    meta = report["meta"]
    lines = [
        "# outprofile eval",
        "",
        f"model `{meta.get('model')}`, data `{meta.get('data')}`, {meta.get('users')} users, "
        f"seed {meta.get('seed')}, {meta.get('total_s')} s.",
        "",
        "Mean gold NLL in nats/token (lower is better). Lift = baseline - strategy, per user, "
        "mean [95 % bootstrap CI]; positive = better than the baseline. Wins = share of users "
        "improved.",
    ]
    for placement, by_budget in report["placements"].items():
        lines += [
            "",
            f"## placement: {placement}",
            "",
            "| budget | strategy | users | mean NLL | lift vs none | wins | lift vs bm25-query |",
            "| ---: | --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for budget, strategies in by_budget.items():
            for name, s in strategies.items():
                wins = s["lift_vs_none"].get("wins")
                lines.append(
                    f"| {budget} | `{name}` | {s['users']} | {s['mean_nll']:.3f} | "
                    f"{_fmt(s['lift_vs_none']) if name != BASELINE else '—'} | "
                    f"{'—' if wins is None or name == BASELINE else f'{wins:.0%}'} | "
                    f"{_fmt(s.get(f'lift_vs_{RETRIEVAL}')) if name != RETRIEVAL else '—'} |"
                )
    return "\n".join(lines) + "\n"


def plot(by_budget: dict[str, Any], path: Path, title: str = "") -> None:
    """Lift against ``none`` (with 95 % intervals) by budget, one line per strategy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    budgets = sorted(by_budget, key=int)
    names = [n for n in dict.fromkeys(n for b in budgets for n in by_budget[b]) if n != BASELINE]
    figure, axis = plt.subplots(figsize=(7, 4.5))
    for offset, name in enumerate(names):
        points = [
            (int(b), by_budget[b][name]["lift_vs_none"]) for b in budgets if name in by_budget[b]
        ]
        xs = np.array([x for x, _ in points], dtype=float) * (1 + 0.01 * (offset - len(names) / 2))
        means = np.array([p["mean"] for _, p in points], dtype=float)
        errors = np.array(
            [[p["mean"] - p["low"] for _, p in points], [p["high"] - p["mean"] for _, p in points]],
            dtype=float,
        )
        axis.errorbar(xs, means, yerr=errors, marker="o", capsize=3, label=name)
    axis.axhline(0.0, color="grey", linewidth=0.8)
    axis.set_xlabel("block budget (tokens)")
    axis.set_ylabel("NLL lift vs none (nats/token, higher = better)")
    axis.set_title(f"Gold-output NLL lift by budget {title}".strip())
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def interval_from(data: dict[str, Any]) -> Interval:
    """Rebuild an :class:`Interval` from its JSON form."""
    clean = {k: (math.nan if v is None else v) for k, v in data.items()}
    return Interval(
        mean=float(clean["mean"]),
        low=float(clean["low"]),
        high=float(clean["high"]),
        n=int(clean["n"]),
        wins=float(clean.get("wins", math.nan)),
    )
