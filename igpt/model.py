"""Decoder-only transformer (pre-norm, GPT-2/iGPT style) in Flax NNX.

Parameters and activations carry logical axis names only; igpt/sharding.py maps them onto
the mesh. Parameters live in `param_dtype` (fp32 master weights); matmuls run in `dtype`
(bf16 on accelerators). Token id `vocab_size` is BOS: the embedding has vocab_size + 1 rows,
the head predicts vocab_size classes. The embedding table is padded to a multiple of 128 rows
so its vocabulary axis shards evenly; the padding rows are never looked up.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from igpt.sharding import constrain

# (layers, width, heads): iGPT's published shapes, and small ones that train on a CPU.
SIZES = {
    "nano": (2, 64, 4),
    "tiny": (4, 128, 4),
    "mini": (4, 256, 8),
    "small": (8, 512, 8),
    "igpt-s": (24, 512, 8),
    "igpt-m": (36, 1024, 8),
    "igpt-l": (48, 1536, 16),
    "igpt-xl": (60, 3072, 16),
}


def model_config(size: str = "tiny", **overrides) -> ml_collections.ConfigDict:
    """Named model sizes; any field may be overridden (`model_config('tiny', mlp='swiglu')`)."""
    if size not in SIZES:
        raise ValueError(f"unknown model size {size!r}; choose one of {sorted(SIZES)}.")
    layers, width, heads = SIZES[size]
    c = ml_collections.ConfigDict(dict(
        size=size,
        num_layers=layers,
        width=width,
        num_heads=heads,
        mlp_ratio=4,
        mlp="gelu",            # "gelu" | "swiglu"
        positions="learned",   # "learned" | "rotary"
        dtype="float32",       # compute dtype: "bfloat16" on accelerators
        param_dtype="float32",  # master weights
        attention="auto",      # "auto" | "xla" | "cudnn"
        remat="none",          # "none" | "full" | "dots" (save matmul outputs)
    ))
    c.update(overrides)
    return c


def _init(std: float, axes: tuple[str, ...]):
    return nnx.with_partitioning(nnx.initializers.normal(std), axes)


def rotary(x: jax.Array, positions: jax.Array) -> jax.Array:
    """Rotary position embedding over the last axis of x [b, t, h, d] (d even)."""
    half = x.shape[-1] // 2
    freqs = 1.0 / (10000.0 ** (jnp.arange(half, dtype=jnp.float32) / half))
    angles = positions[:, None].astype(jnp.float32) * freqs[None, :]           # t, half
    sin, cos = jnp.sin(angles)[None, :, None, :], jnp.cos(angles)[None, :, None, :]
    x1, x2 = x[..., :half].astype(jnp.float32), x[..., half:].astype(jnp.float32)
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1).astype(x.dtype)


def attention_impl(name: str, dtype) -> str | None:
    """cuDNN's fused attention where the backend has it (GPU, half precision); else XLA."""
    if name != "auto":
        return name
    on_gpu = jax.default_backend() == "gpu"
    return "cudnn" if on_gpu and jnp.dtype(dtype).itemsize == 2 else "xla"


class Attention(nnx.Module):
    def __init__(self, cfg: ml_collections.ConfigDict, *, rngs: nnx.Rngs):
        d, h = cfg.width, cfg.num_heads
        if d % h:
            raise ValueError(f"model width {d} is not divisible by num_heads {h}.")
        hd = d // h
        out_std = 0.02 / math.sqrt(2 * cfg.num_layers)
        pd = jnp.dtype(cfg.param_dtype)
        self.wq = nnx.Param(_init(0.02, ("embed", "heads", "kv"))(rngs.params(), (d, h, hd), pd))
        self.wk = nnx.Param(_init(0.02, ("embed", "heads", "kv"))(rngs.params(), (d, h, hd), pd))
        self.wv = nnx.Param(_init(0.02, ("embed", "heads", "kv"))(rngs.params(), (d, h, hd), pd))
        self.wo = nnx.Param(_init(out_std, ("heads", "kv", "embed"))(rngs.params(), (h, hd, d), pd))
        self.rotary = cfg.positions == "rotary"
        self.dtype = jnp.dtype(cfg.dtype)
        self.impl = attention_impl(cfg.attention, cfg.dtype)

    def qkv(self, x: jax.Array, positions: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        dt = self.dtype
        q, k, v = (jnp.einsum("btd,dhk->bthk", x, w[...].astype(dt)) for w in (self.wq, self.wk, self.wv))
        if self.rotary:
            q, k = rotary(q, positions), rotary(k, positions)
        return (constrain(t, ("batch", None, "heads", None)) for t in (q, k, v))

    def project_out(self, o: jax.Array) -> jax.Array:
        return jnp.einsum("bthk,hkd->btd", o, self.wo[...].astype(self.dtype))

    def __call__(self, x: jax.Array) -> jax.Array:
        positions = jnp.arange(x.shape[1])
        q, k, v = self.qkv(x, positions)
        o = jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation=self.impl)
        return self.project_out(o)


class Mlp(nnx.Module):
    def __init__(self, cfg: ml_collections.ConfigDict, *, rngs: nnx.Rngs):
        d, f = cfg.width, cfg.width * cfg.mlp_ratio
        pd = jnp.dtype(cfg.param_dtype)
        out_std = 0.02 / math.sqrt(2 * cfg.num_layers)
        self.gated = cfg.mlp == "swiglu"
        if cfg.mlp not in ("gelu", "swiglu"):
            raise ValueError(f"unknown mlp {cfg.mlp!r}; use 'gelu' or 'swiglu'.")
        self.w_in = nnx.Param(_init(0.02, ("embed", "mlp"))(rngs.params(), (d, f), pd))
        self.w_gate = nnx.Param(_init(0.02, ("embed", "mlp"))(rngs.params(), (d, f), pd)) if self.gated else None
        self.w_out = nnx.Param(_init(out_std, ("mlp", "embed"))(rngs.params(), (f, d), pd))
        self.dtype = jnp.dtype(cfg.dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        dt = self.dtype
        h = x @ self.w_in[...].astype(dt)
        h = jax.nn.silu(x @ self.w_gate[...].astype(dt)) * h if self.gated else jax.nn.gelu(h)
        h = constrain(h, ("batch", None, "mlp"))
        return h @ self.w_out[...].astype(dt)


def _norm(cfg: ml_collections.ConfigDict, rngs: nnx.Rngs) -> nnx.LayerNorm:
    return nnx.LayerNorm(
        cfg.width, dtype=jnp.dtype(cfg.dtype), param_dtype=jnp.dtype(cfg.param_dtype), rngs=rngs,
        scale_init=nnx.with_partitioning(nnx.initializers.ones, ("embed",)),
        bias_init=nnx.with_partitioning(nnx.initializers.zeros, ("embed",)))


class Block(nnx.Module):
    def __init__(self, cfg: ml_collections.ConfigDict, *, rngs: nnx.Rngs):
        self.norm1 = _norm(cfg, rngs)
        self.attn = Attention(cfg, rngs=rngs)
        self.norm2 = _norm(cfg, rngs)
        self.mlp = Mlp(cfg, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x + self.attn(self.norm1(x))
        x = x + self.mlp(self.norm2(x))
        return constrain(x, ("batch", None, None))


REMAT_POLICIES = {
    "full": None,
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


class Transformer(nnx.Module):
    """tokens [b, t] (BOS-prefixed inputs) -> logits [b, t, vocab_size] in fp32."""

    def __init__(self, cfg: ml_collections.ConfigDict, vocab_size: int, seq_len: int, *, rngs: nnx.Rngs):
        d = cfg.width
        pd = jnp.dtype(cfg.param_dtype)
        self.vocab_size, self.seq_len = vocab_size, seq_len
        self.bos_id = vocab_size
        rows = -(-(vocab_size + 1) // 128) * 128
        self.embed = nnx.Param(_init(0.02, ("vocab", "embed"))(rngs.params(), (rows, d), pd))
        self.pos = (nnx.Param(_init(0.01, ("length", "embed"))(rngs.params(), (seq_len, d), pd))
                    if cfg.positions == "learned" else None)
        if cfg.positions not in ("learned", "rotary"):
            raise ValueError(f"unknown positions {cfg.positions!r}; use 'learned' or 'rotary'.")
        self.blocks = nnx.List([Block(cfg, rngs=rngs) for _ in range(cfg.num_layers)])
        self.final_norm = _norm(cfg, rngs)
        self.head = nnx.Param(_init(0.02, ("embed", "vocab"))(rngs.params(), (d, vocab_size), pd))
        self.dtype = jnp.dtype(cfg.dtype)
        if cfg.remat not in ("none", *REMAT_POLICIES):
            raise ValueError(f"unknown remat {cfg.remat!r}; use 'none', 'full' or 'dots'.")
        self.remat = cfg.remat

    def __call__(self, tokens: jax.Array) -> jax.Array:
        x = jnp.take(self.embed[...], tokens, axis=0).astype(self.dtype)
        if self.pos is not None:
            x = x + self.pos[...][: tokens.shape[1]].astype(self.dtype)
        x = constrain(x, ("batch", None, None))
        for block in self.blocks:
            if self.remat == "none":
                x = block(x)
            else:
                x = nnx.remat(lambda b, h: b(h), policy=REMAT_POLICIES[self.remat])(block, x)
        x = self.final_norm(x)
        logits = jnp.einsum("btd,dv->btv", x, self.head[...].astype(self.dtype))
        return constrain(logits, ("batch", None, "vocab")).astype(jnp.float32)


def with_bos(tokens: jax.Array, bos_id: int) -> jax.Array:
    """Model inputs for next-token prediction: [BOS, x_0 .. x_{T-2}] predicts [x_0 .. x_{T-1}]."""
    bos = jnp.full((tokens.shape[0], 1), bos_id, tokens.dtype)
    return jnp.concatenate([bos, tokens[:, :-1]], axis=1)


def count_params(model: nnx.Module) -> int:
    return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def flops_per_token(cfg: ml_collections.ConfigDict, vocab_size: int, seq_len: int) -> float:
    """Training FLOPs per token, 6N for the weights plus attention's QK^T and AV
    (PaLM appendix B): 6*N + 12*L*d*T, N counting matmul weights (embedding lookup excluded)."""
    d, layers = cfg.width, cfg.num_layers
    mlp_mats = 3 if cfg.mlp == "swiglu" else 2
    n = layers * (4 * d * d + mlp_mats * d * d * cfg.mlp_ratio) + d * vocab_size
    return 6.0 * n + 12.0 * layers * d * seq_len
