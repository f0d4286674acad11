"""Write the report: read, analyse, draw, render, then publish the out dir whole.

Everything is rendered into a temporary directory first, then renamed into place (a local
out_dir) or uploaded with summary.json last (gs://), so a crash never leaves a half report that
looks whole. summary.json is where the typed results become plain JSON.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import shutil
import tempfile
from typing import Any

from etils.epath import Path

from igpt.paths import as_path, forget_listings, is_object_storage
from igpt.transfer.arms import SCRATCH
from igpt.transfer.report.analysis import Analysis, Headline, analyse
from igpt.transfer.report.collect import Run, discover, labels_as_given, read_experiment, read_runs
from igpt.transfer.report.data_sweep import analyse_sweep, scaling_laws
from igpt.transfer.report.figures import experiment_charts, run_charts, scaling_chart, sweep_chart
from igpt.transfer.report.representations import experiment_representations, runs_representations
from igpt.transfer.report.render import (Section, experiment_section, render_html, render_md, runs_section,
                                         scaling_section, sweep_section, terminal_lines)

SUMMARY_FILE = "summary.json"
UNITS = "bits/token"


def _slug(name: str, taken: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "runs"
    slug, i = base, 2
    while slug in taken:
        slug, i = f"{base}_{i}", i + 1
    taken.add(slug)
    return slug


def _run_row(run: Run) -> dict[str, Any]:
    return {"path": str(run.path), "label": run.label, "name": run.info.get("name"),
            "status": run.status, "last_step": run.last_step, "final_test_bits": run.final_test_bits,
            "one_split": run.one_split}


def _headline_json(h: Headline) -> dict[str, Any]:
    """The headline, its speedup over scratch also flat (reached, speedup, lo, hi, interval)."""
    e = h.estimate
    return {**dataclasses.asdict(h), "reached": e is not None, "speedup": e and e.mean,
            "lo": e and e.lo, "hi": e and e.hi, "interval": e and e.kind}


def _experiment_summary(a: Analysis) -> dict[str, Any]:
    exp = a.experiment
    return {
        "name": exp.name, "dir": str(exp.dir), "target": exp.target, "sources": exp.source_names,
        "status": exp.status, "complete": exp.complete, "baseline": SCRATCH, "units": UNITS,
        "targets": a.levels, "target_source": a.target_source, "held_out_seeds": sorted(a.held_out),
        "one_split": a.one_split, "reported_split": a.report_split, "several_lrs": a.several_lrs,
        "lr_at_grid_edge": a.edge_arms, "controls": a.controls,
        "lr_selection": {arm: dataclasses.asdict(c) for arm, c in sorted(a.choice.items())},
        "headline": {arm: _headline_json(h) for arm, h in a.headlines.items()},
        "comparison": dataclasses.asdict(a.comparison) if a.comparison else None,
        "vs_best_control": {arm: [dataclasses.asdict(c) for c in r] for arm, r in a.vs_control.items()},
        "terminal": terminal_lines(a),
        "sources_runs": [_run_row(r) for r in exp.sources],
        "runs_in_progress": [r.describe() for r in exp.runs_with("in progress")],
        "runs_not_started": exp.not_started,
        "runs_without_metrics": [r.describe() for r in exp.runs_with("no metrics")],
        "skipped": exp.skipped, "notes": a.notes,
    }


def _summary(inputs: list[Path], analyses: list[Analysis], singles: list[Run], unreadable: list[str],
             sections: list[Section]) -> dict[str, Any]:
    def flagged(status: str) -> list[str]:
        return ([f"{a.experiment.name}: {r.describe()}" for a in analyses
                 for r in a.experiment.runs_with(status)]
                + [str(r.path) for r in singles if r.status == status])
    return {
        "inputs": [str(p) for p in inputs], "units": UNITS,
        "experiments": [_experiment_summary(a) for a in analyses],
        "single_runs": [_run_row(r) for r in singles],
        "runs_in_progress": flagged("in progress"), "runs_without_metrics": flagged("no metrics"),
        "runs_left_out": unreadable,
        "figures": [c.name for s in sections for c in s.charts],
    }


def _check_out_dir(out: Path) -> None:
    if out.exists() and (not out.is_dir() or (any(out.iterdir())
                                              and not (out / SUMMARY_FILE).is_file())):
        raise ValueError(f"out_dir {out} exists and is not an igpt report (no {SUMMARY_FILE}); "
                         "choose a new or empty directory, it is replaced whole")


def _swap_in(tmp: Path, out: Path) -> None:
    """Swap the finished report into place; the old one is moved aside, then removed."""
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)


def _upload(tmp: Path, out: Path) -> None:
    """Object storage has no directory rename: summary.json, the mark of a whole report, goes
    first, then every file is written, stale ones deleted, and summary.json written last."""
    forget_listings(out)
    (out / SUMMARY_FILE).unlink(missing_ok=True)
    names = {p.name for p in tmp.iterdir()}
    for name in sorted(names - {SUMMARY_FILE}):
        (out / name).write_bytes((tmp / name).read_bytes())
    for stale in out.iterdir() if out.exists() else ():
        if stale.name not in names:
            stale.unlink()
    (out / SUMMARY_FILE).write_bytes((tmp / SUMMARY_FILE).read_bytes())


def _write(out: Path, title: str, sections: list[Section], summary_text: str) -> None:
    """Renders into a local temporary directory, then publishes it whole: renamed into place on a
    disk, uploaded with summary.json last to a bucket."""
    remote = is_object_storage(out)
    if not remote:
        out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=None if remote else out.parent))
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; the published report is an ordinary dir
        for sec in sections:
            for c in sec.charts:
                (tmp / c.name).write_bytes(c.png)
        (tmp / "report.html").write_text(render_html(title, sections), encoding="utf-8")
        (tmp / "report.md").write_text(render_md(title, sections), encoding="utf-8")
        (tmp / SUMMARY_FILE).write_text(summary_text + "\n", encoding="utf-8")
        if remote:
            _upload(tmp, out)
        else:
            _swap_in(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_report(inputs: list[str | Path], out_dir: str | Path, *, log_x: bool = False,
                 targets: list[float] | None = None) -> dict[str, Any]:
    """Write the report for experiment and/or run directories; return summary.json's content.

    `targets` are losses in bits/token fixed in advance (default: per experiment, from its
    held-out scratch seeds, else provisionally from the compared ones; see
    igpt.transfer.report.analysis). `out_dir` is replaced whole, atomically."""
    if not inputs:
        raise ValueError("write_report: no inputs; pass run or experiment directories")
    if targets is not None and (not targets or not all(math.isfinite(t) for t in targets)):
        raise ValueError(f"write_report: targets must be finite losses in bits/token, got {targets}")
    paths = [as_path(p) for p in inputs]
    out = as_path(out_dir)
    _check_out_dir(out)
    owned, single_dirs = discover(paths)

    taken: set[str] = set()
    analyses, sections = [], []
    sweeps = {}
    exp_labels = labels_as_given(inputs, list(owned))
    for exp_dir, run_dirs in owned.items():
        exp = read_experiment(exp_dir, run_dirs, exp_labels.get(exp_dir, ""))
        a = analyse(exp, targets)
        analyses.append(a)
        slug = _slug(a.experiment.name, taken)
        sections.append(experiment_section(a, experiment_charts(a, slug, log_x)))
        sweep = analyse_sweep(exp)
        if sweep is not None:
            sweeps[str(exp.dir)] = sweep
            sections.append(sweep_section(sweep, [sweep_chart(sweep, slug)]))
        representations = experiment_representations(a, slug)
        if representations:
            sections.append(representations)
    laws = scaling_laws(list(sweeps.values()))
    if sweeps:
        sections.append(scaling_section(laws, list(sweeps.values()),
                                        [scaling_chart(list(sweeps.values()), laws, _slug("scaling", taken))]))
    singles, unreadable = read_runs(single_dirs, labels_as_given(inputs, single_dirs))
    if singles or unreadable:
        slug = _slug("runs", taken)
        sections.append(runs_section(singles, run_charts(singles, slug, log_x), unreadable, targets or []))
        representations = runs_representations(singles, slug)
        if representations:
            sections.append(representations)
    summary = _summary(paths, analyses, singles, unreadable, sections)
    for entry in summary["experiments"]:
        sweep = sweeps.get(entry["dir"])
        entry["effective_data"] = sweep and {"non_embedding_params": sweep.non_embedding_params,
                                             "scratch": sweep.scratch, "notes": sweep.notes,
                                             "cells": [dataclasses.asdict(c) for c in sweep.cells]}
    summary["scaling_laws"] = {arm: dataclasses.asdict(law) for arm, law in laws.items()}
    text = json.dumps(summary, indent=2, sort_keys=True, allow_nan=False)
    title = ("Transfer report: " + "; ".join(f"{a.experiment.target} ({a.experiment.status})"
                                             for a in analyses) if analyses else "Run report")
    _write(out, title, sections, text)
    return json.loads(text)


def headline(summary: dict[str, Any], out_dir: Path) -> str:
    """The lines a person reads in the terminal: each arm's speedup with its interval."""
    lines = [line for exp in summary["experiments"] for line in exp["terminal"]]
    lines += [f"left out: {reason}" for reason in summary["runs_left_out"]]
    if summary["runs_without_metrics"]:
        lines.append(f"runs with no metrics: {', '.join(summary['runs_without_metrics'])}")
    lines.append(f"report: {as_path(out_dir) / 'report.html'}")
    return "\n".join(lines)
