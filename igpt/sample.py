"""Sampling from a trained run: a KV cache, one prefill over the prompt, then a compiled loop
that feeds one token per step.

  run = load_run("runs/digits", mesh)
  tokens = generate(run.graphdef, run.params, prompt, jax.random.key(0), temperature=1.0, top_k=0)

A sequence is x_0 .. x_{T-1}; the model reads [BOS, x_0 .. x_{T-2}], so the logits at position
i predict x_i. The prefill feeds [BOS, prompt] at positions 0 .. P and samples x_P; step i feeds
x_{i-1} at position i and samples x_i. The cache has a fixed size [b, T, heads, head_dim] per
layer, so every step has the same shapes and the whole loop compiles once. `generate_long`
slides that window to draw more tokens than the model's sequence holds (audio of a chosen
length); `completion_picture` is what a run shows of itself every train.sample_every steps.

Prompts and samples are the data tokenizer's ids. A run trained under grow_vocab reads them
shifted by its `token_offset` (the donor's tokens come first in its vocabulary): the samplers
take that offset, feed prompt + offset, draw among the data's tokens only and return data ids.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx
from jax.sharding import NamedSharding

import numpy as np

from igpt import sharding, tokenizers
from igpt.modalities import get as get_modality
from igpt.model import Transformer, model_config, with_bos
from igpt.tokenizers.base import Tokenizer
from igpt.training.checkpoint import Checkpointer
from igpt.training.rundir import RunDir
from igpt.transfer.arms import TransferError


def sample_token(logits: jax.Array, key: jax.Array, temperature: jax.Array, top_k: int) -> jax.Array:
    """One token per row of logits [b, vocab]: the argmax when temperature is 0, else a draw
    from softmax(logits / temperature) restricted to the top_k most likely (0 = all)."""
    if top_k > 0:
        kth = jax.lax.top_k(logits, top_k)[0][:, -1:]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    drawn = jax.random.categorical(key, logits / jnp.maximum(temperature, 1e-6), axis=-1)
    return jnp.where(temperature > 0, drawn, jnp.argmax(logits, axis=-1)).astype(jnp.int32)


def _check_prompt(prompt: jax.Array, seq_len: int) -> None:
    if not 0 <= prompt.shape[1] < seq_len:
        raise ValueError(f"prompt of {prompt.shape[1]} tokens: the model's sequence holds {seq_len}, so a "
                         f"prompt may hold 0 .. {seq_len - 1} tokens; use a shorter prompt.")


def _data_logits(logits: jax.Array, token_offset: int) -> jax.Array:
    """The logits of the data's tokens: those after the first `token_offset` (a donor's) ids."""
    return logits[..., token_offset:]


@functools.partial(jax.jit, static_argnames=("graphdef", "top_k", "token_offset"))
def generate(graphdef: nnx.GraphDef, params: nnx.State, prompt: jax.Array, key: jax.Array,
             temperature: float | jax.Array = 1.0, top_k: int = 0, token_offset: int = 0) -> jax.Array:
    """Completes prompt [b, P] (P may be 0) to [b, seq_len] tokens with the KV cache; the
    first P tokens are the prompt's. Position i draws with key fold_in(key, i), so the same
    key gives the same tokens as `generate_uncached`. Tokens are data ids: the model reads
    them + `token_offset` and draws among ids token_offset .. vocab - 1 only (grow_vocab)."""
    model = nnx.merge(graphdef, params)
    b, p = prompt.shape
    _check_prompt(prompt, model.seq_len)
    inputs = jnp.concatenate([jnp.full((b, 1), model.bos_id, jnp.int32),
                              prompt.astype(jnp.int32) + token_offset], axis=1)
    logits, cache = model.decode(inputs, model.init_cache(b), 0)
    first = sample_token(_data_logits(logits[:, -1], token_offset), jax.random.fold_in(key, p), temperature, top_k)
    tokens = jnp.zeros((b, model.seq_len), jnp.int32).at[:, :p].set(prompt).at[:, p].set(first)

    def step(i, carry):
        tokens, cache = carry
        last = jax.lax.dynamic_slice_in_dim(tokens, i - 1, 1, axis=1) + token_offset
        logits, cache = model.decode(last, cache, i)
        new = sample_token(_data_logits(logits[:, 0], token_offset), jax.random.fold_in(key, i), temperature, top_k)
        return jax.lax.dynamic_update_slice_in_dim(tokens, new[:, None], i, axis=1), cache

    return jax.lax.fori_loop(p + 1, model.seq_len, step, (tokens, cache))[0]


@functools.partial(jax.jit, static_argnames=("graphdef", "top_k", "token_offset"))
def generate_uncached(graphdef: nnx.GraphDef, params: nnx.State, prompt: jax.Array, key: jax.Array,
                      temperature: float | jax.Array = 1.0, top_k: int = 0, token_offset: int = 0) -> jax.Array:
    """The reference `generate` must agree with: the full forward pass over the whole
    sequence recomputed for every new token (what sampling costs without a cache)."""
    model = nnx.merge(graphdef, params)
    b, p = prompt.shape
    _check_prompt(prompt, model.seq_len)
    tokens = jnp.zeros((b, model.seq_len), jnp.int32).at[:, :p].set(prompt)

    def step(i, tokens):
        logits = model(with_bos(tokens + token_offset, model.bos_id))
        logits = jax.lax.dynamic_index_in_dim(logits, i, axis=1, keepdims=False)
        new = sample_token(_data_logits(logits, token_offset), jax.random.fold_in(key, i), temperature, top_k)
        return jax.lax.dynamic_update_slice_in_dim(tokens, new[:, None], i, axis=1)

    return jax.lax.fori_loop(p, model.seq_len, step, tokens)


def generate_long(graphdef: nnx.GraphDef, params: nnx.State, prompt: np.ndarray, key: jax.Array, total: int,
                  put: Callable[[np.ndarray], jax.Array], temperature: float = 1.0, top_k: int = 0,
                  token_offset: int = 0) -> np.ndarray:
    """`prompt` [b, P] continued to `total` tokens [b, total]: the first window as `generate`
    draws it, then windows whose first half is the last half of the tokens so far (the model
    sees half a sequence of context), each drawing the other half. `put` lays host rows on the
    mesh. The prompt shape of every later window is the same, so they compile once."""
    seq_len = nnx.merge(graphdef, params).seq_len
    keep = seq_len // 2
    out = np.asarray(generate(graphdef, params, put(prompt[:, :seq_len - 1]), key, temperature, top_k, token_offset))
    window = 1
    while out.shape[1] < total:
        drawn = generate(graphdef, params, put(out[:, -keep:]), jax.random.fold_in(key, 10_000 + window),
                         temperature, top_k, token_offset)
        out = np.concatenate([out, np.asarray(drawn)[:, keep:]], axis=1)
        window += 1
    return out[:, :total]


def tokens_for_seconds(tokenizer: Tokenizer, seq_len: int, sample_rate: int, seconds: float) -> int:
    """How many tokens decode to `seconds` of audio at `sample_rate` (mu-law: one per sample; a VQ
    tokenizer: one per downsampled step), measured by decoding one sequence. Rounded up, so the
    audio is at most one token's worth of samples longer (a float product such as 0.1 * 8000
    that lands a hair above a whole number does not add a token)."""
    samples = len(np.ravel(tokenizer.decode(np.zeros((1, seq_len), np.int32))))
    return max(1, math.ceil(seconds * sample_rate * seq_len / samples - 1e-6))


def completion_picture(graphdef: nnx.GraphDef, params: nnx.State, test: Any, tokenizer: Tokenizer,
                       cfg: ml_collections.ConfigDict, mesh: jax.sharding.Mesh, token_offset: int = 0,
                       num: int = 4, seed: int = 0) -> np.ndarray | None:
    """The first `num` test sequences' first halves completed by the model (temperature 1, a fixed
    key: the same prompts and draws at every step, so pictures over training compare), as the
    modality pictures them (None for text). Every process calls it; all get the picture."""
    rules = tuple(cfg.axis_rules)
    shards = sharding.batch_shards(mesh, rules)
    rows = shards * -(-num // shards)  # a batch that divides over the mesh
    originals = test.batch(0, rows, shuffle=False)
    local = test.batch(0, rows, process_index=jax.process_index(), process_count=jax.process_count(), shuffle=False)
    prompt_tokens = cfg.data.seq_len // 2
    prompt = sharding.put_batch(local[:, :prompt_tokens], mesh, rules)
    drawn = generate(graphdef, params, prompt, jax.random.key(seed), 1.0, 0, token_offset)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        drawn = multihost_utils.process_allgather(drawn, tiled=True)
    completions = np.asarray(drawn)
    return get_modality(cfg.data.modality).picture(tokenizer, prompt_tokens, originals[:num], completions[:num])


@dataclasses.dataclass(frozen=True)
class Run:
    """What sampling needs from a training run's directory. `token_offset`: where the data
    tokenizer's ids start in the model's vocabulary (a grow_vocab run's donor tokens come
    first; 0 otherwise): the model reads data token t as t + token_offset."""
    config: ml_collections.ConfigDict
    tokenizer: Tokenizer
    graphdef: nnx.GraphDef
    params: nnx.State
    step: int
    token_offset: int = 0


def axis_rules(cfg: ml_collections.ConfigDict) -> tuple:
    """The run's logical-axis rules as tuples again (JSON made them lists)."""
    return tuple((name, tuple(t) if isinstance(t, list) else t) for name, t in cfg.axis_rules)


def read_config(workdir: str | os.PathLike) -> ml_collections.ConfigDict:
    """The run's config.json, its model section completed with the defaults of fields added
    since the run was written."""
    saved_cfg = RunDir.at(workdir).read_config()
    if saved_cfg is None:
        raise FileNotFoundError(f"{workdir} has no config.json: it is not an igpt training run "
                                "(igpt-train writes one); point --workdir at a run directory.")
    cfg = ml_collections.ConfigDict(saved_cfg)
    saved = cfg.model.to_dict()
    saved.pop("size", None)  # runs written before the preset name was dropped from the config
    cfg.model = model_config(**saved)
    return cfg


def load_run(workdir: str | os.PathLike, mesh: jax.sharding.Mesh, step: int | None = None) -> Run:
    """Config, tokenizer and the latest (or given) checkpoint's params, laid on `mesh` as the
    run's logical-axis rules say: a checkpoint written on any mesh (e.g. FSDP over 8 devices)
    restores onto this one."""
    cfg = read_config(workdir)
    run = RunDir.at(workdir)
    if not run.checkpoints.is_dir():
        raise FileNotFoundError(f"{workdir} has no {run.checkpoints.name}/: the run saved no checkpoint "
                                "yet; train it until its first train.checkpoint_every step.")
    tokenizer = tokenizers.load(run.tokenizer)
    ckpt = Checkpointer(run.checkpoints)
    try:
        step = ckpt.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"{workdir} holds no committed checkpoint yet; wait for the run's first save.")
        offset = run_token_offset(workdir, cfg, tokenizer.vocab_size, lambda: ckpt.read_meta(step))
        with jax.set_mesh(mesh), nnx.logical_axis_rules(axis_rules(cfg)):
            graphdef, shapes = nnx.split(nnx.eval_shape(lambda: Transformer(
                cfg.model, offset + tokenizer.vocab_size, cfg.data.seq_len, rngs=nnx.Rngs(0))), nnx.Param)
        target = jax.tree.map(
            lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=NamedSharding(mesh, s.sharding.spec)), shapes)
        params = ckpt.restore_params(step, target)
    finally:
        ckpt.close()
    return Run(cfg, tokenizer, graphdef, params, step, offset)


def run_token_offset(workdir: str | os.PathLike, cfg: ml_collections.ConfigDict, tokenizer_vocab: int,
                     checkpoint_meta: Callable[[], dict[str, Any]]) -> int:
    """Where the run's data tokens start in its model's vocabulary: run.json's "token_offset"
    (igpt-train records it); for a run written before it did, 0 unless the run was trained under
    grow_vocab, and then the checkpoint's vocabulary less the tokenizer's, or else the donor's
    vocabulary (`transfer_init.token_offset`, which needs the donor reachable)."""
    recorded = RunDir.at(workdir).read_info().get("token_offset")
    if recorded is not None:
        return int(recorded)
    init = cfg.get("init")
    if init is None or init.get("mode") != "grow_vocab":
        return 0
    vocab = checkpoint_meta().get("vocab")
    if vocab is not None and int(vocab) >= tokenizer_vocab:
        return int(vocab) - tokenizer_vocab
    from igpt.transfer import init as transfer_init
    try:
        return transfer_init.token_offset(init)
    except (OSError, KeyError, ValueError, TransferError) as e:
        reason = (str(e).splitlines() or [""])[0]
        raise TransferError(
            f"{workdir} was trained under grow_vocab from {init.source!r} before runs recorded their token offset, "
            f"and that donor cannot be read to find it ({type(e).__name__}: {reason}); make the donor reachable "
            f"at init.source, or add \"token_offset\": <the donor's vocabulary size> to "
            f"{RunDir.at(workdir).run_info}.") from e
