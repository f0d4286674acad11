"""Representations (issue 24): train a short transfer experiment on shipped digits, probe every
checkpoint of every target run, compare each transfer run with scratch's of the same seed, and
print probe accuracy per layer per arm (mean over seeds with its interval), per checkpoint, and
the CKA and stitching matrices.

  python benchmarks/bench_probe.py --config configs/probe_digits.py --workdir runs/probe_digits

Writes the report's Representations section to WORKDIR/representations/ (representations.md
and its figures). Rerunning resumes: finished runs and probed checkpoints are skipped.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import resource
import time
from pathlib import Path


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (the training workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def load_config(path: str):
    spec = importlib.util.spec_from_file_location(Path(path).stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/probe_digits.py")
    parser.add_argument("--workdir", default="runs/probe_digits")
    parser.add_argument("--stitch_steps", type=int, default=0, help="Adam steps on B's loss after each least-squares map")
    args = parser.parse_args()

    from igpt.representation_runs import probe_experiment
    from igpt.transfer.experiment import run_experiment
    from igpt.transfer.report.analysis import analyse
    from igpt.transfer.report.collect import discover, read_experiment
    from igpt.transfer.report.render import render_md
    from igpt.transfer.report.representations import experiment_representations, probe_curves, similarities

    c = load_config(args.config)
    start, cpu = time.time(), cpu_seconds()
    exp_dir = run_experiment(c, args.workdir, log=lambda _: None)
    trained = time.time()
    probe_experiment(exp_dir, c.target.data, stitch_steps=args.stitch_steps, log=lambda _: None)
    done = time.time()
    print(f"{c.name}: trained in {trained - start:.0f} s, probed and compared in {done - trained:.0f} s; "
          f"{(cpu_seconds() - cpu) / 60:.1f} CPU minutes; load average {os.getloadavg()[0]:.1f} at the end")

    owned, _ = discover([exp_dir])
    analysis = analyse(read_experiment(exp_dir, next(iter(owned.values()))), None)
    groups = {arm: list(analysis.chosen[arm].values()) for arm in sorted(analysis.chosen, key=lambda a: a != "scratch")}
    for curve in probe_curves(groups):
        print(f"\n{curve.group} on {curve.data} (chance {curve.chance:.3f}; best layer on validation: {curve.best_layer})")
        for name, e in zip(curve.layer_names, curve.by_layer):
            interval = f" [{e.lo:.3f}, {e.hi:.3f}] ({e.kind}, {e.n} seeds)" if e.lo is not None else ""
            print(f"  {name:12s} {e.mean:.3f}{interval}")
        print("  per checkpoint, at the layer validation picks: "
              + ", ".join(f"step {s} {e.mean:.3f}" for s, e in zip(curve.steps, curve.by_step)))
    for s in similarities(analysis.experiment.runs):
        print(f"\n{s.kind}: {s.a} (rows: {', '.join(s.layers_a)}) vs {s.b} (columns), mean over {s.pairs} pairs"
              + (f"; {s.b} alone {s.base_bits:.3f} bits/token" if s.base_bits is not None else ""))
        for row in s.matrix:
            print("  " + " ".join(f"{v:+.3f}" if s.kind == "stitching" else f"{v:.3f}" for v in row))
    section = experiment_representations(analysis, "representations")
    out = Path(exp_dir) / "representations"
    out.mkdir(exist_ok=True)
    for chart in section.charts:
        (out / chart.name).write_bytes(chart.png)
    (out / "representations.md").write_text(render_md(f"{c.name}: representations", [section]))
    print(f"\nwrote {out / 'representations.md'}")


if __name__ == "__main__":
    main()
