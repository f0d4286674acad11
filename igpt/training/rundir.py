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

RUN may be a local directory or a prefix on object storage (gs://bucket/run): every path here
is an `etils.epath.Path`, never a pathlib one (pathlib turns "gs://b/r" into the local "gs:/b/r").
On object storage a directory exists only while objects lie below it, one object write is
atomic, and a rename is a copy plus a delete; the helpers below keep callers off those edges.
"""
from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import os
import platform
from typing import Any

from etils import epath

from igpt.paths import as_path, forget_listings, is_object_storage, probe_write, storage_problem, write_bytes_atomic

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


def read_text_or_none(path: epath.Path) -> str | None:
    """The file's text, None if it is absent (no race between a check and the read). On object
    storage a cached listing of the parent could hold an old size, so listings are dropped first."""
    forget_listings(path)
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Readers never see half a file (igpt.paths.write_bytes_atomic)."""
    write_bytes_atomic(path, json.dumps(obj, indent=2, sort_keys=True).encode())


@dataclasses.dataclass(frozen=True)
class RunDir:
    """A run's files under `root`, local or gs://; `RunDir(str | pathlib.Path | epath.Path)` works."""
    root: epath.Path

    def __post_init__(self):
        object.__setattr__(self, "root", as_path(self.root))

    @classmethod
    def at(cls, workdir: str | os.PathLike) -> RunDir:
        return cls(as_path(workdir))

    config = property(lambda self: self.root / CONFIG_FILE)
    versions = property(lambda self: self.root / VERSIONS_FILE)
    run_info = property(lambda self: self.root / RUN_INFO_FILE)
    metrics = property(lambda self: self.root / METRICS_FILE)
    checkpoints = property(lambda self: self.root / CHECKPOINTS_DIR)
    tokenizer = property(lambda self: self.root / TOKENIZER_DIR)
    tensorboard = property(lambda self: self.root / TENSORBOARD_DIR)

    def resumed_config(self, step: int) -> epath.Path:
        return self.root / f"config.resumed-at-{step}.json"

    def prepare(self) -> RunDir:
        """Creates the directory and proves it writable before any work starts. On object storage
        there is nothing to create (directories do not exist there): writing and deleting a probe
        object proves the bucket exists and the credentials may write to it."""
        try:
            probe_write(self.root)
        except Exception as e:  # gcsfs and google-auth raise more than OSError (e.g. no credentials)
            if is_object_storage(self.root):
                raise WorkdirError(f"workdir: {storage_problem(self.root, e)}.") from e
            if not isinstance(e, OSError):
                raise
            raise WorkdirError(f"workdir {self.root} is not writable ({e.strerror or e}); choose another "
                               "--workdir or fix its permissions.") from e
        return self

    def read_config(self) -> dict[str, Any] | None:
        text = read_text_or_none(self.config)
        return None if text is None else json.loads(text)

    def write_config(self, config: dict[str, Any]) -> None:
        write_json_atomic(self.config, config)
        write_json_atomic(self.versions, library_versions())

    def read_info(self) -> dict[str, Any]:
        text = read_text_or_none(self.run_info)
        return {} if text is None else json.loads(text)

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
