"""Where the default and BM25 fall among a user's K random draws (a headroom run's cache).

``outprofile eval ... --random-draws K`` reports, per user, the mean of K random blocks and
the best of them (docs/evaluation.md, "Headroom"). This script reads a run's score cache and
prints, per budget, how widely one user's draws spread (the mean per-user standard deviation
of the K draws' NLL per token, and of best minus worst), and for each of ``output-profile``
and ``bm25-query`` the share of a user's draws it beats (ties count half), averaged over
users with a seeded bootstrap 95 % interval: 0.5 means it is as good as a typical random
pick, 1.0 that it beats every draw. No model is run.

    python scripts/headroom_spread.py /work/eval-out/lamp7-headroom/scores.jsonl
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from outprofile_lab.evaluation.stats import bootstrap_mean
from outprofile_lab.evaluation.strategies import draw_index

COMPARED = ("output-profile", "bm25-query")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scores", type=Path, help="a run's scores.jsonl")
    args = parser.parse_args()
    draws: dict[int, dict[str, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
    other: dict[int, dict[str, dict[str, float]]] = defaultdict(lambda: defaultdict(dict))
    for line in args.scores.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        if row.get("fields", "output") != "output":
            continue
        mean = row["nll"] / row["tokens"]
        index = draw_index(row["strategy"])
        if index is not None:
            draws[row["budget"]][row["user"]][index] = mean
        elif row["strategy"] in COMPARED:
            other[row["budget"]][row["strategy"]][row["user"]] = mean
    print("| budget | draws | users | SD of draws | best - worst | cell | share of draws beaten |")
    print("| ---: | ---: | ---: | ---: | ---: | --- | ---: |")
    for budget, by_user in sorted(draws.items()):
        k = max(len(d) for d in by_user.values())
        users = [
            u
            for u, d in by_user.items()
            if len(d) == k and all(u in other[budget][s] for s in COMPARED)
        ]
        if k < 2 or not users:
            continue
        values = {u: np.array(list(by_user[u].values())) for u in users}
        sd = float(np.mean([v.std(ddof=1) for v in values.values()]))
        spread = float(np.mean([v.max() - v.min() for v in values.values()]))
        for name in COMPARED:
            beaten = [
                float(np.mean((other[budget][name][u] < v) + 0.5 * (other[budget][name][u] == v)))
                for u, v in values.items()
            ]
            got = bootstrap_mean(np.array(beaten), seed=0)
            print(
                f"| {budget} | {k} | {len(users)} | {sd:.3f} | {spread:.3f} | `{name}` | "
                f"{got.mean:.2f} [{got.low:.2f}, {got.high:.2f}] |"
            )


if __name__ == "__main__":
    main()
