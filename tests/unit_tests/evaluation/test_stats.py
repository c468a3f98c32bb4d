"""Paired differences and seeded bootstrap intervals."""

from __future__ import annotations

import math

import numpy as np

from outprofile_lab.evaluation.stats import bootstrap_mean, paired_lift


def test_bootstrap_is_seeded_and_brackets_the_mean() -> None:
    values = np.random.default_rng(3).normal(0.2, 0.5, size=200)
    first = bootstrap_mean(values, seed=7)
    assert first == bootstrap_mean(values, seed=7)
    assert first.low < first.mean < first.high
    assert math.isclose(first.mean, float(values.mean()))
    assert first.n == 200 and math.isclose(first.wins, float((values > 0).mean()))
    other = bootstrap_mean(values, seed=8)
    assert (other.low, other.high) != (first.low, first.high)


def test_interval_narrows_with_more_users() -> None:
    rng = np.random.default_rng(0)
    small = bootstrap_mean(rng.normal(0, 1, 20), seed=0)
    large = bootstrap_mean(rng.normal(0, 1, 2000), seed=0)
    assert large.high - large.low < (small.high - small.low) / 3


def test_paired_lift_uses_only_users_scored_by_both() -> None:
    baseline = {"a": 3.0, "b": 2.0, "c": 5.0}
    strategy = {"a": 2.5, "b": 2.5, "z": 0.0}
    lift = paired_lift(baseline, strategy, seed=0)
    assert lift.n == 2
    assert math.isclose(lift.mean, ((3.0 - 2.5) + (2.0 - 2.5)) / 2)
    assert lift.wins == 0.5


def test_no_shared_users_is_nan_not_an_error() -> None:
    lift = paired_lift({"a": 1.0}, {"b": 1.0})
    assert lift.n == 0 and math.isnan(lift.mean)
    assert lift.to_dict()["mean"] is None
