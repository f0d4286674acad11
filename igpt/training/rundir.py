"""A run directory and its contract: every file name of a run, in one place (no jax here).

  RUN/config.json      the config the run started with, written once
  RUN/config.resumed-at-<step>.json   a config accepted on resume with train.accept_config_changes
  RUN/versions.json    the libraries it started with, the igpt git commit, host, devices, XLA_FLAGS
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
import socket
import subprocess
from typing import Any, Sequence

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


def git_commit(source: str | os.PathLike | None = None) -> str:
    """The commit of the igpt checkout that runs ("+dirty" with uncommitted changes), or
    "unknown" when igpt is not run from a git checkout."""
    source = source or os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        run = lambda *args: subprocess.run(["git", "-C", os.fspath(source), *args], capture_output=True, text=True,
                                           timeout=10, check=True).stdout.strip()
        if os.path.realpath(run("rev-parse", "--show-toplevel")) != os.path.realpath(source):
            return "unknown"  # an installed igpt inside some other repository
        commit = run("rev-parse", "HEAD")
        return commit + ("+dirty" if run("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def run_environment(devices: Sequence[Any] = ()) -> dict[str, Any]:
    """Where a run started: the igpt commit, the host, the devices (kind and count) and XLA_FLAGS."""
    kinds = sorted({getattr(d, "device_kind", str(d)) for d in devices})
    return {"git_commit": git_commit(), "host": socket.gethostname(), "device_kind": ", ".join(kinds),
            "device_count": len(devices), "platform": ", ".join(sorted({getattr(d, "platform", "") for d in devices})),
            "xla_flags": os.environ.get("XLA_FLAGS", "")}


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

    def write_config(self, config: dict[str, Any], devices: Sequence[Any] = ()) -> None:
        """config.json and versions.json (libraries, and where it runs: run_environment)."""
        write_json_atomic(self.config, config)
        write_json_atomic(self.versions, {**library_versions(), **run_environment(devices)})

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


def with_defaults(saved: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """`saved` with every key it lacks taken from `defaults`, at any depth: a config.json written
    before igpt gained a setting, read as a run that left the setting at its default."""
    filled = dict(saved)
    for key, default in defaults.items():
        if key not in filled:
            filled[key] = default
        elif isinstance(filled[key], dict) and isinstance(default, dict):
            filled[key] = with_defaults(filled[key], default)
    return filled


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
