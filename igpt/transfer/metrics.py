"""Transfer metrics on loss curves: how much sooner a pretrained model reaches a loss.

Pure numpy over (x, loss) curves, so reports run on a laptop without jax. x is optimizer
steps or tokens seen: every function that takes a curve works on either. Units of loss do
not matter as long as curves and targets share them (the report uses bits/token).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Mapping, Sequence

import numpy as np

from igpt.transfer.arms import SCRATCH

SpeedupStatus = Literal["exact", "lower_bound", "at_start", "not_reached"]


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


@dataclass(frozen=True)
class Speedup:
    """baseline x-to-target / transfer x-to-target, to be read with `status`.

    exact:       both curves crossed the target between evals; value is the ratio.
    lower_bound: the true speedup is at least `value`: the baseline never reached the target
                 (it needs more than its last x), or the transfer curve was already below it
                 at its first eval (it got there by then; trainers need not eval at step 0).
    at_start:    the baseline was already at the target at its first point, or the transfer
                 curve at x = 0: the crossing is not observed, so there is no ratio (the
                 target is too easy: pick a lower one).
    not_reached: the transfer curve never reached the target; value is None.
    `baseline` and `transfer` are the x-to-target of each curve (None: never reached)."""
    status: SpeedupStatus
    value: float | None
    baseline: float | None
    transfer: float | None


def speedup(base_steps: Sequence[float], base_losses: Sequence[float], steps: Sequence[float],
            losses: Sequence[float], target: float) -> Speedup:
    """How many times fewer steps (or tokens) the transfer curve needs to reach `target`."""
    b = steps_to_loss(base_steps, base_losses, target)
    t = steps_to_loss(steps, losses, target)
    if t is None:
        return Speedup("not_reached", None, b, None)
    if base_losses[0] <= target or t <= 0:
        return Speedup("at_start", None, b, t)
    if b is None:
        return Speedup("lower_bound", float(base_steps[-1]) / t, None, t)
    return Speedup("lower_bound" if losses[0] <= target else "exact", b / t, b, t)


def default_targets(scratch_losses: Sequence[Sequence[float]], n: int = 4,
                    early_fraction: float = 0.2) -> list[float]:
    """n loss levels, highest first, that every scratch seed reaches.

    `scratch_losses` holds one eval-loss curve per scratch seed (eval points evenly spaced in
    steps). The lowest level is the *highest* final loss among seeds, so that every scratch
    seed reaches every level and each paired speedup is a ratio, not a bound. The highest
    level is the seed-mean loss at `early_fraction` (20%) of each curve's eval points: past the
    first rapid drop, where steps-to-target mostly measures warm-up, yet early enough to show
    whether transfer helps at the start. Levels in between are evenly spaced. If the curves
    have not fallen between those points (one eval so far, or a flat run), only the final
    level is returned."""
    curves = [np.asarray(c, dtype=float) for c in scratch_losses]
    if not curves or any(c.ndim != 1 or c.size == 0 for c in curves):
        raise ValueError("default_targets: scratch_losses must be a non-empty list of non-empty "
                         "1-D loss curves, one per scratch seed")
    if n < 1 or not 0.0 <= early_fraction < 1.0:
        raise ValueError(f"default_targets: need n >= 1 and 0 <= early_fraction < 1, got n={n}, "
                         f"early_fraction={early_fraction}")
    low = max(float(c[-1]) for c in curves)
    high = float(np.mean([c[int(round(early_fraction * (c.size - 1)))] for c in curves]))
    if n == 1 or not high > low:
        return [low]
    return [float(v) for v in np.linspace(high, low, n)]


@dataclass(frozen=True)
class EffectiveData:
    """Effective data transferred (Hernandez et al. 2021, "Scaling Laws for Transfer").

    D_E (`effective_tokens`): tokens a from-scratch model needs to reach the fine-tuned
    model's `loss`; D_F (`fine_tuning_tokens`): tokens the fine-tuned model saw;
    D_T (`transferred_tokens`) = D_E - D_F, what pretraining was worth in target tokens
    (negative: pretraining hurt); `fraction` = D_T / D_E (None when D_E is 0).
    `reached` False: scratch never got down to `loss`, so D_E exceeds scratch's last token
    count and D_E, D_T and `fraction` are lower bounds. (If scratch's first eval is already
    at or below `loss`, D_E is that eval's token count, an upper bound; D_T is then about
    -D_F, strongly negative, either way.)"""
    loss: float
    fine_tuning_tokens: float
    effective_tokens: float
    transferred_tokens: float
    fraction: float | None
    reached: bool


def effective_data_transferred(scratch_tokens: Sequence[float], scratch_losses: Sequence[float],
                               ft_tokens: Sequence[float], ft_losses: Sequence[float]) -> EffectiveData:
    """D_E, D_T and D_T/D_E at the end of fine-tuning (`ft_tokens` counts this run's tokens)."""
    _xy(ft_tokens, ft_losses, "effective_data_transferred (fine-tuned curve)")
    if not np.isfinite(ft_losses[-1]):
        raise ValueError("effective_data_transferred: the fine-tuned curve's final loss is not "
                         "finite (the run diverged); leave it out")
    loss, d_f = float(ft_losses[-1]), float(ft_tokens[-1])
    d_e = steps_to_loss(scratch_tokens, scratch_losses, loss)
    reached = d_e is not None
    if d_e is None:
        d_e = float(scratch_tokens[-1])
    return EffectiveData(loss=loss, fine_tuning_tokens=d_f, effective_tokens=d_e,
                         transferred_tokens=d_e - d_f,
                         fraction=(d_e - d_f) / d_e if d_e > 0 else None, reached=reached)


def bootstrap_interval(values: Sequence[float], confidence: float = 0.95, n_resamples: int = 10000,
                       seed: int = 0) -> tuple[float, float, float]:
    """(mean, lo, hi): percentile-bootstrap interval of the mean over seeds, deterministic.

    With the handful of seeds a transfer sweep affords, the interval is rough (it tends to
    be too narrow); it says how much the seeds disagree, not a guarantee."""
    v = np.asarray(values, dtype=float)
    if v.ndim != 1 or v.size == 0 or not np.all(np.isfinite(v)):
        raise ValueError(f"bootstrap_interval: values must be a non-empty list of finite numbers, "
                         f"got {list(values)!r}; drop seeds that did not reach the target")
    if not 0.0 < confidence < 1.0 or n_resamples < 1:
        raise ValueError(f"bootstrap_interval: need 0 < confidence < 1 and n_resamples >= 1, got "
                         f"{confidence}, {n_resamples}")
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, size=(n_resamples, v.size))].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    mean = float(v.mean())
    return mean, min(float(lo), mean), max(float(hi), mean)


@dataclass(frozen=True)
class LrScore:
    """One learning rate of one arm: mean final loss over its seeds (None: a seed diverged)."""
    lr: float
    mean_final: float | None
    n_seeds: int


@dataclass(frozen=True)
class LrChoice:
    """The chosen rate of an arm and the score of every rate tried, for the report."""
    lr: float
    scores: list[LrScore]


def select_best_lr(final_losses: Mapping[str, Mapping[float, Sequence[float]]]) -> dict[str, LrChoice]:
    """Per arm, the learning rate with the lowest mean final eval loss over seeds.

    `final_losses[arm][lr]` lists the final eval loss of each seed. Each arm is compared at
    its own best rate: a single shared rate can fake or hide transfer (the reanalysis of the
    Frozen Pretrained Transformer). A rate with a non-finite final loss (diverged) scores
    worst; ties go to the smaller rate."""
    choices: dict[str, LrChoice] = {}
    for arm, by_lr in final_losses.items():
        scores = []
        for lr, finals in sorted(by_lr.items()):
            if len(finals) == 0:
                raise ValueError(f"select_best_lr: arm {arm!r} lr {lr} has no final losses; "
                                 "leave out rates with no finished evals")
            f = np.asarray(finals, dtype=float)
            scores.append(LrScore(float(lr), float(f.mean()) if np.all(np.isfinite(f)) else None,
                                  int(f.size)))
        if not scores:
            raise ValueError(f"select_best_lr: arm {arm!r} has no learning rates")
        best = min(scores, key=lambda s: (s.mean_final is None, s.mean_final or 0.0, s.lr))
        choices[arm] = LrChoice(best.lr, scores)
    return choices


@dataclass(frozen=True)
class Curve:
    """One run's eval curve: losses at optimizer steps, with the tokens seen by then."""
    steps: Sequence[float]
    tokens: Sequence[float]
    losses: Sequence[float]

    def __post_init__(self) -> None:
        _xy(self.steps, self.losses, "Curve (steps)")
        _xy(self.tokens, self.losses, "Curve (tokens)")


@dataclass(frozen=True)
class Interval:
    """Mean over seeds with its bootstrap interval; n seeds contributed."""
    mean: float
    lo: float
    hi: float
    n: int


@dataclass(frozen=True)
class StepsToTarget:
    """Steps each seed needed to reach `target` (None: not reached), and their mean."""
    target: float
    per_seed: dict[int, float | None]
    n_reached: int
    interval: Interval | None


@dataclass(frozen=True)
class TargetResult:
    """One transfer arm at one target, paired with the baseline seed by seed.

    `interval` averages the seeds with a value (exact or lower bound); `lower_bound` says
    some of those were bounds, making the mean a bound too. Seeds that never reached the
    target are left out of the mean and counted by `n_reached` against `n_seeds`."""
    target: float
    steps: StepsToTarget
    speedups: dict[int, Speedup]
    n_seeds: int
    n_reached: int
    interval: Interval | None
    lower_bound: bool


@dataclass(frozen=True)
class ArmResult:
    """Speedups per target and D_T at the end of fine-tuning (per seed; None: diverged)."""
    arm: str
    seeds: list[int]
    unpaired_seeds: list[int]
    targets: list[TargetResult]
    effective_data: dict[int, EffectiveData | None]
    transferred: Interval | None
    fraction: Interval | None
    effective_lower_bound: bool


@dataclass(frozen=True)
class Comparison:
    """Every transfer arm against `baseline`; `targets` highest loss first."""
    baseline: str
    targets: list[float]
    baseline_steps: list[StepsToTarget]
    arms: dict[str, ArmResult]


def _interval(values: list[float], confidence: float, n_resamples: int) -> Interval | None:
    if not values:
        return None
    return Interval(*bootstrap_interval(values, confidence, n_resamples), n=len(values))


def _steps_to_target(curves: Mapping[int, Curve], target: float, confidence: float,
                     n_resamples: int) -> StepsToTarget:
    per_seed = {s: steps_to_loss(c.steps, c.losses, target) for s, c in sorted(curves.items())}
    reached = [v for v in per_seed.values() if v is not None]
    return StepsToTarget(target, per_seed, len(reached), _interval(reached, confidence, n_resamples))


def compare_arms(curves: Mapping[str, Mapping[int, Curve]], baseline: str = SCRATCH,
                 targets: Sequence[float] | None = None, confidence: float = 0.95,
                 n_resamples: int = 10000) -> Comparison:
    """Speedup of every arm over `baseline` at each target, paired by seed, plus D_T.

    `curves[arm][seed]` is that run's eval curve (each arm at its chosen learning rate).
    `targets` default to `default_targets` of the baseline. Speedups are in optimizer steps;
    pretraining steps are not counted (the question is how fast the target is learned)."""
    if baseline not in curves or not curves[baseline]:
        raise ValueError(f"compare_arms: baseline arm {baseline!r} has no curves (arms: "
                         f"{sorted(curves)}); run the scratch arm or name the baseline")
    base = dict(curves[baseline])
    levels = sorted((float(t) for t in (targets if targets is not None else
                     default_targets([c.losses for c in base.values()]))), reverse=True)
    if not levels:
        raise ValueError("compare_arms: targets is empty; pass loss levels or None for defaults")
    arms: dict[str, ArmResult] = {}
    for arm, by_seed in curves.items():
        if arm == baseline:
            continue
        paired = {s: c for s, c in sorted(by_seed.items()) if s in base}
        results = []
        for t in levels:
            sp = {s: speedup(base[s].steps, base[s].losses, c.steps, c.losses, t)
                  for s, c in paired.items()}
            valued = [x for x in sp.values() if x.value is not None]
            results.append(TargetResult(
                target=t, steps=_steps_to_target(paired, t, confidence, n_resamples), speedups=sp,
                n_seeds=len(paired), n_reached=sum(x.transfer is not None for x in sp.values()),
                interval=_interval([x.value for x in valued], confidence, n_resamples),
                lower_bound=any(x.status == "lower_bound" for x in valued)))
        eff = {s: (effective_data_transferred(base[s].tokens, base[s].losses, c.tokens, c.losses)
                   if np.isfinite(c.losses[-1]) else None) for s, c in paired.items()}
        known = [e for e in eff.values() if e is not None]
        arms[arm] = ArmResult(
            arm=arm, seeds=sorted(paired), unpaired_seeds=sorted(set(by_seed) - set(base)),
            targets=results, effective_data=eff,
            transferred=_interval([e.transferred_tokens for e in known], confidence, n_resamples),
            fraction=_interval([e.fraction for e in known if e.fraction is not None], confidence,
                               n_resamples),
            effective_lower_bound=any(not e.reached for e in known))
    return Comparison(baseline=baseline, targets=levels,
                      baseline_steps=[_steps_to_target(base, t, confidence, n_resamples)
                                      for t in levels],
                      arms=arms)
