"""Starting a run from another modality's checkpoint: which weights to carry, which to train.

Modes (config `init.mode`):
  scratch      fresh weights, all trained (the baseline).
  full         body carried over and trained; token embeddings and head carried when their
               shapes match, re-initialised when the vocabulary differs.
  frozen_body  attention and MLP weights carried and frozen; embeddings, positions, norms
               and head trained (the Frozen Pretrained Transformer recipe).
  layers       the blocks in `init.layers` trained, the other blocks frozen; embeddings,
               positions, final norm and head trained (partial bridge training).
  grow_vocab   "full", but the donor's token rows are kept under their ids and the run's
               tokens get new rows after them (ids shifted by the donor's vocabulary), drawn
               from the donor rows' mean and covariance (`init.vocab_init`="mean", Hugging
               Face's mean_resizing) or at random ("random"): one model reads both.
Controls, each keeping one thing of pretraining and destroying the rest (a transfer claim
must beat them, not only scratch):
  stats_init       every tensor drawn i.i.d. from a normal with the source tensor's mean and
                   std (FPT's statistics-only control); all trained.
  shuffled_source  "full" from a source pretrained on its data with the tokens of every
                   sequence shuffled (unigram statistics kept, structure destroyed).
  mimetic          no source: attention initialised so that W_q W_k^T ~ a Z + b I and
                   W_v W_o ~ a Z - b I per head (Trockman & Kolter 2023); all trained.
  frozen_random    no source: "frozen_body" with the random weights of the fresh model.
The source (`init.source`) is an igpt run directory or "hf:DIR", a Hugging Face GPT-2
checkpoint (igpt.transfer.donors), in every mode. With `init.grow`, a donor narrower or
shallower than the model is first grown to its shape, computing the same function
(igpt.transfer.donors.growth). Pure functions over nnx.State trees, keyed by parameter
paths. The mode names, their check and TransferError live in igpt.transfer.arms (no jax
there, for the report).
"""
from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from igpt.transfer import donors
from igpt.transfer.arms import SCRATCH, SOURCE_MODES, TransferError
from igpt.transfer.donors import growth
from igpt.training.optim import FREEZE, TRAIN
from igpt.treepaths import path_names

POSITIONS = ("interpolate", "truncate", "reinit")


def init_config(mode: str = SCRATCH, source: str = "", layers: Sequence[int] = (),
                positions: str = "interpolate", vocab_init: str = "mean", grow: bool = False,
                grow_spread: float = 0.1) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(
        mode=mode,             # one of igpt.transfer.arms.MODES
        source=source,         # workdir of the pretrained run, or "hf:DIR" (a GPT-2 checkpoint); "" for none
        layers=tuple(layers),  # blocks trained in mode "layers"
        positions=positions,   # when sequence lengths differ: "interpolate" | "truncate" (the first rows) | "reinit"
        vocab_init=vocab_init,  # grow_vocab's new rows: "mean" (HF mean_resizing) | "random"
        grow=grow,             # grow a narrower/shallower donor to the model's shape, function-preservingly
        grow_spread=grow_spread,  # unevenness of the shares copies of a unit split its outgoing weights in
    ))


def needs_source(mode: str) -> bool:
    return mode in SOURCE_MODES


def token_offset(init: ml_collections.ConfigDict) -> int:
    """Where the run's token ids start in the model's vocabulary: after the donor's tokens under
    grow_vocab, else 0."""
    return donors.vocab_size(init.source) if init.mode == "grow_vocab" else 0


def _block_index(names: tuple[str, ...]) -> int | None:
    return int(names[1]) if len(names) > 1 and names[0] == "blocks" else None


def _is_body_weight(names: tuple[str, ...]) -> bool:
    """Attention and MLP weights of a block (not its norms)."""
    return _block_index(names) is not None and names[2] in ("attn", "mlp")


def param_labels(params: Any, mode: str, layers: Sequence[int] = ()) -> Any:
    """A tree like `params` of 'train' / 'freeze' labels for optax.multi_transform."""
    def label(path, _):
        names = path_names(path)
        if mode in ("frozen_body", "frozen_random") and _is_body_weight(names):
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

    Blocks and norms must match in shape (else width/depth differ: an error, unless grown
    first) and in kind (biases); the token embedding and head are kept fresh when their shapes
    differ (another vocabulary); the position table is interpolated, truncated or kept fresh
    when lengths differ."""
    if positions not in POSITIONS:
        raise TransferError(f"init.positions={positions!r}; choose one of {POSITIONS}.")
    src = {path_names(p): v for p, v in jax.tree_util.tree_flatten_with_path(source)[0]}
    tgt_names = {path_names(p) for p, _ in jax.tree_util.tree_flatten_with_path(target)[0]}
    src_blocks = {n[1] for n in src if n[0] == "blocks"}
    tgt_blocks = {n[1] for n in tgt_names if n[0] == "blocks"}
    if src_blocks != tgt_blocks:
        raise TransferError(f"source has {len(src_blocks)} blocks, target {len(tgt_blocks)}: depths differ. "
                            "Use a target model config with the source's num_layers (or init.grow=True).")
    dropped = [n for n in src if n not in tgt_names and n[0] in ("blocks", "final_norm", "head")]
    if dropped:
        raise TransferError(f"the source has parameter {'/'.join(dropped[0])} that the model lacks: its architecture "
                            "differs (model.bias, model.tie_embeddings, model.mlp); use the source's.")

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
            if positions == "truncate":
                if old.shape[0] < fresh.shape[0]:
                    raise TransferError(f"init.positions='truncate': the source has {old.shape[0]} positions, the "
                                        f"model {fresh.shape[0]}; use 'interpolate' or 'reinit'.")
                return jax.device_put(old[: fresh.shape[0]].astype(fresh.dtype), fresh.sharding)
            return jax.device_put(interpolate_positions(old, fresh.shape[0]).astype(fresh.dtype), fresh.sharding)
        raise TransferError(f"parameter {'/'.join(names)}: source shape {tuple(old.shape)} vs target "
                            f"{tuple(fresh.shape)}; widths differ. Use the source's model width and heads "
                            "(or init.grow=True).")
    return jax.tree_util.tree_map_with_path(carry, target)


def stats_init(target: Any, source: Any, seed: int) -> Any:
    """Target params with each tensor drawn i.i.d. from N(mean, std) of the source tensor of the
    same path (whatever its shape: another vocabulary's embedding gives its statistics too)."""
    src = {path_names(p): np.asarray(v, np.float64) for p, v in jax.tree_util.tree_flatten_with_path(source)[0]}
    rng = np.random.default_rng(seed)

    def draw(path, fresh):
        old = src.get(path_names(path))
        if old is None:
            raise TransferError(f"the source checkpoint has no parameter {'/'.join(path_names(path))} to take "
                                "statistics from; it was not written by an igpt Transformer of this architecture.")
        values = rng.normal(old.mean(), old.std(), fresh.shape)
        return jax.device_put(values.astype(fresh.dtype), fresh.sharding)
    return jax.tree_util.tree_map_with_path(draw, target)


MIMETIC_QK = (0.7, 0.7)  # (a, b): W_q W_k^T ~ a Z + b I, Z ~ N(0, 1/d)
MIMETIC_VO = (0.4, 0.4)  # (a, b): W_v W_o ~ a Z - b I


def _factor(m: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """(A [d, rank], B [d, rank]) with A B^T the best rank-`rank` approximation of m."""
    u, s, vt = np.linalg.svd(m)
    root = np.sqrt(s[:rank])
    return u[:, :rank] * root, vt[:rank].T * root


def mimetic(params: Any, seed: int, qk: tuple[float, float] = MIMETIC_QK,
            vo: tuple[float, float] = MIMETIC_VO) -> Any:
    """Params whose attention weights mimic a pretrained transformer's (Trockman & Kolter 2023):
    per head, W_q W_k^T is the best rank-head_dim fit of a Z + b I (attend to similar tokens) and
    W_v W_o of a Z - b I; every other weight stays as drawn."""
    rng = np.random.default_rng(seed)
    flat = {path_names(p): v for p, v in jax.tree_util.tree_flatten_with_path(params)[0]}
    made: dict[tuple[str, ...], np.ndarray] = {}
    for names in [n for n in flat if n[0] == "blocks" and "wq" in n]:
        at = names.index("wq")
        sibling = lambda w: names[:at] + (w,) + names[at + 1:]  # ("blocks", "0", "attn", w, "value")
        d, heads, hd = flat[names].shape
        mats = {w: np.zeros((d, heads, hd)) for w in ("wq", "wk", "wv")}
        mats["wo"] = np.zeros((heads, hd, d))
        for h in range(heads):
            (a, b), (c, e) = qk, vo
            mats["wq"][:, h], mats["wk"][:, h] = _factor(a * rng.normal(0, d**-0.5, (d, d)) + b * np.eye(d), hd)
            v, o = _factor(c * rng.normal(0, d**-0.5, (d, d)) - e * np.eye(d), hd)
            mats["wv"][:, h], mats["wo"][h] = v, o.T
        made.update({sibling(w): m for w, m in mats.items()})

    def put(path, fresh):
        m = made.get(path_names(path))
        return fresh if m is None else jax.device_put(m.astype(fresh.dtype), fresh.sharding)
    return jax.tree_util.tree_map_with_path(put, params)


def initialize(init: ml_collections.ConfigDict, fresh: Any, donor: donors.Donor | None, seed: int,
               vocab: int | None = None) -> Any:
    """The params a run of init mode `init.mode` starts from: fresh ones, a donor's (None for
    modes that need none), or a control's. `vocab`: the model's vocabulary size (grow_vocab)."""
    if init.mode == "mimetic":
        return mimetic(fresh, seed)
    if not needs_source(init.mode):
        return fresh
    source = donor.params
    if init.grow:
        shapes = {path_names(p): tuple(v.shape) for p, v in jax.tree_util.tree_flatten_with_path(fresh)[0]}
        source = growth.nest(growth.grow(growth.flatten(source), shapes, init.grow_spread, seed))
    if init.mode == "stats_init":
        return stats_init(fresh, source, seed)
    if init.mode == "grow_vocab":
        source = growth.nest(growth.grow_vocabulary(growth.flatten(source), growth.flatten(fresh), donor.vocab,
                                                    vocab, init.vocab_init, seed))
    return transplant(fresh, source, init.positions)
