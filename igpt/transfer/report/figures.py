"""The report's figures as PNG bytes: loss curves (per group, the mean over seeds with a min-max
band) and each arm's speedup against the target loss."""
from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from igpt.transfer.arms import SCRATCH
from igpt.transfer.metrics import Curve
from igpt.transfer.report.analysis import Analysis
from igpt.transfer.report.collect import Run
from igpt.transfer.effective_data import TransferLaw
from igpt.transfer.report.data_sweep import DataSweep, SweepCell

# (x attribute of Curve: "steps" or "tokens", y-axis label, {legend label: curves})
Panel = tuple[str, str, dict[str, list[Curve]]]


@dataclass(frozen=True)
class Chart:
    """One figure of the report: its file name, its caption and the PNG itself."""
    name: str
    caption: str
    png: bytes


def _mean_band(curves: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, ...]:
    """Mean and min-max over seeds on the union of x; a seed counts only within its range
    (runs in progress are shorter), so the mean is over the seeds that got that far."""
    curves = [(x[np.isfinite(y)], y[np.isfinite(y)]) for x, y in curves]
    curves = [(x, y) for x, y in curves if x.size]
    grid = np.unique(np.concatenate([x for x, _ in curves]))
    ys = np.full((len(curves), grid.size), np.nan)
    for i, (x, y) in enumerate(curves):
        inside = (grid >= x[0]) & (grid <= x[-1])
        ys[i, inside] = np.interp(grid[inside], x, y)
    return grid, np.nanmean(ys, axis=0), np.nanmin(ys, axis=0), np.nanmax(ys, axis=0)


def _plot(title: str, panels: list[Panel], log_x: bool, hlines: Sequence[float] = (),
          baseline: str | None = None) -> bytes:
    """One PNG: per panel, each group's mean over seeds with a min-max band; the group
    labelled `baseline` in black."""
    fig = Figure(figsize=(5.5 * len(panels), 4.2), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (xkey, ylabel, groups) in zip(axes, panels):
        for i, (label, curves) in enumerate(groups.items()):
            pairs = [(np.asarray(getattr(c, xkey), float), np.asarray(c.losses, float))
                     for c in curves]
            if log_x:
                pairs = [(x[x > 0], y[x > 0]) for x, y in pairs]
            if not any(np.isfinite(y).any() for _, y in pairs):
                continue
            x, mean, lo, hi = _mean_band(pairs)
            color = "black" if label == baseline else f"C{i % 10}"
            few = np.isfinite(mean).sum() < 3  # a run that just started: its points must show, not a bare line
            ax.plot(x, mean, color=color, lw=1.6, label=label, marker="o" if few else None, ms=4)
            if len(pairs) > 1:
                ax.fill_between(x, lo, hi, color=color, alpha=0.2, lw=0)
        for t in hlines:
            ax.axhline(t, color="grey", ls=":", lw=0.8)
        if log_x:
            ax.set_xscale("log")
        ax.set_xlabel("tokens seen" if xkey == "tokens" else "optimizer step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=11)
    return _png(fig)


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _steps_and_tokens(split: str, groups: dict[str, list[Curve]]) -> list[Panel]:
    ylabel = f"{split} bits/token"
    return [("steps", ylabel, groups), ("tokens", ylabel, groups)]


def _speedup_vs_target(a: Analysis) -> bytes:
    """Per arm, the geometric-mean speedup over scratch at each level (line) with its interval
    or range (band); hollow markers where some seeds are censored or have no ratio."""
    fig = Figure(figsize=(7.5, 4.5), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    levels = np.asarray(a.comparison.curve_levels)
    for i, (arm, r) in enumerate(a.comparison.arms.items()):
        est = [p.estimate for p in r.curve]
        mean = np.array([e.mean if e else np.nan for e in est])
        lo = np.array([e.lo if e and e.lo is not None else np.nan for e in est])
        hi = np.array([e.hi if e and e.hi is not None else np.nan for e in est])
        full = np.array([p.n_exact == p.n_seeds for p in r.curve])
        color = f"C{i % 10}"
        ax.plot(levels, mean, color=color, lw=1.4, label=arm)
        ax.fill_between(levels, lo, hi, color=color, alpha=0.15, lw=0)
        ax.scatter(levels[full], mean[full], color=color, s=18)
        ax.scatter(levels[~full], mean[~full], facecolors="none", edgecolors=color, s=18)
    ax.axhline(1.0, color="black", lw=0.8)
    for t in a.levels:
        ax.axvline(t, color="grey", ls=":", lw=0.8)
    ax.set_yscale("log")
    times = FuncFormatter(lambda v, _: f"{v:g}×")
    ax.yaxis.set_major_formatter(times)
    ax.yaxis.set_minor_formatter(times)
    ax.invert_xaxis()
    ax.set_xlabel(f"target {a.report_split} bits/token (harder to the right)")
    ax.set_ylabel(f"speedup over {SCRATCH} (× fewer steps)")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    fig.suptitle(f"{a.experiment.target}: speedup over {SCRATCH} against the target loss", fontsize=11)
    return _png(fig)


def experiment_charts(a: Analysis, slug: str, log_x: bool) -> list[Chart]:
    """Reported and train curves per arm at its chosen rate, the speedup against the target
    loss, then the sources' pretraining."""
    charts = []
    order = sorted(a.chosen, key=lambda arm: (arm != SCRATCH, arm))
    labels = {arm: f"{arm} (lr {a.choice[arm].lr:g}, {len(a.chosen[arm])} seeds)" for arm in order}
    for split, attr in ((a.report_split, "test"), ("train", "train")):
        groups = {labels[arm]: [getattr(r, attr) for r in a.chosen[arm].values()
                                if getattr(r, attr) is not None] for arm in order}
        groups = {k: v for k, v in groups.items() if v}
        if groups:
            hlines = a.levels if attr == "test" else []
            title = (f"{a.experiment.target}: {split} loss per arm (mean, band = min–max over "
                     "seeds)" + ("; dotted = targets" if hlines else ""))
            charts.append(Chart(f"{slug}_{split}.png", title,
                                _plot(title, _steps_and_tokens(split, groups), log_x, hlines,
                                      baseline=labels.get(SCRATCH))))
    if a.comparison and a.comparison.arms:
        title = (f"{a.experiment.target}: speedup over {SCRATCH} against the target loss "
                 "(geometric mean; band = 95% t-interval, or range below 5 seeds; hollow = some "
                 "seeds censored; dotted = targets)")
        charts.append(Chart(f"{slug}_speedup_vs_target.png", title, _speedup_vs_target(a)))
    groups = {str(r.info.get("name", r.label)): [r.test] for r in a.experiment.sources
              if r.test is not None}
    if groups:
        title = "Pretraining (sources): held-out loss on each source's own data"
        charts.append(Chart(f"{slug}_sources.png", title,
                            _plot(title, [("steps", "held-out bits/token", groups)], log_x)))
    return charts


def run_charts(runs: list[Run], slug: str, log_x: bool) -> list[Chart]:
    """Test and train curves of loose runs, one line each."""
    charts = []
    for split in ("test", "train"):
        groups = {r.describe(): [getattr(r, split)] for r in runs if getattr(r, split) is not None}
        if groups:
            title = f"{split} loss per run" + (" (eval: one split)" if split == "test" and
                                                any(r.one_split for r in runs) else "")
            charts.append(Chart(f"{slug}_{split}.png", title,
                                _plot(title, _steps_and_tokens(split, groups), log_x)))
    return charts


def _multipliers(ax, cells: list[SweepCell], label: str) -> None:
    """One arm's effective data multiplier against D_F, with its seed interval as bars."""
    cells = sorted((c for c in cells if c.result.multiplier), key=lambda c: c.d_f)
    if not cells:
        return
    mean = np.array([c.result.multiplier.mean for c in cells])
    lo = np.array([c.result.multiplier.lo if c.result.multiplier.lo is not None else m for c, m in zip(cells, mean)])
    hi = np.array([c.result.multiplier.hi if c.result.multiplier.hi is not None else m for c, m in zip(cells, mean)])
    ax.errorbar([c.d_f for c in cells], mean, yerr=np.maximum(0.0, [mean - lo, hi - mean]), marker="o", capsize=3,
                label=label)


def _multiplier_axes(ax, title: str) -> None:
    ax.axhline(1.0, color="grey", linestyle=":")
    ax.set(xscale="log", yscale="log", xlabel="fine-tuning tokens D_F", ylabel="effective data multiplier D_E / D_F",
           title=title)
    ax.legend(fontsize=7)


def scaling_chart(sweeps: list[DataSweep], laws: dict[str, TransferLaw], slug: str) -> Chart:
    """Hernandez et al.'s figure over model sizes: the multiplier against D_F, one line per arm and
    model size N, and each fitted law's 1 + k·D_F^(α-1)·N^β dashed."""
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for sweep in sorted(sweeps, key=lambda s: s.non_embedding_params):
        for arm in sorted({c.arm for c in sweep.cells}):
            _multipliers(ax, [c for c in sweep.cells if c.arm == arm], f"{arm}, N={sweep.non_embedding_params:,.0f}")
            law = laws.get(arm)
            d_f = [c.d_f for c in sweep.cells if c.arm == arm]
            if law is not None and law.status == "fit" and d_f:
                grid = np.geomspace(min(d_f), max(d_f), 50)
                ax.plot(grid, 1 + law.k * grid ** (law.alpha - 1) * sweep.non_embedding_params ** law.beta, "k--",
                        linewidth=0.8)
    _multiplier_axes(ax, "effective data multiplier by model size (dashed: fitted law)")
    return Chart(f"{slug}_scaling.png",
                 "Effective data multiplier (D_F + D_T) / D_F against D_F, one line per arm and model size N "
                 "(non-embedding parameters); bars = 95% t-interval over exact seeds, or range below 5 seeds; "
                 "dashed: D_T = k·D_F^α·N^β as fitted.", _png(fig))


def sweep_chart(sweep: DataSweep, slug: str) -> Chart:
    """Scratch's optimum test loss against unique train tokens (the curve D_E is read off), and
    each arm's effective data multiplier D_E / D_F against D_F, log-log (Hernandez et al.'s figure)."""
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    for seed, points in sorted(sweep.scratch.items()):
        left.plot([d for d, _ in points], [loss for _, loss in points], "o", alpha=0.5, label=f"seed {seed}")
    if sweep.fits is not None:
        curve = sweep.fits.pooled
        grid = np.geomspace(curve.d_min, curve.d_max, 100)
        left.plot(grid, [curve.loss_at(d) for d in grid], "k-", label="fit (all seeds)")
    left.set(xscale="log", xlabel="unique train tokens D", ylabel="optimum test bits/token",
             title=f"{SCRATCH}: loss at its early-stopping optimum")
    left.legend(fontsize=7)
    for arm in sorted({c.arm for c in sweep.cells}):
        _multipliers(right, [c for c in sweep.cells if c.arm == arm], arm)
    _multiplier_axes(right, "effective data transferred (exact seeds)")
    return Chart(f"{slug}_effective_data.png",
                 "Left: scratch's test loss at its early-stopping optimum against unique train tokens, with the "
                 "fit D_E is read off. Right: effective data multiplier (D_F + D_T) / D_F per arm (geometric mean "
                 "over exact seeds; bars = 95% t-interval, or range below 5 seeds); below 1: ossification.",
                 _png(fig))
