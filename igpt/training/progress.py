"""What a person watching a run sees: a tqdm bar on a terminal, plain lines in a log file,
and TensorBoard events. Only process 0 reports."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import jax

from igpt.hardware import peak_flops_per_device
from igpt.paths import is_object_storage
from igpt.training.event_files import write_events_through_path_layer

BOOKKEEPING = frozenset({"step", "split", "wall_time", "step_time", "tokens_seen"})  # not printed


def _numbers(rec: dict[str, Any]) -> dict[str, float]:
    return {k: v for k, v in rec.items() if k not in BOOKKEEPING and isinstance(v, (int, float))}


def _line(rec: dict[str, Any]) -> str:
    return " ".join(f"{k} {v:.4g}" for k, v in _numbers(rec).items())


class Progress:
    def __init__(self, total: int, start: int, *, enabled: bool, tensorboard: Path):
        self.enabled = enabled
        self.bar = None
        self.tb = None
        if not enabled:
            return
        from tensorboardX import SummaryWriter
        if is_object_storage(tensorboard):
            write_events_through_path_layer()
        self.tb = SummaryWriter(str(tensorboard))
        peak = peak_flops_per_device()
        self.peak = peak * jax.device_count() if peak else None
        if sys.stdout.isatty():
            from tqdm import tqdm
            self.bar = tqdm(total=total, initial=start, unit="step", dynamic_ncols=True)

    def _scalars(self, split: str, step: int, rec: dict[str, Any]) -> None:
        for key, value in _numbers(rec).items():
            self.tb.add_scalar(f"{split}/{key}", value, step)

    def train(self, step: int, rec: dict[str, Any], flops_per_s: float = 0.0) -> None:
        """`flops_per_s`: model FLOP/s the whole job achieved over the logged steps (0: unknown)."""
        if not self.enabled:
            return
        if self.peak and flops_per_s:
            rec["mfu"] = flops_per_s / self.peak
        self._scalars("train", step, rec)
        if self.bar is not None:
            self.bar.n = step
            self.bar.set_postfix_str(_line(rec))
        else:
            print(f"step {step}: {_line(rec)}", flush=True)

    def eval(self, step: int, split: str, rec: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self._scalars(split, step, rec)
        self.message(f"step {step}: {split} {_line(rec)}")

    def message(self, text: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(text)
        else:
            print(text, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.tb is not None:
            self.tb.close()
