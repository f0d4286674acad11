"""Train tokens/s of igpt's real train step against a PyTorch GPT of the same shape, on CPU.

  python benchmarks/bench_train_vs_torch.py                         # igpt's fast CPU setup
  python benchmarks/bench_train_vs_torch.py --devices 1 --attention xla --no-malloc   # stock

GPT 4 layers, width 256, 8 heads, seq 256, batch 16, vocab 512, fp32, a full AdamW step on
both sides. Each measurement runs in a fresh process (allocator and XLA settings only take
effect at process start), igpt and PyTorch alternately, --repeats times; the figures are
medians, and the ratio is igpt / PyTorch. Needs the `bench` extra (torch).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

SHAPE = dict(layers=4, width=256, heads=8, seq_len=256, batch=16, vocab=512)

# glibc malloc: one arena and no mmap/trim churn, so XLA's large per-step buffers are reused
# instead of being mapped and page-faulted afresh every step (JAX-STACK-NOTES: "Speed").
MALLOC_ENV = {"MALLOC_ARENA_MAX": "1", "MALLOC_MMAP_MAX_": "0",
              "MALLOC_TRIM_THRESHOLD_": "17179869184", "MALLOC_TOP_PAD_": "268435456"}


def igpt_tokens_per_s(devices: int, attention: str, block: int, steps: int, warmup: int, mlp_autodiff: bool) -> float:
    """Times the GPT task's step exactly as the training loop builds and jits it."""
    import jax
    import numpy as np

    if mlp_autodiff:  # the "before" figure of the MLP's hand-written backward
        from igpt import model
        model.gelu_mlp = lambda x, w_in, w_out: jax.nn.gelu(x @ w_in) @ w_out
    from igpt import sharding
    from igpt.data import specs
    from igpt.gpt import GPTTask, base_config, optim_config, train_config
    from igpt.model import model_config
    from igpt.training import loop

    assert jax.device_count() == devices, (jax.device_count(), devices)
    s = SHAPE
    cfg = base_config(
        model=model_config("mini", num_layers=s["layers"], width=s["width"], num_heads=s["heads"], attention=attention,
                           attention_block=block),
        data=specs.text("shipped:prose", seq_len=s["seq_len"]),
        optim=optim_config(), train=train_config(steps=warmup + steps, global_batch=s["batch"]))
    mesh = sharding.make_mesh(cfg.mesh)
    rules = tuple(cfg.axis_rules)
    with loop.on_mesh(mesh, rules):
        task = GPTTask(cfg)
        task.use_vocab(s["vocab"], mesh)
        built = loop.build(task, mesh)
        state, step = built.state, built.train_step
        rows = np.random.default_rng(0).integers(0, s["vocab"], (s["batch"], s["seq_len"]), dtype=np.int32)
        batch = built.put(rows)
        for _ in range(warmup):
            state, metrics = step(state, batch)
        jax.block_until_ready(state)
        start = time.perf_counter()
        for _ in range(steps):
            state, metrics = step(state, batch)
        jax.block_until_ready(state)
        elapsed = time.perf_counter() - start
    return steps * s["batch"] * s["seq_len"] / elapsed


def torch_tokens_per_s(threads: int, steps: int, warmup: int) -> float:
    import torch

    sys.path.insert(0, str(Path(__file__).parent))
    from torch_reference import GPT, make_optimizer, train_step

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    s = SHAPE
    model = GPT(s["vocab"], s["seq_len"], s["layers"], s["width"], s["heads"])
    opt = make_optimizer(model)
    tokens = torch.randint(0, s["vocab"], (s["batch"], s["seq_len"]))
    for _ in range(warmup):
        train_step(model, opt, tokens, s["vocab"])
    start = time.perf_counter()
    for _ in range(steps):
        train_step(model, opt, tokens, s["vocab"])
    elapsed = time.perf_counter() - start
    return steps * s["batch"] * s["seq_len"] / elapsed


def worker_env(devices: int, malloc: bool, xla_flags: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in MALLOC_ENV}
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices} {xla_flags}".strip()
    env["JAX_PLATFORMS"] = "cpu"
    if malloc:
        env.update(MALLOC_ENV)
    return env


def run_worker(side: str, args: argparse.Namespace, torch_threads: int = 0) -> float:
    malloc = args.malloc if side == "igpt" else args.torch_malloc
    cmd = [sys.executable, __file__, "--worker", side, "--devices", str(args.devices), "--attention", args.attention,
           "--attention-block", str(args.attention_block), "--steps", str(args.steps), "--warmup", str(args.warmup),
           "--torch-threads", str(torch_threads)]
    cmd += ["--mlp-autodiff"] if args.mlp_autodiff else []
    out = subprocess.run(cmd, env=worker_env(args.devices, malloc, args.xla_flags), capture_output=True,
                         text=True, check=False)
    if out.returncode:
        raise RuntimeError(f"{side} worker failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])["tokens_per_s"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5, help="alternating igpt/PyTorch pairs")
    p.add_argument("--steps", type=int, default=20, help="timed steps per measurement")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (compile, allocator warm-up)")
    p.add_argument("--devices", type=int, default=2, help="host devices for igpt (data parallel, batch sharded)")
    p.add_argument("--attention", default="blockwise", help="igpt model_config(attention=...)")
    p.add_argument("--attention-block", type=int, default=128, help="model_config(attention_block=...)")
    p.add_argument("--malloc", action=argparse.BooleanOptionalAction, default=True,
                   help="run igpt with the glibc malloc settings in MALLOC_ENV")
    p.add_argument("--torch-malloc", action=argparse.BooleanOptionalAction, default=False,
                   help="run PyTorch with the same malloc settings")
    p.add_argument("--xla-flags", default="", help="extra XLA_FLAGS for igpt")
    p.add_argument("--mlp-autodiff", action="store_true",
                   help="igpt's GELU MLP differentiated by autodiff instead of its hand-written backward")
    p.add_argument("--torch-threads", default=f"1,{os.cpu_count()}",
                   help="PyTorch intra-op thread counts to try; the faster one is the reference (with another "
                        "job on one core, OpenMP's 2 threads stall each other and 1 thread wins)")
    p.add_argument("--worker", choices=("igpt", "torch"), help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.worker == "igpt":
        print(json.dumps({"tokens_per_s": igpt_tokens_per_s(args.devices, args.attention, args.attention_block,
                                                            args.steps, args.warmup, args.mlp_autodiff)}))
        return
    if args.worker == "torch":
        print(json.dumps({"tokens_per_s": torch_tokens_per_s(int(args.torch_threads), args.steps, args.warmup)}))
        return

    print(f"igpt: devices={args.devices} attention={args.attention} (block {args.attention_block}) "
          f"malloc={args.malloc} "
          f"mlp_backward={'autodiff' if args.mlp_autodiff else 'hand-written'} "
          f"xla_flags={args.xla_flags!r}; torch: threads {args.torch_threads} malloc={args.torch_malloc}; "
          f"load average before: {os.getloadavg()}", flush=True)
    igpt, torch = [], []
    thread_counts = [int(n) for n in args.torch_threads.split(",")]
    for r in range(args.repeats):
        igpt.append(run_worker("igpt", args))
        by_threads = {n: run_worker("torch", args, n) for n in thread_counts}
        torch.append(max(by_threads.values()))
        tried = ", ".join(f"{n} thread{'s' * (n > 1)} {v:.0f}" for n, v in by_threads.items())
        print(f"  pair {r + 1}: igpt {igpt[-1]:7.0f} tok/s   torch {torch[-1]:7.0f} tok/s ({tried})   "
              f"ratio {igpt[-1] / torch[-1]:.2f}", flush=True)
    ratios = [a / b for a, b in zip(igpt, torch)]
    print(f"median: igpt {statistics.median(igpt):.0f} tok/s, torch {statistics.median(torch):.0f} tok/s, "
          f"ratio {statistics.median(igpt) / statistics.median(torch):.2f} "
          f"(median of pair ratios {statistics.median(ratios):.2f}); load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
