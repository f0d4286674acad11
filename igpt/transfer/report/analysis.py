"""What an experiment's runs say: each arm at its best rate, compared with scratch by seed.

Typed results from igpt.transfer.metrics all the way to the JSON boundary (publish.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from igpt.transfer.arms import SCRATCH
from igpt.transfer.metrics import ArmResult, Comparison, Interval, LrChoice, compare_arms, select_best_lr
from igpt.transfer.report.collect import Experiment, Run


@dataclass(frozen=True)
class Headline:
    """One arm in one line: its speedup at the hardest target every seed reached.

    `at_hardest` False: some seeds reached the hardest target (`hardest_bits`) and some did
    not, so the headline rests on an easier one; `hardest_n_reached` says how many did.
    `reached` False: not even that (speedup, lo and hi are None)."""
    target_bits: float
    reached: bool
    speedup: float | None
    lo: float | None
    hi: float | None
    lower_bound: bool
    n_reached: int
    n_seeds: int
    at_hardest: bool
    hardest_bits: float
    hardest_n_reached: int
    transferred_tokens: Interval | None
    transferred_fraction: Interval | None
    transferred_lower_bound: bool


def headline_of(arm: ArmResult) -> Headline:
    """The arm at the hardest target that every seed reached (scratch's final loss, by default,
    when they all did), so a headline never rests on the few seeds that got furthest."""
    hardest = arm.targets[-1]
    all_seeds = [r for r in arm.targets if r.interval is not None and r.n_reached == r.n_seeds]
    r = all_seeds[-1] if all_seeds else hardest
    iv = r.interval
    return Headline(
        target_bits=r.target, reached=iv is not None, speedup=iv.mean if iv else None,
        lo=iv.lo if iv else None, hi=iv.hi if iv else None, lower_bound=r.lower_bound,
        n_reached=r.n_reached, n_seeds=r.n_seeds, at_hardest=r is hardest,
        hardest_bits=hardest.target, hardest_n_reached=hardest.n_reached,
        transferred_tokens=arm.transferred, transferred_fraction=arm.fraction,
        transferred_lower_bound=arm.effective_lower_bound)


@dataclass
class Analysis:
    """One experiment, analysed. `choice` is each arm's learning rate, `chosen` its runs with
    eval metrics at that rate by seed; `comparison` is None until scratch has eval metrics."""
    experiment: Experiment
    choice: dict[str, LrChoice]
    chosen: dict[str, dict[int, Run]]
    comparison: Comparison | None
    several_lrs: bool
    targets_given: bool
    notes: list[str] = field(default_factory=list)

    @property
    def levels(self) -> list[float]:
        """The target losses, highest first (none without a comparison)."""
        return self.comparison.targets if self.comparison else []

    @property
    def headlines(self) -> dict[str, Headline]:
        arms = self.comparison.arms if self.comparison else {}
        return {a: headline_of(r) for a, r in arms.items()}


def analyse(exp: Experiment, targets: list[float] | None) -> Analysis:
    """Each arm at its best learning rate, then every arm against scratch at `targets`
    (bits/token; default: igpt.transfer.metrics.default_targets of scratch)."""
    finals = {arm: {lr: [r.eval.losses[-1] for r in seeds.values() if r.eval is not None]
                    for lr, seeds in by_lr.items()} for arm, by_lr in exp.grid.items()}
    finals = {arm: {lr: f for lr, f in by_lr.items() if f} for arm, by_lr in finals.items()}
    choice = select_best_lr({a: f for a, f in finals.items() if f})
    chosen = {arm: {s: r for s, r in exp.grid[arm][c.lr].items() if r.eval is not None}
              for arm, c in choice.items()}
    several_lrs = any(len(by_lr) > 1 for by_lr in exp.grid.values())
    comparison, notes = None, []
    if chosen.get(SCRATCH):
        curves = {arm: {s: r.eval for s, r in seeds.items()} for arm, seeds in chosen.items()}
        comparison = compare_arms(curves, SCRATCH, targets)
    else:
        notes.append(f"No speedups yet: the baseline arm {SCRATCH!r} has no eval metrics.")
    return Analysis(exp, choice, chosen, comparison, several_lrs, targets is not None, notes)
