"""The model's speed paths compute what the plain ones do: blockwise attention (flash in plain
JAX) and splash against XLA's attention, the GELU MLP's hand-written backward against autodiff,
scanned layers against unrolled ones, forward and gradients; "auto" picks the backend's kernel."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from igpt import attention, sharding
from igpt.model import Transformer, gelu_mlp, model_config, with_bos


def qkv(b: int, t: int, h: int, d: int, dtype=jnp.float32, seed: int = 0):
    keys = jax.random.split(jax.random.key(seed), 4)
    q, k, v, g = (2.0 * jax.random.normal(key, (b, t, h, d), dtype) for key in keys)
    return q, k, v, g


def value_and_grads(fn, q, k, v, g):
    """Output and d<out, g>/d(q, k, v): a random cotangent exercises every output element."""
    out, vjp = jax.vjp(fn, q, k, v)
    return out, vjp(g)


def xla(q, k, v):
    return jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation="xla")


@pytest.mark.parametrize("t,block", [(64, 16), (50, 16), (8, 16), (96, 32)])
def test_blockwise_matches_xla_forward_and_gradients(t, block):
    q, k, v, g = qkv(2, t, 3, 16)
    blockwise = jax.jit(lambda q, k, v: attention.blockwise_causal_attention(q, k, v, block))
    out, grads = value_and_grads(blockwise, q, k, v, g)
    ref_out, ref_grads = value_and_grads(jax.jit(xla), q, k, v, g)
    np.testing.assert_allclose(out, ref_out, rtol=1e-5, atol=1e-5)
    for got, want in zip(grads, ref_grads):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_blockwise_in_bfloat16_stays_close_to_float32():
    q, k, v = (x.astype(jnp.bfloat16) for x in qkv(2, 64, 2, 32)[:3])
    out = attention.blockwise_causal_attention(q, k, v, 16)
    assert out.dtype == jnp.bfloat16
    want = xla(*(x.astype(jnp.float32) for x in (q, k, v)))  # the same inputs, computed in fp32
    np.testing.assert_allclose(out.astype(jnp.float32), want, rtol=2e-2, atol=6e-2)  # bf16: 8 bits


def test_blockwise_never_lets_a_query_see_a_later_key():
    q, k, v, _ = qkv(1, 32, 1, 8)
    out = attention.blockwise_causal_attention(q, k, v, 8)
    changed = attention.blockwise_causal_attention(q, k.at[:, 20:].set(9.0), v.at[:, 20:].set(-9.0), 8)
    np.testing.assert_array_equal(out[:, :20], changed[:, :20])
    assert not np.allclose(out[:, 20:], changed[:, 20:])


def test_gelu_mlp_backward_matches_autodiff():
    keys = jax.random.split(jax.random.key(0), 4)
    x, dy = (jax.random.normal(k, (2, 16, 8)) for k in keys[:2])
    w_in, w_out = jax.random.normal(keys[2], (8, 32)) / 3, jax.random.normal(keys[3], (32, 8)) / 5
    plain = lambda x, w_in, w_out: jax.nn.gelu(x @ w_in) @ w_out
    out, grads = jax.vjp(gelu_mlp, x, w_in, w_out)
    ref_out, ref_grads = jax.vjp(plain, x, w_in, w_out)
    np.testing.assert_allclose(out, ref_out, rtol=1e-6, atol=1e-6)
    for got, want in zip(grads(dy), ref_grads(dy)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def mesh_of(**axes):
    cfg = sharding.mesh_config(**axes)
    cfg.num_devices = int(np.prod(list(axes.values())))
    return sharding.make_mesh(cfg)


def model_grads(cfg, tokens, mesh):
    """Logits and parameter gradients of a weighted mean logit under `mesh` (batch sharded).
    The weights come from one seed, so every variant of a config starts from the same ones."""
    with jax.set_mesh(mesh), nnx.logical_axis_rules(sharding.DEFAULT_RULES):
        make = lambda: Transformer(cfg, 32, tokens.shape[1], rngs=nnx.Rngs(0))
        graphdef, params = nnx.split(nnx.eval_shape(make), nnx.Param)
        leaves, tree = jax.tree.flatten(params)
        params = jax.tree.unflatten(tree, [0.2 * jax.random.normal(jax.random.key(i), x.shape)
                                           for i, x in enumerate(leaves)])

        @jax.jit
        def run(params, tokens):
            def loss(params):
                logits = nnx.merge(graphdef, params)(with_bos(tokens, 32))
                return jnp.mean(logits * jnp.linspace(-1, 1, 32)), logits
            return jax.grad(loss, has_aux=True)(params)

        grads, logits = run(params, tokens)
    return logits, grads


def assert_same_model(a, b, tol=1e-5):
    np.testing.assert_allclose(a[0], b[0], rtol=tol, atol=tol)
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=tol, atol=tol), a[1], b[1])


@pytest.mark.slow  # compile-heavy; the kernel's forward and gradients match xla's in the default set
def test_blockwise_model_matches_xla_model_on_a_sharded_mesh():
    tokens = jax.random.randint(jax.random.key(1), (4, 48), 0, 32)
    mesh = mesh_of(data=2, fsdp=2, tensor=2)
    base = dict(positions="rotary", attention_block=16)
    assert_same_model(model_grads(model_config("nano", attention="blockwise", **base), tokens, mesh),
                      model_grads(model_config("nano", attention="xla", **base), tokens, mesh))


@pytest.mark.slow  # compile-heavy; scan_layers is an option, off by default
def test_scanned_layers_match_unrolled_layers_with_the_same_param_tree():
    tokens = jax.random.randint(jax.random.key(1), (2, 16), 0, 32)
    mesh = mesh_of(data=1)
    unrolled = model_grads(model_config("nano"), tokens, mesh)
    paths = lambda tree: [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]
    assert any("blocks" in p for p in paths(unrolled[1]))
    for remat in ("none", "dots"):
        scanned = model_grads(model_config("nano", scan_layers=True, remat=remat), tokens, mesh)
        assert paths(scanned[1]) == paths(unrolled[1])
        assert_same_model(scanned, unrolled)


@pytest.mark.parametrize("backend,dtype,seq_len,want", [
    ("cpu", jnp.float32, 256, "blockwise"), ("cpu", jnp.bfloat16, 256, "blockwise"),
    ("gpu", jnp.bfloat16, 256, "cudnn"), ("gpu", jnp.float32, 256, "xla"),
    ("tpu", jnp.bfloat16, 1024, "splash"), ("tpu", jnp.bfloat16, 1000, "xla"),
])
def test_auto_picks_the_fused_kernel_the_backend_has(monkeypatch, backend, dtype, seq_len, want):
    monkeypatch.setattr(jax, "default_backend", lambda: backend)
    assert attention.attention_impl("auto", dtype, seq_len) == want
    assert attention.attention_impl("blockwise", dtype, seq_len) == "blockwise"


def test_an_unknown_attention_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="blockwise"):
        attention.attention_impl("flash", jnp.float32, 64)
    with jax.set_mesh(mesh_of(data=1)), nnx.logical_axis_rules(sharding.DEFAULT_RULES):
        with pytest.raises(ValueError, match="unknown attention 'flash'"):
            nnx.eval_shape(lambda: Transformer(model_config("nano", attention="flash"), 32, 16, rngs=nnx.Rngs(0)))
