"""Optional Weights & Biases logging, off unless `wandb.project` is set.

wandb is not a dependency of igpt (`pip install wandb`, or the `wandb` extra). When a project is
set, process 0 starts one W&B run per workdir with the run's config, and logs every record the
loop logs (`train/loss`, `validation/loss`, ...) and its sample pictures at their steps. The W&B
run id is derived from the workdir, so a resumed run continues the same W&B run.
`wandb.mode=offline` (or WANDB_MODE=offline) writes it to disk for `wandb sync` later: what a
node without network access does.
"""
from __future__ import annotations

import hashlib
import importlib.util
from typing import Any

import ml_collections
import numpy as np

MODES = ("", "online", "offline", "disabled")


def wandb_config() -> ml_collections.ConfigDict:
    """The `wandb` section of every run: where to log, never what is computed."""
    return ml_collections.ConfigDict(dict(
        project="",  # "" = no W&B logging
        entity="",   # "" = your default entity
        name="",     # "" = the workdir's last component
        group="",    # e.g. an experiment's name, to view its runs together
        mode="",     # "" (WANDB_MODE, else online) | "online" | "offline" | "disabled"
        dir=""))     # where W&B keeps its files; "" = the workdir when it is local


def problems(cfg: ml_collections.ConfigDict) -> list[str]:
    """Why the `wandb` section cannot be used, one line each (none when W&B is off)."""
    w = cfg.get("wandb")
    if w is None or not w.project:
        return []
    found = []
    if w.mode not in MODES:
        found.append(f"wandb.mode={w.mode!r} is not one of {MODES}.")
    if importlib.util.find_spec("wandb") is None:
        found.append(f"wandb.project={w.project!r} asks for Weights & Biases logging, but wandb is not installed: "
                     "`pip install wandb`, or leave wandb.project empty.")
    return found


def run_id(workdir: str) -> str:
    """The same W&B run for every session of one workdir."""
    return hashlib.sha1(str(workdir).encode()).hexdigest()[:16]


class Tracker:
    """One W&B run: records by split and step, pictures, then finish."""

    def __init__(self, w: ml_collections.ConfigDict, workdir: Any, config: dict[str, Any]):
        import wandb
        local = "://" not in str(workdir)
        self.run = wandb.init(project=w.project, entity=w.entity or None, group=w.group or None,
                              name=w.name or str(workdir).rstrip("/").rsplit("/", 1)[-1],
                              mode=w.mode or None, dir=w.dir or (str(workdir) if local else None),
                              id=run_id(str(workdir)), resume="allow", config=config)

    def log(self, split: str, step: int, numbers: dict[str, float]) -> None:
        self.run.log({f"{split}/{k}": v for k, v in numbers.items()}, step=step)

    def image(self, tag: str, image: np.ndarray, step: int) -> None:
        import wandb
        self.run.log({tag: wandb.Image(image)}, step=step)

    def finish(self) -> None:
        self.run.finish()


def start(cfg: ml_collections.ConfigDict, workdir: Any, config: dict[str, Any]) -> Tracker | None:
    """A Tracker when `wandb.project` is set (call on process 0 only), else None."""
    if "wandb" not in cfg or not cfg.wandb.project:
        return None
    return Tracker(cfg.wandb, workdir, config)
