"""Sampling from a trained run: a KV cache, one prefill over the prompt, then a compiled loop
that feeds one token per step.

  run = load_run("runs/digits", mesh)
  tokens = generate(run.graphdef, run.params, prompt, jax.random.key(0), temperature=1.0, top_k=0)

A sequence is x_0 .. x_{T-1}; the model reads [BOS, x_0 .. x_{T-2}], so the logits at position
i predict x_i. The prefill feeds [BOS, prompt] at positions 0 .. P and samples x_P; step i feeds
x_{i-1} at position i and samples x_i. The cache has a fixed size [b, T, heads, head_dim] per
layer, so every step has the same shapes and the whole loop compiles once.
"""
from __future__ import annotations

import dataclasses
import functools
import os

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx
from jax.sharding import NamedSharding

from igpt import tokenizers
from igpt.model import Transformer, model_config, with_bos
from igpt.tokenizers.base import Tokenizer
from igpt.training.checkpoint import Checkpointer
from igpt.training.rundir import RunDir


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


@functools.partial(jax.jit, static_argnames=("graphdef", "top_k"))
def generate(graphdef: nnx.GraphDef, params: nnx.State, prompt: jax.Array, key: jax.Array,
             temperature: float | jax.Array = 1.0, top_k: int = 0) -> jax.Array:
    """Completes prompt [b, P] (P may be 0) to [b, seq_len] tokens with the KV cache; the
    first P tokens are the prompt's. Position i draws with key fold_in(key, i), so the same
    key gives the same tokens as `generate_uncached`."""
    model = nnx.merge(graphdef, params)
    b, p = prompt.shape
    _check_prompt(prompt, model.seq_len)
    inputs = jnp.concatenate([jnp.full((b, 1), model.bos_id, jnp.int32), prompt.astype(jnp.int32)], axis=1)
    logits, cache = model.decode(inputs, model.init_cache(b), 0)
    first = sample_token(logits[:, -1], jax.random.fold_in(key, p), temperature, top_k)
    tokens = jnp.zeros((b, model.seq_len), jnp.int32).at[:, :p].set(prompt).at[:, p].set(first)

    def step(i, carry):
        tokens, cache = carry
        logits, cache = model.decode(jax.lax.dynamic_slice_in_dim(tokens, i - 1, 1, axis=1), cache, i)
        new = sample_token(logits[:, 0], jax.random.fold_in(key, i), temperature, top_k)
        return jax.lax.dynamic_update_slice_in_dim(tokens, new[:, None], i, axis=1), cache

    return jax.lax.fori_loop(p + 1, model.seq_len, step, (tokens, cache))[0]


@functools.partial(jax.jit, static_argnames=("graphdef", "top_k"))
def generate_uncached(graphdef: nnx.GraphDef, params: nnx.State, prompt: jax.Array, key: jax.Array,
                      temperature: float | jax.Array = 1.0, top_k: int = 0) -> jax.Array:
    """The reference `generate` must agree with: the full forward pass over the whole
    sequence recomputed for every new token (what sampling costs without a cache)."""
    model = nnx.merge(graphdef, params)
    b, p = prompt.shape
    _check_prompt(prompt, model.seq_len)
    tokens = jnp.zeros((b, model.seq_len), jnp.int32).at[:, :p].set(prompt)

    def step(i, tokens):
        logits = jax.lax.dynamic_index_in_dim(model(with_bos(tokens, model.bos_id)), i, axis=1, keepdims=False)
        new = sample_token(logits, jax.random.fold_in(key, i), temperature, top_k)
        return jax.lax.dynamic_update_slice_in_dim(tokens, new[:, None], i, axis=1)

    return jax.lax.fori_loop(p, model.seq_len, step, tokens)


@dataclasses.dataclass(frozen=True)
class Run:
    """What sampling needs from a training run's directory."""
    config: ml_collections.ConfigDict
    tokenizer: Tokenizer
    graphdef: nnx.GraphDef
    params: nnx.State
    step: int


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
    with jax.set_mesh(mesh), nnx.logical_axis_rules(axis_rules(cfg)):
        graphdef, shapes = nnx.split(nnx.eval_shape(
            lambda: Transformer(cfg.model, tokenizer.vocab_size, cfg.data.seq_len, rngs=nnx.Rngs(0))), nnx.Param)
    target = jax.tree.map(
        lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=NamedSharding(mesh, s.sharding.spec)), shapes)
    ckpt = Checkpointer(run.checkpoints)
    try:
        step = ckpt.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"{workdir} holds no committed checkpoint yet; wait for the run's first save.")
        params = ckpt.restore_params(step, target)
    finally:
        ckpt.close()
    return Run(cfg, tokenizer, graphdef, params, step)
