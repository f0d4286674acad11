"""Model FLOPs utilisation of igpt's train step on one accelerator, and the largest batch that fits.

  python benchmarks/bench_gpu_mfu.py                      # ~350M params, seq 1024, bf16, batch 4, 8, 16, ...
  python benchmarks/bench_gpu_mfu.py --remat dots --batches 16,32,64
  python benchmarks/bench_gpu_mfu.py --layers 2 --width 64 --heads 4 --seq 64 --batches 2   # CPU smoke test

Default shape: 28 layers, width 1024, 16 heads (head dim 64), GELU MLP x4, vocab 512:
28 * 12 * 1024^2 + 2 * 512 * 1024 = 353M parameters. bf16 compute on fp32 master weights,
attention "auto" (cuDNN's fused kernel on GPU), AdamW: the trainer's own step, jitted with the
state donated. Each batch size runs in a fresh process so an out-of-memory failure leaves the
next one a clean device; the doubling stops at the first batch that does not fit.

MFU = flops_per_token * tokens/s / (peak bf16 FLOP/s of the chip), with igpt.model.flops_per_token:
6 N + 12 L d T per token (N: matmul weights, embedding lookup excluded; the second term is
attention's QK^T and AV, forward and backward, counted over the full T x T square as PaLM does).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time


def measure(a: argparse.Namespace, batch: int) -> dict:
    """Tokens/s, MFU and peak memory of `a.steps` timed train steps at `batch`."""
    import jax
    import numpy as np
    from flax import nnx

    from igpt import sharding
    from igpt.data import specs
    from igpt.hardware import peak_flops_per_device
    from igpt.gpt import GPTTask, base_config, optim_config, train_config
    from igpt.model import count_params, flops_per_token, model_config
    from igpt.training import loop

    model = model_config("igpt-m", num_layers=a.layers, width=a.width, num_heads=a.heads, dtype=a.dtype,
                         attention=a.attention, remat=a.remat, scan_layers=a.scan_layers)
    cfg = base_config(model=model, data=specs.text("shipped:prose", seq_len=a.seq), optim=optim_config(),
                      train=train_config(steps=a.warmup + a.steps, global_batch=batch))
    mesh = sharding.make_mesh(cfg.mesh)
    rules = tuple(cfg.axis_rules)
    with loop.on_mesh(mesh, rules):
        task = GPTTask(cfg)
        task.use_vocab(a.vocab, mesh)
        built = loop.build(task, mesh)
        state, step = built.state, built.train_step
        n_params = count_params(nnx.merge(task.graphdef, state["params"]))
        rows = np.random.default_rng(0).integers(0, a.vocab, (batch, a.seq), dtype=np.int32)
        tokens = built.put(rows)
        start = time.perf_counter()
        state, metrics = step(state, tokens)
        jax.block_until_ready(metrics)
        compile_s = time.perf_counter() - start
        for _ in range(a.warmup - 1):
            state, metrics = step(state, tokens)
        jax.block_until_ready(metrics)
        start = time.perf_counter()
        for _ in range(a.steps):
            state, metrics = step(state, tokens)
        jax.block_until_ready(metrics)
        step_s = (time.perf_counter() - start) / a.steps
    tokens_per_s = batch * a.seq / step_s
    peak = peak_flops_per_device()
    flops = flops_per_token(cfg.model, a.vocab, a.seq) * tokens_per_s
    stats = jax.devices()[0].memory_stats() or {}
    return {"batch": batch, "params": n_params, "device": jax.devices()[0].device_kind, "devices": jax.device_count(),
            "step_s": step_s, "tokens_per_s": tokens_per_s, "model_tflops": flops / 1e12,
            "mfu": flops / (peak * jax.device_count()) if peak else None, "compile_s": compile_s,
            "peak_gib": stats.get("peak_bytes_in_use", 0) / 2**30, "loss": float(metrics["loss"])}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", type=int, default=28)
    p.add_argument("--width", type=int, default=1024)
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--seq", type=int, default=1024)
    p.add_argument("--vocab", type=int, default=512)
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--attention", default="auto")
    p.add_argument("--remat", default="none", choices=("none", "dots", "full"))
    p.add_argument("--scan_layers", action="store_true")
    p.add_argument("--batches", default="", help="comma-separated batch sizes (default: 4, 8, 16, ... until OOM)")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--worker_batch", type=int, help=argparse.SUPPRESS)
    a = p.parse_args()

    if a.worker_batch:
        print("RESULT " + json.dumps(measure(a, a.worker_batch)), flush=True)
        return

    batches = [int(b) for b in a.batches.split(",")] if a.batches else [4 * 2**i for i in range(12)]
    worker = [sys.executable, __file__] + [x for x in sys.argv[1:]]
    fits = []
    for batch in batches:
        out = subprocess.run(worker + [f"--worker_batch={batch}"], capture_output=True, text=True,
                             env=dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE="false"))
        line = next((l for l in out.stdout.splitlines() if l.startswith("RESULT ")), None)
        if line is None:
            oom = "RESOURCE_EXHAUSTED" in out.stderr or "out of memory" in out.stderr.lower()
            print(f"batch {batch}: {'out of memory' if oom else 'failed'}")
            if not oom:
                print(out.stderr[-3000:])
            break
        r = json.loads(line[len("RESULT "):])
        fits.append(r)
        mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "n/a (peak FLOP/s of this device unknown)"
        print(f"batch {batch:4d}: {r['tokens_per_s']:10.0f} tokens/s  step {r['step_s'] * 1e3:8.1f} ms  "
              f"{r['model_tflops']:7.1f} model TFLOP/s  MFU {mfu}  peak mem {r['peak_gib']:.1f} GiB  "
              f"compile {r['compile_s']:.0f} s", flush=True)
    if fits:
        best = max(fits, key=lambda r: r["tokens_per_s"])
        print(f"{best['device']} x{best['devices']}, {best['params'] / 1e6:.0f}M params, seq {a.seq}, {a.dtype}, "
              f"attention {a.attention}, remat {a.remat}: largest batch that fits {fits[-1]['batch']}; "
              f"best {best['tokens_per_s']:.0f} tokens/s at batch {best['batch']}"
              + (f", MFU {best['mfu']:.1%}" if best["mfu"] is not None else ""))


if __name__ == "__main__":
    main()
