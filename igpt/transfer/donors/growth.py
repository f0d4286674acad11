"""Growing a donor's tensors into a larger model before training on a new modality.

Vocabulary: the donor's token rows keep their ids; the new modality's tokens get rows after
them, drawn like Hugging Face's `mean_resizing` (from N(mean, 1e-9 cov) of the donor's rows:
new tokens start where the donor's average token is, so its predictions barely move) or kept
at the model's random init. The donor's logits on its own tokens are unchanged.

Width and depth, function-preserving (bert2BERT's function-preserving init, Net2Net): a wider
layer duplicates units (residual channels, heads, head dimensions, MLP neurons) and splits
each unit's outgoing weights between its copies in shares that sum to one, so every sum that
reads them is unchanged; the residual width grows by an integer factor, every channel copied
equally often, so LayerNorm's mean and variance are unchanged. A deeper model interleaves
copies of the donor's blocks whose output projections start at zero: identity blocks. Shares
drawn unequal (`spread` > 0) keep the function and let copies of one unit train apart (equal
shares give them equal gradients forever).

Params here are flat dicts {path names: numpy array} (igpt.treepaths.path_names).
"""
from __future__ import annotations

import math
from typing import Any

import jax
import numpy as np

from igpt.transfer.arms import TransferError
from igpt.treepaths import path_names

VOCAB_INITS = ("mean", "random")
MEAN_RESIZING_SCALE = 1e-9  # Hugging Face's: the covariance is scaled down this much

Flat = dict[tuple[str, ...], np.ndarray]
EMBED, POS, HEAD = ("embed", "value"), ("pos", "value"), ("head", "value")
OUTPUT_PROJECTIONS = ("wo", "bo", "w_out", "b_out")  # zero in a new block: it adds nothing to the residual


def flatten(tree: Any) -> Flat:
    return {path_names(p): np.asarray(v) for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def nest(flat: Flat) -> dict[str, Any]:
    """The nested dict of a flat one, keyed so that path_names gives back the same names."""
    tree: dict[str, Any] = {}
    for names, value in flat.items():
        node = tree
        for name in names[:-1]:
            node = node.setdefault(name, {})
        node[names[-1]] = value
    return tree


# ---------------------------------------------------------------------------------------------
# Vocabulary


def mean_resized_rows(rows: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` new rows drawn from N(mean, 1e-9 * cov) of `rows` [n, d] (Hugging Face's
    mean_resizing); all equal to the mean when that covariance is not positive definite."""
    rows = rows.astype(np.float64)
    mean = rows.mean(axis=0)
    centred = rows - mean
    cov = MEAN_RESIZING_SCALE * centred.T @ centred / rows.shape[0]
    try:
        root = np.linalg.cholesky(cov)
    except np.linalg.LinAlgError:
        return np.tile(mean, (count, 1))
    return mean + rng.standard_normal((count, rows.shape[1])) @ root.T


def grow_vocabulary(donor: Flat, fresh: Flat, donor_vocab: int, vocab: int, method: str, seed: int) -> Flat:
    """The embedding (and head) of a model whose `vocab` tokens are the donor's `donor_vocab`
    (same ids, same rows) followed by new ones (`method`: "mean" or "random", the fresh
    init), its BOS (id `vocab`) the donor's BOS row; everything else of `donor` unchanged."""
    if method not in VOCAB_INITS:
        raise TransferError(f"init.vocab_init={method!r}; choose one of {VOCAB_INITS}.")
    if vocab < donor_vocab:
        raise TransferError(f"grow_vocab: the model's vocabulary ({vocab}) is smaller than the donor's "
                            f"({donor_vocab}).")
    rng = np.random.default_rng([seed, 22])
    new = vocab - donor_vocab

    def grown(old_rows: np.ndarray, fresh_rows: np.ndarray) -> np.ndarray:
        """[vocab, d]: the donor's rows, then the new ones."""
        added = mean_resized_rows(old_rows, new, rng) if method == "mean" else fresh_rows[donor_vocab:vocab]
        return np.concatenate([old_rows, added.astype(old_rows.dtype)])

    out = dict(donor)
    embed = fresh[EMBED].copy()
    embed[:vocab] = grown(donor[EMBED][:donor_vocab], fresh[EMBED])
    embed[vocab] = donor[EMBED][donor_vocab]
    out[EMBED] = embed
    if HEAD in fresh:
        head = donor[HEAD] if HEAD in donor else donor[EMBED][:donor_vocab].T  # a tied donor's head
        out[HEAD] = grown(head.T, fresh[HEAD].T).T
    elif HEAD in donor:
        raise TransferError("the donor has its own output head but the model ties it to the embedding; set "
                            "model.tie_embeddings=False to keep it.")
    return out


# ---------------------------------------------------------------------------------------------
# Width and depth


def _copies(old: int, new: int, what: str) -> np.ndarray:
    """Which old unit each of `new` units copies: the old ones first, then round-robin."""
    if new < old:
        raise TransferError(f"growth only grows: the donor's {what} is {old}, the model's {new}.")
    return np.arange(new) % old


def _shares(mapping: np.ndarray, rng: np.random.Generator, spread: float) -> np.ndarray:
    """Per new unit, its share of the old unit's outgoing weights: over the copies of one old
    unit the shares sum to 1; equal when `spread` is 0, else 1/c (1 + spread z), z centred."""
    counts = np.bincount(mapping)
    z = rng.standard_normal(mapping.size) * spread
    z -= (np.bincount(mapping, z) / counts)[mapping]
    return (1.0 + z) / counts[mapping]


def _expand(a: np.ndarray, axis: int, mapping: np.ndarray, shares: np.ndarray | None = None) -> np.ndarray:
    out = np.take(a, mapping, axis=axis)
    if shares is not None:
        out = out * np.expand_dims(shares, [i for i in range(a.ndim) if i != axis])
    return out


def _blocks(flat: Flat | dict[tuple[str, ...], Any]) -> int:
    return len({n[1] for n in flat if n[0] == "blocks"})


def grow(donor: Flat, target: dict[tuple[str, ...], tuple[int, ...]], spread: float, seed: int) -> Flat:
    """The donor's params grown to the width, heads, head size, MLP size and depth of `target`
    (path names -> shapes), computing the same function. Embedding and position rows are the
    donor's (vocabulary and length are the transfer's business, not growth's)."""
    rng = np.random.default_rng([seed, 23])
    wq, w_in = ("blocks", "0", "attn", "wq", "value"), ("blocks", "0", "mlp", "w_in", "value")
    (d_s, h_s, k_s), (d_t, h_t, k_t) = donor[wq].shape, target[wq]
    f_s, f_t = donor[w_in].shape[1], target[w_in][1]
    if d_t % d_s:
        raise TransferError(f"growth: the model's width {d_t} is not a multiple of the donor's {d_s} (each residual "
                            "channel is copied equally often so that LayerNorm computes the same).")
    if k_t != k_s and POS not in donor:
        raise TransferError(f"growth: head size {k_s} -> {k_t} would reorder rotary frequencies; grow the number of "
                            f"heads instead (model.num_heads={h_s * d_t // d_s}).")
    res, heads, dims, hidden = (_copies(d_s, d_t, "width"), _copies(h_s, h_t, "number of heads"),
                                _copies(k_s, k_t, "head size"), _copies(f_s, f_t, "MLP size"))
    depth_s, depth_t = _blocks(donor), _blocks(target)
    if depth_t < depth_s:
        raise TransferError(f"growth only grows: the donor has {depth_s} blocks, the model {depth_t}.")

    def share(mapping: np.ndarray) -> np.ndarray:
        return _shares(mapping, rng, spread)  # one draw per tensor that reads the copies

    q_scale = math.sqrt(k_t / k_s)  # softmax(q.k / sqrt(head size)): keeps the scores' scale
    q_dims = share(dims) * q_scale

    def block(a: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
        part, name = names[0], names[1]
        if part in ("norm1", "norm2"):
            return _expand(a, 0, res)
        if name in ("wq", "wk", "wv"):
            a = _expand(_expand(a, 0, res, share(res)), 1, heads)
            return _expand(a, 2, dims, q_dims if name == "wq" else None)
        if name in ("bq", "bk", "bv"):
            return _expand(_expand(a, 0, heads), 1, dims, q_dims if name == "bq" else None)
        if name == "wo":
            return _expand(_expand(_expand(a, 0, heads, share(heads)), 1, dims, share(dims)), 2, res)
        if name in ("bo", "b_out"):
            return _expand(a, 0, res)
        if name in ("w_in", "w_gate"):
            return _expand(_expand(a, 0, res, share(res)), 1, hidden)
        if name in ("b_in", "b_gate"):
            return _expand(a, 0, hidden)
        if name == "w_out":
            return _expand(_expand(a, 0, hidden, share(hidden)), 1, res)
        raise TransferError(f"growth does not know parameter blocks/N/{'/'.join(names)}.")

    out: Flat = {}
    for names, a in donor.items():
        if names[0] == "blocks":
            continue
        if names in (EMBED, POS):
            out[names] = _expand(a, 1, res)
        elif names == HEAD:
            out[names] = _expand(a, 0, res, share(res))
        elif names[0] == "final_norm":  # read by a tied head: its shares go here
            out[names] = _expand(a, 0, res, None if HEAD in donor else share(res))
        else:
            raise TransferError(f"growth does not know parameter {'/'.join(names)}.")
    grown_blocks = {str(i): {names[2:]: block(a, names[2:]) for names, a in donor.items()
                             if names[:2] == ("blocks", str(i))} for i in range(depth_s)}
    for j in range(depth_t):
        i = j * depth_s // depth_t
        is_new = j > 0 and (j - 1) * depth_s // depth_t == i
        for rest, a in grown_blocks[str(i)].items():
            zeroed = is_new and rest[1] in OUTPUT_PROJECTIONS
            out[("blocks", str(j), *rest)] = np.zeros_like(a) if zeroed else a
    return out
