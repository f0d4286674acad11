"""Orbax checkpoints of the train state: async, keep-N, exact resume, restore onto any mesh.

A checkpoint holds two items: `state` (params, optimizer state, step, rng: global arrays)
and `meta` (JSON: the data position and the shapes that must match to resume). Orbax writes
each step into a temporary directory and renames it when every process has finished, so
`latest_step` only ever sees fully committed checkpoints; a save killed half-way is ignored.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

CHECKPOINT_SUBDIR = "checkpoints"


class CheckpointMismatchError(ValueError):
    """The checkpoint was written by a model of another shape."""


def _shape_mismatches(abstract: Any, saved: Any, limit: int = 5) -> list[str]:
    found = []
    saved_flat = dict(jax.tree_util.tree_flatten_with_path(saved)[0])
    for path, leaf in jax.tree_util.tree_flatten_with_path(abstract)[0]:
        other = saved_flat.get(path)
        name = jax.tree_util.keystr(path)
        if other is None:
            found.append(f"{name}: missing in the checkpoint")
        elif tuple(other.shape) != tuple(leaf.shape):
            found.append(f"{name}: checkpoint {tuple(other.shape)} vs model {tuple(leaf.shape)}")
        if len(found) >= limit:
            break
    return found


class Checkpointer:
    """One run's checkpoint directory (WORKDIR/checkpoints)."""

    def __init__(self, workdir: str | os.PathLike, keep: int = 3, async_save: bool = True):
        self.directory = Path(workdir).absolute() / CHECKPOINT_SUBDIR
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=keep, enable_async_checkpointing=async_save, create=True),
            item_names=("state", "meta"),
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: Any, meta: dict[str, Any]) -> None:
        """Starts a save; with async saving it returns once the arrays are copied off device."""
        self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True)

    def read_meta(self, step: int) -> dict[str, Any]:
        return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta

    def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict[str, Any]]:
        """Restores onto the shardings in `abstract_state` (ShapeDtypeStructs), any mesh."""
        saved = self.manager.item_metadata(step)["state"]
        bad = _shape_mismatches(abstract_state, saved)
        if bad:
            raise CheckpointMismatchError(
                f"checkpoint {self.directory / str(step)} was written by a model of another shape:\n  "
                + "\n  ".join(bad)
                + "\nResume with the config that wrote it, or start in a fresh --workdir.")
        out = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
        return out.state, out.meta

    def restore_params(self, step: int, abstract_params: Any) -> Any:
        """Only the params, onto the shardings in `abstract_params` (sampling, evaluation)."""
        out = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.PyTreeRestore(item={"params": abstract_params}, partial_restore=True)))
        return out.state["params"]

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def restore_params(run_dir: str | os.PathLike, sharding: jax.sharding.Sharding,
                   step: int | None = None) -> tuple[Any, dict[str, Any]]:
    """Only the params of another run's latest (or given) checkpoint, e.g. a pretrained
    source, placed with `sharding`; shapes come from the checkpoint, so the source's
    vocabulary and length need not match the caller's model."""
    directory = Path(run_dir).absolute() / CHECKPOINT_SUBDIR
    if not directory.is_dir():
        raise FileNotFoundError(f"{run_dir} has no {CHECKPOINT_SUBDIR}/ directory: it is not an igpt run "
                                "with checkpoints. Pretrain it first, or fix the source path.")
    manager = ocp.CheckpointManager(directory, item_names=("state", "meta"),
                                    options=ocp.CheckpointManagerOptions(read_only=True))
    try:
        step = manager.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"{directory} holds no committed checkpoint; finish the source run first.")
        saved = manager.item_metadata(step)["state"]["params"]
        abstract = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=sharding), saved)
        out = manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.PyTreeRestore(item={"params": abstract}, partial_restore=True),
            meta=ocp.args.JsonRestore()))
    finally:
        manager.close()
    return out.state["params"], out.meta
