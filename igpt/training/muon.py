"""Muon: momentum orthogonalised by a Newton-Schulz iteration, for kernels [..., in, out]
viewed as matrices (window x in, out), with Adam on every other weight.

It makes the updates of optax.contrib.muon (same momentum, quintic coefficients, RMS scaling
and Adam settings) but runs the iteration on the Gram matrix, whose side is the matrix's
smaller one, so the update costs less on the VQ-VAE's tall kernels (benchmarks/bench_muon.py).
"""
from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

NS_COEFFS = (3.4445, -4.7750, 2.0315)  # optax's (Keller Jordan's) quintic: steepest slope at zero
NS_STEPS = 5


def gram_newton_schulz(x: jax.Array, steps: int = NS_STEPS, eps: float = 1e-8) -> jax.Array:
    """x [m, n] -> about its orthogonal factor (singular values pushed into ~[0.7, 1.2]).

    optax iterates X <- (a I + b A + c A^2) X with A = X X^T. Each factor is a polynomial in the
    Gram matrix, so X_k = X_0 Q_k with Q_k and G_k = X_k^T X_k both min(m, n) square: two
    products with the long side in all instead of two per step."""
    wide = x.shape[0] < x.shape[1]
    x = x.T if wide else x
    x = x / (jnp.linalg.norm(x) + eps)
    a, b, c = NS_COEFFS
    eye = jnp.eye(x.shape[1], dtype=x.dtype)
    gram, q = x.T @ x, eye
    for _ in range(steps):
        p = a * eye + b * gram + c * (gram @ gram)
        q, gram = q @ p, p @ gram @ p
    y = x @ q
    return y.T if wide else y


def orthogonalise_kernel(k: jax.Array, steps: int = NS_STEPS) -> jax.Array:
    """A kernel [..., out] orthogonalised as the matrix (prod(...), out)."""
    return gram_newton_schulz(k.reshape(-1, k.shape[-1]), steps).reshape(k.shape)


class MuonState(NamedTuple):
    count: jax.Array
    mu: Any


def scale_by_muon(beta: float = 0.95, steps: int = NS_STEPS, consistent_rms: float = 0.2
                  ) -> optax.GradientTransformation:
    """Nesterov momentum, orthogonalised, scaled to RMS consistent_rms * sqrt(max(fan_in, fan_out))
    so Adam's learning rate fits (Liu et al. 2025)."""

    def init(params):
        return MuonState(jnp.zeros([], jnp.int32), optax.tree.zeros_like(params))

    def update(updates, state, params=None):
        del params
        mu = optax.tree.update_moment(updates, state.mu, beta, 1)
        count = optax.safe_increment(state.count)
        nesterov = jax.tree.map(lambda m, g: beta * m + (1 - beta) * g,
                                optax.tree.bias_correction(mu, beta, optax.safe_increment(count)),
                                optax.tree.bias_correction(updates, beta, count))

        def scaled(k):
            fan_in, fan_out = math.prod(k.shape[:-1]), k.shape[-1]
            return orthogonalise_kernel(k, steps) * (math.sqrt(max(fan_in, fan_out)) * consistent_rms)

        return jax.tree.map(scaled, nesterov), MuonState(count, mu)

    return optax.GradientTransformation(init, update)


def muon(learning_rate: optax.ScalarOrSchedule, is_kernel: Callable[[Any], Any], *, adam_b1: float = 0.9,
         adam_b2: float = 0.999, beta: float = 0.95, consistent_rms: float = 0.2,
         eps: float = 1e-8) -> optax.GradientTransformation:
    """Muon on the weights is_kernel(params) marks True, Adam (Nesterov, as optax's) on the rest."""
    labels = lambda params: jax.tree.map(lambda k: "muon" if k else "adam", is_kernel(params))
    return optax.partition({
        "muon": optax.chain(scale_by_muon(beta, consistent_rms=consistent_rms),
                            optax.scale_by_learning_rate(learning_rate)),
        "adam": optax.adamw(learning_rate, b1=adam_b1, b2=adam_b2, eps=eps, weight_decay=0.0, nesterov=True),
    }, labels)


def optax_reference(learning_rate: optax.ScalarOrSchedule, is_kernel: Callable[[Any], Any], *,
                    adam_b1: float = 0.9, adam_b2: float = 0.999) -> optax.GradientTransformation:
    """optax.contrib.muon set up as `muon` is: what tests and benchmarks compare it against."""
    dims = lambda params: jax.tree.map(
        lambda k, p: optax.contrib.MuonDimensionNumbers(tuple(range(p.ndim - 1)), p.ndim - 1) if k else None,
        is_kernel(params), params)
    return optax.contrib.muon(learning_rate, adam_b1=adam_b1, adam_b2=adam_b2, consistent_rms=0.2,
                              muon_weight_dimension_numbers=dims)
