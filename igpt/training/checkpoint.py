"""Orbax checkpoints of the train state: async, keep-N, exact resume, restore onto any mesh.

A checkpoint holds two items: `state` (params, optimizer state, step, ...: global arrays)
and `meta` (JSON: what must match to resume, e.g. seeds, sequence length, vocabulary). Orbax writes
each step into a temporary directory and renames it when every process has finished (on object
storage, where a rename is a copy per object, it writes a `commit_success.txt` marker instead), so
`latest_step` only ever sees fully committed checkpoints; a save killed half-way is ignored.
The directory may be local or gs:// (an `etils.epath.Path`; arrays go through tensorstore).

Orbax reads a truncated file as an error, but bytes changed in place as whatever they now hold;
so `meta` also records a fingerprint of every saved array (a position-weighted hash of its bits,
integer arithmetic only: the same on any mesh), and every restore checks what it read against it.
The hash reads the arrays on the host: on an accelerator a save copies the state off the device
once more (orbax copies it too), a cost paid per checkpoint, not per step.
A checkpoint that fails that check, or fails to read at all, is damaged (CheckpointDamagedError).
"""
from __future__ import annotations

import contextlib
import os
from typing import Any, Iterator

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from igpt.paths import as_path, forget_listings
from igpt.quiet import absl_errors_only
from igpt.training.rundir import RunDir
from igpt.treepaths import path_names


class CheckpointMismatchError(ValueError):
    """The checkpoint was written by a model of another shape."""


class CheckpointDamagedError(ValueError):
    """A checkpoint that does not read back as it was saved (truncated or changed files)."""

    def __init__(self, where: str, detail: str, advice: str = "igpt-train in that run sets a damaged checkpoint "
                 "aside and resumes from the newest intact one; elsewhere, choose another step"):
        super().__init__(where, detail, advice)  # args as given: the error crosses process boundaries (pickled)
        self.where, self.detail, self.advice = where, detail, advice

    def __str__(self) -> str:
        return f"checkpoint {self.where} is damaged ({self.detail}); {self.advice}."


def damage_reason(error: BaseException) -> str:
    """What went wrong reading a checkpoint, in one line: the error's own first line."""
    if isinstance(error, CheckpointDamagedError):
        return error.detail
    cause = error.__cause__ or error
    text = str(cause).strip()
    return f"{type(cause).__name__}: {text.splitlines()[0][:240]}" if text else type(cause).__name__


@contextlib.contextmanager
def _reading(where: str) -> Iterator[None]:
    """Any failure to read a checkpoint back (orbax raises bare Exceptions for tensorstore's read
    errors) is damage; a checkpoint of another model shape is not."""
    try:
        yield
    except (CheckpointMismatchError, CheckpointDamagedError):
        raise
    except Exception as e:  # noqa: BLE001 - see the docstring
        raise CheckpointDamagedError(where, damage_reason(e)) from e


FINGERPRINT = "fingerprint"  # meta key: {"params/embed/embedding": uint32 hash, ...}


def _words(a: np.ndarray) -> np.ndarray:
    """Each element's bits as one uint32 (8-byte elements folded in two)."""
    if a.dtype.itemsize == 8:
        wide = a.view(np.uint64)
        return (wide ^ (wide >> np.uint64(32))).astype(np.uint32)
    return a.view(f"u{a.dtype.itemsize}").astype(np.uint32)


def _shard_hash(data: np.ndarray, index: tuple[slice, ...], shape: tuple[int, ...]) -> int:
    """Sum (mod 2**32) over a shard's elements of a mix of each one's bits and its position in
    the global array: any changed element changes it, and shards add up to the array's hash."""
    words = _words(data)
    position, stride = np.zeros(words.shape, np.uint32), 1
    for d in reversed(range(words.ndim)):
        start = index[d].start or 0
        along = np.arange(start, start + words.shape[d], dtype=np.uint64) * np.uint64(stride) % np.uint64(2**32)
        position += along.astype(np.uint32).reshape([-1 if i == d else 1 for i in range(words.ndim)])
        stride *= shape[d]
    with np.errstate(over="ignore"):  # wrapping mod 2**32 is the point (numpy warns on 0-d arrays)
        h = words ^ (position * np.uint32(0x9E3779B1))
        h ^= h >> np.uint32(16)
        h *= np.uint32(0x85EBCA6B)
        h ^= h >> np.uint32(13)
        return int(h.sum(dtype=np.uint32))


def fingerprint(tree: Any) -> dict[str, int]:
    """Leaf path -> hash of its bits, for every global array of `tree`, on any mesh. Computed on
    the host from each process's own shards (one copy of each), integers only, so no compiled
    program is needed; processes add their parts up in one all-gather."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    parts = np.array([sum(_shard_hash(np.asarray(s.data), s.index, leaf.shape)
                          for s in leaf.addressable_shards if s.replica_id == 0) % 2**32
                      for _, leaf in leaves], np.uint32)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        parts = multihost_utils.process_allgather(parts).sum(axis=0, dtype=np.uint64) % 2**32
    return {"/".join(path_names(path)): int(h) for (path, _), h in zip(leaves, parts)}


def _callers(meta: dict[str, Any]) -> dict[str, Any]:
    """The meta as the caller saved it, without the fingerprint."""
    return {k: v for k, v in meta.items() if k != FINGERPRINT}


def check_fingerprint(where: str, restored: Any, meta: dict[str, Any], prefix: str = "") -> None:
    """Raises CheckpointDamagedError naming the arrays of `restored` (under `prefix` in the saved
    tree) whose bits differ from what was saved; a checkpoint saved without a fingerprint passes."""
    saved = meta.get(FINGERPRINT)
    if saved is None:
        return
    found = {prefix + path: h for path, h in fingerprint(restored).items()}
    bad = [path for path, h in found.items() if saved.get(path) != h]
    if bad:
        raise CheckpointDamagedError(where, f"{len(bad)} of {len(found)} arrays differ from what was saved: "
                                            f"{', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}")


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
        meta = dict(meta, **{FINGERPRINT: fingerprint(state)})
        self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.PyTreeSave(state), meta=ocp.args.JsonSave(meta)), force=True)

    def where(self, step: int) -> str:
        return str(self.directory / str(step))

    def read_meta(self, step: int) -> dict[str, Any]:
        with _reading(self.where(step)):
            return _callers(self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta)

    def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict[str, Any]]:
        """Restores onto the shardings in `abstract_state` (ShapeDtypeStructs), any mesh, and checks
        the arrays against the fingerprint saved with them."""
        with _reading(self.where(step)):
            saved = self.manager.item_metadata(step)["state"]
            bad = _shape_mismatches(abstract_state, saved)
            if bad:
                raise CheckpointMismatchError(
                    f"checkpoint {self.where(step)} was written by a model of another shape:\n  "
                    + "\n  ".join(bad)
                    + "\nResume with the config that wrote it, or start in a fresh --workdir.")
            out = self.manager.restore(step, args=ocp.args.Composite(
                state=_restore_args(abstract_state), meta=ocp.args.JsonRestore()))
            check_fingerprint(self.where(step), out.state, out.meta)
        return out.state, _callers(out.meta)

    def restore_params(self, step: int, abstract_params: Any) -> Any:
        """Only the params, onto the shardings in `abstract_params` (sampling, evaluation), checked
        against the saved fingerprint."""
        if step not in self.steps():
            raise FileNotFoundError(f"{self.directory} has no committed checkpoint {step}; its steps: {self.steps()}.")
        with _reading(self.where(step)):
            out = self.manager.restore(step, args=ocp.args.Composite(
                state=_restore_args({"params": abstract_params}, partial=True), meta=ocp.args.JsonRestore()))
            check_fingerprint(self.where(step), out.state["params"], out.meta, prefix="params/")
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
        with _reading(str(directory / str(step))):
            saved = manager.item_metadata(step)["state"]["params"]
            abstract = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=sharding), saved)
            out = manager.restore(step, args=ocp.args.Composite(
                state=_restore_args({"params": abstract}, partial=True),
                meta=ocp.args.JsonRestore()))
            check_fingerprint(str(directory / str(step)), out.state["params"], out.meta, prefix="params/")
    finally:
        manager.close()
    return out.state["params"], _callers(out.meta)
