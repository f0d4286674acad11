"""A run directory and its contract: every file name of a run, in one place (no jax here).

  RUN/config.json      the config the run started with, written once
  RUN/config.resumed-at-<step>.json   a config accepted on resume with train.accept_config_changes
  RUN/versions.json    the libraries it ran with
  RUN/run.json         who the run is and where it stands: {"task", "status", "step", "steps",
                       "finished", "flops_per_token" (GPT: training FLOPs per token, 0 if unknown),
                       plus what an experiment adds: "role", "arm", "seed", "lr", ...}
  RUN/metrics.jsonl    one JSON object per log/eval step (igpt.training.metrics)
  RUN/checkpoints/     orbax checkpoints (igpt.training.checkpoint)
  RUN/tokenizer/       the tokenizer the run fitted or copied
  RUN/tb/              TensorBoard events
"""
from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import os
import platform
from pathlib import Path
from typing import Any

CONFIG_FILE, VERSIONS_FILE, RUN_INFO_FILE, METRICS_FILE = "config.json", "versions.json", "run.json", "metrics.jsonl"
CHECKPOINTS_DIR, TOKENIZER_DIR, TENSORBOARD_DIR = "checkpoints", "tokenizer", "tb"
LIBRARIES = ("igpt", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "tensorflow-datasets", "grain", "numpy")
STATUSES = ("running", "preempted", "failed", "finished")


class WorkdirError(OSError):
    """The workdir cannot be used."""


def library_versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def write_json_atomic(path: Path, obj: Any) -> None:
    """Readers never see half a file: write beside it, then rename over it."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True))
    os.replace(tmp, path)


@dataclasses.dataclass(frozen=True)
class RunDir:
    root: Path

    @classmethod
    def at(cls, workdir: str | os.PathLike) -> RunDir:
        return cls(Path(workdir).expanduser().absolute())

    config = property(lambda self: self.root / CONFIG_FILE)
    versions = property(lambda self: self.root / VERSIONS_FILE)
    run_info = property(lambda self: self.root / RUN_INFO_FILE)
    metrics = property(lambda self: self.root / METRICS_FILE)
    checkpoints = property(lambda self: self.root / CHECKPOINTS_DIR)
    tokenizer = property(lambda self: self.root / TOKENIZER_DIR)
    tensorboard = property(lambda self: self.root / TENSORBOARD_DIR)

    def resumed_config(self, step: int) -> Path:
        return self.root / f"config.resumed-at-{step}.json"

    def prepare(self) -> RunDir:
        """Creates the directory and proves it writable before any work starts."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / f".write-test-{os.getpid()}"
            probe.write_text("ok")
            probe.unlink()
        except OSError as e:
            raise WorkdirError(f"workdir {self.root} is not writable ({e.strerror}); choose another --workdir "
                               "or fix its permissions.") from e
        return self

    def read_config(self) -> dict[str, Any] | None:
        return json.loads(self.config.read_text()) if self.config.is_file() else None

    def write_config(self, config: dict[str, Any]) -> None:
        write_json_atomic(self.config, config)
        write_json_atomic(self.versions, library_versions())

    def read_info(self) -> dict[str, Any]:
        return json.loads(self.run_info.read_text()) if self.run_info.is_file() else {}

    def update_info(self, **fields: Any) -> dict[str, Any]:
        """Merges `fields` into run.json; `finished` follows `status`."""
        info = dict(self.read_info(), **fields)
        if "status" in fields:
            if info["status"] not in STATUSES:
                raise ValueError(f"run status {info['status']!r} is not one of {STATUSES}")
            info["finished"] = info["status"] == "finished"
        write_json_atomic(self.run_info, info)
        return info


def config_differences(saved: dict[str, Any], current: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config dicts, as "key: saved -> current"."""
    found = []
    for key in sorted(set(saved) | set(current)):
        name = f"{prefix}{key}"
        a, b = saved.get(key, "<absent>"), current.get(key, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            found += config_differences(a, b, name + ".")
        elif a != b:
            found.append(f"{name}: {a!r} -> {b!r}")
    return found
