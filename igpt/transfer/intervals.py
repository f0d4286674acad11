"""Per-seed ratios pooled into one number a reader can trust: geometric mean, interval, censoring.

Pure numpy (and scipy's t quantile), no jax. A transfer sweep affords a handful of seeds, so
what the interval means depends on how many there are:
  n >= 5   a Student-t interval on the log of the ratio (95% unless asked otherwise)
  2 to 4   the range (min to max) over the n seeds: how much they disagree, no coverage claimed
  1        the value alone, no interval
Ratios multiply, so they are pooled on the log scale: 2x and 0.5x average to 1x, not 1.25x.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Mapping, Sequence

import numpy as np
from scipy import stats

MIN_SEEDS_FOR_T = 5

IntervalKind = Literal["t", "range", "none"]
# exact: both curves crossed the target between evals, the value is the ratio.
# lower_bound / upper_bound: one crossing was not observed; the true ratio is at least / at most
#   the value. none: neither crossing was observed, or one was at x = 0: no ratio.
SpeedupStatus = Literal["exact", "lower_bound", "upper_bound", "none"]


@dataclass(frozen=True)
class Estimate:
    """A mean of n values (geometric for ratios, arithmetic for quantities of either sign) and
    an interval read as `kind` says: "t", a `confidence` Student-t interval (on the log for a
    geometric mean; n >= 5); "range", min and max of n in 2..4; "none", one value, lo and hi None."""
    mean: float
    lo: float | None
    hi: float | None
    kind: IntervalKind
    n: int
    confidence: float

    def excludes(self, value: float) -> bool:
        """A t-interval that lies wholly above or below `value` (a range never counts as evidence)."""
        return self.kind == "t" and (self.lo > value or self.hi < value)

    def excludes_one(self) -> bool:
        return self.excludes(1.0)

    def excludes_zero(self) -> bool:
        return self.excludes(0.0)


def _pooled(v: np.ndarray, raw: np.ndarray, confidence: float, to_value, name: str) -> Estimate:
    """The mean and t-interval of `v` (the values `raw` on the scale where they are averaged),
    mapped back by `to_value`; the range is read off `raw` itself."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"{name}: need 0 < confidence < 1, got {confidence}")
    mean = float(to_value(v.mean()))
    if v.size >= MIN_SEEDS_FOR_T:
        half = stats.t.ppf((1.0 + confidence) / 2.0, v.size - 1) * v.std(ddof=1) / np.sqrt(v.size)
        return Estimate(mean, float(to_value(v.mean() - half)), float(to_value(v.mean() + half)), "t", int(v.size),
                        confidence)
    if v.size >= 2:
        return Estimate(mean, float(raw.min()), float(raw.max()), "range", int(v.size), confidence)
    return Estimate(mean, None, None, "none", 1, confidence)


def geometric_interval(values: Sequence[float], confidence: float = 0.95) -> Estimate:
    """Geometric mean of `values` (> 0) with a t-interval on their logs, a range, or nothing."""
    v = np.asarray(values, dtype=float)
    if v.ndim != 1 or v.size == 0 or not np.all(np.isfinite(v)) or np.any(v <= 0):
        raise ValueError(f"geometric_interval: values must be a non-empty list of finite positive "
                         f"ratios, got {list(values)!r}; pass exact per-seed ratios only")
    return _pooled(np.log(v), v, confidence, np.exp, "geometric_interval")


def arithmetic_interval(values: Sequence[float], confidence: float = 0.95) -> Estimate:
    """Mean of `values` with a t-interval, a range, or nothing: geometric_interval's counterpart
    for quantities that can be negative, like data transferred."""
    v = np.asarray(values, dtype=float)
    if v.ndim != 1 or v.size == 0 or not np.all(np.isfinite(v)):
        raise ValueError(f"arithmetic_interval: values must be a non-empty list of finite numbers, "
                         f"got {list(values)!r}; pass exact per-seed values only")
    return _pooled(v, v, confidence, lambda x: x, "arithmetic_interval")


@dataclass(frozen=True)
class Speedup:
    """One seed: baseline x-to-target / arm x-to-target, read with `status` (see SpeedupStatus).
    `baseline` and `arm` are each curve's x-to-target (None: never reached)."""
    status: SpeedupStatus
    value: float | None
    baseline: float | None
    arm: float | None


@dataclass(frozen=True)
class Bound:
    """The geometric mean over every seed is at most (`side` "at_most") or at least `value`."""
    side: Literal["at_most", "at_least"]
    value: float


@dataclass(frozen=True)
class Pooled:
    """Per-seed speedups at one target, pooled.

    Only exact seeds enter `estimate`. A seed whose arm never reached the target within its
    budget is censored from above (upper_bound: its speedup is below baseline-x / the arm's
    last x); one whose baseline never reached it is censored from below (lower_bound). They
    are counted, never dropped: `bound` is the geometric mean over all seeds with each censored
    seed at its bound, which bounds the all-seed geometric mean from above when every censored
    seed is censored from above, from below when every one is from below; None when no seed
    is censored, censoring goes both ways, or some seed has no ratio (status none). Leaving
    censored seeds out of `estimate` biases it towards the seeds that reached the target
    (upwards when arms are censored): read it with the counts and `bound`."""
    per_seed: dict[int, Speedup]
    estimate: Estimate | None
    n_seeds: int
    n_exact: int
    n_lower: int
    n_upper: int
    n_none: int
    bound: Bound | None

    @property
    def n_censored(self) -> int:
        return self.n_lower + self.n_upper

    @property
    def n_arm_reached(self) -> int:
        """Seeds whose arm reached the target at all."""
        return sum(s.arm is not None for s in self.per_seed.values())

    @property
    def score(self) -> float | None:
        """Geometric mean over the seeds with a value, censored ones at their bound (for
        ranking arms against each other, not for reporting); None when no seed has a value."""
        values = [s.value for s in self.per_seed.values() if s.value is not None]
        return float(np.exp(np.mean(np.log(values)))) if values else None


def pool(per_seed: Mapping[int, Speedup], confidence: float = 0.95) -> Pooled:
    """Pool per-seed speedups: an estimate over exact seeds, the censored ones counted and bounded."""
    seeds = dict(sorted(per_seed.items()))
    count = {k: sum(s.status == k for s in seeds.values())
             for k in ("exact", "lower_bound", "upper_bound", "none")}
    exact = [s.value for s in seeds.values() if s.status == "exact"]
    bound = None
    if count["none"] == 0 and (count["lower_bound"] == 0) != (count["upper_bound"] == 0):
        side = "at_most" if count["upper_bound"] else "at_least"
        values = [s.value for s in seeds.values()]
        bound = Bound(side, float(np.exp(np.mean(np.log(values)))))
    return Pooled(seeds, geometric_interval(exact, confidence) if exact else None, len(seeds),
                  count["exact"], count["lower_bound"], count["upper_bound"], count["none"], bound)
