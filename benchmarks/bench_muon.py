"""Muon's cost in a VQ-VAE training step: the optimiser update of igpt.training.muon (Newton-Schulz on the
Gram matrix) against optax.contrib.muon's (on the matrix), and whole train steps with Adam and
with either Muon, on this machine's CPU.

  python benchmarks/bench_muon.py [--kind fsq|vq] [--res-blocks N] [--rounds 8]

Each round times 8 calls of every variant in turn, so a machine whose speed drifts (a shared
one) drifts for all of them alike; prints the median and the fastest round per call. Train steps
run on one XLA device per core (the layout igpt-fit-tokenizer uses there).
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kind", default="fsq", help="configs/vq_images.py's quantizer: fsq or vq")
    parser.add_argument("--res-blocks", type=int, default=None, help="override model.res_blocks")
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count={os.cpu_count()}")

    import functools
    import runpy

    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    from jax.sharding import NamedSharding

    from igpt import sharding
    from igpt.tokenizers import vq
    from igpt.tokenizers.vq import task as vqtask
    from igpt.training import muon, optim

    cfg = runpy.run_path(str(REPO / "configs" / "vq_images.py"))["get_config"](args.kind)
    if args.res_blocks is not None:
        cfg.model.res_blocks = args.res_blocks
    mesh = sharding.make_mesh(cfg.mesh)
    jax.sharding.set_mesh(mesh)
    replicate = lambda tree: jax.device_put(tree, sharding.replicated(mesh))
    graphdef, params = vq.init_params(cfg.model, cfg.quantizer, 0)
    params = replicate(params)
    kernels = functools.partial(vqtask.muon_kernels, adam_modules=tuple(cfg.optim.adam_modules))
    schedule = optim.make_schedule(cfg.optim, cfg.train.steps)
    b1, b2 = cfg.optim.b1, cfg.optim.b2
    optimisers = {"igpt.training.muon (Gram)": muon.muon(schedule, kernels, adam_b1=b1, adam_b2=b2),
                  "optax.contrib.muon": muon.optax_reference(schedule, kernels, adam_b1=b1, adam_b2=b2)}
    grads = jax.tree.map(lambda p: p * 0.01, params)
    calls = {}
    for name, tx in optimisers.items():
        fn = jax.jit(lambda g, s, p, tx=tx: tx.update(g, s, p))
        state = jax.jit(tx.init)(params)
        calls[f"update: {name}"] = lambda fn=fn, state=state: fn(grads, state, params)

    batch = NamedSharding(mesh, sharding.logical_spec(("batch",), sharding.DEFAULT_RULES))
    x = jax.device_put(np.random.default_rng(0).uniform(-1, 1, (cfg.train.global_batch, 32, 32, 3))
                       .astype(np.float32), batch)
    clip = optax.clip_by_global_norm(cfg.optim.clip_norm)
    cfg.optim.name = "adam"
    steps = {"adam": optim.build(cfg.optim, schedule),
             **{f"muon ({name})": optax.chain(clip, tx) for name, tx in optimisers.items()}}
    for name, tx in steps.items():
        state = {"params": params, "opt_state": jax.jit(tx.init)(params), "step": replicate(jnp.zeros((), jnp.int32)),
                 "rng": replicate(jax.random.key_data(jax.random.key(1))), "ema_params": jax.tree.map(jnp.copy, params)}
        step = jax.jit(vqtask.make_train_step(graphdef, cfg, tx))
        calls[f"train step ({cfg.train.global_batch} crops): {name}"] = lambda step=step, state=state: step(state, x)

    times = {name: [] for name in calls}
    for fn in calls.values():
        jax.block_until_ready(fn())
    for _ in range(args.rounds):
        for name, fn in calls.items():
            start = time.perf_counter()
            for _ in range(8):
                out = fn()
            jax.block_until_ready(out)
            times[name].append((time.perf_counter() - start) / 8 * 1e3)
    print(f"configs/vq_images.py:{args.kind}, res_blocks {cfg.model.res_blocks}, {len(jax.devices())} XLA devices, "
          f"{args.rounds} rounds")
    for name, t in times.items():
        print(f"  {name:52s} median {np.median(t):7.1f} ms   fastest round {min(t):7.1f} ms")


if __name__ == "__main__":
    main()
