"""Tiny configs and helpers shared by the trainer tests (imported, not collected)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from igpt.data import specs
from igpt.model import model_config
from igpt.gpt import base_config, optim_config, train_config

REPO = Path(__file__).resolve().parents[1]


def tiny_config(data_dir: str, steps: int = 10, batch: int = 8, **mesh):
    """A 2-layer width-64 GPT on 8x8 digits in 16 gray levels: compiles and steps in seconds."""
    c = base_config(
        model=model_config("nano"),
        data=specs.images("shipped:digits", res=8, tokenizer="gray:16", data_dir=data_dir),
        optim=optim_config(lr=1e-2, warmup_steps=2),
        train=train_config(steps=steps, global_batch=batch),
    )
    c.train.log_every = 1
    c.train.eval_every = 5
    c.train.eval_sequences = 8
    c.train.checkpoint_every = 5
    c.mesh.update(mesh)
    return c


def train_losses(workdir) -> dict[int, float]:
    from igpt.training.metrics import read_metrics
    return {r["step"]: r["loss"] for r in read_metrics(workdir) if r["split"] == "train"}


def cli_command(workdir, data_dir: str, *overrides: str) -> list[str]:
    """The trainer CLI on tests/tiny_config.py, as a user would run it."""
    return [sys.executable, "-m", "igpt.commands.train", f"--config={REPO / 'tests' / 'tiny_config.py'}",
            f"--workdir={workdir}", f"--config.data.data_dir={data_dir}", *overrides]


def cli_env(devices: int = 8) -> dict[str, str]:
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_cli(workdir, data_dir: str, *overrides: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(cli_command(workdir, data_dir, *overrides), env=cli_env(), capture_output=True,
                          text=True, timeout=timeout, cwd=REPO)


def committed_steps(workdir) -> list[int]:
    """Steps orbax committed, on disk or in a bucket (there it marks a finished step with a
    commit_success.txt instead of renaming a temporary directory)."""
    from igpt.paths import forget_listings, is_object_storage
    from igpt.training.rundir import RunDir

    d = RunDir.at(workdir).checkpoints
    forget_listings(d)
    done = lambda p: not is_object_storage(p) or (p / "commit_success.txt").exists()
    return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit() and done(p)) if d.is_dir() else []


def dump_json(path, obj) -> None:
    Path(path).write_text(json.dumps(obj))
