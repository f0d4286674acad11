"""Transfer metrics on loss curves: how much sooner a pretrained model reaches a loss.

Pure numpy over (x, loss) curves, so reports run on a laptop without jax. x is optimizer
steps, tokens seen or FLOPs spent: every function that takes a curve works on any. Units of
loss do not matter as long as curves and targets share them (the report uses bits/token).
Pooling per-seed ratios lives in igpt.transfer.intervals, arms against arms in
igpt.transfer.comparison.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from igpt.transfer.intervals import Speedup


def _xy(xs: Sequence[float], losses: Sequence[float], name: str) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(xs, dtype=float)
    y = np.asarray(losses, dtype=float)
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(f"{name}: x and losses must be 1-D and of equal length, got shapes "
                         f"{x.shape} and {y.shape}; pass one curve")
    if x.size == 0:
        raise ValueError(f"{name}: empty curve; leave out runs with no eval records")
    if np.any(np.diff(x) <= 0):
        raise ValueError(f"{name}: x must be strictly increasing; pass one curve sorted by "
                         "step, each step once (metrics.read_metrics does this)")
    return x, y


def steps_to_loss(steps: Sequence[float], losses: Sequence[float], target: float) -> float | None:
    """First x where the curve reaches `target`, linearly interpolated; None if never.

    Interpolates between the last point above the target and the first at/below it, so a
    coarse eval grid does not round the answer up to the next eval. Never extrapolates past
    the last point. A NaN loss (a diverged run) never counts as reaching."""
    x, y = _xy(steps, losses, "steps_to_loss")
    hits = np.flatnonzero(y <= target)
    if hits.size == 0:
        return None
    i = int(hits[0])
    if i == 0 or not np.isfinite(y[i - 1]):
        return float(x[i])
    frac = (y[i - 1] - target) / (y[i - 1] - y[i])
    return float(x[i - 1] + frac * (x[i] - x[i - 1]))


def speedup(base_x: Sequence[float], base_losses: Sequence[float], x: Sequence[float],
            losses: Sequence[float], target: float) -> Speedup:
    """How many times less x (steps, tokens, FLOPs) the arm's curve needs to reach `target`.

    A curve already at the target at its first point crossed it at some x at or before that
    point, so its x-to-target is an upper bound; one that never reaches it needs more than
    its last x. The ratio is exact when both crossings were seen between evals, a
    lower_bound (upper_bound) when only the arm's (the baseline's) could be placed, and none
    when neither, or when a curve is at the target at x = 0 (no ratio: the target is too easy)."""
    b, t = steps_to_loss(base_x, base_losses, target), steps_to_loss(x, losses, target)
    if b == 0.0 or t == 0.0 or (b is None and t is None):
        return Speedup("none", None, b, t)
    if t is None:                                  # the arm needs more than its last x
        return Speedup("upper_bound", b / float(x[-1]), b, None)
    if b is None:                                  # the baseline needs more than its last x
        return Speedup("lower_bound", float(base_x[-1]) / t, None, t)
    base_early, arm_early = base_losses[0] <= target, losses[0] <= target
    if base_early and arm_early:
        return Speedup("none", None, b, t)
    status = "upper_bound" if base_early else "lower_bound" if arm_early else "exact"
    return Speedup(status, b / t, b, t)


def _at_fraction(curves: list[np.ndarray], fraction: float) -> float:
    """Seed-mean loss at `fraction` of each curve's evals."""
    return float(np.mean([c[int(round(fraction * (c.size - 1)))] for c in curves]))


def _curves(losses: Sequence[Sequence[float]], name: str) -> list[np.ndarray]:
    curves = [np.asarray(c, dtype=float) for c in losses]
    if not curves or any(c.ndim != 1 or c.size == 0 for c in curves):
        raise ValueError(f"{name}: pass a non-empty list of non-empty 1-D loss curves, one per seed")
    return curves


def _levels(high: float, low: float, n: int) -> list[float]:
    if n < 1:
        raise ValueError(f"need n >= 1 target levels, got {n}")
    if n == 1 or not high > low:
        return [low]
    return [float(v) for v in np.linspace(high, low, n)]


def target_levels(scratch_losses: Sequence[Sequence[float]], n: int = 4,
                  fractions: tuple[float, float] = (0.2, 0.6)) -> list[float]:
    """n loss levels, highest first, from scratch test curves (evals evenly spaced): the
    seed-mean loss from 20% to 60% of the budget, evenly spaced. A typical scratch seed crosses
    the hardest with 40% of its budget to spare, so slower seeds and arms up to ~1.6x slower
    still reach it, and the headline rests on exact ratios, not censored ones (a level at a
    seed's final loss is missed by some of 5 compared seeds most of the time). From held-out
    seeds they are a fixed target for the compared ones; from the compared seeds themselves
    they are descriptive, not a claim. A flat or one-eval curve gives one level."""
    curves = _curves(scratch_losses, "target_levels")
    return _levels(_at_fraction(curves, fractions[0]), _at_fraction(curves, fractions[1]), n)


def curve_levels(scratch_losses: Sequence[Sequence[float]], targets: Sequence[float], n: int = 12,
                 early_fraction: float = 0.2) -> list[float]:
    """n evenly spaced levels, highest first, for the speedup-versus-target curve: from the
    scratch seeds' mean loss early on (or the highest target, if higher) down to their mean
    final loss (or the lowest target, if lower), so every target lies on the curve."""
    curves = _curves(scratch_losses, "curve_levels")
    high = max([_at_fraction(curves, early_fraction), *targets])
    low = min([float(np.mean([c[-1] for c in curves])), *targets])
    return _levels(high, low, n)


def early_stopped(losses: Sequence[float]) -> float | None:
    """The lowest validation loss of a run (its loss with early stopping); None if it diverged
    (its last loss is not finite)."""
    y = np.asarray(losses, dtype=float)
    return float(np.nanmin(y)) if y.size and np.isfinite(y[-1]) else None


@dataclass(frozen=True)
class LrScore:
    """One learning rate of one arm: mean early-stopped validation loss over its seeds (None:
    a seed diverged)."""
    lr: float
    mean_loss: float | None
    n_seeds: int


@dataclass(frozen=True)
class LrChoice:
    """The chosen rate of an arm, the score of every rate tried, and whether the chosen rate is
    the smallest or largest of two or more (`at_edge`: the optimum may lie outside the grid)."""
    lr: float
    scores: list[LrScore]
    at_edge: bool


def select_best_lr(losses: Mapping[str, Mapping[float, Sequence[float | None]]]) -> dict[str, LrChoice]:
    """Per arm, the learning rate with the lowest mean early-stopped validation loss.

    `losses[arm][lr]` lists each seed's early-stopped validation loss (None: diverged). Each
    arm is compared at its own best rate: a single shared rate can fake or hide transfer
    (Rothermel et al. 2021). A rate with a diverged seed scores worst; ties go to the smaller
    rate. With one rate there is no choice, and nothing is at an edge."""
    choices: dict[str, LrChoice] = {}
    for arm, by_lr in losses.items():
        scores = []
        for lr, per_seed in sorted(by_lr.items()):
            if len(per_seed) == 0:
                raise ValueError(f"select_best_lr: arm {arm!r} lr {lr} has no losses; leave out "
                                 "rates with no finished evals")
            finite = all(v is not None and np.isfinite(v) for v in per_seed)
            scores.append(LrScore(float(lr), float(np.mean(per_seed)) if finite else None, len(per_seed)))
        if not scores:
            raise ValueError(f"select_best_lr: arm {arm!r} has no learning rates")
        best = min(scores, key=lambda s: (s.mean_loss is None, s.mean_loss or 0.0, s.lr))
        choices[arm] = LrChoice(best.lr, scores, len(scores) > 1 and best.lr in (scores[0].lr, scores[-1].lr))
    return choices


@dataclass(frozen=True)
class Curve:
    """One run's curve on one split: losses at optimizer steps, with the tokens seen by then."""
    steps: Sequence[float]
    tokens: Sequence[float]
    losses: Sequence[float]

    def __post_init__(self) -> None:
        _xy(self.steps, self.losses, "Curve (steps)")
        _xy(self.tokens, self.losses, "Curve (tokens)")

    def flops(self, flops_per_token: float, before: float = 0.0) -> np.ndarray:
        """Total training FLOPs spent by each eval: `before` (a source's pretraining) plus
        this run's tokens times its FLOPs per token."""
        return before + flops_per_token * np.asarray(self.tokens, dtype=float)
