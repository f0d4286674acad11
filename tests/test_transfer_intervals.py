"""Pooling per-seed speedups against planted answers, and the interval's calibration on
synthetic curves (pure numpy, no training)."""
import math

import numpy as np
import pytest

from igpt.transfer.comparison import paired
from igpt.transfer.intervals import Bound, Speedup, geometric_interval, pool
from igpt.transfer.metrics import Curve

T_975_4DF = 2.7764451051977987  # Student t, 4 degrees of freedom, 97.5th percentile


def test_geometric_interval_at_five_seeds_is_a_t_interval_on_the_log():
    logs = np.array([0.0, 0.1, -0.1, 0.2, -0.2])
    e = geometric_interval(2.0 * np.exp(logs))
    half = T_975_4DF * math.sqrt(0.1 / 4) / math.sqrt(5)
    assert e.kind == "t" and e.n == 5 and e.confidence == 0.95
    assert (e.mean, e.lo, e.hi) == pytest.approx((2.0, 2.0 * math.exp(-half), 2.0 * math.exp(half)))
    assert geometric_interval(2.0 * np.exp(logs), confidence=0.5).hi < e.hi


def test_ratios_pool_on_the_log_scale():
    assert geometric_interval([2.0, 0.5]).mean == pytest.approx(1.0)  # not 1.25


def test_below_five_seeds_the_interval_is_the_range_and_one_seed_has_none():
    e = geometric_interval([1.5, 2.0, 3.0])
    assert (e.kind, e.lo, e.hi, e.n) == ("range", 1.5, 3.0, 3)
    assert not e.excludes_one()                       # a range is never evidence
    e = geometric_interval([1.7])
    assert (e.kind, e.mean, e.lo, e.hi) == ("none", pytest.approx(1.7), None, None)


def test_geometric_interval_refuses_what_is_not_a_ratio():
    for bad in ([], [1.0, float("nan")], [1.0, 0.0], [-2.0]):
        with pytest.raises(ValueError, match="exact per-seed ratios"):
            geometric_interval(bad)


def exact(v):
    return Speedup("exact", v, 100.0 * v, 100.0)


def test_censored_seeds_are_counted_and_bound_the_all_seed_mean():
    p = pool({0: exact(2.0), 1: exact(2.0), 2: exact(2.0),
              3: Speedup("upper_bound", 0.5, 50.0, None), 4: Speedup("upper_bound", 0.5, 50.0, None)})
    assert (p.n_seeds, p.n_exact, p.n_upper, p.n_lower, p.n_none, p.n_censored) == (5, 3, 2, 0, 0, 2)
    assert p.n_arm_reached == 3
    assert p.estimate.kind == "range" and p.estimate.mean == pytest.approx(2.0)  # only exact seeds
    assert p.bound == Bound("at_most", pytest.approx(2.0 ** 0.6 * 0.5 ** 0.4))
    low = pool({0: exact(2.0), 1: Speedup("lower_bound", 4.0, None, 25.0)})
    assert low.bound == Bound("at_least", pytest.approx(math.sqrt(8.0)))
    both = pool({0: Speedup("lower_bound", 4.0, None, 25.0), 1: Speedup("upper_bound", 0.5, 50.0, None)})
    assert both.bound is None and both.estimate is None and both.n_censored == 2
    assert pool({0: exact(2.0), 1: Speedup("none", None, None, None)}).bound is None
    assert pool({0: exact(2.0), 1: exact(3.0)}).bound is None  # nothing censored


def loss(t):
    """A smooth learning curve: loss falls from 5 towards 2."""
    return 2.0 + 3.0 * np.exp(-np.asarray(t, dtype=float) / 250.0)


STEPS = np.arange(25, 1001, 25, dtype=float)
TARGET = 2.6  # scratch reaches it near step 400 of 1000


def sweep(rng, n_seeds, k, pace_sd=0.15, eval_sd=0.005):
    """Per-seed curves: the arm learns k times faster than scratch, each run with its own pace
    (data order, init) and eval noise; returns the pooled speedup at TARGET."""
    def curve(pace):
        return Curve(STEPS, STEPS * 1024, loss(STEPS * pace) + rng.normal(0, eval_sd, STEPS.size))
    base = {s: curve(math.exp(rng.normal(0, pace_sd))) for s in range(n_seeds)}
    arm = {s: curve(k * math.exp(rng.normal(0, pace_sd))) for s in range(n_seeds)}
    return paired(base, arm, TARGET)


def test_planted_2x_arm_gives_2x_with_an_interval_around_it():
    p = sweep(np.random.default_rng(0), 5, 2.0)
    e = p.estimate
    assert p.n_exact == 5 and e.kind == "t"
    assert e.lo < 2.0 < e.hi and e.lo > 1.0 and e.mean == pytest.approx(2.0, rel=0.15)


def test_null_arm_interval_includes_one():
    e = sweep(np.random.default_rng(1), 5, 1.0).estimate
    assert e.kind == "t" and e.lo < 1.0 < e.hi


def exclusion_rate(k, replicates=400, n_seeds=5, seed=0):
    rng = np.random.default_rng(seed)
    pooled = [sweep(rng, n_seeds, k) for _ in range(replicates)]
    assert all(p.n_exact == n_seeds for p in pooled)  # the target is reached: nothing censored
    return np.mean([p.estimate.excludes_one() for p in pooled]), pooled


def test_calibration_null_arm_excludes_one_at_most_8_percent_of_replicates():
    rate, _ = exclusion_rate(1.0)
    assert 0.01 <= rate <= 0.08, rate  # nominal 5%: neither anti-conservative nor vacuous


def test_calibration_planted_2x_interval_covers_2():
    _, pooled = exclusion_rate(2.0, replicates=200, seed=1)
    coverage = np.mean([p.estimate.lo <= 2.0 <= p.estimate.hi for p in pooled])
    assert coverage >= 0.9, coverage
