"""The report's words and tables, and the two pages they make: report.html and report.md."""
from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from igpt.transfer.arms import SCRATCH
from igpt.transfer.metrics import Interval, StepsToTarget, TargetResult
from igpt.transfer.report.analysis import Analysis, Headline
from igpt.transfer.report.collect import Run
from igpt.transfer.report.figures import Chart


@dataclass(frozen=True)
class Table:
    caption: str
    head: list[str]
    rows: list[list[str]]
    note: str = ""


@dataclass
class Section:
    """What one experiment (or the loose runs) contributes to the pages."""
    title: str
    intro: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    charts: list[Chart] = field(default_factory=list)
    lists: list[tuple[str, list[str]]] = field(default_factory=list)


# ----------------------------------------------------------------------------- cells and lines

def _fmt_tokens(n: float) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.3g}{unit}"
    return f"{n:.3g}"


def _fmt_interval(iv: Interval | None, fmt: Callable[[float], str], prefix: str = "",
                  unit: str = "") -> str:
    if iv is None:
        return ""
    return f"{prefix}{fmt(iv.mean)}{unit} [{fmt(iv.lo)}, {fmt(iv.hi)}]"


def _speedup_cell(r: TargetResult) -> str:
    if r.interval is None:
        if any(s.status == "at_start" for s in r.speedups.values()):
            return "no ratio: a curve starts below this target"
        return f"not reached (0/{r.n_seeds} seeds)"
    prefix = "≥" if r.lower_bound else ""
    return (_fmt_interval(r.interval, lambda v: f"{v:.2f}", prefix, "×")
            + f" · {r.n_reached}/{r.n_seeds} seeds")


def _steps_cell(s: StepsToTarget, n: int) -> str:
    if s.interval is None:
        return f"not reached (0/{n} seeds)"
    return _fmt_interval(s.interval, lambda v: f"{v:,.0f}") + f" · {s.n_reached}/{n} seeds"


def _level(bits: float, baseline: str, is_baseline_final: bool) -> str:
    return f"{baseline}'s final loss ({bits:.3f} bits/token)" if is_baseline_final else f"{bits:.3f} bits/token"


def headline_text(arm: str, h: Headline, baseline: str, given: bool) -> str:
    """The headline as a sentence; `given`: the targets were given, not scratch's defaults."""
    hardest = _level(h.hardest_bits, baseline, not given)
    if not h.reached:
        return f"{arm}: did not reach {hardest} ({h.n_reached}/{h.n_seeds} seeds)."
    level = _level(h.target_bits, baseline, not given and h.at_hardest)
    bound = "at least " if h.lower_bound else ""
    text = (f"{arm}: speedup {bound}{h.speedup:.2f}× over {baseline} (steps {baseline} needs ÷ steps "
            f"{arm} needs) to reach {level}; 95% interval [{h.lo:.2f}, {h.hi:.2f}], "
            f"{h.n_reached}/{h.n_seeds} seeds.")
    if not h.at_hardest:
        text += f" Only {h.hardest_n_reached}/{h.n_seeds} seeds reached {hardest}."
    return text


# ----------------------------------------------------------------------------- sections

def _intro(a: Analysis) -> list[str]:
    exp = a.experiment
    lines = [f"Experiment {exp.name} ({exp.dir}) is {exp.status.upper()}"
             + ("" if exp.complete else ": numbers below will change as runs finish") + "."]
    lines += [headline_text(arm, h, SCRATCH, a.targets_given) for arm, h in a.headlines.items()]
    lines += a.notes
    lines.append(
        f"Speedup = steps {SCRATCH} needs to reach a loss ÷ fine-tuning steps the arm needs "
        "(pretraining steps not counted), interpolated between evals, paired by seed; mean over "
        "seeds with a 95% bootstrap interval (rough with few seeds). “≥”: a lower bound "
        f"({SCRATCH} never reached that loss, or the arm was below it at its first eval). Seeds "
        "that did not reach a target are left out of its mean and counted.")
    if a.several_lrs:
        lines.append("Several learning rates were run: each arm is shown at its own best "
                     "rate (lowest mean final eval loss over seeds), since one shared rate "
                     "can fake or hide transfer." + ("" if exp.complete else
                     " The choice is provisional while runs are in progress."))
    return lines


def _comparison_tables(a: Analysis) -> list[Table]:
    cmp, choice = a.comparison, a.choice
    heads = [f"to {t:.3f}" + (f" ({SCRATCH} final)" if i == len(cmp.targets) - 1
                              and not a.targets_given else "")
             for i, t in enumerate(cmp.targets)]
    arms = cmp.arms
    speedups = Table(
        f"Speedup over {SCRATCH} (× fewer steps to reach each eval loss, bits/token)",
        ["arm", "lr"] + heads,
        [[arm, f"{choice[arm].lr:g}"] + [_speedup_cell(t) for t in r.targets] for arm, r in arms.items()],
        "Mean [95% bootstrap interval] · seeds that reached the target.")
    n_base = len(a.chosen[SCRATCH])
    rows = [[SCRATCH, f"{choice[SCRATCH].lr:g}"] + [_steps_cell(s, n_base) for s in cmp.baseline_steps]]
    rows += [[arm, f"{choice[arm].lr:g}"] + [_steps_cell(t.steps, t.n_seeds) for t in r.targets]
             for arm, r in arms.items()]
    steps = Table("Steps to reach each eval loss", ["arm", "lr"] + heads, rows,
                  "Mean [95% bootstrap interval] over the seeds that reached it.")
    dt_rows = []
    for arm, r in arms.items():
        ends = [e for e in r.effective_data.values() if e is not None]
        bound = "≥" if r.effective_lower_bound else ""
        dt_rows.append([
            arm, _fmt_tokens(float(np.mean([e.fine_tuning_tokens for e in ends]))) if ends else "",
            _fmt_interval(r.transferred, _fmt_tokens, bound) or "not available",
            _fmt_interval(r.fraction, lambda v: f"{v:.2f}", bound) or "not available",
            f"{sum(e.reached for e in ends)}/{len(ends)} seeds"])
    transferred = Table(
        "Effective data transferred at the end of fine-tuning (Hernandez et al. 2021)",
        ["arm", "D_F fine-tuning tokens", "D_T transferred tokens", "D_T / D_E",
         f"{SCRATCH} reached the arm's final loss"], dt_rows,
        f"D_E = tokens {SCRATCH} needs to reach the arm's final loss; D_T = D_E − D_F. “≥”: "
        f"{SCRATCH} never reached that loss for some seed, so D_T is only a lower bound.")
    return [speedups, steps, transferred]


def _lr_table(a: Analysis) -> Table:
    lrs = sorted({s.lr for c in a.choice.values() for s in c.scores})
    rows = []
    for arm, c in sorted(a.choice.items()):
        by = {s.lr: s for s in c.scores}
        rows.append([arm] + [("" if lr not in by else "diverged" if by[lr].mean_final is None
                              else f"{by[lr].mean_final:.3f} ({by[lr].n_seeds})"
                              + (" ← best" if lr == c.lr else "")) for lr in lrs])
    return Table("Learning-rate selection: mean final eval bits/token (seeds)",
                 ["arm"] + [f"lr {lr:g}" for lr in lrs], rows, "Each arm is compared at its best rate.")


def experiment_section(a: Analysis, charts: list[Chart]) -> Section:
    exp = a.experiment
    question = (f"Does pretraining on {' or '.join(map(str, exp.source_names)) or 'another modality'} "
                f"make a transformer learn {exp.target} faster, and by how much?")
    tables = _comparison_tables(a) if a.comparison else []
    if a.comparison and a.several_lrs:
        tables.append(_lr_table(a))
    lists = [("Runs in progress", [r.describe() for r in exp.runs_with("in progress")]),
             ("Runs not started", exp.not_started),
             ("Runs with no metrics", [r.describe() for r in exp.runs_with("no metrics")]),
             ("Runs left out", exp.skipped)]
    return Section(f"{exp.name}: {question}", _intro(a), tables, charts, lists)


def runs_section(runs: list[Run], charts: list[Chart]) -> Section:
    """Loose runs (no experiment): a status table and their curves."""
    table = Table("Runs", ["run", "status", "last step", "final eval bits/token"],
                  [[r.describe(), r.status, "" if r.last_step is None else str(r.last_step),
                    "" if r.final_eval_bits is None else f"{r.final_eval_bits:.3f}"] for r in runs])
    lists = [("Runs in progress", [r.describe() for r in runs if r.status == "in progress"]),
             ("Runs with no metrics", [r.describe() for r in runs if r.status == "no metrics"])]
    return Section("Runs", [], [table], charts, lists)


# ----------------------------------------------------------------------------- pages

def _html_table(t: Table) -> str:
    esc = html.escape
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in t.rows)
    return (f"<h3>{esc(t.caption)}</h3><table><thead><tr>"
            + "".join(f"<th>{esc(h)}</th>" for h in t.head)
            + f"</tr></thead><tbody>{body}</tbody></table>"
            + (f"<p class='note'>{esc(t.note)}</p>" if t.note else ""))


def _md_table(t: Table) -> str:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"
    out = [f"### {t.caption}", "", line(t.head), line(["---"] * len(t.head))] + [line(r) for r in t.rows]
    return "\n".join(out + ([f"\n{t.note}"] if t.note else []))


_CSS = """body{font-family:system-ui,sans-serif;max-width:1150px;margin:1.5em auto;color:#222}
table{border-collapse:collapse;margin:.5em 0;font-size:14px}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}th{background:#f2f2f2}
img{max-width:100%;border:1px solid #eee}.note{color:#555;font-size:13px}
.status{font-weight:bold}h2{border-bottom:2px solid #ddd;margin-top:1.6em}"""


def render_html(title: str, sections: list[Section]) -> str:
    """One self-contained page: the figures are embedded as base64 PNGs."""
    esc = html.escape
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{esc(title)}</title>"
             f"<style>{_CSS}</style></head><body><h1>{esc(title)}</h1>"]
    for sec in sections:
        parts.append(f"<h2>{esc(sec.title)}</h2>")
        parts.extend(f"<p>{esc(p)}</p>" for p in sec.intro)
        for c in sec.charts:
            data = base64.b64encode(c.png).decode("ascii")
            parts.append(f"<figure><img alt='{esc(c.caption)}' src='data:image/png;base64,{data}'>"
                         f"<figcaption class='note'>{esc(c.caption)} ({esc(c.name)})</figcaption></figure>")
        parts.extend(_html_table(t) for t in sec.tables)
        for heading, items in sec.lists:
            if items:
                parts.append(f"<h3>{esc(heading)} ({len(items)})</h3><ul>"
                             + "".join(f"<li>{esc(i)}</li>" for i in items) + "</ul>")
    parts.append("</body></html>")
    return "\n".join(parts)


def render_md(title: str, sections: list[Section]) -> str:
    """The same page in markdown, the figures linked as files next to it."""
    parts = [f"# {title}"]
    for sec in sections:
        parts.append(f"## {sec.title}")
        parts.extend(sec.intro)
        parts.extend(f"![{c.caption}]({c.name})" for c in sec.charts)
        parts.extend(_md_table(t) for t in sec.tables)
        for heading, items in sec.lists:
            if items:
                parts.append(f"### {heading} ({len(items)})\n\n"
                             + "\n".join(f"- {i}" for i in items))
    return "\n\n".join(parts) + "\n"
