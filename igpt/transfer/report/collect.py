"""Find run and experiment directories and read them into typed runs (metrics files only).

A run directory holds metrics.jsonl and/or run.json (igpt/training/rundir.py); an experiment
directory holds experiment.json and, somewhere below it, its runs (igpt.transfer.experiment).
Curves are read in bits per token.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from etils.epath import Path

from igpt.paths import as_path, dirs_holding
from igpt.training.metrics import bits, read_metrics
from igpt.training.rundir import METRICS_FILE, RUN_INFO_FILE, RunDir
from igpt.transfer.arms import SCRATCH
from igpt.transfer.metrics import Curve

EXPERIMENT_FILE = "experiment.json"
STAGES = {"bridge"}  # roles of runs between a source and its targets (igpt.transfer.bridge): part of the arm, not compared


# The splits a trainer writes eval records under: "validation" (selection) and "test"
# (reporting); older runs wrote one "eval" split, used for both.
VALIDATION, TEST, ONE_SPLIT = "validation", "test", "eval"


@dataclass
class Run:
    """One run directory: who it is (run.json), its curves in bits/token, and its state.

    `validation` chooses (learning rates, early stopping, targets) and `test` reports; a run
    that wrote only "eval" records has that one curve as both (`one_split`)."""
    path: Path
    label: str
    info: dict[str, Any]
    validation: Curve | None
    test: Curve | None
    train: Curve | None
    one_split: bool
    config: dict[str, Any] = field(default_factory=dict)  # config.json, {} without one
    wall_seconds: float | None = None  # first record to last
    tokens_per_s: float | None = None  # median over train records

    def setting(self, dotted: str) -> Any:
        """A config.json value by dotted key ("optim.lr"), None when absent."""
        value: Any = self.config
        for key in dotted.split("."):
            value = value.get(key) if isinstance(value, dict) else None
        return value

    @property
    def status(self) -> str:
        if self.validation is None and self.test is None and self.train is None:
            return "no metrics"
        if not self.info:
            return "unknown (no run.json)"
        return "finished" if self.info.get("finished") else "in progress"

    @property
    def last_step(self) -> int | None:
        ends = [c.steps[-1] for c in (self.validation, self.test, self.train) if c is not None]
        return int(max(ends)) if ends else None

    @property
    def tokens_seen(self) -> float:
        """The most tokens any of its records counts (0 with none)."""
        return max([float(c.tokens[-1]) for c in (self.validation, self.test, self.train) if c is not None],
                   default=0.0)

    @property
    def flops_per_token(self) -> float:
        """Training FLOPs per token from run.json (0: unknown)."""
        return float(self.info.get("flops_per_token") or 0.0)

    @property
    def final_test_bits(self) -> float | None:
        """The last test loss, None when there is none or it is not finite."""
        last = self.test.losses[-1] if self.test else None
        return float(last) if last is not None and math.isfinite(last) else None

    def describe(self) -> str:
        who = [f"{k}={self.info[k]}" for k in ("arm", "lr", "seed") if self.info.get(k) is not None]
        return f"{self.label} ({', '.join(who)})" if who else self.label


def _curve_of(records: list[dict[str, Any]], split: str, path: Path) -> Curve | None:
    rows = [r for r in records if r["split"] == split]
    if not rows:
        return None
    try:
        losses = [r["bits_per_token"] if "bits_per_token" in r else bits(r["loss"]) for r in rows]
        return Curve([r["step"] for r in rows], [r["tokens_seen"] for r in rows], losses)
    except (KeyError, ValueError) as e:
        raise ValueError(f"{path / METRICS_FILE}: malformed {split} records ({e}); each needs "
                         "step, tokens_seen and loss or bits_per_token (see igpt/training/metrics.py)") from e


def read_run(path: Path, label: str) -> Run:
    records = read_metrics(path)
    validation, test = _curve_of(records, VALIDATION, path), _curve_of(records, TEST, path)
    one = _curve_of(records, ONE_SPLIT, path) if validation is None and test is None else None
    times = [r["wall_time"] for r in records if isinstance(r.get("wall_time"), (int, float))]
    rates = [r["tokens_per_s"] for r in records if r["split"] == "train" and isinstance(r.get("tokens_per_s"), (int, float))]
    run = RunDir(path)
    return Run(path, label, run.read_info(), validation or one, test or one, _curve_of(records, "train", path),
               one is not None, run.read_config() or {}, max(times) - min(times) if len(times) > 1 else None,
               float(np.median(rates)) if rates else None)


def read_runs(paths: Sequence[Path], labels: dict[Path, str] | None = None) -> tuple[list[Run], list[str]]:
    """(the GPT runs among `paths`, "path: why" for each left out): a tokenizer-fitting run, or
    metrics this report cannot read, is named and skipped, never the end of the report. A run is
    labelled `labels[path]` (e.g. the path as the user typed it), else its full path."""
    runs, left_out = [], []
    for path in paths:
        label = (labels or {}).get(path, str(path))
        task = RunDir(path).read_info().get("task", "gpt")
        if task != "gpt":
            left_out.append(f"{label}: a {task} run (run.json task), not a GPT run")
            continue
        try:
            runs.append(read_run(path, label))
        except ValueError as e:
            left_out.append(f"{label}: {e}")
    return runs, left_out


def labels_as_given(inputs: Sequence[str | Path], dirs: Sequence[Path]) -> dict[Path, str]:
    """Each dir named from the input it was found under, as the user wrote that input
    ("runs/tiny" for a run found under "runs"), not as an absolute path."""
    labels = {}
    for d in dirs:
        given = [str(p) for p in inputs if as_path(p) == d or as_path(p) in d.parents]
        if given:
            top = max(given, key=lambda p: len(as_path(p).parts))
            rel = str(d.relative_to(as_path(top)))
            labels[d] = top if rel == "." else f"{top.rstrip('/')}/{rel}"
    return labels


def discover(inputs: Sequence[Path]) -> tuple[dict[Path, list[Path]], list[Path]]:
    """Experiment dirs with their run dirs, and run dirs that belong to no experiment."""
    inputs = [as_path(p) for p in inputs]
    for p in inputs:
        if not p.is_dir():
            raise FileNotFoundError(
                f"input {p} is not a directory; pass run directories (holding {METRICS_FILE} or "
                f"{RUN_INFO_FILE}) or experiment directories (holding {EXPERIMENT_FILE})")
    experiments = sorted({d for p in inputs for d in dirs_holding(p, EXPERIMENT_FILE)})
    runs = sorted({d for p in inputs for name in (METRICS_FILE, RUN_INFO_FILE) for d in dirs_holding(p, name)})
    if not experiments and not runs:
        raise ValueError(f"no runs found under {', '.join(map(str, inputs))}: expected run "
                         f"directories holding {METRICS_FILE} or {RUN_INFO_FILE}, or experiment "
                         f"directories holding {EXPERIMENT_FILE}")
    owned: dict[Path, list[Path]] = {e: [] for e in experiments}
    singles = []
    for r in runs:
        parents = [e for e in experiments if r == e or e in r.parents]
        if parents:
            owned[max(parents, key=lambda e: len(e.parts))].append(r)
        else:
            singles.append(r)
    return owned, singles


# arm -> learning rate -> seed -> run
Grid = dict[str, dict[float, dict[int, Run]]]


@dataclass
class Experiment:
    """One experiment directory as read: what was asked (experiment.json) and its runs.

    `grid` holds the target runs by arm, learning rate and seed at train-set size `size`
    (examples; 0: the whole split); `skipped` names the runs left out of it and why."""
    dir: Path
    meta: dict[str, Any]
    runs: list[Run]
    sources: list[Run]
    grid: Grid
    skipped: list[str]
    size: int = 0
    label: str = ""  # the directory as the user gave it (labels_as_given); "" for its full path

    @property
    def shown_as(self) -> str:
        return self.label or str(self.dir)

    @property
    def sizes(self) -> list[int]:
        """The train-set sizes the target runs used ([0] outside a data-size sweep)."""
        return sorted({_train_examples(r) for r in self.runs if r.info.get("role") == "target"}) or [0]

    def at_size(self, size: int) -> "Experiment":
        """The same experiment with its grid over the target runs at `size`."""
        return dataclasses.replace(_assemble(self.dir, self.meta, self.runs, size), label=self.label)

    @property
    def name(self) -> str:
        return str(self.meta.get("name", self.dir.name))

    @property
    def target(self) -> Any:
        return self.meta.get("target", "the target data")

    @property
    def source_names(self) -> list[Any]:
        return (self.meta.get("sources")
                or sorted({str(r.info.get("name", r.label)) for r in self.sources}))

    @property
    def complete(self) -> bool:
        return bool(self.meta.get("complete", False))

    @property
    def status(self) -> str:
        return "complete" if self.complete else "in progress"

    @property
    def held_out_seeds(self) -> list[int]:
        """Scratch seeds held out of every comparison, to choose targets from: seeds the scratch
        arm ran that no other arm ran and experiment.json's "seeds" (the seeds every arm runs)
        does not list. None while scratch is the only arm."""
        others = {s for arm, by_lr in self.grid.items() if arm != SCRATCH for seeds in by_lr.values()
                  for s in seeds}
        if not others:
            return []
        listed = {int(s) for s in self.meta.get("seeds", [])}
        return sorted({s for seeds in self.grid.get(SCRATCH, {}).values() for s in seeds} - others - listed)

    def source_run(self, source: str) -> Run | None:
        """The pretraining run of `source` (its run.json "source"), None if there is none."""
        return next((r for r in self.sources if r.info.get("source") == source), None)

    def pretraining_flops(self, source: str) -> float | None:
        """FLOPs spent making `source`'s model: its pretraining run's tokens x FLOPs per token, or
        for a donor given ready, what experiment.json "donor_flops" records (None: unknown, e.g.
        an imported language model)."""
        run = self.source_run(source)
        if run is not None:
            return run.tokens_seen * run.flops_per_token or None
        flops = (self.meta.get("donor_flops") or {}).get(source)
        return float(flops) if flops else None

    def stage_runs(self, arm: str) -> list[Run]:
        """The runs between `arm`'s source and its target runs (a bridge run), by run.json "arm"."""
        return [r for r in self.runs if r.info.get("role") in STAGES and r.info.get("arm") == arm]

    def runs_with(self, status: str) -> list[Run]:
        return [r for r in self.runs if r.status == status]

    @property
    def lr_seeds(self) -> list[int]:
        """The seeds that ran every rate to choose each arm's (experiment.json "lr_seeds"); the
        other seeds ran at the chosen rate only. Empty: every seed ran every rate."""
        return [int(s) for s in self.meta.get("lr_seeds") or ()]

    @property
    def not_started(self) -> list[str]:
        """Cells experiment.json asks for that no run claims: arm x lr x seed for the seeds that
        run every rate, arm x seed (at any rate) for the others."""
        sweep = self.lr_seeds or [int(s) for s in self.meta.get("seeds", [])]
        rest = [int(s) for s in self.meta.get("seeds", []) if int(s) not in sweep]
        ran = lambda arm, seed, lr=None: any(seed in seeds and (lr is None or math.isclose(float(lr), got))
                                             for got, seeds in self.grid.get(arm, {}).items())
        return ([f"arm={a}, lr={lr}, seed={s}" for a in self.meta.get("arms", [])
                 for lr in self.meta.get("lrs", []) for s in sweep if not ran(a, s, lr)]
                + [f"arm={a}, seed={s} (at its chosen rate)" for a in self.meta.get("arms", [])
                   for s in rest if not ran(a, s)])


def _read_meta(exp_dir: Path) -> dict[str, Any]:
    path = exp_dir / EXPERIMENT_FILE
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e}); the runner writes it, restore it") from e
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: expected a JSON object with name, target, sources, arms, "
                         "seeds, lrs, complete")
    return meta


def _train_examples(run: Run) -> int:
    return int(run.info.get("train_examples") or 0)


def _assemble(exp_dir: Path, meta: dict[str, Any], runs: list[Run], size: int) -> Experiment:
    """The experiment with its grid over the target runs at train-set size `size`."""
    targets = [r for r in runs if r.info.get("role") == "target"]
    sources = [r for r in runs if r.info.get("role") == "source"]
    skipped = [f"{r.label}: run.json role {r.info.get('role')!r}, not source, bridge or target"
               for r in runs if r not in targets and r not in sources and r.info.get("role") not in STAGES]
    grid: Grid = {}
    for r in targets:
        missing = [k for k in ("arm", "lr", "seed") if k not in r.info]
        if missing:
            skipped.append(f"{r.label}: run.json lacks {', '.join(missing)}")
            continue
        if _train_examples(r) != size:
            continue
        cell = grid.setdefault(str(r.info["arm"]), {}).setdefault(float(r.info["lr"]), {})
        seed = int(r.info["seed"])
        if seed in cell:
            raise ValueError(f"{exp_dir}: two runs claim arm {r.info['arm']!r} lr {r.info['lr']} "
                             f"seed {seed}: {cell[seed].label} and {r.label}; remove the copy")
        cell[seed] = r
    return Experiment(exp_dir, meta, runs, sources, grid, skipped, size)


def read_experiment(exp_dir: Path, run_dirs: list[Path], label: str = "") -> Experiment:
    """The experiment and its runs, target runs placed by their run.json arm, lr and seed; in a
    data-size sweep the grid holds the largest target size (Experiment.at_size gives the others).
    `label`: the directory as the user gave it."""
    meta = _read_meta(exp_dir)
    runs = [read_run(d, str(d.relative_to(exp_dir))) for d in run_dirs]
    exp = _assemble(exp_dir, meta, runs, max([int(n) for n in meta.get("target_sizes") or ()], default=0))
    return dataclasses.replace(exp, label=label)
