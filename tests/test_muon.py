"""igpt.training.muon makes optax.contrib.muon's updates with the Newton-Schulz iteration on the Gram matrix."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from igpt.training import muon


def _kernels(rng: np.random.Generator) -> dict[str, jax.Array]:
    # Tall (window x in > out), wide (< out) and square matrices, plus a bias for Adam.
    shapes = {"tall": (3, 3, 16, 32), "wide": (1, 1, 8, 48), "square": (2, 2, 6, 24), "bias": (24,)}
    return {k: jnp.asarray(rng.normal(size=s), jnp.float32) for k, s in shapes.items()}


@pytest.mark.parametrize("shape", [(36, 8), (8, 36), (24, 24)])
def test_gram_newton_schulz_orthogonalises(shape):
    rng = np.random.default_rng(0)
    u, _ = np.linalg.qr(rng.normal(size=(max(shape), min(shape))))
    v, _ = np.linalg.qr(rng.normal(size=(min(shape), min(shape))))
    x = (u * np.logspace(0, -2, min(shape))) @ v.T  # singular values spread over 100x
    x = x if shape[0] >= shape[1] else x.T
    y = np.asarray(muon.gram_newton_schulz(jnp.asarray(x, jnp.float32)))
    singular = np.linalg.svd(y, compute_uv=False)
    assert y.shape == shape and 0.5 < singular.min() and singular.max() < 1.5
    # The same singular vectors: the iteration only reshapes the spectrum.
    u_x, _, vt_x = np.linalg.svd(x, full_matrices=False)
    d = u_x.T @ y @ vt_x.T
    np.testing.assert_allclose(d - np.diag(np.diag(d)), 0.0, atol=1e-4)


def test_updates_match_optax_muon_over_several_steps():
    rng = np.random.default_rng(1)
    params = _kernels(rng)
    is_kernel = lambda p: jax.tree.map(lambda x: x.ndim >= 2, p)
    schedule = optax.cosine_decay_schedule(4e-3, 10)
    ours = muon.muon(schedule, is_kernel, adam_b1=0.9, adam_b2=0.99)
    ref = muon.optax_reference(schedule, is_kernel, adam_b1=0.9, adam_b2=0.99)
    s_ours, s_ref = ours.init(params), ref.init(params)
    for _ in range(4):
        grads = _kernels(rng)
        u_ours, s_ours = ours.update(grads, s_ours, params)
        u_ref, s_ref = ref.update(grads, s_ref, params)
        for name in params:
            scale = float(jnp.abs(u_ref[name]).max())
            np.testing.assert_allclose(u_ours[name] / scale, u_ref[name] / scale, atol=1e-3)
        params = optax.apply_updates(params, u_ours)
