"""Orbax checkpoints of the train state: async, keep-N, exact resume, restore onto any mesh.

A checkpoint holds two items: `state` (params, optimizer state, step, ...: global arrays)
and `meta` (JSON: what must match to resume, e.g. seeds, sequence length, vocabulary). Orbax writes
each step into a temporary directory and renames it when every process has finished (on object
storage, where a rename is a copy per object, it writes a `commit_success.txt` marker instead), so
`latest_step` only ever sees fully committed checkpoints; a save killed half-way is ignored.
The directory may be local or gs:// (an `etils.epath.Path`; arrays go through tensorstore).
"""
from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath

from igpt.paths import as_path, forget_listings
from igpt.quiet import absl_errors_only
from igpt.training.rundir import RunDir
from igpt.treepaths import path_names


class CheckpointMismatchError(ValueError):
    """The checkpoint was written by a model of another shape."""


def _leaf_shapes(tree: Any) -> dict[tuple[str, ...], tuple[int, ...]]:
    return {path_names(path): tuple(leaf.shape) for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _shape_mismatches(abstract: Any, saved: Any, limit: int = 5) -> list[str]:
    want, have = _leaf_shapes(abstract), _leaf_shapes(saved)
    found = []
    for path, shape in want.items():
        if path not in have:
            found.append(f"{'/'.join(path)}: missing in the checkpoint")
        elif have[path] != shape:
            found.append(f"{'/'.join(path)}: checkpoint {have[path]} vs model {shape}")
    found += [f"{'/'.join(p)}: in the checkpoint, not in the model" for p in have if p not in want]
    return found[:limit]


def _restore_args(abstract: Any, partial: bool = False) -> ocp.args.PyTreeRestore:
    """Restore onto the shapes, dtypes and shardings of `abstract` (any mesh)."""
    return ocp.args.PyTreeRestore(item=abstract, partial_restore=partial,
                                  restore_args=ocp.checkpoint_utils.construct_restore_args(abstract))


def _handlers() -> dict[str, ocp.CheckpointHandler]:
    """Named handlers, so a fresh manager can read item metadata before its first save."""
    return {"state": ocp.PyTreeCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()}


class Checkpointer:
    """One run's checkpoint directory (RunDir.checkpoints)."""

    def __init__(self, directory: str | os.PathLike, keep: int = 3, async_save: bool = True):
        self.directory = as_path(directory)
        forget_listings(self.directory)  # see steps written by other processes, hosts, tensorstore
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=keep, enable_async_checkpointing=async_save, create=True),
            item_handlers=_handlers(),
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def steps(self) -> list[int]:
        """Committed steps, newest first."""
        return sorted(self.manager.all_steps(), reverse=True)

    def set_aside(self, step: int) -> epath.Path:
        """Renames a damaged step out of the way (kept, never deleted), so it is no longer a step.
        On object storage the rename copies each object, then deletes the originals."""
        forget_listings(self.directory)
        source = self.directory / str(step)
        aside = self.directory / f"{step}.damaged"
        n = 1
        while aside.exists():
            n += 1
            aside = self.directory / f"{step}.damaged-{n}"
        source.rename(aside)
        forget_listings(self.directory)
        self.manager.reload()
        return aside

    def save(self, step: int, state: Any, meta: dict[str, Any]) -> None:
        """Starts a save; with async saving it returns once the arrays are copied off device."""
        self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.PyTreeSave(state), meta=ocp.args.JsonSave(meta)), force=True)

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
            state=_restore_args(abstract_state), meta=ocp.args.JsonRestore()))
        return out.state, out.meta

    def restore_params(self, step: int, abstract_params: Any) -> Any:
        """Only the params, onto the shardings in `abstract_params` (sampling, evaluation)."""
        out = self.manager.restore(step, args=ocp.args.Composite(
            state=_restore_args({"params": abstract_params}, partial=True)))
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
    directory = RunDir.at(run_dir).checkpoints
    forget_listings(directory)
    if not directory.is_dir():  # on object storage: no object below it yet
        raise FileNotFoundError(f"{run_dir} has no {directory.name}/ directory: it is not an igpt run "
                                "with checkpoints. Pretrain it first, or fix the source path.")
    with absl_errors_only():  # orbax says the directory is read only: so it is, by request
        manager = ocp.CheckpointManager(directory, item_handlers=_handlers(),
                                        options=ocp.CheckpointManagerOptions(read_only=True, create=False,
                                                                             save_interval_steps=0))
    try:
        step = manager.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"{directory} holds no committed checkpoint; finish the source run first.")
        saved = manager.item_metadata(step)["state"]["params"]
        abstract = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=sharding), saved)
        out = manager.restore(step, args=ocp.args.Composite(
            state=_restore_args({"params": abstract}, partial=True),
            meta=ocp.args.JsonRestore()))
    finally:
        manager.close()
    return out.state["params"], out.meta
