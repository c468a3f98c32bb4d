"""Stats: per-user paired differences and seeded bootstrap confidence intervals."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

__all__ = ["Interval", "bootstrap_mean", "paired_lift"]


@dataclass(frozen=True)
class Interval:
    """A mean with a bootstrap confidence interval over ``n`` paired users."""

    mean: float
    low: float
    high: float
    n: int
    wins: float = math.nan

    def to_dict(self) -> dict[str, float | int]:
        """JSON-ready (NaN becomes None)."""
        return {
            k: (None if isinstance(v, float) and math.isnan(v) else v)  # type: ignore[misc]
            for k, v in self.__dict__.items()
        }


def bootstrap_mean(
    values: np.ndarray, *, seed: int = 0, resamples: int = 2000, level: float = 0.95
) -> Interval:
    """Percentile bootstrap interval of the mean of ``values``.

    Example:
        ```python
        bootstrap_mean(np.array([0.1, 0.3, 0.2]), seed=1).mean  # 0.2
        ```
    """
    data = np.asarray(values, dtype=np.float64)
    if data.size == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, data.size, size=(resamples, data.size))
    means = data[draws].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return Interval(
        float(data.mean()), float(low), float(high), int(data.size), wins=float((data > 0).mean())
    )


def paired_lift(
    baseline: Mapping[str, float], strategy: Mapping[str, float], *, seed: int = 0
) -> Interval:
    """Mean of (baseline - strategy) NLL over users scored by both; positive = strategy better.

    Example:
        ```python
        paired_lift({"a": 3.0, "b": 2.0}, {"a": 2.5, "b": 2.1}, seed=0).mean  # 0.2
        ```
    """
    users = sorted(set(baseline) & set(strategy))
    diffs = np.array([baseline[u] - strategy[u] for u in users], dtype=np.float64)
    return bootstrap_mean(diffs, seed=seed)
