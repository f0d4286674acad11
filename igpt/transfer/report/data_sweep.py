"""A data-size sweep's effective data transferred (Hernandez et al. 2021), from metrics files.

Each target run trained on a prefix of the train split (run.json "train_examples", and
"train_tokens": D) with early stopping; its result is its test loss at its lowest validation
loss. At each size, each arm is taken at its own rate (analysis.choose_rates on that size's
runs). Scratch's results over every size, per seed, give its loss-versus-data curve; an arm's
result at D_F inverts it to D_E (igpt.transfer.effective_data), paired by seed.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from igpt.transfer.arms import SCRATCH
from igpt.transfer.effective_data import (PooledEffectiveData, ScratchFits, TransferLaw,
                                          effective_data_seeds, fit_scratch, transfer_law)
from igpt.transfer.report.analysis import choose_rates
from igpt.transfer.report.collect import Experiment, Run


def optimum_test_bits(run: Run) -> float | None:
    """The test loss at the eval with the lowest validation loss (early stopping's choice);
    None without both curves or when the run diverged."""
    if run.validation is None or run.test is None or run.one_split:
        return None
    val = dict(zip(run.validation.steps, run.validation.losses))
    test = dict(zip(run.test.steps, run.test.losses))
    shared = [s for s in val if s in test and np.isfinite(val[s])]
    if not shared:
        return None
    best = min(shared, key=lambda s: (val[s], s))
    return float(test[best]) if np.isfinite(test[best]) else None


@dataclass(frozen=True)
class SweepCell:
    """One arm at one size: its rate, D_F in unique train tokens, and effective data over seeds."""
    arm: str
    examples: int
    lr: float
    d_f: float
    result: PooledEffectiveData


@dataclass
class DataSweep:
    """Scratch's optimum test loss per seed against D, its fits (None: no seed could be fitted,
    see notes), and every arm's effective data per size, at one model size (non-embedding N)."""
    name: str
    non_embedding_params: float
    scratch: dict[int, list[tuple[float, float]]]
    fits: ScratchFits | None
    cells: list[SweepCell]
    notes: list[str] = field(default_factory=list)


def _results(exp: Experiment, arm: str, lr: float, held: set[int]) -> dict[int, tuple[float, float]]:
    """{seed: (train tokens, optimum test bits)} of an arm at exp's size and rate `lr`."""
    out = {}
    for seed, run in exp.grid[arm][lr].items():
        loss = optimum_test_bits(run)
        if seed not in held and loss is not None and run.info.get("train_tokens"):
            out[seed] = (float(run.info["train_tokens"]), loss)
    return out


def _fit(scratch: dict[int, list[tuple[float, float]]]) -> tuple[ScratchFits | None, list[str]]:
    """Scratch's curves, leaving out (with a note) seeds whose loss does not fall with D: such a
    seed is not data-limited at these sizes (or stopped early on noise), and inverts to nothing."""
    notes, per_seed = [], {}
    for seed, points in scratch.items():
        try:
            per_seed[seed] = fit_scratch([d for d, _ in points], [loss for _, loss in points])
        except ValueError as e:
            notes.append(f"{SCRATCH} seed {seed} left out of effective data: {e}")
    if not per_seed:
        notes.append(f"No effective data: no {SCRATCH} seed has a loss that falls with the train-set size.")
        return None, notes
    pooled = [point for seed in per_seed for point in scratch[seed]]
    return ScratchFits(per_seed, fit_scratch([d for d, _ in pooled], [loss for _, loss in pooled])), notes


def analyse_sweep(exp: Experiment) -> DataSweep | None:
    """None unless the experiment swept two or more train-set sizes with scratch results."""
    if len(exp.sizes) < 2:
        return None
    held = set(exp.held_out_seeds)
    by_size = {n: exp.at_size(n) for n in exp.sizes}
    rates = {n: {arm: c.lr for arm, c in choose_rates(sub).items()} for n, sub in by_size.items()}
    scratch: dict[int, list[tuple[float, float]]] = {}
    for n, sub in by_size.items():
        if SCRATCH in rates[n]:
            for seed, point in _results(sub, SCRATCH, rates[n][SCRATCH], held).items():
                scratch.setdefault(seed, []).append(point)
    scratch = {s: sorted(points) for s, points in scratch.items() if len({d for d, _ in points}) >= 2}
    fits, notes = _fit(scratch)
    if fits is None:
        return DataSweep(exp.name, 0.0, scratch, None, [], notes)
    cells = []
    for n, sub in by_size.items():
        for arm in sorted(a for a in rates[n] if a != SCRATCH):
            lr = rates[n][arm]
            results = _results(sub, arm, lr, held)
            if not results:
                continue
            paired = {s: loss for s, (_, loss) in results.items() if s in fits.per_seed}
            if len(paired) < len(results):
                notes.append(f"{arm} at {n} examples: seeds {sorted(set(results) - set(paired))} have no scratch "
                             "curve of their own and are left out.")
            if paired:
                d_f = float(np.median([d for d, _ in results.values()]))
                cells.append(SweepCell(arm, n, lr, d_f, effective_data_seeds(fits.per_seed, d_f, paired)))
    params = {float(r.info.get("non_embedding_params") or 0) for r in exp.runs if r.info.get("role") == "target"}
    return DataSweep(exp.name, max(params, default=0.0), scratch, fits, cells, notes)


def scaling_laws(sweeps: list[DataSweep], n_boot: int = 200) -> dict[str, TransferLaw]:
    """Per arm, D_T = k D_F^alpha N^beta over every sweep it ran in: the sweeps of one report are
    the model sizes N (an experiment has one), so several experiments at different sizes fit it."""
    by_arm: dict[str, dict[float, list[PooledEffectiveData]]] = {}
    for sweep in sweeps:
        if sweep.non_embedding_params > 0:
            for c in sweep.cells:
                by_arm.setdefault(c.arm, {}).setdefault(sweep.non_embedding_params, []).append(c.result)
    return {arm: transfer_law(cells, n_boot=n_boot) for arm, cells in sorted(by_arm.items())}
