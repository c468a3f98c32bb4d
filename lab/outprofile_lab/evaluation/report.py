"""Report: per budget and strategy, mean NLL and paired lifts, as JSON, Markdown and a plot."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from outprofile_lab.evaluation.runner import ScoreRow
from outprofile_lab.evaluation.stats import Interval, bootstrap_mean, paired_lift
from outprofile_lab.evaluation.strategies import draw_index

__all__ = ["cell_name", "cells_summary", "headroom", "summarize", "write_report"]

BASELINE = "none"
RETRIEVAL = "bm25-query"
DEFAULT = "output-profile"
MEAN_OF_DRAWS = "random-mean"
BEST_OF_DRAWS = "random-best"
PICKED_DRAW = "random-picked"


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
    if meta.get("task", "lamp") == "lamp":
        plot(summary["budgets"], paths[2], title=str(meta.get("model", "")))
    else:
        plot_cells(summary.get("cells", []), paths[2], title=f"{meta.get('task')}")
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
    if report.get("cells") and report["meta"].get("task", "lamp") != "lamp":
        tables = cells_markdown(report) + placement_pairs_markdown(report)
        return "\n".join(lines[:4] + tables + headroom_markdown(report)) + "\n"
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
    tables = placement_pairs_markdown(report) + headroom_markdown(report)
    return "\n".join(lines + tables) + "\n"


def plot(by_budget: dict[str, Any], path: Path, title: str = "") -> None:
    """Lift against ``none`` (with 95 % intervals) by budget, one line per strategy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    budgets = sorted(by_budget, key=int)
    names = [
        n
        for n in dict.fromkeys(n for b in budgets for n in by_budget[b])
        if n != BASELINE and draw_index(n) is None  # the draws are summed up in the headroom
    ]
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


# -- cells: strategy x fields x budget x placement, bootstrap over users ----------------------

CellKey = tuple[str, str, int, str]


def cell_name(strategy: str, fields: str) -> str:
    """``output-profile`` or, for another field mode, ``output-profile[input]``."""
    return strategy if fields == "output" else f"{strategy}[{fields}]"


def _group_means(values: dict[str, tuple[str, float]]) -> dict[str, float]:
    """Target -> (user, value) into user -> mean value over their targets."""
    sums: dict[str, list[float]] = {}
    for owner, value in values.values():
        sums.setdefault(owner, []).append(value)
    return {owner: float(np.mean(v)) for owner, v in sums.items()}


def _interval(values: Sequence[float], seed: int) -> dict[str, Any]:
    got = bootstrap_mean(np.array(values, dtype=np.float64), seed=seed)
    if got.n == 0:
        return {"mean": None, "lo": None, "hi": None, "n": 0, "wins": None}
    return {
        "mean": got.mean,
        "lo": got.low,
        "hi": got.high,
        "n": got.n,
        "wins": None if math.isnan(got.wins) else got.wins,
    }


def _paired_values(
    a: dict[str, tuple[str, float]], b: dict[str, tuple[str, float]], sign: float
) -> list[float]:
    """Per user: mean over the targets both cells scored of sign * (a - b)."""
    shared = set(a) & set(b)
    diffs = {t: (a[t][0], sign * (a[t][1] - b[t][1])) for t in shared}
    return list(_group_means(diffs).values())


def cells_summary(
    rows: Sequence[ScoreRow], *, choice: bool, seed: int = 0
) -> dict[str, list[dict[str, Any]]]:
    """``{"cells": [...], "paired": [...]}`` from scored rows.

    A cell is one strategy x fields x budget x placement (``none``: budget 0, placement
    ``-``). Each target's values are averaged per user first; intervals are seeded percentile
    bootstraps over users. ``lift_vs_none`` = NLL(none) - NLL(cell) on the targets both
    scored (positive = better). ``pair_acc`` (choice tasks) = share of (accepted, other)
    candidate pairs where the accepted one has the lower mean NLL per token.
    ``paired`` compares every two cells of one budget and placement (and each with ``none``):
    ``mean`` > 0 means ``a`` is better (lower NLL, higher pair_acc). ``placement_pairs`` compares
    one strategy, fields and budget in every two placements (``a`` and ``b`` name them, in
    the order first scored), with the same sign.

    Example:
        ```python
        summary = cells_summary(rows, choice=False)
        summary["cells"][1]["lift_vs_none"]["mean"]
        ```
    """
    nll: dict[CellKey, dict[str, tuple[str, float]]] = {}
    acc: dict[CellKey, dict[str, tuple[str, float]]] = {}
    for row in rows:
        key = (row.strategy, row.fields, row.budget, row.placement)
        nll.setdefault(key, {})[row.user] = (row.owner, row.mean)
        pair = row.pair_acc
        if choice and pair is not None:
            acc.setdefault(key, {})[row.user] = (row.owner, pair)
    none_key = next((k for k in nll if k[0] == BASELINE), None)
    cells = []
    for key in nll:
        strategy, fields, budget, placement = key
        cell: dict[str, Any] = {
            "strategy": strategy,
            "fields": fields,
            "budget": budget,
            "placement": placement,
            "users": len({owner for owner, _ in nll[key].values()}),
            "targets": len(nll[key]),
            "mean_nll": _interval(list(_group_means(nll[key]).values()), seed),
            "lift_vs_none": (
                _interval(_paired_values(nll[none_key], nll[key], 1.0), seed)
                if none_key and key != none_key
                else None
            ),
        }
        if choice:
            cell["pair_acc"] = _interval(list(_group_means(acc.get(key, {})).values()), seed)
        cells.append(cell)
    paired = []
    keys = list(nll)
    for i, first in enumerate(keys):
        for second in keys[i + 1 :]:
            a, b = (second, first) if first[0] == BASELINE else (first, second)
            if a[0] == BASELINE or (b[0] != BASELINE and a[2:] != b[2:]):
                continue
            if draw_index(a[0]) is not None or draw_index(b[0]) is not None:
                continue  # one random draw against another: see headroom()
            metrics = [("nll", nll, -1.0)] + ([("pair_acc", acc, 1.0)] if choice else [])
            for metric, table, sign in metrics:
                values = _paired_values(table.get(a, {}), table.get(b, {}), sign)
                if values:
                    paired.append(
                        {
                            "a": cell_name(a[0], a[1]),
                            "b": cell_name(b[0], b[1]),
                            "budget": a[2],
                            "placement": a[3],
                            "metric": metric,
                            **_interval(values, seed),
                        }
                    )
    return {"cells": cells, "paired": paired, "placement_pairs": _placement_pairs(nll, seed)}


def _placement_pairs(
    nll: dict[CellKey, dict[str, tuple[str, float]]], seed: int
) -> list[dict[str, Any]]:
    """One strategy x fields x budget in two placements, paired per user (NLL; > 0: a better)."""
    out = []
    keys = [k for k in nll if k[0] != BASELINE and draw_index(k[0]) is None]
    for i, a in enumerate(keys):
        for b in keys[i + 1 :]:
            if a[:3] != b[:3]:
                continue
            values = _paired_values(nll[a], nll[b], -1.0)
            if values:
                out.append(
                    {
                        "strategy": cell_name(a[0], a[1]),
                        "budget": a[2],
                        "a": a[3],
                        "b": b[3],
                        "metric": "nll",
                        **_interval(values, seed),
                    }
                )
    return out


def _ci(value: dict[str, Any] | None, fmt: str = "+.3f") -> str:
    if not value or value.get("mean") is None:
        return "—"
    return f"{value['mean']:{fmt}} [{value['lo']:{fmt}}, {value['hi']:{fmt}}]"


def _wins(pair: dict[str, Any]) -> str:
    """A paired comparison's share of users where ``a`` is better, or a dash."""
    return "—" if pair.get("wins") is None else f"{pair['wins']:.0%}"


def cells_markdown(report: dict[str, Any]) -> list[str]:
    """Markdown lines: the cells table, then the paired comparisons."""
    choice = any("pair_acc" in c for c in report["cells"])
    head = "| budget | placement | strategy | fields | users | targets | mean NLL | lift vs none |"
    rule = "| ---: | --- | --- | --- | ---: | ---: | ---: | ---: |"
    if choice:
        head, rule = head + " pair_acc |", rule + " ---: |"
    lines = [
        "",
        "Cells: mean over users of each user's mean gold NLL (nats/token); lift = NLL(none) - "
        "NLL(cell) on the same targets; [95 % bootstrap CI over users].",
        "",
        head,
        rule,
    ]
    for c in sorted(report["cells"], key=lambda c: (c["budget"], c["placement"])):
        line = (
            f"| {c['budget']} | {c['placement']} | `{c['strategy']}` | {c['fields']} | "
            f"{c['users']} | {c['targets']} | {_ci(c['mean_nll'], '.3f')} | "
            f"{_ci(c['lift_vs_none'])} |"
        )
        if choice:
            line += f" {_ci(c.get('pair_acc'))} |"
        lines.append(line)
    lines += [
        "",
        "Paired: mean over users of a - b (nll: NLL(b) - NLL(a); pair_acc: a - b), so > 0 "
        "means a is better; [95 % CI], n users, share of users where a is better.",
        "",
        "| budget | placement | a | b | metric | a better by | users | a better for |",
        "| ---: | --- | --- | --- | --- | ---: | ---: | ---: |",
    ]
    for p in report["paired"]:
        wins = _wins(p)
        lines.append(
            f"| {p['budget']} | {p['placement']} | `{p['a']}` | `{p['b']}` | {p['metric']} | "
            f"{_ci(p)} | {p['n']} | {wins} |"
        )
    return lines


def placement_pairs_markdown(report: dict[str, Any]) -> list[str]:
    """Markdown lines: one strategy in two placements, paired per user (none if no pairs)."""
    if not report.get("placement_pairs"):
        return []
    lines = [
        "",
        "One strategy in two placements, paired per user: NLL(b) - NLL(a), > 0 means "
        "placement a is better.",
        "",
        "| budget | strategy | a | b | a better by | users | a better for |",
        "| ---: | --- | --- | --- | ---: | ---: | ---: |",
    ]
    for p in report["placement_pairs"]:
        wins = _wins(p)
        lines.append(
            f"| {p['budget']} | `{p['strategy']}` | {p['a']} | {p['b']} | {_ci(p)} | "
            f"{p['n']} | {wins} |"
        )
    return lines


def plot_cells(cells: Sequence[dict[str, Any]], path: Path, title: str = "") -> None:
    """Lift vs none (and pair_acc for choice tasks) per cell, with 95 % intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [c for c in cells if c.get("lift_vs_none") and c["lift_vs_none"]["mean"] is not None]
    panels = [("lift_vs_none", "NLL lift vs none (nats/token)")]
    if any(c.get("pair_acc") and c["pair_acc"]["mean"] is not None for c in cells):
        panels.append(("pair_acc", "pair_acc (accepted beats other)"))
        shown = [c for c in cells if c.get("pair_acc") and c["pair_acc"]["mean"] is not None]
    figure, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 0.45 * len(shown) + 1.8))
    axes_list = list(np.atleast_1d(axes))
    labels = [f"{cell_name(c['strategy'], c['fields'])} @{c['budget']}" for c in shown]
    for axis, (metric, label) in zip(axes_list, panels, strict=True):
        values = [c.get(metric) or {"mean": 0.0, "lo": 0.0, "hi": 0.0} for c in shown]
        means = np.array([v["mean"] for v in values], dtype=float)
        errors = np.array(
            [[v["mean"] - v["lo"] for v in values], [v["hi"] - v["mean"] for v in values]],
            dtype=float,
        )
        ys = np.arange(len(shown))
        axis.errorbar(means, ys, xerr=errors, fmt="o", capsize=3)
        axis.set_yticks(ys, labels, fontsize=8)
        axis.axvline(0.0 if metric == "lift_vs_none" else float(means[0]), color="grey", lw=0.8)
        axis.set_xlabel(label)
        axis.invert_yaxis()
    figure.suptitle(f"{title}: 95 % bootstrap intervals over users".strip(": "))
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


# -- headroom: K random draws per user, their mean and the best of them ------------------------


def headroom(rows: Sequence[ScoreRow], *, seed: int = 0) -> list[dict[str, Any]]:
    """Per budget, placement and fields with two or more random draws (``random-<k>``): the
    :func:`cells_summary` of ``none``, ``output-profile``, ``bm25-query`` (those scored), the
    mean of the draws and the best draw, on the targets that have every draw and every one
    of those cells.

    ``random-mean`` is, per target, the mean NLL per token over the draws (what a query-free
    pick as good as a random one gets). ``random-best`` is, per user, the draw with the
    lowest mean NLL over the user's targets: an oracle bound on choosing among the draws
    without the query, optimistic because it is chosen on the very targets it is scored on.
    ``random-picked`` (users with two or more targets only) is the cross-fitted pick: on each
    target, the draw with the lowest mean NLL over the user's *other* targets, so the choice
    never sees the text it is scored on (what a choice learned from a user's earlier texts
    could get). The rows carry the NLL per token as ``nll`` with ``tokens=1``.

    Example:
        ```python
        [h["budget"] for h in headroom(rows)]  # [200]
        ```
    """
    draws: dict[tuple[int, str, str], dict[str, dict[int, ScoreRow]]] = {}
    cells: dict[tuple[int, str, str], dict[str, dict[str, ScoreRow]]] = {}
    none: dict[str, ScoreRow] = {}
    for row in rows:
        where = (row.budget, row.placement, row.fields)
        index = draw_index(row.strategy)
        if index is not None:
            draws.setdefault(where, {}).setdefault(row.user, {})[index] = row
        elif row.strategy in (DEFAULT, RETRIEVAL):
            cells.setdefault(where, {}).setdefault(row.strategy, {})[row.user] = row
        elif row.strategy == BASELINE:
            none[row.user] = row
    out = []
    for where, by_target in sorted(draws.items()):
        ks = sorted({k for d in by_target.values() for k in d})
        if len(ks) < 2:
            continue
        compared = {**cells.get(where, {}), **({BASELINE: none} if none else {})}
        complete = {
            t: d
            for t, d in by_target.items()
            if len(d) == len(ks) and all(t in c for c in compared.values())
        }
        per_user: dict[str, dict[str, dict[int, float]]] = {}  # owner -> target -> draw
        for target, d in complete.items():
            per_user.setdefault(d[ks[0]].owner, {})[target] = {k: r.mean for k, r in d.items()}
        best = {u: _best_draw(list(v.values()), ks) for u, v in per_user.items()}
        derived: dict[str, list[ScoreRow]] = {BEST_OF_DRAWS: [], PICKED_DRAW: [], MEAN_OF_DRAWS: []}
        for target, d in complete.items():
            first = d[ks[0]]
            values = {
                BEST_OF_DRAWS: d[best[first.owner]].mean,
                MEAN_OF_DRAWS: float(np.mean([r.mean for r in d.values()])),
            }
            others = [v for t, v in per_user[first.owner].items() if t != target]
            if others:
                values[PICKED_DRAW] = d[_best_draw(others, ks)].mean
            for name, value in values.items():
                derived[name].append(replace(first, strategy=name, nll=value, tokens=1))
        # this order makes every pair of HEADROOM_PAIRS come out as (a, b)
        kept = [
            r
            for name in (DEFAULT, RETRIEVAL, BASELINE)
            for t, r in compared.get(name, {}).items()
            if t in complete
        ]
        ordered = [*derived[BEST_OF_DRAWS], *derived[PICKED_DRAW], *derived[MEAN_OF_DRAWS], *kept]
        summary = cells_summary(ordered, choice=False, seed=seed)
        budget, placement, fields = where
        out.append(
            {
                "budget": budget,
                "placement": placement,
                "fields": fields,
                "draws": len(ks),
                "users": len(per_user),
                "targets": len(complete),
                **summary,
            }
        )
    return out


def _best_draw(targets: Sequence[dict[int, float]], draws: Sequence[int]) -> int:
    """The draw with the lowest mean over ``targets`` (each: draw -> NLL per token); the
    lower index on a tie."""
    return min(draws, key=lambda k: (float(np.mean([t[k] for t in targets])), k))


HEADROOM_PAIRS = (
    (MEAN_OF_DRAWS, DEFAULT),
    (BEST_OF_DRAWS, DEFAULT),
    (BEST_OF_DRAWS, RETRIEVAL),
    (DEFAULT, RETRIEVAL),
    (MEAN_OF_DRAWS, RETRIEVAL),
    (BEST_OF_DRAWS, MEAN_OF_DRAWS),
    (PICKED_DRAW, MEAN_OF_DRAWS),
    (PICKED_DRAW, DEFAULT),
    (PICKED_DRAW, RETRIEVAL),
)
"""The comparisons the headroom tables show, in order (a, b: a better by)."""


def headroom_markdown(report: dict[str, Any]) -> list[str]:
    """Markdown lines of :func:`headroom` (nothing when the report has no draws)."""
    lines: list[str] = []
    for h in report.get("headroom", []):
        lines += [
            "",
            f"## Headroom: {h['draws']} random draws, budget {h['budget']}, "
            f"placement {h['placement']}, fields {h['fields']}",
            "",
            f"{h['users']} users, {h['targets']} targets (those with every draw and every "
            f"cell). `{MEAN_OF_DRAWS}` = the mean of the draws per target; `{BEST_OF_DRAWS}` = "
            "each user's best draw, an oracle chosen on the scored targets themselves (an "
            "optimistic bound on any query-free choice among random picks)"
            + (
                f"; `{PICKED_DRAW}` = the draw best on the user's other targets, scored on this "
                "one (a choice that never sees the text it is scored on)."
                if any(c["strategy"] == PICKED_DRAW for c in h["cells"])
                else "."
            ),
            "",
            "| cell | users | mean NLL | lift vs none |",
            "| --- | ---: | ---: | ---: |",
        ]
        for c in h["cells"]:
            lines.append(
                f"| `{c['strategy']}` | {c['users']} | {_ci(c['mean_nll'], '.3f')} | "
                f"{_ci(c['lift_vs_none'])} |"
            )
        lines += [
            "",
            "| a | b | a better by (nats/token) | users | a better for |",
            "| --- | --- | ---: | ---: | ---: |",
        ]
        paired = {(p["a"], p["b"]): p for p in h["paired"]}
        for a, b in HEADROOM_PAIRS:
            if (a, b) in paired:
                p = paired[(a, b)]
                wins = _wins(p)
                lines.append(f"| `{a}` | `{b}` | {_ci(p)} | {p['n']} | {wins} |")
    return lines
