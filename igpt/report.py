"""Transfer report from metrics files only: curves, speedups, effective data transferred.

Reads run directories (metrics.jsonl, run.json) and experiment directories
(experiment.json) and never imports jax, so it runs on a laptop over copied metrics. Writes
PNG figures, a self-contained report.html, report.md and summary.json into a temporary
sibling of `out_dir` and renames it into place, so a crash never leaves a half report that
looks whole. Losses are shown, and targets are given, in bits per token.
"""
from __future__ import annotations

import base64
import dataclasses
import html
import io
import json
import math
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from igpt.metrics import METRICS_FILE, RUN_INFO_FILE, bits, read_metrics, read_run_info
from igpt.transfer import Comparison, Curve, LrChoice, compare_arms, select_best_lr

EXPERIMENT_FILE = "experiment.json"
BASELINE = "scratch"
SUMMARY_FILE = "summary.json"


# ----------------------------------------------------------------------------- reading runs

@dataclass
class Run:
    """One run directory: who it is (run.json), its curves in bits/token, and its state."""
    path: Path
    label: str
    info: dict[str, Any]
    eval: Curve | None
    train: Curve | None

    @property
    def status(self) -> str:
        if self.eval is None and self.train is None:
            return "no metrics"
        if not self.info:
            return "unknown (no run.json)"
        return "finished" if self.info.get("finished") else "in progress"

    @property
    def last_step(self) -> int | None:
        ends = [c.steps[-1] for c in (self.eval, self.train) if c is not None]
        return int(max(ends)) if ends else None

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
                         "step, tokens_seen and loss or bits_per_token (see igpt/metrics.py)") from e


def _read_run(path: Path, label: str) -> Run:
    records = read_metrics(path)
    return Run(path, label, read_run_info(path), _curve_of(records, "eval", path),
               _curve_of(records, "train", path))


def _walk(root: Path, name: str) -> list[Path]:
    """Directories under root (root included) holding `name`, skipping hidden folders."""
    return [p.parent for p in root.rglob(name)
            if not any(part.startswith(".") for part in p.relative_to(root).parts[:-1])]


def _discover(inputs: Sequence[Path]) -> tuple[dict[Path, list[Path]], list[Path]]:
    """Experiment dirs with their run dirs, and run dirs that belong to no experiment."""
    for p in inputs:
        if not p.is_dir():
            raise FileNotFoundError(
                f"input {p} is not a directory; pass run directories (holding {METRICS_FILE} or "
                f"{RUN_INFO_FILE}) or experiment directories (holding {EXPERIMENT_FILE})")
    experiments = sorted({d.resolve() for p in inputs for d in _walk(p, EXPERIMENT_FILE)})
    runs = sorted({d.resolve() for p in inputs for name in (METRICS_FILE, RUN_INFO_FILE)
                   for d in _walk(p, name)})
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


def _read_experiment(exp_dir: Path) -> dict[str, Any]:
    path = exp_dir / EXPERIMENT_FILE
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e}); the runner writes it, restore it") from e
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: expected a JSON object with name, target, sources, arms, "
                         "seeds, lrs, complete")
    return meta


# ----------------------------------------------------------------------------- analysis

@dataclass
class Section:
    """What one experiment (or the loose runs) contributes to the report."""
    title: str
    slug: str
    summary: dict[str, Any]
    intro: list[str] = field(default_factory=list)
    tables: list[tuple[str, list[str], list[list[str]], str]] = field(default_factory=list)
    figures: list[tuple[str, str, bytes]] = field(default_factory=list)
    lists: list[tuple[str, list[str]]] = field(default_factory=list)


def _finite(x: float | None) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def _run_row(run: Run) -> dict[str, Any]:
    return {"path": str(run.path), "label": run.label, "name": run.info.get("name"),
            "status": run.status, "last_step": run.last_step,
            "final_eval_bits": _finite(run.eval.losses[-1]) if run.eval else None}


def _fmt_tokens(n: float) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.3g}{unit}"
    return f"{n:.3g}"


def _fmt_interval(iv: dict[str, Any] | None, fmt, prefix: str = "", unit: str = "") -> str:
    if iv is None:
        return ""
    return f"{prefix}{fmt(iv['mean'])}{unit} [{fmt(iv['lo'])}, {fmt(iv['hi'])}]"


def _speedup_cell(r: dict[str, Any]) -> str:
    if r["interval"] is None:
        if any(s["status"] == "at_start" for s in r["speedups"].values()):
            return "no ratio: a curve starts below this target"
        return f"not reached (0/{r['n_seeds']} seeds)"
    prefix = "≥" if r["lower_bound"] else ""
    return (_fmt_interval(r["interval"], lambda v: f"{v:.2f}", prefix, "×")
            + f" · {r['n_reached']}/{r['n_seeds']} seeds")


def _steps_cell(s: dict[str, Any], n: int) -> str:
    if s["interval"] is None:
        return f"not reached (0/{n} seeds)"
    return _fmt_interval(s["interval"], lambda v: f"{v:,.0f}") + f" · {s['n_reached']}/{n} seeds"


def _headline(arm: dict[str, Any]) -> dict[str, Any]:
    """The arm at the hardest target that every seed reached (scratch's final loss, by default,
    when they all did), so a headline never rests on the few seeds that got furthest; the
    `hardest_*` fields say how the hardest target went."""
    targets, hardest = arm["targets"], arm["targets"][-1]
    all_seeds = [r for r in targets if r["interval"] is not None and r["n_reached"] == r["n_seeds"]]
    r = all_seeds[-1] if all_seeds else hardest
    iv = r["interval"]
    return {"target_bits": r["target"], "reached": iv is not None,
            "speedup": iv["mean"] if iv else None, "lo": iv["lo"] if iv else None,
            "hi": iv["hi"] if iv else None, "lower_bound": r["lower_bound"],
            "n_reached": r["n_reached"], "n_seeds": r["n_seeds"],
            "at_hardest": r is hardest, "hardest_bits": hardest["target"],
            "hardest_n_reached": hardest["n_reached"],
            "transferred_tokens": arm["transferred"], "transferred_fraction": arm["fraction"],
            "transferred_lower_bound": arm["effective_lower_bound"]}


def _level(bits: float, baseline: str, is_baseline_final: bool) -> str:
    return f"{baseline}'s final loss ({bits:.3f} bits/token)" if is_baseline_final else f"{bits:.3f} bits/token"


def _headline_text(arm: str, h: dict[str, Any], baseline: str, given: bool) -> str:
    hardest = _level(h["hardest_bits"], baseline, not given)
    if not h["reached"]:
        return f"{arm}: did not reach {hardest} ({h['n_reached']}/{h['n_seeds']} seeds)."
    level = _level(h["target_bits"], baseline, not given and h["at_hardest"])
    bound = "at least " if h["lower_bound"] else ""
    text = (f"{arm}: speedup {bound}{h['speedup']:.2f}× over {baseline} (steps {baseline} needs ÷ steps "
            f"{arm} needs) to reach {level}; 95% interval [{h['lo']:.2f}, {h['hi']:.2f}], "
            f"{h['n_reached']}/{h['n_seeds']} seeds.")
    if not h["at_hardest"]:
        text += f" Only {h['hardest_n_reached']}/{h['n_seeds']} seeds reached {hardest}."
    return text


def _slug(name: str, taken: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "runs"
    slug, i = base, 2
    while slug in taken:
        slug, i = f"{base}_{i}", i + 1
    taken.add(slug)
    return slug


def _analyse_experiment(exp_dir: Path, run_dirs: list[Path], taken: set[str], log_x: bool,
                        targets: list[float] | None) -> Section:
    meta = _read_experiment(exp_dir)
    name = str(meta.get("name", exp_dir.name))
    slug = _slug(name, taken)
    runs = [_read_run(d, os.path.relpath(d, exp_dir)) for d in run_dirs]
    target_runs = [r for r in runs if r.info.get("role") == "target"]
    sources = [r for r in runs if r.info.get("role") == "source"]
    skipped = [f"{r.label}: run.json role {r.info.get('role')!r}, not source or target"
               for r in runs if r not in target_runs and r not in sources]
    grid: dict[str, dict[float, dict[int, Run]]] = {}
    for r in target_runs:
        missing = [k for k in ("arm", "lr", "seed") if k not in r.info]
        if missing:
            skipped.append(f"{r.label}: run.json lacks {', '.join(missing)}")
            continue
        cell = grid.setdefault(str(r.info["arm"]), {}).setdefault(float(r.info["lr"]), {})
        seed = int(r.info["seed"])
        if seed in cell:
            raise ValueError(f"{exp_dir}: two runs claim arm {r.info['arm']!r} lr {r.info['lr']} "
                             f"seed {seed}: {cell[seed].label} and {r.label}; remove the copy")
        cell[seed] = r

    complete = bool(meta.get("complete", False))
    in_progress = [r for r in runs if r.status == "in progress"]
    no_metrics = [r for r in runs if r.status == "no metrics"]
    not_started = [f"arm={a}, lr={lr}, seed={s}" for a in meta.get("arms", [])
                   for lr in meta.get("lrs", []) for s in meta.get("seeds", [])
                   if not any(math.isclose(float(lr), got) and int(s) in seeds
                              for got, seeds in grid.get(a, {}).items())]

    finals = {arm: {lr: [r.eval.losses[-1] for r in seeds.values() if r.eval is not None]
                    for lr, seeds in by_lr.items()} for arm, by_lr in grid.items()}
    finals = {arm: {lr: f for lr, f in by_lr.items() if f} for arm, by_lr in finals.items()}
    choice: dict[str, LrChoice] = select_best_lr({a: f for a, f in finals.items() if f})
    chosen = {arm: {s: r for s, r in grid[arm][c.lr].items() if r.eval is not None}
              for arm, c in choice.items()}
    several_lrs = any(len(by_lr) > 1 for by_lr in grid.values())

    comparison: Comparison | None = None
    notes = []
    if BASELINE in chosen and chosen[BASELINE]:
        curves = {arm: {s: r.eval for s, r in seeds.items()} for arm, seeds in chosen.items()}
        comparison = compare_arms(curves, BASELINE, targets)
    else:
        notes.append(f"No speedups yet: the baseline arm {BASELINE!r} has no eval metrics.")
    cmp = dataclasses.asdict(comparison) if comparison else None

    status = "complete" if complete else "in progress"
    source_names = meta.get("sources") or sorted({str(r.info.get("name", r.label)) for r in sources})
    target = meta.get("target", "the target data")
    question = (f"Does pretraining on {' or '.join(map(str, source_names)) or 'another modality'} "
                f"make a transformer learn {target} faster, and by how much?")
    summary: dict[str, Any] = {
        "name": name, "dir": str(exp_dir), "target": target, "sources": source_names,
        "status": status, "complete": complete, "baseline": BASELINE, "units": "bits/token",
        "targets": cmp["targets"] if cmp else [], "targets_given": targets is not None,
        "several_lrs": several_lrs,
        "lr_selection": {a: dataclasses.asdict(c) for a, c in sorted(choice.items())},
        "headline": {a: _headline(r) for a, r in cmp["arms"].items()} if cmp else {},
        "comparison": cmp,
        "sources_runs": [_run_row(r) for r in sources],
        "runs_in_progress": [r.describe() for r in in_progress],
        "runs_not_started": not_started,
        "runs_without_metrics": [r.describe() for r in no_metrics],
        "skipped": skipped, "notes": notes,
    }
    sec = Section(f"{name}: {question}", slug, summary)
    sec.intro.append(f"Experiment {name} ({exp_dir}) is {status.upper()}"
                     + ("" if complete else ": numbers below will change as runs finish") + ".")
    sec.intro.extend(_headline_text(a, h, BASELINE, targets is not None)
                     for a, h in summary["headline"].items())
    sec.intro.extend(notes)
    sec.intro.append(
        f"Speedup = steps {BASELINE} needs to reach a loss ÷ fine-tuning steps the arm needs "
        "(pretraining steps not counted), interpolated between evals, paired by seed; mean over "
        "seeds with a 95% bootstrap interval (rough with few seeds). “≥”: a lower bound "
        f"({BASELINE} never reached that loss, or the arm was below it at its first eval). Seeds "
        "that did not reach a target are left out of its mean and counted.")
    if several_lrs:
        sec.intro.append("Several learning rates were run: each arm is shown at its own best "
                         "rate (lowest mean final eval loss over seeds), since one shared rate "
                         "can fake or hide transfer." + ("" if complete else
                         " The choice is provisional while runs are in progress."))
    if cmp:
        _add_tables(sec, cmp, choice, chosen)
    _add_experiment_figures(sec, chosen, choice, sources, cmp["targets"] if cmp else [], log_x)
    sec.lists = [("Runs in progress", summary["runs_in_progress"]),
                 ("Runs not started", not_started),
                 ("Runs with no metrics", summary["runs_without_metrics"]),
                 ("Runs left out", skipped)]
    return sec


def _add_tables(sec: Section, cmp: dict[str, Any], choice: dict[str, LrChoice],
                chosen: dict[str, dict[int, Run]]) -> None:
    levels = cmp["targets"]
    heads = [f"to {t:.3f}" + (f" ({BASELINE} final)" if i == len(levels) - 1
                              and not sec.summary["targets_given"] else "")
             for i, t in enumerate(levels)]
    arms = cmp["arms"]
    sec.tables.append((
        "Speedup over scratch (× fewer steps to reach each eval loss, bits/token)",
        ["arm", "lr"] + heads,
        [[a, f"{choice[a].lr:g}"] + [_speedup_cell(r) for r in arms[a]["targets"]] for a in arms],
        "Mean [95% bootstrap interval] · seeds that reached the target."))
    n_base = len(chosen[BASELINE])
    rows = [[BASELINE, f"{choice[BASELINE].lr:g}"]
            + [_steps_cell(s, n_base) for s in cmp["baseline_steps"]]]
    rows += [[a, f"{choice[a].lr:g}"]
             + [_steps_cell(r["steps"], r["n_seeds"]) for r in arms[a]["targets"]] for a in arms]
    sec.tables.append(("Steps to reach each eval loss", ["arm", "lr"] + heads, rows,
                       "Mean [95% bootstrap interval] over the seeds that reached it."))
    dt_rows = []
    for a, r in arms.items():
        ends = [e for e in r["effective_data"].values() if e is not None]
        bound = "≥" if r["effective_lower_bound"] else ""
        dt_rows.append([
            a, _fmt_tokens(float(np.mean([e["fine_tuning_tokens"] for e in ends]))) if ends else "",
            _fmt_interval(r["transferred"], _fmt_tokens, bound) or "not available",
            _fmt_interval(r["fraction"], lambda v: f"{v:.2f}", bound) or "not available",
            f"{sum(e['reached'] for e in ends)}/{len(ends)} seeds"])
    sec.tables.append((
        "Effective data transferred at the end of fine-tuning (Hernandez et al. 2021)",
        ["arm", "D_F fine-tuning tokens", "D_T transferred tokens", "D_T / D_E",
         f"{BASELINE} reached the arm's final loss"], dt_rows,
        f"D_E = tokens {BASELINE} needs to reach the arm's final loss; D_T = D_E − D_F. “≥”: "
        f"{BASELINE} never reached that loss for some seed, so D_T is only a lower bound."))
    if sec.summary["several_lrs"]:
        lrs = sorted({s.lr for c in choice.values() for s in c.scores})
        rows = []
        for a, c in sorted(choice.items()):
            by = {s.lr: s for s in c.scores}
            rows.append([a] + [("" if lr not in by else "diverged" if by[lr].mean_final is None
                                else f"{by[lr].mean_final:.3f} ({by[lr].n_seeds})"
                                + (" ← best" if lr == c.lr else "")) for lr in lrs])
        sec.tables.append(("Learning-rate selection: mean final eval bits/token (seeds)",
                           ["arm"] + [f"lr {lr:g}" for lr in lrs], rows,
                           "Each arm is compared at its best rate."))


# ----------------------------------------------------------------------------- figures

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


def _plot(title: str, panels: list[tuple[str, str, dict[str, list[Curve]]]], log_x: bool,
          hlines: Sequence[float] = ()) -> bytes:
    """One PNG: per panel, each group's mean over seeds with a min-max band."""
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
            color = "black" if label.startswith(BASELINE) else f"C{i % 10}"
            ax.plot(x, mean, color=color, lw=1.6, label=label)
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
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _add_experiment_figures(sec: Section, chosen: dict[str, dict[int, Run]],
                            choice: dict[str, LrChoice], sources: list[Run], levels: list[float],
                            log_x: bool) -> None:
    order = sorted(chosen, key=lambda a: (a != BASELINE, a))
    for split in ("eval", "train"):
        groups = {f"{a} (lr {choice[a].lr:g}, {len(chosen[a])} seeds)":
                  [getattr(r, split) for r in chosen[a].values() if getattr(r, split) is not None]
                  for a in order}
        groups = {k: v for k, v in groups.items() if v}
        if groups:
            ylabel = f"{split} bits/token"
            title = (f"{sec.summary['target']}: {split} loss per arm (mean, band = min–max over "
                     "seeds)" + ("; dotted = targets" if split == "eval" and levels else ""))
            png = _plot(title, [("steps", ylabel, groups), ("tokens", ylabel, groups)], log_x,
                        levels if split == "eval" else ())
            sec.figures.append((f"{sec.slug}_{split}.png", title, png))
    groups = {str(r.info.get("name", r.label)): [r.eval] for r in sources if r.eval is not None}
    if groups:
        title = "Pretraining (sources): eval loss on each source's own data"
        sec.figures.append((f"{sec.slug}_sources.png", title,
                            _plot(title, [("steps", "eval bits/token", groups)], log_x)))


def _analyse_singles(run_dirs: list[Path], slug: str, log_x: bool) -> Section:
    runs = [_read_run(d, str(d)) for d in run_dirs]
    rows = [_run_row(r) for r in runs]
    sec = Section("Runs", slug, {"runs": rows})
    sec.tables.append(("Runs", ["run", "status", "last step", "final eval bits/token"],
                       [[r.describe(), r.status, "" if r.last_step is None else str(r.last_step),
                         "" if row["final_eval_bits"] is None else f"{row['final_eval_bits']:.3f}"]
                        for r, row in zip(runs, rows)], ""))
    for split in ("eval", "train"):
        groups = {r.describe(): [getattr(r, split)] for r in runs if getattr(r, split) is not None}
        if groups:
            title = f"{split} loss per run"
            ylabel = f"{split} bits/token"
            sec.figures.append((f"{slug}_{split}.png", title, _plot(
                title, [("steps", ylabel, groups), ("tokens", ylabel, groups)], log_x)))
    sec.lists = [("Runs in progress", [r.describe() for r in runs if r.status == "in progress"]),
                 ("Runs with no metrics", [r.describe() for r in runs if r.status == "no metrics"])]
    return sec


# ----------------------------------------------------------------------------- rendering

def _html_table(caption: str, head: list[str], rows: list[list[str]], note: str) -> str:
    esc = html.escape
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows)
    return (f"<h3>{esc(caption)}</h3><table><thead><tr>"
            + "".join(f"<th>{esc(h)}</th>" for h in head)
            + f"</tr></thead><tbody>{body}</tbody></table>"
            + (f"<p class='note'>{esc(note)}</p>" if note else ""))


def _md_table(caption: str, head: list[str], rows: list[list[str]], note: str) -> str:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"
    out = [f"### {caption}", "", line(head), line(["---"] * len(head))] + [line(r) for r in rows]
    return "\n".join(out + ([f"\n{note}"] if note else []))


_CSS = """body{font-family:system-ui,sans-serif;max-width:1150px;margin:1.5em auto;color:#222}
table{border-collapse:collapse;margin:.5em 0;font-size:14px}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}th{background:#f2f2f2}
img{max-width:100%;border:1px solid #eee}.note{color:#555;font-size:13px}
.status{font-weight:bold}h2{border-bottom:2px solid #ddd;margin-top:1.6em}"""


def _render_html(title: str, sections: list[Section]) -> str:
    esc = html.escape
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{esc(title)}</title>"
             f"<style>{_CSS}</style></head><body><h1>{esc(title)}</h1>"]
    for sec in sections:
        parts.append(f"<h2>{esc(sec.title)}</h2>")
        parts.extend(f"<p>{esc(p)}</p>" for p in sec.intro)
        for name, caption, png in sec.figures:
            data = base64.b64encode(png).decode("ascii")
            parts.append(f"<figure><img alt='{esc(caption)}' src='data:image/png;base64,{data}'>"
                         f"<figcaption class='note'>{esc(caption)} ({esc(name)})</figcaption></figure>")
        parts.extend(_html_table(*t) for t in sec.tables)
        for heading, items in sec.lists:
            if items:
                parts.append(f"<h3>{esc(heading)} ({len(items)})</h3><ul>"
                             + "".join(f"<li>{esc(i)}</li>" for i in items) + "</ul>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _render_md(title: str, sections: list[Section]) -> str:
    parts = [f"# {title}"]
    for sec in sections:
        parts.append(f"## {sec.title}")
        parts.extend(sec.intro)
        parts.extend(f"![{caption}]({name})" for name, caption, _ in sec.figures)
        parts.extend(_md_table(*t) for t in sec.tables)
        for heading, items in sec.lists:
            if items:
                parts.append(f"### {heading} ({len(items)})\n\n"
                             + "\n".join(f"- {i}" for i in items))
    return "\n\n".join(parts) + "\n"


# ----------------------------------------------------------------------------- writing

def _check_out_dir(out: Path) -> None:
    if out.exists() and (not out.is_dir() or (any(out.iterdir())
                                              and not (out / SUMMARY_FILE).is_file())):
        raise ValueError(f"out_dir {out} exists and is not an igpt report (no {SUMMARY_FILE}); "
                         "choose a new or empty directory, it is replaced whole")


def _publish(tmp: Path, out: Path) -> None:
    """Swap the finished report into place; the old one is moved aside, then removed."""
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)


def write_report(inputs: list[str | Path], out_dir: str | Path, *, log_x: bool = False,
                 targets: list[float] | None = None) -> dict[str, Any]:
    """Write the report for experiment and/or run directories; return summary.json's content.

    `targets` are eval losses in bits/token (default: per experiment, from its scratch arm,
    see igpt.transfer.default_targets). `out_dir` is replaced whole, atomically."""
    if not inputs:
        raise ValueError("write_report: no inputs; pass run or experiment directories")
    if targets is not None and (not targets or not all(math.isfinite(t) for t in targets)):
        raise ValueError(f"write_report: targets must be finite losses in bits/token, got {targets}")
    paths = [Path(p) for p in inputs]
    out = Path(out_dir).resolve()
    _check_out_dir(out)
    owned, singles = _discover(paths)

    taken: set[str] = set()
    exp_sections = [_analyse_experiment(e, runs, taken, log_x, targets)
                    for e, runs in owned.items()]
    single = _analyse_singles(singles, _slug("runs", taken), log_x) if singles else None
    sections = exp_sections + ([single] if single else [])
    exps = [s.summary for s in exp_sections]
    loose = single.summary["runs"] if single else []
    summary = {
        "inputs": [str(p) for p in paths], "units": "bits/token", "experiments": exps,
        "single_runs": loose,
        "runs_in_progress": [f"{e['name']}: {r}" for e in exps for r in e["runs_in_progress"]]
                            + [r["path"] for r in loose if r["status"] == "in progress"],
        "runs_without_metrics": [f"{e['name']}: {r}" for e in exps
                                 for r in e["runs_without_metrics"]]
                                + [r["path"] for r in loose if r["status"] == "no metrics"],
        "figures": [name for s in sections for name, _, _ in s.figures],
    }
    text = json.dumps(summary, indent=2, sort_keys=True, allow_nan=False)
    title = ("Transfer report: " + "; ".join(f"{e['target']} ({e['status']})" for e in exps)
             if exps else "Run report")

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; the published report is an ordinary dir
        for sec in sections:
            for name, _, png in sec.figures:
                (tmp / name).write_bytes(png)
        (tmp / "report.html").write_text(_render_html(title, sections), encoding="utf-8")
        (tmp / "report.md").write_text(_render_md(title, sections), encoding="utf-8")
        (tmp / SUMMARY_FILE).write_text(text + "\n", encoding="utf-8")
        _publish(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return json.loads(text)


def headline(summary: dict[str, Any], out_dir: Path) -> str:
    """The lines a person reads in the terminal: each arm's speedup with its interval."""
    lines = []
    for exp in summary["experiments"]:
        lines.append(f"{exp['name']} ({exp['status']}), target {exp['target']}:")
        for arm, h in exp["headline"].items():
            speed = (f"{'>=' if h['lower_bound'] else ''}{h['speedup']:.2f}x "
                     f"[{h['lo']:.2f}, {h['hi']:.2f}]" if h["reached"] else "not reached")
            line = f"  {arm}: {speed} ({h['n_reached']}/{h['n_seeds']} seeds)"
            if h["reached"]:
                line += f" to {h['target_bits']:.3f} bits/token"
                if not h["at_hardest"]:
                    line += f"; {h['hardest_n_reached']}/{h['n_seeds']} seeds reached {h['hardest_bits']:.3f}"
            lines.append(line)
    if summary["runs_without_metrics"]:
        lines.append(f"runs with no metrics: {', '.join(summary['runs_without_metrics'])}")
    lines.append(f"report: {Path(out_dir) / 'report.html'}")
    return "\n".join(lines)
