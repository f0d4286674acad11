"""Arms against the baseline and against the best control, target by target, paired by seed.

Pure numpy over igpt.transfer.metrics curves; per-seed speedups are pooled by
igpt.transfer.intervals (geometric mean, t-interval or range, censored seeds counted).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

from igpt.transfer.intervals import Estimate, Pooled, geometric_interval, pool
from igpt.transfer.metrics import Curve, speedup, steps_to_loss

# arm -> seed -> curve
Curves = Mapping[str, Mapping[int, Curve]]


@dataclass(frozen=True)
class StepsToTarget:
    """Steps each seed needed to reach `target` (None: not reached), and their geometric mean
    over the seeds that reached it."""
    target: float
    per_seed: dict[int, float | None]
    n_reached: int
    estimate: Estimate | None


@dataclass(frozen=True)
class TargetResult:
    """One arm at one target against the baseline: the arm's steps to the target, its speedup
    in optimizer steps, and its speedup in total FLOPs counting its source's pretraining
    (None: some run's FLOPs per token are unknown)."""
    target: float
    steps: StepsToTarget
    speedup: Pooled
    flops: Pooled | None


@dataclass(frozen=True)
class ArmResult:
    """One arm against the baseline: at each target, and at each level of the
    speedup-versus-target curve (`curve`, speedup in steps, at Comparison.curve_levels)."""
    arm: str
    seeds: list[int]
    unpaired_seeds: list[int]
    targets: list[TargetResult]
    curve: list[Pooled]


@dataclass(frozen=True)
class Comparison:
    """Every other arm against `baseline`; `targets` and `curve_levels` highest loss first."""
    baseline: str
    targets: list[float]
    curve_levels: list[float]
    baseline_steps: list[StepsToTarget]
    arms: dict[str, ArmResult]


@dataclass(frozen=True)
class Cost:
    """What an arm's runs spend: training FLOPs per token (0: unknown), and the FLOPs spent
    before the run starts (pretraining its source; 0 for scratch)."""
    flops_per_token: float
    pretraining_flops: float

    def x(self, curve: Curve) -> np.ndarray:
        return curve.flops(self.flops_per_token, self.pretraining_flops)


def steps_to_target(curves: Mapping[int, Curve], target: float, confidence: float = 0.95) -> StepsToTarget:
    per_seed = {s: steps_to_loss(c.steps, c.losses, target) for s, c in sorted(curves.items())}
    reached = [v for v in per_seed.values() if v is not None and v > 0]
    return StepsToTarget(target, per_seed, sum(v is not None for v in per_seed.values()),
                         geometric_interval(reached, confidence) if reached else None)


def paired(base: Mapping[int, Curve], arm: Mapping[int, Curve], target: float,
           x: Callable[[Curve], Sequence[float]] = lambda c: c.steps,
           arm_x: Callable[[Curve], Sequence[float]] | None = None, confidence: float = 0.95) -> Pooled:
    """The arm against the baseline at `target`, seed by seed (seeds both have), pooled. `x`
    reads a curve's x (steps by default); `arm_x`, when given, reads the arm's instead."""
    arm_x = arm_x or x
    return pool({s: speedup(x(base[s]), base[s].losses, arm_x(c), c.losses, target)
                 for s, c in arm.items() if s in base}, confidence)


def compare_arms(curves: Curves, baseline: str, targets: Sequence[float],
                 curve_levels: Sequence[float] = (), costs: Mapping[str, Cost] | None = None,
                 confidence: float = 0.95) -> Comparison:
    """Speedup of every arm over `baseline` at each target and curve level, paired by seed.

    `curves[arm][seed]` is that run's reported curve (each arm at its chosen learning rate).
    Speedups are in optimizer steps (pretraining not counted: how fast the target is learned)
    and, where `costs` knows both arms' FLOPs per token, in total FLOPs including the source's
    pretraining (is pretraining worth it end to end?)."""
    if baseline not in curves or not curves[baseline]:
        raise ValueError(f"compare_arms: baseline arm {baseline!r} has no curves (arms: "
                         f"{sorted(curves)}); run the scratch arm or name the baseline")
    levels = sorted((float(t) for t in targets), reverse=True)
    if not levels:
        raise ValueError("compare_arms: targets is empty; pass loss levels")
    base = dict(curves[baseline])
    costs = costs or {}

    def flops(arm: str, by_seed: Mapping[int, Curve], t: float) -> Pooled | None:
        b, a = costs.get(baseline), costs.get(arm)
        if b is None or a is None or b.flops_per_token <= 0 or a.flops_per_token <= 0:
            return None
        return paired(base, by_seed, t, b.x, a.x, confidence)

    arms = {}
    for arm, by_seed in curves.items():
        if arm == baseline:
            continue
        mine = {s: c for s, c in sorted(by_seed.items()) if s in base}
        arms[arm] = ArmResult(
            arm=arm, seeds=sorted(mine), unpaired_seeds=sorted(set(by_seed) - set(base)),
            targets=[TargetResult(t, steps_to_target(mine, t, confidence),
                                  paired(base, mine, t, confidence=confidence), flops(arm, mine, t))
                     for t in levels],
            curve=[paired(base, mine, float(t), confidence=confidence) for t in curve_levels])
    return Comparison(baseline, levels, [float(t) for t in curve_levels],
                      [steps_to_target(base, t, confidence) for t in levels], arms)


@dataclass(frozen=True)
class ControlResult:
    """At one target, the best control arm (the highest speedup over the baseline, ranked by
    Pooled.score) and an arm's speedup over it, paired by seed."""
    target: float
    control: str
    speedup: Pooled


def best_control(comparison: Comparison, controls: Sequence[str], index: int) -> str | None:
    """The control arm with the highest speedup over the baseline at target `index`; None when
    no control arm was compared. Ties go to the first name in sorted order."""
    ranked = [(r.targets[index].speedup.score, a) for a, r in sorted(comparison.arms.items()) if a in controls]
    if not ranked:
        return None
    return max(ranked, key=lambda sa: (sa[0] is not None, sa[0] or 0.0))[1]  # max keeps the first


def against_best_control(curves: Curves, comparison: Comparison, controls: Sequence[str],
                         confidence: float = 0.95) -> dict[str, list[ControlResult]]:
    """Every arm that is neither the baseline nor a control, against the best control at each
    target (empty when no control arm ran): a transfer claim must beat what a control explains."""
    best = [best_control(comparison, controls, i) for i in range(len(comparison.targets))]
    if any(b is None for b in best):
        return {}
    return {arm: [ControlResult(t, c, paired(curves[c], curves[arm], t, confidence=confidence))
                  for t, c in zip(comparison.targets, best)]
            for arm in comparison.arms if arm not in controls}
