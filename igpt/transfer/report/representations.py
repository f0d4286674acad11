"""The report's Representations section, from the files probe and comparison runs wrote
(RUN/probe.jsonl, RUN/similarity.jsonl; igpt/representations.py): linear-probe accuracy per
layer per arm (mean over seeds with its interval) and against training step, CKA heatmaps and
stitching penalties. No jax; runs without those files add nothing.

  experiment_representations(analysis, slug)  arms at their chosen rates, by seed
  runs_representations(runs, slug)            loose runs, one group each
"""
from __future__ import annotations

import io
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from igpt.paths import as_path
from igpt.representations import PROBE_FILE, SIMILARITY_FILE, read_records
from igpt.transfer.arms import SCRATCH
from igpt.transfer.intervals import Estimate, arithmetic_interval
from igpt.transfer.report.analysis import Analysis
from igpt.transfer.report.collect import Run
from igpt.transfer.report.figures import Chart
from igpt.transfer.report.render import Section, Table, fmt_estimate

MAX_HEATMAPS = 6  # per figure; more comparisons are still tabled


@dataclass(frozen=True)
class ProbeCurve:
    """One group's probe on one dataset: test accuracy per layer at each run's last probed step
    (pooled over its runs), and per step at the layer each run's validation accuracy picks."""
    group: str
    data: str
    layer_names: list[str]
    by_layer: list[Estimate]
    chance: float
    best_layer: str                      # highest mean validation accuracy at the last step
    steps: list[int]
    by_step: list[Estimate]


def _probe_records(run: Run) -> list[dict[str, Any]]:
    return read_records(as_path(run.path) / PROBE_FILE)


def probe_curves(groups: dict[str, Sequence[Run]]) -> list[ProbeCurve]:
    """Each group's probe accuracy per layer and per step, one curve per dataset probed."""
    curves = []
    for group, runs in groups.items():
        per_data: dict[str, list[list[dict[str, Any]]]] = defaultdict(list)
        for run in runs:
            by_data: dict[str, list[dict[str, Any]]] = defaultdict(list)
            for r in _probe_records(run):
                by_data[r["data"]].append(r)
            for data, records in by_data.items():
                per_data[data].append(records)
        for data, per_run in sorted(per_data.items()):
            curves.append(_curve(group, data, per_run))
    return curves


def _curve(group: str, data: str, per_run: list[list[dict[str, Any]]]) -> ProbeCurve:
    last = []
    for records in per_run:
        final = max(r["step"] for r in records)
        last.append(sorted((r for r in records if r["step"] == final), key=lambda r: r["layer"]))
    depth = min(len(layers) for layers in last)
    names = [r["layer_name"] for r in last[0][:depth]]
    by_layer = [arithmetic_interval([layers[k]["test_accuracy"] for layers in last]) for k in range(depth)]
    validation = [np.mean([layers[k]["validation_accuracy"] for layers in last]) for k in range(depth)]
    chosen: dict[int, list[float]] = defaultdict(list)
    for records in per_run:
        steps: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for r in records:
            steps[r["step"]].append(r)
        for step, layers in steps.items():
            chosen[step].append(max(layers, key=lambda r: (r["validation_accuracy"], -r["layer"]))["test_accuracy"])
    steps = sorted(chosen)
    return ProbeCurve(group, data, names, by_layer, float(np.mean([layers[0]["chance"] for layers in last])),
                      names[int(np.argmax(validation))], steps, [arithmetic_interval(chosen[s]) for s in steps])


@dataclass(frozen=True)
class Similarity:
    """One kind of comparison ("cka" or "stitching") between two groups, averaged over the
    pairs of runs compared (e.g. seeds)."""
    kind: str
    a: str
    b: str
    data: str
    layers_a: list[str]
    layers_b: list[str]
    matrix: np.ndarray
    pairs: int
    base_bits: float | None  # stitching: B's own test loss, mean over pairs
    stitch_steps: int | None


def similarities(runs: Sequence[Run]) -> list[Similarity]:
    """The comparisons the runs wrote, one per (kind, group of A, group of B, data), matrices of
    one shape averaged over the pairs."""
    cells: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        for r in read_records(as_path(run.path) / SIMILARITY_FILE):
            key = (r["kind"], r["a_group"], r["b_group"], r["data"], len(r["layers_a"]), len(r["layers_b"]),
                   r.get("stitch_steps"))
            cells[key].append(r)
    out = []
    for (kind, a, b, data, *_), records in sorted(cells.items(), key=lambda kv: kv[0][:4]):
        base = [r["base_bits"] for r in records if r.get("base_bits") is not None]
        out.append(Similarity(kind, a, b, data, records[0]["layers_a"], records[0]["layers_b"],
                              np.mean([r["matrix"] for r in records], axis=0), len(records),
                              float(np.mean(base)) if base else None, records[0].get("stitch_steps")))
    return out


# ----------------------------------------------------------------------------- figures

def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _band(ax, x, estimates: list[Estimate], label: str, color: str) -> None:
    mean = np.array([e.mean for e in estimates])
    lo = np.array([e.lo if e.lo is not None else e.mean for e in estimates])
    hi = np.array([e.hi if e.hi is not None else e.mean for e in estimates])
    ax.plot(x, mean, color=color, marker="o", ms=4, lw=1.6, label=label)
    ax.fill_between(x, lo, hi, color=color, alpha=0.2, lw=0)


def _probe_chart(curves: list[ProbeCurve], data: str, slug: str) -> Chart:
    fig = Figure(figsize=(11, 4.2), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    by_layer, by_step = fig.subplots(1, 2)
    for i, c in enumerate(curves):
        color = "black" if c.group == SCRATCH else f"C{i % 10}"
        _band(by_layer, np.arange(len(c.layer_names)), c.by_layer, c.group, color)
        _band(by_step, c.steps, c.by_step, c.group, color)
    longest = max(curves, key=lambda c: len(c.layer_names))
    by_layer.set_xticks(np.arange(len(longest.layer_names)), longest.layer_names, rotation=30, fontsize=8)
    by_layer.set(ylabel="probe test accuracy", title="per layer, at each run's last probed checkpoint")
    by_step.set(xlabel="training step", ylabel="probe test accuracy", title="per checkpoint, at the layer validation picks")
    for ax in (by_layer, by_step):
        ax.axhline(float(np.mean([c.chance for c in curves])), color="grey", ls=":", lw=0.8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    name = "".join(ch if ch.isalnum() else "_" for ch in data)
    return Chart(f"{slug}_probe_{name}.png",
                 f"Linear probe on {data}: test accuracy (mean over seeds; band = 95% t-interval, or range below 5 "
                 "seeds; dotted = always answering the commonest class)", _png(fig))


def _heatmaps(sims: list[Similarity], kind: str, slug: str) -> Chart:
    shown = sims[:MAX_HEATMAPS]
    fig = Figure(figsize=(5.2 * len(shown), 4.4), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(shown), squeeze=False)[0]
    cka = kind == "cka"
    span = 1.0 if cka else max(max(float(np.abs(s.matrix).max()) for s in shown), 1e-6)  # one scale for all panels
    for ax, s in zip(axes, shown):
        image = ax.imshow(s.matrix, cmap="viridis" if cka else "RdBu_r", vmin=0.0 if cka else -span, vmax=span,
                          origin="lower")
        if s.matrix.size <= 144:
            for (i, j), v in np.ndenumerate(s.matrix):
                dark = v < 0.6 if cka else abs(v) > 0.6 * span
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color="white" if dark else "black")
        ax.set_xticks(range(len(s.layers_b)), s.layers_b, rotation=45, fontsize=7)
        ax.set_yticks(range(len(s.layers_a)), s.layers_a, fontsize=7)
        ax.set(xlabel=f"{s.b} layer", ylabel=f"{s.a} layer", title=f"{s.a} vs {s.b} ({s.pairs} pairs)")
        fig.colorbar(image, ax=ax, shrink=0.8)
    caption = ("Linear CKA between the layers of two models on the same test inputs (average-pooled features; "
               "1 = the same representation up to rotation and scale), mean over the pairs of runs compared"
               if cka else
               "Linear stitching: test bits/token above model B alone when model A runs to the row's layer, an "
               "affine map, then B from the column's layer on (0 = A's layer is as good as B's own), mean over pairs")
    return Chart(f"{slug}_{kind}.png", caption, _png(fig))


# ----------------------------------------------------------------------------- the section

def _probe_table(curves: list[ProbeCurve], data: str) -> Table:
    names = max((c.layer_names for c in curves), key=len)
    rows = [[c.group] + [fmt_estimate(e, unit="", digits=3) for e in c.by_layer]
            + [""] * (len(names) - len(c.layer_names)) + [c.best_layer, f"{c.chance:.3f}"] for c in curves]
    return Table(f"Linear probe test accuracy on {data}, per layer", ["arm"] + names + ["best on validation", "chance"],
                 rows, "Each run at its last probed checkpoint; features are each layer's residual stream averaged "
                       "over positions; logistic regression fitted on train, its C chosen on validation.")


def _stitching_table(sims: list[Similarity]) -> Table:
    rows = []
    for s in sims:
        same = [f"{s.layers_a[k]}: {s.matrix[k, k]:+.3f}" for k in range(min(s.matrix.shape))]
        fit = "least squares" if not s.stitch_steps else f"least squares, then {s.stitch_steps} Adam steps"
        rows.append([f"{s.a} into {s.b}", s.data, f"{s.base_bits:.3f}" if s.base_bits is not None else "",
                     "; ".join(same), fit, str(s.pairs)])
    return Table("Stitching penalty at the same depth (bits/token above model B alone)",
                 ["models (A into B)", "data", "B alone", "penalty, layer i into layer i", "map", "pairs"], rows,
                 "A runs to layer i, an affine map fitted on train carries its stream into B's, B runs on from there; "
                 "measured on test. Near 0: B can read A's layer as its own through a linear map.")


def representations_section(groups: dict[str, Sequence[Run]], compared: Sequence[Run], slug: str,
                            title: str = "Representations") -> Section | None:
    """Probe curves of each group, and the CKA and stitching comparisons any of `compared` wrote;
    None when no run wrote either file."""
    curves, sims = probe_curves(groups), similarities(compared)
    if not curves and not sims:
        return None
    section = Section(title, ["Linear probes (Chen et al. 2020) read class labels off each layer's average-pooled "
                              "residual stream; CKA (Kornblith et al. 2019) and linear stitching (Bansal et al. 2021) "
                              "compare two models' layers on the same inputs."])
    for data in sorted({c.data for c in curves}):
        on = [c for c in curves if c.data == data]
        section.charts.append(_probe_chart(on, data, slug))
        section.tables.append(_probe_table(on, data))
    for kind in ("cka", "stitching"):
        of_kind = [s for s in sims if s.kind == kind]
        if of_kind:
            section.charts.append(_heatmaps(of_kind, kind, slug))
    stitching = [s for s in sims if s.kind == "stitching"]
    if stitching:
        section.tables.append(_stitching_table(stitching))
    return section


def experiment_representations(a: Analysis, slug: str) -> Section | None:
    """The experiment's arms at their chosen rates (scratch first), and every comparison its runs wrote."""
    order = sorted(a.chosen, key=lambda arm: (arm != SCRATCH, arm))
    groups = {arm: list(a.chosen[arm].values()) for arm in order}
    return representations_section(groups, a.experiment.runs, slug, f"{a.experiment.name}: representations")


def runs_representations(runs: Sequence[Run], slug: str) -> Section | None:
    """Loose runs, each its own group."""
    return representations_section({r.describe(): [r] for r in runs}, runs, slug)
