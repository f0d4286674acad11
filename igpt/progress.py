"""What a person watching a run sees: a tqdm bar on a terminal, plain lines in a log file,
and TensorBoard events in WORKDIR/tb. Only process 0 reports."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import jax

from igpt.hardware import peak_flops_per_device


class Progress:
    def __init__(self, total: int, start: int, *, enabled: bool, workdir: Path):
        self.enabled = enabled
        self.bar = None
        self.tb = None
        if not enabled:
            return
        from tensorboardX import SummaryWriter
        self.tb = SummaryWriter(str(workdir / "tb"))
        peak = peak_flops_per_device()
        self.peak = peak * jax.device_count() if peak else None
        if sys.stdout.isatty():
            from tqdm import tqdm
            self.bar = tqdm(total=total, initial=start, unit="step", dynamic_ncols=True)

    def update(self, step: int, rec: dict[str, Any], mfu_flops: float) -> None:
        """`mfu_flops`: model FLOP/s achieved by the whole job in this step."""
        if not self.enabled:
            return
        if self.peak:
            rec["mfu"] = mfu_flops / self.peak
        for key in ("loss", "bits_per_token", "lr", "grad_norm", "tokens_per_s", "mfu"):
            if key in rec:
                self.tb.add_scalar(f"train/{key}", rec[key], step)
        mfu = f" mfu {rec['mfu']:.1%}" if "mfu" in rec else ""
        if self.bar is not None:
            self.bar.n = step
            self.bar.set_postfix_str(f"loss {rec['loss']:.4f} tok/s {rec['tokens_per_s']:.0f}{mfu}")
        else:
            print(f"step {step}: loss {rec['loss']:.4f} ({rec['bits_per_token']:.3f} bits/token) "
                  f"lr {rec['lr']:.2e} grad_norm {rec['grad_norm']:.3f} "
                  f"tokens/s {rec['tokens_per_s']:.0f}{mfu}", flush=True)

    def log_eval(self, step: int, rec: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.tb.add_scalar("eval/loss", rec["loss"], step)
        self.tb.add_scalar("eval/bits_per_token", rec["bits_per_token"], step)
        self.message(f"step {step}: eval loss {rec['loss']:.4f} ({rec['bits_per_token']:.3f} bits/token)")

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
