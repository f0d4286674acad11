"""Starting a run from another modality's checkpoint: which weights to carry, which to train.

Modes (config `init.mode`):
  scratch      fresh weights, all trained (the baseline).
  full         body carried over and trained; token embeddings and head carried when their
               shapes match, re-initialised when the vocabulary differs.
  frozen_body  attention and MLP weights carried and frozen; embeddings, positions, norms
               and head trained (the Frozen Pretrained Transformer recipe).
  layers       the blocks in `init.layers` trained, the other blocks frozen; embeddings,
               positions, final norm and head trained (partial bridge training).
Pure functions over nnx.State trees, keyed by parameter paths. The mode names, their check
and TransferError live in igpt.transfer.arms (no jax there, for the report).
"""
from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from igpt.transfer.arms import SCRATCH, TransferError
from igpt.training.optim import FREEZE, TRAIN
from igpt.treepaths import path_names


def init_config(mode: str = SCRATCH, source: str = "", layers: Sequence[int] = (),
                positions: str = "interpolate") -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(
        mode=mode,             # one of igpt.transfer.arms.MODES
        source=source,         # workdir of the pretrained run ("" for scratch)
        layers=tuple(layers),  # blocks trained in mode "layers"
        positions=positions,   # "interpolate" | "reinit" when sequence lengths differ
    ))


def _block_index(names: tuple[str, ...]) -> int | None:
    return int(names[1]) if len(names) > 1 and names[0] == "blocks" else None


def _is_body_weight(names: tuple[str, ...]) -> bool:
    """Attention and MLP weights of a block (not its norms)."""
    return _block_index(names) is not None and names[2] in ("attn", "mlp")


def param_labels(params: Any, mode: str, layers: Sequence[int] = ()) -> Any:
    """A tree like `params` of 'train' / 'freeze' labels for optax.multi_transform."""
    def label(path, _):
        names = path_names(path)
        if mode == "frozen_body" and _is_body_weight(names):
            return FREEZE
        if mode == "layers" and _block_index(names) is not None and _block_index(names) not in layers:
            return FREEZE
        return TRAIN
    return jax.tree_util.tree_map_with_path(label, params)


def interpolate_positions(table: jax.Array, length: int) -> jax.Array:
    """Linear interpolation of a [T, d] position table to [length, d]."""
    old = np.linspace(0.0, 1.0, table.shape[0])
    new = np.linspace(0.0, 1.0, length)
    return jax.vmap(lambda col: jnp.interp(new, old, col), in_axes=1, out_axes=1)(table.astype(jnp.float32))


def transplant(target: Any, source: Any, positions: str = "interpolate") -> Any:
    """Target params with every source weight of the same path carried over.

    Blocks and norms must match in shape (else width/depth differ: an error); the token
    embedding and head are kept fresh when their shapes differ (another vocabulary); the
    position table is interpolated or kept fresh when lengths differ."""
    src = {path_names(p): v for p, v in jax.tree_util.tree_flatten_with_path(source)[0]}
    tgt_names = {path_names(p) for p, _ in jax.tree_util.tree_flatten_with_path(target)[0]}
    src_blocks = {n[1] for n in src if n[0] == "blocks"}
    tgt_blocks = {n[1] for n in tgt_names if n[0] == "blocks"}
    if src_blocks != tgt_blocks:
        raise TransferError(f"source has {len(src_blocks)} blocks, target {len(tgt_blocks)}: depths differ. "
                            "Use a target model config with the source's num_layers.")

    def carry(path, fresh):
        names = path_names(path)
        old = src.get(names)
        if old is None:
            if names[0] in ("blocks", "final_norm"):
                raise TransferError(f"the source checkpoint has no parameter {'/'.join(names)}; it was not "
                                    "written by an igpt Transformer of this architecture (mlp, positions).")
            return fresh
        if old.shape == fresh.shape:
            return jax.device_put(old.astype(fresh.dtype), fresh.sharding)
        if names[0] in ("embed", "head"):
            return fresh
        if names[0] == "pos" and old.shape[1:] == fresh.shape[1:]:
            if positions == "reinit":
                return fresh
            return jax.device_put(interpolate_positions(old, fresh.shape[0]).astype(fresh.dtype), fresh.sharding)
        raise TransferError(f"parameter {'/'.join(names)}: source shape {tuple(old.shape)} vs target "
                            f"{tuple(fresh.shape)}; widths differ. Use the source's model width and heads.")
    return jax.tree_util.tree_map_with_path(carry, target)
