"""What an experiment's runs say: each arm at its best rate against scratch and against the best
control, by seed, and what the headline can claim.

Selection (learning rates, early stopping) reads validation curves; targets are levels of the
reported (test) curves of scratch seeds held out of every comparison; every reported
speedup reads test curves (runs with one "eval" split use it for both, and the report says so).
Typed results from igpt.transfer.{metrics, intervals, comparison} all the way to the JSON
boundary (publish.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from igpt.transfer.arms import SCRATCH
from igpt.transfer.comparison import (Comparison, ControlResult, Cost, against_best_control,
                                      compare_arms)
from igpt.transfer.intervals import MIN_SEEDS_FOR_T, Bound, Estimate, Pooled
from igpt.transfer.metrics import LrChoice, curve_levels, early_stopped, select_best_lr, target_levels
from igpt.transfer.report.collect import Experiment, Run

# run.json "mode" of the control arms: what a transfer arm must beat (the statistics of the
# source's weights, its unigram statistics, a structured init, a frozen random body).
CONTROL_MODES = ("stats_init", "shuffled_source", "mimetic", "frozen_random")

# given: report.targets (fixed in advance); held_out: from scratch seeds no comparison uses;
# provisional: from the compared scratch seeds themselves (descriptive only).
TargetSource = Literal["given", "held_out", "provisional"]
Verdict = Literal["transfer", "negative", "no_evidence", "no_claim"]


@dataclass(frozen=True)
class Claim:
    """What an arm's headline supports: "transfer" (the 95% t-intervals of its speedup over
    scratch and over the best control both lie above 1), "negative" (over scratch, below 1),
    "no_evidence" (otherwise), or "no_claim", with `reasons` saying why nothing can be said."""
    verdict: Verdict
    reasons: list[str]


@dataclass(frozen=True)
class Headline:
    """One arm at the hardest target (the lowest loss; never an easier one chosen afterwards).

    `estimate` is its speedup over scratch in steps over the exact seeds (None: no seed gave a
    ratio); `n_reached` seeds of `n_seeds` brought the arm to the target, `n_censored` have
    only a bound, and `bound` bounds the all-seed mean. `flops` is the speedup in total FLOPs
    counting the source's pretraining (None: unknown); `vs_control` the speedup over the best
    control `control`; `claim` None for a control arm."""
    target_bits: float
    target_source: TargetSource
    estimate: Estimate | None
    n_seeds: int
    n_reached: int
    n_exact: int
    n_censored: int
    bound: Bound | None
    flops: Estimate | None
    control: str | None
    vs_control: Estimate | None
    claim: Claim | None


@dataclass
class Analysis:
    """One experiment, analysed. `choice` is each arm's learning rate; `chosen` its compared runs
    at that rate with test metrics, by seed; `held_out` the scratch seeds kept for targets;
    `comparison` is None until scratch has test metrics; `vs_control` each transfer arm against
    the best control per target (empty without controls)."""
    experiment: Experiment
    choice: dict[str, LrChoice]
    chosen: dict[str, dict[int, Run]]
    held_out: dict[int, Run]
    targets: list[float]
    target_source: TargetSource | None
    controls: list[str]
    comparison: Comparison | None
    vs_control: dict[str, list[ControlResult]]
    one_split: bool
    notes: list[str] = field(default_factory=list)

    @property
    def levels(self) -> list[float]:
        """The target losses, highest first (none without a comparison)."""
        return self.comparison.targets if self.comparison else []

    @property
    def report_split(self) -> str:
        return "eval" if self.one_split else "test"

    @property
    def several_lrs(self) -> bool:
        return any(len(by_lr) > 1 for by_lr in self.experiment.grid.values())

    @property
    def edge_arms(self) -> list[str]:
        """Arms whose best rate is the smallest or largest of their grid."""
        return [arm for arm, c in sorted(self.choice.items()) if c.at_edge]

    def claim_reasons(self, arm: str, pooled: Pooled, control: ControlResult | None) -> list[str]:
        """Why the arm's headline cannot support a transfer claim (none: it can)."""
        reasons = []
        if self.target_source == "provisional":
            reasons.append("the targets come from the compared scratch seeds (set report.targets "
                           "or hold out scratch seeds)")
        if self.one_split:
            reasons.append("selection and reporting share one eval split")
        if not self.several_lrs:
            reasons.append("every arm ran one learning rate; a shared rate can fake or hide "
                           "transfer (Rothermel et al. 2021)")
        edge = [a for a in self.edge_arms if a in (arm, SCRATCH, control and control.control)]
        if edge:
            reasons.append(f"at the edge of its learning-rate grid: {', '.join(edge)}")
        for name, p in ((SCRATCH, pooled),) + (((control.control, control.speedup),) if control else ()):
            if p.n_exact < MIN_SEEDS_FOR_T:
                reasons.append(f"{p.n_exact} seeds give a ratio over {name} (a 95% interval needs "
                               f"{MIN_SEEDS_FOR_T})")
            if p.n_seeds - p.n_exact:
                reasons.append(f"{p.n_seeds - p.n_exact}/{p.n_seeds} seeds against {name} are "
                               "censored or have no ratio")
        if control is None:
            reasons.append(f"no control arm ran (modes {', '.join(CONTROL_MODES)})")
        return reasons

    def claim(self, arm: str, pooled: Pooled, control: ControlResult | None) -> Claim:
        reasons = self.claim_reasons(arm, pooled, control)
        if reasons:
            return Claim("no_claim", reasons)
        scratch, best = pooled.estimate, control.speedup.estimate
        if scratch.lo > 1.0 and best.lo > 1.0:
            return Claim("transfer", [])
        return Claim("negative" if scratch.hi < 1.0 else "no_evidence", [])

    @property
    def headlines(self) -> dict[str, Headline]:
        if self.comparison is None:
            return {}
        out = {}
        for arm, r in self.comparison.arms.items():
            t = r.targets[-1]
            p = t.speedup
            control = self.vs_control[arm][-1] if arm in self.vs_control else None
            out[arm] = Headline(
                target_bits=t.target, target_source=self.target_source, estimate=p.estimate,
                n_seeds=p.n_seeds, n_reached=p.n_arm_reached, n_exact=p.n_exact,
                n_censored=p.n_censored, bound=p.bound, flops=t.flops and t.flops.estimate,
                control=control and control.control, vs_control=control and control.speedup.estimate,
                claim=None if arm in self.controls else self.claim(arm, p, control))
        return out


def _cost(exp: Experiment, arm: str, runs: list[Run]) -> Cost | None:
    """An arm's FLOPs per token (run.json) and what it spent before its target runs: its
    source's pretraining (Experiment.pretraining_flops) plus any bridge stage's tokens x FLOPs
    per token; None when unknown: 0 per token, seeds that differ, or a cost before unknown."""
    per_token = {r.flops_per_token for r in runs}
    names = {r.info.get("source") for r in runs}
    if len(per_token) != 1 or len(names) != 1 or min(per_token) <= 0:
        return None
    (name,) = names
    if name is None:
        return Cost(min(per_token), 0.0)
    before = [exp.pretraining_flops(name)] + [r.tokens_seen * r.flops_per_token for r in exp.stage_runs(arm)]
    return Cost(min(per_token), sum(before)) if all(before) else None


def _choose_targets(given: list[float] | None, held_out: dict[int, Run],
                    scratch: dict[int, Run]) -> tuple[list[float], TargetSource | None]:
    if given is not None:
        return sorted(given, reverse=True), "given"
    held = [r.test.losses for r in held_out.values() if r.test is not None]  # the split speedups are read on
    if held:
        return target_levels(held), "held_out"
    compared = [r.test.losses for r in scratch.values() if r.test is not None]
    if compared:
        return target_levels(compared), "provisional"
    return [], None


def choose_rates(exp: Experiment) -> dict[str, LrChoice]:
    """Each arm's learning rate: the lowest mean early-stopped validation loss over the seeds
    that chose rates (experiment.json "lr_seeds"; when none are listed, every compared seed).
    The experiment runner calls this too, to run its remaining seeds at the chosen rates."""
    held = set(exp.held_out_seeds)
    deciders = {int(s) for s in exp.meta.get("lr_seeds") or ()}
    votes = lambda arm, seed: seed in deciders if deciders else arm != SCRATCH or seed not in held
    losses = {arm: {lr: [early_stopped(r.validation.losses) for s, r in seeds.items()
                         if r.validation and votes(arm, s)] for lr, seeds in by_lr.items()}
              for arm, by_lr in exp.grid.items()}
    return select_best_lr({a: {lr: v for lr, v in by_lr.items() if v} for a, by_lr in losses.items()
                           if any(by_lr.values())})


def analyse(exp: Experiment, targets: list[float] | None) -> Analysis:
    """Each arm at its best learning rate on validation (choose_rates), targets from
    `targets` (bits/token), else held-out scratch seeds, else (provisionally) the compared
    scratch seeds; then every arm against scratch and against the best control on test."""
    held = set(exp.held_out_seeds)
    compared = {arm: {lr: {s: r for s, r in seeds.items() if arm != SCRATCH or s not in held}
                      for lr, seeds in by_lr.items()} for arm, by_lr in exp.grid.items()}
    choice = choose_rates(exp)
    listed = [str(a) for a in exp.meta.get("arms", [])]
    order = sorted(choice, key=lambda a: (listed.index(a) if a in listed else len(listed), a))
    chosen = {arm: {s: r for s, r in sorted(compared[arm][choice[arm].lr].items()) if r.test is not None}
              for arm in order}
    scratch_lr = choice[SCRATCH].lr if SCRATCH in choice else None
    held_out = {s: r for s, r in exp.grid.get(SCRATCH, {}).get(scratch_lr, {}).items() if s in held}
    levels, source = _choose_targets(targets, held_out, chosen.get(SCRATCH, {}))
    one_split = any(r.one_split for by_lr in exp.grid.values() for seeds in by_lr.values()
                    for r in seeds.values())
    controls = sorted(arm for arm, runs in chosen.items()
                      if any(r.info.get("mode") in CONTROL_MODES for r in runs.values()))
    notes: list[str] = []
    if held and not held_out and scratch_lr is not None:
        notes.append(f"Held-out scratch seeds {sorted(held)} have no test metrics at "
                     f"scratch's chosen rate ({scratch_lr:g}): targets do not come from them.")
    if not chosen.get(SCRATCH) or not levels:
        notes.append(f"No speedups yet: the baseline arm {SCRATCH!r} has no test and validation metrics.")
        return Analysis(exp, choice, chosen, held_out, levels, source, controls, None, {}, one_split, notes)
    costs = {arm: c for arm, runs in chosen.items() if (c := _cost(exp, arm, list(runs.values())))}
    unknown = set(chosen) - set(costs)
    if unknown:
        notes.append(f"No FLOPs speedup for {', '.join(sorted(unknown))}: run.json lacks flops_per_token, "
                     "or the FLOPs of the source's pretraining (an imported donor's are not known) or of "
                     "its bridge stage are unknown.")
    curves = {arm: {s: r.test for s, r in runs.items()} for arm, runs in chosen.items() if runs}
    scratch_test = [r.test.losses for r in chosen[SCRATCH].values() if r.test]
    comparison = compare_arms(curves, SCRATCH, levels,
                              curve_levels(scratch_test, levels) if scratch_test else levels, costs)
    return Analysis(exp, choice, chosen, held_out, comparison.targets, source, controls, comparison,
                    against_best_control(curves, comparison, controls), one_split, notes)
