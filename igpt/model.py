"""Decoder-only transformer (pre-norm, GPT-2/iGPT style) in Flax NNX.

Parameters and activations carry logical axis names only; igpt/sharding.py maps them onto
the mesh. Parameters live in `param_dtype` (fp32 master weights); matmuls run in `dtype`
(bf16 on accelerators). Token id `vocab_size` is BOS: the embedding has vocab_size + 1 rows,
the head predicts vocab_size classes. The embedding table is padded to a multiple of 128 rows
so its vocabulary axis shards evenly; the padding rows are never looked up. With
`tie_embeddings` the head is the embedding's first vocab_size rows, transposed (GPT-2).

`Transformer.__call__` is the training forward pass; `Transformer.decode` is the sampling one,
feeding a chunk of tokens against a fixed-size KV cache (igpt/sample.py drives it).
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from igpt.attention import IMPLEMENTATIONS, attention_impl, cached_attention, causal_attention
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

# One layer's cached keys and values for sampling, each [batch, seq_len, heads, head_dim].
KVCache = tuple[jax.Array, jax.Array]


def model_config(size: str = "tiny", **overrides) -> ml_collections.ConfigDict:
    """Named model sizes; any field may be overridden (`model_config('tiny', mlp='swiglu')`). The
    name only picks the depth, width and heads: it is not kept, so it cannot go stale."""
    if size not in SIZES:
        raise ValueError(f"unknown model size {size!r}; choose one of {sorted(SIZES)}.")
    layers, width, heads = SIZES[size]
    c = ml_collections.ConfigDict(dict(
        num_layers=layers,
        width=width,
        num_heads=heads,
        mlp_ratio=4,
        mlp="gelu",            # "gelu" | "swiglu"
        positions="learned",   # "learned" | "rotary"
        dtype="float32",       # compute dtype: "bfloat16" on accelerators
        param_dtype="float32",  # master weights
        attention="auto",      # "auto" | "xla" | "cudnn" | "splash" | "blockwise" (igpt/attention.py)
        attention_block=128,   # query/key block of the blockwise kernel
        remat="none",          # "none" | "full" | "dots" (save matmul outputs)
        scan_layers=False,     # one compiled block scanned over layers (compile time); same params
        bias=False,            # biases on every projection (GPT-2 donors)
        tie_embeddings=False,  # the head is the token embedding transposed (GPT-2 donors)
        norm_eps=1e-6,         # LayerNorm epsilon (GPT-2: 1e-5)
    ))
    c.update(overrides)
    return c


def _init(std: float, axes: tuple[str, ...]):
    return nnx.with_partitioning(nnx.initializers.normal(std), axes)


def _bias(cfg: ml_collections.ConfigDict, shape: tuple[int, ...], axes: tuple[str, ...]) -> nnx.Param | None:
    """A zero-initialised bias when `cfg.bias`, else None (no parameter at all)."""
    if not cfg.bias:
        return None
    init = nnx.with_partitioning(nnx.initializers.zeros, axes)
    return nnx.Param(init(jax.random.key(0), shape, jnp.dtype(cfg.param_dtype)))


def _add(x: jax.Array, bias: nnx.Param | None) -> jax.Array:
    return x if bias is None else x + bias[...].astype(x.dtype)


def rotary(x: jax.Array, positions: jax.Array) -> jax.Array:
    """Rotary position embedding over the last axis of x [b, t, h, d] (d even)."""
    half = x.shape[-1] // 2
    freqs = 1.0 / (10000.0 ** (jnp.arange(half, dtype=jnp.float32) / half))
    angles = positions[:, None].astype(jnp.float32) * freqs[None, :]           # t, half
    sin, cos = jnp.sin(angles)[None, :, None, :], jnp.cos(angles)[None, :, None, :]
    x1, x2 = x[..., :half].astype(jnp.float32), x[..., half:].astype(jnp.float32)
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1).astype(x.dtype)


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
        self.bq, self.bk, self.bv = (_bias(cfg, (h, hd), ("heads", "kv")) for _ in range(3))
        self.bo = _bias(cfg, (d,), ("embed",))
        self.rotary = cfg.positions == "rotary"
        self.dtype = jnp.dtype(cfg.dtype)
        if cfg.attention not in IMPLEMENTATIONS:
            raise ValueError(f"unknown attention {cfg.attention!r}; choose one of {IMPLEMENTATIONS}.")
        self.attention, self.block = cfg.attention, cfg.attention_block

    def qkv(self, x: jax.Array, positions: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        dt = self.dtype
        q, k, v = (_add(jnp.einsum("btd,dhk->bthk", x, w[...].astype(dt)), b)
                   for w, b in ((self.wq, self.bq), (self.wk, self.bk), (self.wv, self.bv)))
        if self.rotary:
            q, k = rotary(q, positions), rotary(k, positions)
        return (constrain(t, ("batch", None, "heads", None)) for t in (q, k, v))

    def project_out(self, o: jax.Array) -> jax.Array:
        return _add(jnp.einsum("bthk,hkd->btd", o, self.wo[...].astype(self.dtype)), self.bo)

    def __call__(self, x: jax.Array) -> jax.Array:
        positions = jnp.arange(x.shape[1])
        q, k, v = self.qkv(x, positions)
        impl = attention_impl(self.attention, self.dtype, x.shape[1])
        return self.project_out(causal_attention(q, k, v, impl, self.block))

    def decode(self, x: jax.Array, cache: KVCache, start: jax.Array) -> tuple[jax.Array, KVCache]:
        """x [b, t, d] at positions start .. start+t-1: writes their keys and values into the
        cache and attends over everything written so far."""
        positions = start + jnp.arange(x.shape[1])
        q, k, v = self.qkv(x, positions)
        k_cache, v_cache = (jax.lax.dynamic_update_slice_in_dim(c, new.astype(c.dtype), start, axis=1)
                            for c, new in zip(cache, (k, v)))
        o = cached_attention(q, k_cache, v_cache, positions)
        return self.project_out(o), (k_cache, v_cache)


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
        self.b_in = _bias(cfg, (f,), ("mlp",))
        self.b_gate = _bias(cfg, (f,), ("mlp",)) if self.gated else None
        self.b_out = _bias(cfg, (d,), ("embed",))
        self.dtype = jnp.dtype(cfg.dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        dt = self.dtype
        if not self.gated:
            w_in, w_out = self.w_in[...].astype(dt), self.w_out[...].astype(dt)
            if self.b_in is None:
                return gelu_mlp(x, w_in, w_out)
            return _add(gelu_mlp(x, w_in, w_out, self.b_in[...].astype(dt)), self.b_out)
        gate = jax.nn.silu(_add(x @ self.w_gate[...].astype(dt), self.b_gate))
        h = gate * _add(x @ self.w_in[...].astype(dt), self.b_in)
        h = constrain(h, ("batch", None, "mlp"))
        return _add(h @ self.w_out[...].astype(dt), self.b_out)


@jax.custom_vjp
def gelu_mlp(x: jax.Array, w_in: jax.Array, w_out: jax.Array, b_in: jax.Array | None = None) -> jax.Array:
    """gelu(x @ w_in + b_in) @ w_out (b_in may be None: no bias), GELU in its tanh form as in
    GPT-2, with a hand-written backward. Under autodiff XLA:CPU computes
    the weight gradients by transposing the wide [tokens, 4d] operands (dh, gelu(h)) in
    copies fused with the GELU math that read with a 4 KB stride: ~20% of a CPU train step.
    Written as x^T dh and (dy^T a)^T, only the narrow [tokens, d] operands get transposed.
    Same values; the MLP's forward and backward take about half the time on CPU."""
    return _gelu_mlp_forward(x, w_in, w_out, b_in)[0]


def _gelu_mlp_forward(x, w_in, w_out, b_in):
    h = constrain(_add(x @ w_in, b_in), ("batch", None, "mlp"))
    return jax.nn.gelu(h) @ w_out, (x, h, w_in, b_in, w_out)


def _gelu_mlp_backward(residuals, dy):
    x, h, w_in, b_in, w_out = residuals
    a, gelu_vjp = jax.vjp(jax.nn.gelu, h)
    dh = constrain(gelu_vjp(dy @ w_out.T)[0], ("batch", None, "mlp"))
    dw_in = jnp.einsum("btd,btf->df", x, dh)
    dw_out = jnp.einsum("btd,btf->df", dy, a).T
    db_in = None if b_in is None else jnp.sum(dh, axis=(0, 1))
    return dh @ w_in.T, dw_in, dw_out, db_in


gelu_mlp.defvjp(_gelu_mlp_forward, _gelu_mlp_backward)


def _norm(cfg: ml_collections.ConfigDict, rngs: nnx.Rngs) -> nnx.LayerNorm:
    return nnx.LayerNorm(
        cfg.width, epsilon=cfg.norm_eps, dtype=jnp.dtype(cfg.dtype), param_dtype=jnp.dtype(cfg.param_dtype), rngs=rngs,
        scale_init=nnx.with_partitioning(nnx.initializers.ones, ("embed",)),
        bias_init=nnx.with_partitioning(nnx.initializers.zeros, ("embed",)))


class Block(nnx.Module):
    def __init__(self, cfg: ml_collections.ConfigDict, *, rngs: nnx.Rngs):
        self.norm1 = _norm(cfg, rngs)
        self.attn = Attention(cfg, rngs=rngs)
        self.norm2 = _norm(cfg, rngs)
        self.mlp = Mlp(cfg, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.feed_forward(x + self.attn(self.norm1(x)))

    def decode(self, x: jax.Array, cache: KVCache, start: jax.Array) -> tuple[jax.Array, KVCache]:
        a, cache = self.attn.decode(self.norm1(x), cache, start)
        return self.feed_forward(x + a), cache

    def feed_forward(self, x: jax.Array) -> jax.Array:
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
        self.head = (None if cfg.tie_embeddings else
                     nnx.Param(_init(0.02, ("embed", "vocab"))(rngs.params(), (d, vocab_size), pd)))
        self.dtype = jnp.dtype(cfg.dtype)
        if cfg.remat not in ("none", *REMAT_POLICIES):
            raise ValueError(f"unknown remat {cfg.remat!r}; use 'none', 'full' or 'dots'.")
        self.remat = cfg.remat
        self.scan_layers = cfg.scan_layers
        self.cache_shape = (seq_len, cfg.num_heads, d // cfg.num_heads)

    def __call__(self, tokens: jax.Array) -> jax.Array:
        x = self.embed_tokens(tokens, 0)
        if self.scan_layers:
            x = self.scan_blocks(x)
        else:
            for block in self.blocks:
                x = block(x) if self.remat == "none" else nnx.remat(
                    lambda b, h: b(h), policy=REMAT_POLICIES[self.remat])(block, x)
        return self.logits(x)

    def scan_blocks(self, x: jax.Array) -> jax.Array:
        """The blocks as one lax.scan over their weights stacked on the fly: one block to
        compile instead of num_layers; the parameter tree (and checkpoints) stay per-layer."""
        graphdef, _ = nnx.split(self.blocks[0])
        stacked = jax.tree.map(lambda *ws: jnp.stack(ws), *(nnx.state(b) for b in self.blocks))

        def body(h, weights):
            return nnx.merge(graphdef, weights)(h), None

        if self.remat != "none":
            body = jax.checkpoint(body, policy=REMAT_POLICIES[self.remat])
        return jax.lax.scan(body, x, stacked)[0]

    def init_cache(self, batch: int) -> list[KVCache]:
        """Zeroed keys and values [batch, seq_len, heads, head_dim] per layer, for `decode`."""
        shape = (batch, *self.cache_shape)
        return [(jnp.zeros(shape, self.dtype), jnp.zeros(shape, self.dtype)) for _ in self.blocks]

    def decode(self, tokens: jax.Array, cache: list[KVCache], start: jax.Array) -> tuple[jax.Array, list[KVCache]]:
        """Logits [b, t, vocab] for tokens [b, t] at positions start .. start+t-1, given the
        cache of every earlier position; returns the cache with these positions added. A prompt
        is one call (prefill), each sampled token one more call with t = 1."""
        x = self.embed_tokens(tokens, start)
        new_cache = []
        for block, layer_cache in zip(self.blocks, cache):
            x, layer_cache = block.decode(x, layer_cache, start)
            new_cache.append(layer_cache)
        return self.logits(x), new_cache

    def embed_tokens(self, tokens: jax.Array, start: jax.Array | int) -> jax.Array:
        x = jnp.take(self.embed[...], tokens, axis=0).astype(self.dtype)
        if self.pos is not None:
            x = x + jax.lax.dynamic_slice_in_dim(self.pos[...], start, tokens.shape[1]).astype(self.dtype)
        return constrain(x, ("batch", None, None))

    def logits(self, x: jax.Array) -> jax.Array:
        x = self.final_norm(x)
        if self.head is None:
            logits = jnp.einsum("btd,vd->btv", x, self.embed[: self.vocab_size].astype(self.dtype))
        else:
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
