"""Causal self-attention kernels, one per backend, and attention over a KV cache.

All take and return the layout of `jax.nn.dot_product_attention`: q, k, v [b, t, h, d].
  xla / cudnn  jax.nn.dot_product_attention (cuDNN's fused kernel on GPU in half precision).
  splash       the Pallas splash kernel on TPU (never builds the t x t scores).
  blockwise    flash-attention in plain JAX: scores one (query block, key block) pair at a
               time with an online softmax, fully masked blocks skipped, and a backward pass
               that recomputes them; the [b, h, t, t] tensor never exists. On CPU it roughly
               halves attention's time against the xla path (benchmarks/RESULTS.md).
"""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from einops import rearrange

from igpt.sharding import logical_spec

IMPLEMENTATIONS = ("auto", "xla", "cudnn", "splash", "blockwise")
SPLASH_BLOCK = 128  # the splash kernel's default tile; sequences must be a multiple of it


def splash_available() -> bool:
    try:
        from jax.experimental.pallas.ops.tpu import splash_attention  # noqa: F401
    except ImportError:
        return False
    return True


def attention_impl(name: str, dtype, seq_len: int) -> str:
    """Resolves "auto": the blockwise kernel on CPU (the fastest there), cuDNN's fused attention
    on GPU in half precision, the splash kernel on TPU (when Pallas has it and the length is a
    multiple of its tile), else XLA's."""
    if name not in IMPLEMENTATIONS:
        raise ValueError(f"unknown attention {name!r}; choose one of {IMPLEMENTATIONS}.")
    if name != "auto":
        return name
    backend = jax.default_backend()
    if backend == "cpu":
        return "blockwise"
    if backend == "gpu" and jnp.dtype(dtype).itemsize == 2:
        return "cudnn"
    if backend == "tpu" and seq_len % SPLASH_BLOCK == 0 and splash_available():
        return "splash"
    return "xla"


def causal_attention(q: jax.Array, k: jax.Array, v: jax.Array, impl: str, block_size: int) -> jax.Array:
    """Causal softmax(q k^T / sqrt(d)) v with the resolved implementation `impl`."""
    if impl == "blockwise":
        return blockwise_causal_attention(q, k, v, block_size)
    if impl == "splash":
        return splash_causal_attention(q, k, v)
    return jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation=impl)


def cached_attention(q: jax.Array, k_cache: jax.Array, v_cache: jax.Array, positions: jax.Array) -> jax.Array:
    """Queries at `positions` [t] against a fixed-size cache [b, T, h, d]: key j is visible to
    a query at position p when j <= p, so unwritten cache rows never contribute."""
    scale = 1.0 / math.sqrt(q.shape[-1])
    s = jnp.einsum("bqhd,bkhd->bhqk", q, k_cache, preferred_element_type=jnp.float32) * scale
    visible = jnp.arange(k_cache.shape[1])[None, :] <= positions[:, None]
    p = jax.nn.softmax(jnp.where(visible, s, -jnp.inf), axis=-1)
    return jnp.einsum("bhqk,bkhd->bqhd", p.astype(v_cache.dtype), v_cache)


# ----------------------------------------------------------------------------- blockwise

def blockwise_causal_attention(q: jax.Array, k: jax.Array, v: jax.Array, block_size: int = 128) -> jax.Array:
    """Flash attention in plain JAX. A length that is not a multiple of the block is padded at
    the end: padded keys come after every real query, so causality already hides them."""
    t = q.shape[1]
    c = min(block_size, t)
    pad = -t % c
    if pad:
        q, k, v = (jnp.pad(x, ((0, 0), (0, pad), (0, 0), (0, 0))) for x in (q, k, v))
    return _flash(q, k, v, c)[:, :t]


def _blocks(x: jax.Array, c: int) -> list[jax.Array]:
    return list(rearrange(x, "b (n c) h d -> n b h c d", c=c))


def _unblock(xs: list[jax.Array], dtype) -> jax.Array:
    return rearrange(jnp.stack(xs), "n b h c d -> b (n c) h d").astype(dtype)


def _scores(qi: jax.Array, kj: jax.Array, diagonal: bool) -> jax.Array:
    """fp32 scores of one block pair; on the diagonal the upper triangle is masked."""
    s = jnp.einsum("bhqd,bhkd->bhqk", qi, kj, preferred_element_type=jnp.float32)
    if diagonal:
        c = s.shape[-1]
        s = jnp.where(jnp.tril(jnp.ones((c, c), bool)), s, -jnp.inf)
    return s


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _flash(q: jax.Array, k: jax.Array, v: jax.Array, c: int) -> jax.Array:
    return _flash_forward(q, k, v, c)[0]


def _flash_forward(q, k, v, c):
    """Each query block i visits key blocks j <= i, keeping a running max m, normaliser l and
    unnormalised output; saves only the output and the log-sum-exp for the backward."""
    scale = 1.0 / math.sqrt(q.shape[-1])
    qs, ks, vs = _blocks(q * scale, c), _blocks(k, c), _blocks(v, c)
    outs, lses = [], []
    for i, qi in enumerate(qs):
        s = _scores(qi, ks[0], i == 0)
        m = s.max(-1)
        p = jnp.exp(s - m[..., None])
        l = p.sum(-1)
        acc = jnp.einsum("bhqk,bhkd->bhqd", p.astype(v.dtype), vs[0], preferred_element_type=jnp.float32)
        for j in range(1, i + 1):
            s = _scores(qi, ks[j], i == j)
            m_new = jnp.maximum(m, s.max(-1))
            p = jnp.exp(s - m_new[..., None])
            shrink = jnp.exp(m - m_new)
            l = l * shrink + p.sum(-1)
            acc = acc * shrink[..., None] + jnp.einsum("bhqk,bhkd->bhqd", p.astype(v.dtype), vs[j],
                                                       preferred_element_type=jnp.float32)
            m = m_new
        outs.append(acc / l[..., None])
        lses.append(m + jnp.log(l))
    o = _unblock(outs, q.dtype)
    return o, (q, k, v, o, lses)


def _flash_backward(c, residuals, do):
    """FlashAttention-2's backward: p recomputed per block pair from the saved log-sum-exp;
    ds = p * (dp - rowsum(do * o))."""
    q, k, v, o, lses = residuals
    scale = 1.0 / math.sqrt(q.shape[-1])
    qs, ks, vs = _blocks(q * scale, c), _blocks(k, c), _blocks(v, c)
    dos, os_ = _blocks(do, c), _blocks(o, c)
    n = len(qs)
    dq, dk, dv = [0.0] * n, [0.0] * n, [0.0] * n
    f32 = dict(preferred_element_type=jnp.float32)
    for i in range(n):
        delta = jnp.sum(dos[i].astype(jnp.float32) * os_[i].astype(jnp.float32), -1)
        for j in range(i + 1):
            p = jnp.exp(_scores(qs[i], ks[j], i == j) - lses[i][..., None])
            dv[j] = dv[j] + jnp.einsum("bhqk,bhqd->bhkd", p.astype(do.dtype), dos[i], **f32)
            dp = jnp.einsum("bhqd,bhkd->bhqk", dos[i], vs[j], **f32)
            ds = p * (dp - delta[..., None])
            dq[i] = dq[i] + jnp.einsum("bhqk,bhkd->bhqd", ds.astype(k.dtype), ks[j], **f32)
            dk[j] = dk[j] + jnp.einsum("bhqk,bhqd->bhkd", ds.astype(q.dtype), qs[i], **f32)
    return (_unblock(dq, jnp.float32) * scale).astype(q.dtype), _unblock(dk, k.dtype), _unblock(dv, v.dtype)


_flash.defvjp(_flash_forward, _flash_backward)


# ----------------------------------------------------------------------------- splash (TPU)

def splash_causal_attention(q: jax.Array, k: jax.Array, v: jax.Array, *, interpret: bool = False) -> jax.Array:
    """The Pallas splash kernel, one call per device shard: a pallas_call cannot be split by
    XLA's partitioner, so it runs under shard_map with batch and heads laid out as the model's
    logical rules say. `interpret` runs the kernel in the Pallas interpreter (tests on CPU)."""
    from jax.experimental.pallas.ops.tpu import splash_attention as sa

    b, t, h, d = q.shape

    def local(q, k, v):
        heads = q.shape[2]
        mask = sa.MultiHeadMask([sa.CausalMask((t, t))] * heads)
        kernel = sa.make_splash_mha(mask, head_shards=1, q_seq_shards=1, interpret=interpret)
        to_bhtd = lambda x: rearrange(x, "b t h d -> b h t d")
        o = jax.vmap(kernel)(to_bhtd(q) / math.sqrt(d), to_bhtd(k), to_bhtd(v))
        return rearrange(o, "b h t d -> b t h d").astype(q.dtype)

    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return local(q, k, v)
    spec = logical_spec(("batch", None, "heads", None))
    return jax.shard_map(local, in_specs=(spec, spec, spec), out_specs=spec, check_vma=False)(q, k, v)
