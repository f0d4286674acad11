"""VQ tokenizers (issue 5): fit each tokenizer from scratch on this machine and print its
held-out figures and the wall time it took.

  python benchmarks/bench_vq.py images-vq images-fsq audio --workdir runs/bench_vq

  images-vq   configs/vq_images.py       32x32 shipped photos, 4x (64 tokens), 512 EMA-VQ codes
  images-fsq  configs/vq_images.py:fsq   the same with FSQ levels (8, 4, 4, 4) = 512 codes
  audio       configs/vq_audio.py        shipped music at 8 kHz, 16x (500 tokens/s), 512 codes
Targets of the issue: images PSNR >= 24 dB and usage >= 90% within 15 minutes of training on
2 CPU cores; audio usage >= 90%, SNR stated. PSNR is over all held-out pixels (from the mean
squared error of the whole split); usage is distinct codes over the whole held-out split / 512.

Runs the targets one after another (never run two benchmarks at once on a shared machine).
It re-executes itself with the allocator and device settings of JAX-STACK-NOTES.md: glibc
malloc tuned, and one XLA host device per core so the batch is data-parallel over the cores.
Wall time counts everything a user waits for: data loading, compilation, k-means
initialisation, periodic evals, checkpoints, the final full held-out pass and the save. The
CPU minutes of the process are printed beside it: divided by the cores, they estimate the
wall time on an idle machine when other jobs share this one.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

ENV = {"MALLOC_ARENA_MAX": "1", "MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "17179869184",
       "MALLOC_TOP_PAD_": "268435456"}
REPO = Path(__file__).resolve().parents[1]
TARGETS = {"images-vq": ("vq_images.py", ()), "images-fsq": ("vq_images.py", ("fsq",)),
           "audio": ("vq_audio.py", ())}


def cpu_seconds() -> float:
    """CPU time this process has used (user + system, all threads): on a machine shared with
    other jobs, CPU minutes / cores estimates the wall time the same work takes on idle cores."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown CPU")
    return f"{cpu}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("targets", nargs="+", choices=sorted(TARGETS))
    parser.add_argument("--workdir", default="runs/bench_vq", help="each target trains in WORKDIR/TARGET (fresh)")
    parser.add_argument("--data_dir", default=None, help="TFDS data_dir (default: the configs' own)")
    parser.add_argument("--steps", type=int, default=0, help="override train.steps (0: the config's)")
    args = parser.parse_args()
    if any(os.environ.get(k) != v for k, v in ENV.items()):
        env = dict(os.environ, **ENV, XLA_FLAGS=f"--xla_force_host_platform_device_count={os.cpu_count()}")
        os.execve(sys.executable, [sys.executable, *sys.argv], env)

    import runpy
    import shutil

    from igpt.data import pipeline
    from igpt.tokenizers.vq.task import fit

    print(f"machine: {machine()}", flush=True)
    print("| target | steps | wall min | CPU min | held-out fidelity | usage | perplexity |", flush=True)
    print("|---|---|---|---|---|---|---|", flush=True)
    rows = []
    for name in args.targets:
        config_file, config_args = TARGETS[name]
        cfg = runpy.run_path(str(REPO / "configs" / config_file))["get_config"](*config_args)
        if args.data_dir:
            cfg.data.data_dir = args.data_dir
        if args.steps:
            cfg.train.steps = args.steps
        workdir = Path(args.workdir) / name
        shutil.rmtree(workdir, ignore_errors=True)
        pipeline.load_examples(cfg.data, cfg.data.test_split)  # prepares the data once, outside the timing
        start, cpu = time.perf_counter(), cpu_seconds()
        tok = fit(cfg, workdir)
        minutes, cpu_minutes = (time.perf_counter() - start) / 60, (cpu_seconds() - cpu) / 60
        m = tok.metrics
        fidelity = (f"PSNR {m['psnr']:.2f} dB (per-image mean {m['psnr_image_mean']:.2f})" if "psnr" in m
                    else f"SNR {m['snr']:.2f} dB, STFT distance {m['stft']:.3f}")
        rows.append(dict(m, target=name, steps=cfg.train.steps, minutes=minutes, cpu_minutes=cpu_minutes,
                         load=os.getloadavg()[0]))
        print(f"| {name} | {cfg.train.steps} | {minutes:.1f} | {cpu_minutes:.1f} | {fidelity} | {m['usage']:.1%} | "
              f"{m['perplexity']:.0f} |", flush=True)
    (Path(args.workdir) / "results.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
