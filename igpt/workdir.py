"""A run directory: checked writable up front, holding the config and library versions."""
from __future__ import annotations

import importlib.metadata
import json
import os
import platform
from pathlib import Path

import ml_collections

LIBRARIES = ("igpt", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "tensorflow-datasets", "grain", "numpy")


class WorkdirError(OSError):
    """The workdir cannot be used."""


def prepare_workdir(workdir: str | os.PathLike) -> Path:
    """Creates the workdir and proves it writable before any work starts."""
    path = Path(workdir).expanduser().absolute()
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise WorkdirError(f"workdir {path} is not writable ({e.strerror}); choose another --workdir "
                           "or fix its permissions.") from e
    return path


def library_versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def write_run_files(workdir: Path, cfg: ml_collections.ConfigDict, enabled: bool = True) -> None:
    """config.json (what ran) and versions.json (with what), written by one process."""
    if not enabled:
        return
    (workdir / "config.json").write_text(cfg.to_json_best_effort(indent=2, sort_keys=True))
    (workdir / "versions.json").write_text(json.dumps(library_versions(), indent=2, sort_keys=True))
