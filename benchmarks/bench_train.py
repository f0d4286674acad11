"""Train throughput and the async-checkpoint stall, on this machine.

  python benchmarks/bench_train.py [--layers 4 --width 256 --heads 8 --seq 256 --batch 16 --vocab 512]
                                   [--gcs-emulator]
Prints tokens/s and step time of the trainer's jitted step (fp32, AdamW, random tokens: the
data pipeline is benchmarked in bench_data.py), then how long `Checkpointer.save` blocks the
loop with async saving, as a fraction of one step, next to a synchronous save: on local disk, or
with --gcs-emulator in a bucket of the local GCS emulator the tests use (tests/gcs_emulator.py).
"""
from __future__ import annotations

import argparse
import contextlib
import sys
import statistics
import tempfile
import time
from pathlib import Path
from typing import Iterator

import jax
import numpy as np

from igpt import sharding
from igpt.data import specs
from igpt.gpt import GPTTask, base_config
from igpt.model import model_config
from igpt.training import loop
from igpt.training.checkpoint import Checkpointer


def _timed(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return times


@contextlib.contextmanager
def _checkpoint_root(gcs_emulator: bool) -> Iterator[str]:
    """Where the timed checkpoints go: a temporary local directory, or the emulator's bucket."""
    if not gcs_emulator:
        with tempfile.TemporaryDirectory() as d:
            yield d
        return
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from gcs_emulator import BUCKET, gcs_emulator
    with gcs_emulator(BUCKET):
        yield f"gs://{BUCKET}/bench"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--vocab", type=int, default=512)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--gcs-emulator", action="store_true", help="checkpoint to the local GCS emulator's bucket")
    a = p.parse_args()

    cfg = base_config(model_config("tiny", num_layers=a.layers, width=a.width, num_heads=a.heads),
                      specs.images("shipped:photos", res=int(a.seq ** 0.5)))
    mesh = sharding.make_mesh(cfg.mesh)
    rules = tuple(cfg.axis_rules)
    tokens = np.random.default_rng(0).integers(0, a.vocab, (a.batch, a.seq), dtype=np.int32)
    with loop.on_mesh(mesh, rules):
        task = GPTTask(cfg)
        task.use_vocab(a.vocab, mesh)
        built = loop.build(task, mesh)  # the trainer's own state and jitted step
        step, batch = built.train_step, built.put(tokens)
        holder = {"state": built.state}

        def one_step():
            holder["state"], m = step(holder["state"], batch)
            jax.block_until_ready(m["loss"])

        one_step()  # compile
        times = _timed(one_step, a.steps)
        step_s = statistics.median(times)
        print(f"devices {jax.device_count()} ({jax.devices()[0].device_kind}); model {a.layers}x{a.width}, "
              f"{a.heads} heads, seq {a.seq}, batch {a.batch}, vocab {a.vocab}, fp32")
        print(f"step time median {step_s * 1e3:.1f} ms; train tokens/s {a.batch * a.seq / step_s:,.0f}")
        with _checkpoint_root(a.gcs_emulator) as root:
            for async_save in (True, False):
                ckpt = Checkpointer(f"{root}/{'async' if async_save else 'sync'}", keep=2, async_save=async_save)
                stalls = []
                for i in range(3):
                    one_step()
                    t = time.perf_counter()
                    ckpt.save(i + 1, holder["state"], {"step": i + 1})
                    stalls.append(time.perf_counter() - t)
                    ckpt.wait()
                ckpt.close()
                stall = statistics.median(stalls)
                print(f"{'async' if async_save else 'sync '} checkpoint to {root}: blocks the loop "
                      f"{stall * 1e3:.1f} ms = {stall / step_s:.2f} of a step")


if __name__ == "__main__":
    main()
