"""How much of one user's spread between random blocks belongs to the block (the same on both
held-out texts) and how much to the pair of block and text.

Reads the score cache of an ``outprofile eval --holdout 2 --random-draws 8`` run (no model):
per user with both texts scored under all 8 draws, the best draw on each text over the mean of
the draws (the per-text oracle), the draw best on one text scored on the other over the mean
(a choice made without seeing the text), and the correlation of the 8 draws' NLL per token
between the two texts; bootstrap 95 % CIs over users.

Usage: ``python scripts/headroom_stability.py OUT/scores.jsonl``
"""

from __future__ import annotations

import json
import random
import statistics
import sys
from collections import defaultdict
from typing import Any

with open(sys.argv[1], encoding="utf-8") as cache:
    rows = [json.loads(line) for line in cache]
per: dict[tuple[str, str], dict[str, float]] = defaultdict(
    dict
)  # (user, text) -> draw -> nll/token
for r in rows:
    if r["strategy"].startswith("random-"):
        per[(r["group"], r["user"])][r["strategy"]] = r["nll"] / r["tokens"]
by_user: dict[str, dict[str, dict[str, float]]] = defaultdict(dict)
for (g, t), d in per.items():
    if len(d) == 8:
        by_user[g][t] = d
users = {g: ts for g, ts in by_user.items() if len(ts) == 2}
corrs: list[float] = []
oracle_gain: list[float] = []
picked_gain: list[float] = []
for ts in users.values():
    (a, da), (b, db) = sorted(ts.items())
    ks = sorted(da)
    xa = [da[k] for k in ks]
    xb = [db[k] for k in ks]
    ma, mb = statistics.mean(xa), statistics.mean(xb)
    if statistics.pstdev(xa) > 0 and statistics.pstdev(xb) > 0:
        corrs.append(statistics.correlation(xa, xb))
    oracle_gain.append(statistics.mean([ma - min(xa), mb - min(xb)]))
    pa = xa[xb.index(min(xb))]  # the draw best on the other text, scored on this one
    pb = xb[xa.index(min(xa))]
    picked_gain.append(statistics.mean([ma - pa, mb - pb]))


def _shown(value: tuple[Any, ...]) -> str:
    mean, lo, hi = value
    return f"{mean:.3f} [{lo:.3f}, {hi:.3f}]"


def boot(v: list[float], n: int = 2000, seed: int = 0) -> tuple[Any, ...]:
    rng = random.Random(seed)
    means = sorted(statistics.mean(rng.choices(v, k=len(v))) for _ in range(n))
    return statistics.mean(v), means[int(0.025 * n)], means[int(0.975 * n)]


oracle, picked, corr = boot(oracle_gain), boot(picked_gain), boot(corrs)
print("users", len(users))
print("per-text oracle (best of 8 on that text) over the mean of draws:", _shown(oracle))
print("cross-fitted pick over the mean of draws:", _shown(picked))
print("correlation of a user's 8 draws between the two texts:", _shown(corr))
