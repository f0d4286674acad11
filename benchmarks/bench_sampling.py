"""Sampling speed: the KV cache (igpt.sample.generate) against recomputing the full forward pass
for every new token (igpt.sample.generate_uncached), 1,024 tokens per sequence.

  python benchmarks/bench_sampling.py [--size tiny --seq 1024 --batch 1 --repeats 3]

Both are single compiled programs (compile time excluded: each runs once before timing) and
draw the same tokens for the same key, which the script checks. Timed alternately; medians.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import jax
import numpy as np
from flax import nnx

from igpt import sharding
from igpt.model import Transformer, count_params, model_config
from igpt.sample import generate, generate_uncached


def timed(fn) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    out = np.asarray(jax.block_until_ready(fn()))
    return time.perf_counter() - start, out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", default="tiny", help="igpt.model.SIZES name")
    p.add_argument("--seq", type=int, default=1024, help="tokens sampled per sequence (no prompt)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--vocab", type=int, default=512)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()

    mesh_cfg = sharding.mesh_config()
    mesh_cfg.num_devices = 1
    with jax.set_mesh(sharding.make_mesh(mesh_cfg)), nnx.logical_axis_rules(sharding.DEFAULT_RULES):
        model = Transformer(model_config(a.size), a.vocab, a.seq, rngs=nnx.Rngs(0))
        graphdef, params = nnx.split(model, nnx.Param)
        prompt = np.zeros((a.batch, 0), np.int32)
        key = jax.random.key(0)
        runs = {"cached": lambda: generate(graphdef, params, prompt, key, 1.0, 0),
                "naive": lambda: generate_uncached(graphdef, params, prompt, key, 1.0, 0)}
        compile_s = {name: timed(fn)[0] for name, fn in runs.items()}
        times, outputs = {name: [] for name in runs}, {}
        for _ in range(a.repeats):
            for name, fn in runs.items():
                dt, outputs[name] = timed(fn)
                times[name].append(dt)

    tokens = a.batch * a.seq
    print(f"model {a.size} ({count_params(model) / 1e6:.2f}M params), {a.seq} tokens x batch {a.batch}, "
          f"devices {jax.devices()[0].device_kind}, load average {os.getloadavg()}")
    for name in runs:
        med = statistics.median(times[name])
        print(f"  {name:6s}: {med:8.3f} s  ({tokens / med:9.1f} tokens/s; first call incl. compile "
              f"{compile_s[name]:.1f} s; runs {', '.join(f'{t:.3f}' for t in times[name])})")
    print(f"speed-up of the cache: {statistics.median(times['naive']) / statistics.median(times['cached']):.1f}x; "
          f"same tokens: {np.array_equal(outputs['cached'], outputs['naive'])}")


if __name__ == "__main__":
    main()
