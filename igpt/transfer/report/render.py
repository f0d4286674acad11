"""The report's words and tables, and the two pages they make: report.html and report.md."""
from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from igpt.transfer.arms import SCRATCH
from igpt.transfer.comparison import StepsToTarget
from igpt.transfer.metrics import steps_to_loss
from igpt.transfer.intervals import MIN_SEEDS_FOR_T, Bound, Estimate, Pooled, Speedup
from igpt.transfer.report.analysis import Analysis, Headline
from igpt.transfer.report.collect import Run
from igpt.transfer.report.data_sweep import DataSweep
from igpt.transfer.effective_data import PooledEffectiveData, TransferLaw
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

def fmt_ratio(x: float, digits: int = 2) -> str:
    """`digits` decimals, or under 0.1 two significant digits ("0.0097"): fixed decimals would
    print a FLOPs speedup of 0.0097 as 0.01."""
    return f"{x:,.{digits}f}" if abs(x) >= 0.1 or x == 0 else f"{x:.2g}"


def fmt_estimate(e: Estimate, unit: str = "×", digits: int = 2) -> str:
    """"1.93× [1.41, 2.64] (95% t-interval, 5 seeds)", "1.93× [1.41, 2.64] (range over 3 seeds)"
    or "1.93× (1 seed, no interval)": the words say how far the interval can be trusted."""
    v = lambda x: fmt_ratio(x, digits)
    if e.kind == "t":
        return f"{v(e.mean)}{unit} [{v(e.lo)}, {v(e.hi)}] ({e.confidence:.0%} t-interval, {e.n} seeds)"
    if e.kind == "range":
        return f"{v(e.mean)}{unit} [{v(e.lo)}, {v(e.hi)}] (range over {e.n} seeds)"
    return f"{v(e.mean)}{unit} (1 seed, no interval)"


def _bound(b: Bound | None) -> str:
    if b is None:
        return ""
    return f"; over all seeds {'≤' if b.side == 'at_most' else '≥'} {fmt_ratio(b.value)}×"


def pooled_cell(p: Pooled) -> str:
    """The pooled speedup with its counts: exact seeds, censored ones and their bound."""
    head = fmt_estimate(p.estimate) if p.estimate else "no ratio"
    parts = [f"{p.n_exact}/{p.n_seeds} exact"]
    if p.n_upper:
        parts.append(f"{p.n_upper} arm never reached")
    if p.n_lower:
        parts.append(f"{p.n_lower} baseline never reached")
    if p.n_none:
        parts.append(f"{p.n_none} no ratio")
    return f"{head} · {', '.join(parts)}{_bound(p.bound)}"


def _seed_cell(s: Speedup | None) -> str:
    if s is None:
        return ""
    if s.value is None:
        return "no ratio"
    return {"exact": "", "lower_bound": "≥", "upper_bound": "≤"}[s.status] + f"{s.value:.2f}"


def _steps_cell(s: StepsToTarget) -> str:
    if s.estimate is None:
        return f"not reached (0/{len(s.per_seed)} seeds)"
    return fmt_estimate(s.estimate, unit="", digits=0) + f" · {s.n_reached}/{len(s.per_seed)} seeds"


def _level(bits: float) -> str:
    return f"{bits:.3f} bits/token"


_SOURCE_WORDS = {"given": "fixed in advance", "held_out": "from held-out scratch seeds",
                 "provisional": "provisional, from the compared scratch seeds"}


def headline_text(arm: str, h: Headline) -> str:
    """The headline as a sentence: the speedup over scratch at the hardest target, in steps and
    in FLOPs, and over the best control."""
    level = f"{_level(h.target_bits)} ({_SOURCE_WORDS[h.target_source]})"
    counts = f"{h.n_reached}/{h.n_seeds} seeds reached it"
    if h.n_censored:
        counts += f", {h.n_censored} censored"
    if h.estimate is None:
        text = f"{arm}: no seed gives a ratio over {SCRATCH} at {level}; {counts}{_bound(h.bound)}."
    else:
        text = (f"{arm}: {fmt_estimate(h.estimate)} fewer steps than {SCRATCH} to reach {level}; "
                f"{counts}{_bound(h.bound)}.")
    if h.flops is not None:
        text += f" In total FLOPs, counting the source's pretraining and any bridge stage: {fmt_estimate(h.flops)}."
    if h.control is not None:
        text += (f" Over the best control ({h.control}): "
                 + (fmt_estimate(h.vs_control) if h.vs_control else "no ratio") + ".")
    return text


_VERDICT_WORDS = {
    "transfer": "faster than scratch and than the best control: transfer beyond what the control explains",
    "negative": "slower than scratch: negative transfer",
    "no_evidence": "no evidence of transfer beyond the best control (an interval includes 1 or lies below it)"}


def claim_text(arm: str, h: Headline) -> str:
    c = h.claim
    if c.verdict == "no_claim":
        return f"No transfer claim for {arm}: {'; '.join(c.reasons)}."
    return (f"Claim for {arm} at {_level(h.target_bits)}: {_VERDICT_WORDS[c.verdict]} (over "
            f"{SCRATCH} {fmt_estimate(h.estimate)}; over {h.control} {fmt_estimate(h.vs_control)}).")


def terminal_lines(a: Analysis) -> list[str]:
    """The experiment in a few plain lines for the terminal."""
    lines = [f"{a.experiment.name} ({a.experiment.status}), target {a.experiment.target}:"]
    for arm, h in a.headlines.items():
        speed = fmt_estimate(h.estimate, "x") if h.estimate else "no ratio"
        line = (f"  {arm}: {speed} to {_level(h.target_bits)}; {h.n_reached}/{h.n_seeds} seeds "
                f"reached it" + (f", {h.n_censored} censored" if h.n_censored else ""))
        if h.flops is not None:
            line += f"; FLOPs {fmt_estimate(h.flops, 'x')}"
        if h.claim is not None:
            line += f"; claim: {h.claim.verdict.replace('_', ' ')}"
        lines.append(line)
    return lines


# ----------------------------------------------------------------------------- sections

def _method(a: Analysis) -> list[str]:
    lines = [
        f"Speedup = steps {SCRATCH} needs to reach a loss on the {a.report_split} split ÷ steps the arm needs "
        "(pretraining steps not counted; the FLOPs speedup counts them), interpolated between "
        "evals, paired by seed, pooled as a geometric mean over the seeds where both curves "
        f"crossed the target: with {MIN_SEEDS_FOR_T} or more such seeds a 95% Student-t interval "
        f"on log speedup, with 2 to {MIN_SEEDS_FOR_T - 1} the range over them (no coverage "
        "claimed), with 1 no interval. A seed whose arm never reached the target within its "
        f"budget is censored (its speedup is below {SCRATCH}'s steps ÷ the arm's last step), "
        f"one whose {SCRATCH} never reached it is censored the other way; censored seeds are "
        "counted, not dropped, and bound the mean over all seeds (≤ or ≥)."]
    if a.one_split:
        lines.append("These runs wrote one eval split: learning rates, targets and the reported "
                     "curves share it, so the chosen rate's luck on it inflates its result "
                     "(winner's curse). Newer runs choose on validation and report on test.")
    else:
        lines.append("Learning rates (lowest mean early-stopped validation loss) and early stopping "
                     "are chosen on the validation split; every curve and speedup shown is on the "
                     "test split, at targets no compared seed chose.")
    exp = a.experiment
    lines.append({
        "given": "Targets were fixed in advance (report.targets / --targets).",
        "held_out": f"Targets come from held-out scratch seeds {sorted(a.held_out)}, which no "
                    "speedup uses: their mean test loss from 20% to 60% of the budget.",
        "provisional": "No targets were fixed in advance and no scratch seeds were held out, so "
                       f"the targets come from the compared {SCRATCH} seeds' own test "
                       "curves (their mean loss at 20% to 60% of the budget): descriptive, not "
                       "a claim. Set report.targets or hold out scratch seeds.",
        None: "No targets yet."}[a.target_source])
    if not a.several_lrs:
        lines.append("Every arm ran one learning rate: a single shared rate can fake or hide "
                     "transfer and cannot support a transfer claim (Rothermel et al. 2021). "
                     "Run a grid (lrs) of 3 or more rates.")
    else:
        lines.append("Each arm is shown at its own best rate" + (
            f", chosen on validation over seeds {exp.lr_seeds}; the other seeds ran at that rate only."
            if exp.lr_seeds else ".") + ("" if exp.complete else
                                        " The choice is provisional while runs are in progress."))
    if a.edge_arms:
        lines.append(f"Best learning rate at the edge of the arm's grid: {', '.join(a.edge_arms)}. "
                     "The optimum may lie outside the grid; extend it.")
    if a.controls:
        lines.append(f"Control arms: {', '.join(a.controls)}. A transfer claim is stated against "
                     "the best control at each target (the one with the highest speedup over "
                     f"{SCRATCH}), not only against {SCRATCH}.")
    return lines


def _intro(a: Analysis) -> list[str]:
    exp = a.experiment
    lines = [f"Experiment {exp.name} ({exp.shown_as}) is {exp.status.upper()}"
             + ("" if exp.complete else ": numbers below will change as runs finish") + "."]
    heads = a.headlines
    lines += [headline_text(arm, h) for arm, h in heads.items()]
    lines += [claim_text(arm, h) for arm, h in heads.items() if h.claim is not None]
    return lines + a.notes + _method(a)


def _heads(levels: list[float]) -> list[str]:
    return [f"to {t:.3f}" for t in levels]


def _comparison_tables(a: Analysis) -> list[Table]:
    cmp, choice = a.comparison, a.choice
    arms, heads = cmp.arms, _heads(cmp.targets)
    lr = lambda arm: f"{choice[arm].lr:g}"
    tables = [Table(
        f"Speedup over {SCRATCH} in steps, to each {a.report_split} loss (bits/token)",
        ["arm", "lr"] + heads, [[arm, lr(arm)] + [pooled_cell(t.speedup) for t in r.targets]
                                for arm, r in arms.items()],
        "Geometric mean over the seeds with an exact ratio · counts · bound over all seeds.")]
    if any(t.flops for r in arms.values() for t in r.targets):
        tables.append(Table(
            f"Speedup over {SCRATCH} in total FLOPs, counting the source's pretraining and any bridge stage",
            ["arm", "lr"] + heads,
            [[arm, lr(arm)] + [pooled_cell(t.flops) if t.flops else "FLOPs unknown" for t in r.targets]
             for arm, r in arms.items()],
            f"{SCRATCH}'s FLOPs to the target ÷ (the source's pretraining FLOPs + a bridge stage's + the "
            "arm's FLOPs to the target); FLOPs = tokens × run.json flops_per_token; a shipped donor's "
            "pretraining FLOPs from its donor.json."))
    if a.vs_control:
        tables.append(Table(
            "Speedup over the best control, in steps", ["arm", "lr"] + heads,
            [[arm, lr(arm)] + [f"over {c.control}: {pooled_cell(c.speedup)}" for c in results]
             for arm, results in a.vs_control.items()],
            f"The best control at each target is the control arm with the highest speedup over {SCRATCH}."))
    hardest = cmp.targets[-1]
    seeds = sorted({s for r in arms.values() for s in r.seeds})
    tables.append(Table(
        f"Per-seed speedup over {SCRATCH} at {_level(hardest)}", ["seed"] + list(arms),
        [[str(s)] + [_seed_cell(r.targets[-1].speedup.per_seed.get(s)) for r in arms.values()]
         for s in seeds],
        f"“≥”: {SCRATCH} never reached the target (a lower bound); “≤”: the arm never reached it "
        "(an upper bound); no ratio: neither did, or a curve started below it."))
    rows = [[SCRATCH, lr(SCRATCH)] + [_steps_cell(s) for s in cmp.baseline_steps]]
    rows += [[arm, lr(arm)] + [_steps_cell(t.steps) for t in r.targets] for arm, r in arms.items()]
    tables.append(Table(f"Steps to reach each {a.report_split} loss", ["arm", "lr"] + heads, rows,
                        "Geometric mean over the seeds that reached it."))
    tables.append(Table(
        f"Speedup over {SCRATCH} against the target loss ({a.report_split} bits/token)",
        ["target"] + list(arms),
        [[f"{lvl:.3f}" + (" (target)" if any(abs(lvl - t) < 1e-9 for t in cmp.targets) else "")]
         + [pooled_cell(r.curve[i]) for r in arms.values()] for i, lvl in enumerate(cmp.curve_levels)],
        f"Evenly spaced from {SCRATCH}'s early loss to its final loss (and every target), so no "
        "single target carries the conclusion."))
    return tables


def _lr_table(a: Analysis) -> Table:
    lrs = sorted({s.lr for c in a.choice.values() for s in c.scores})
    rows = []
    for arm, c in sorted(a.choice.items()):
        by = {s.lr: s for s in c.scores}
        rows.append([arm] + [("" if lr not in by else "diverged" if by[lr].mean_loss is None
                              else f"{by[lr].mean_loss:.3f} ({by[lr].n_seeds})"
                              + (" ← best" + (", at the grid's edge" if c.at_edge else "")
                                 if lr == c.lr else "")) for lr in lrs])
    split = "eval" if a.one_split else "validation"
    return Table(f"Learning-rate selection: mean early-stopped {split} bits/token (seeds)",
                 ["arm"] + [f"lr {lr:g}" for lr in lrs], rows,
                 "Each arm is compared at its best rate; a best rate at the edge of the grid may "
                 "not be the optimum.")


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


def _model(run: Run) -> str:
    layers, width = run.setting("model.num_layers"), run.setting("model.width")
    return f"{layers} x {width}" if layers and width else ""


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    return f"{seconds / 60:.1f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def _optional(value, spec: str) -> str:
    return "" if value is None else f"{value:{spec}}"


def runs_section(runs: list[Run], charts: list[Chart], unreadable: list[str], targets: list[float]) -> Section:
    """Loose runs (no experiment): what each is and how it went, the steps each took to the
    `targets` (bits/token on test), their curves, and the runs left out."""
    head = ["run", "status", "model", "parameters", "lr", "steps", "data", "tokenizer", "wall time", "tokens/s",
            "final test bits/token"] + [f"steps to {t:g} bits" for t in targets]
    rows = []
    for r in runs:
        total = r.setting("train.steps")
        reach = [steps_to_loss(r.test.steps, r.test.losses, t) if r.test else None for t in targets]
        rows.append([r.label, r.status, _model(r), _optional(r.info.get("params"), ","), _optional(r.setting("optim.lr"), "g"),
                     "" if r.last_step is None else f"{r.last_step}" + (f" of {total}" if total else ""),
                     str(r.setting("data.source") or ""), str(r.setting("data.tokenizer") or ""),
                     _duration(r.wall_seconds), _optional(r.tokens_per_s, ",.0f"),
                     _optional(r.final_test_bits, ".3f")] + ["not reached" if s is None else f"{s:,.0f}" for s in reach])
    table = Table("What each run is, and how it went", head, rows,
                  "Steps to a target: where the test curve first reaches it, interpolated between evals." if targets
                  else "")
    lists = [("Single runs in progress", [r.label for r in runs if r.status == "in progress"]),
             ("Single runs with no metrics", [r.label for r in runs if r.status == "no metrics"]),
             ("Runs left out (not GPT runs this report can read)", unreadable)]
    return Section("Runs outside experiments", [], [table], charts, lists)


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


def _tokens(x: float) -> str:
    return f"{x:,.0f}"


def _d_t_cell(p: PooledEffectiveData) -> str:
    if p.d_t is None:
        return "no exact seed"
    e = p.d_t
    interval = ("" if e.kind == "none" else f" [{_tokens(e.lo)}, {_tokens(e.hi)}]")
    words = {"t": f"{e.confidence:.0%} t-interval, {e.n} seeds", "range": f"range over {e.n} seeds",
             "none": "1 seed, no interval"}[e.kind]
    return f"{_tokens(e.mean)}{interval} ({words})" + (" · ossified" if e.kind == "t" and e.hi < 0 else "")


def sweep_section(sweep: DataSweep, charts: list[Chart]) -> Section:
    """Effective data transferred over the data-size sweep, one row per arm and size."""
    rows = [[c.arm, f"{c.examples:,}", _tokens(c.d_f), f"{c.lr:g}", _d_t_cell(c.result),
             fmt_estimate(c.result.multiplier) if c.result.multiplier else "no exact seed",
             f"{c.result.n_exact} exact, {c.result.n_extrapolated} extrapolated, {c.result.n_bound} bound"]
            for c in sorted(sweep.cells, key=lambda c: (c.arm, c.examples))]
    table = Table("Effective data transferred (tokens): D_T = D_E − D_F, D_E read off scratch's curve",
                  ["arm", "train examples", "D_F", "lr", "D_T", "multiplier (D_F + D_T) / D_F", "seeds"], rows,
                  "Only exact seeds (D_E inside scratch's measured range) enter the estimates; extrapolated and "
                  "bound seeds are counted. D_T below 0 is ossification: the pretrained model does worse than "
                  "scratch given the same data.")
    intro = ["Each run trained on a prefix of the train split with early stopping on validation; its result "
             "is its test loss at its lowest validation loss. Each arm is taken at its own best rate at each "
             "size. Scratch's results over all sizes give, per seed, a non-increasing curve of loss against "
             "unique train tokens (isotonic regression in log D, joined by a monotone cubic); an arm's result at "
             "D_F, inverted on the curve of the same seed, is the scratch data D_E it is worth (Hernandez et al. "
             f"2021). Model size N = {_tokens(sweep.non_embedding_params)} non-embedding parameters; the scaling "
             "fit over model sizes is its own section.", *sweep.notes]
    return Section(f"{sweep.name}: effective data transferred (data-size sweep)", intro, [table], charts, [])


def _interval(value: float, interval: tuple[float, float] | None, digits: str) -> str:
    ci = f" [{interval[0]:{digits}}, {interval[1]:{digits}}]" if interval else " (no bootstrap refit)"
    return f"{value:{digits}}{ci}"


def scaling_section(laws: dict[str, TransferLaw], sweeps: list[DataSweep], charts: list[Chart]) -> Section:
    """Hernandez et al.'s D_T = k·D_F^α·N^β per arm, over the model sizes of every sweep reported."""
    sizes = sorted({s.non_embedding_params for s in sweeps})
    rows = []
    for arm, law in laws.items():
        fitted = law.status == "fit"
        rows.append([arm, law.status, str(len(law.points)),
                     _interval(law.k, law.k_interval, ".3g") if fitted else "",
                     _interval(law.alpha, law.alpha_interval, ".2f") if fitted else "",
                     _interval(law.beta, law.beta_interval, ".2f") if fitted else ""])
    table = Table(f"D_T = k·D_F^α·N^β per arm ({next(iter(laws.values())).confidence:.0%} bootstrap intervals "
                  "over seeds)" if laws else "No arm has effective data to fit",
                  ["arm", "fit", "points", "k", "α", "β"], rows,
                  "Points: (N, D_F) cells in the low-data regime (D_F at most 10% of the largest D scratch was "
                  "measured at) whose mean D_T over exact seeds is positive; a fit needs 4 or more over 2 or more "
                  "model sizes and 3 or more D_F. Too few is said, not fitted.")
    fits = [f"{arm}: α = {law.alpha:.2f}, β = {law.beta:.2f}" for arm, law in laws.items() if law.status == "fit"]
    intro = [f"Model sizes N (non-embedding parameters): {', '.join(_tokens(n) for n in sizes)}, one per "
             "data-size sweep in this report; pass sweeps at several model sizes to igpt-report together to fit "
             "β. Hernandez et al. 2021 found k = 1.9e4, α = 0.18, β = 0.38 for English text to Python."
             + (f" Fitted here: {'; '.join(fits)}." if fits else "")]
    return Section("Scaling of effective data transferred across model sizes", intro, [table], charts, [])
