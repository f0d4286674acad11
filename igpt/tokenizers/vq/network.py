"""The VQ-VAE network of van den Oord et al. (2017) for any number of spatial axes: strided
convolutions down, a 3-wide convolution and residual blocks, a 1-wide projection to the code
dimension; the decoder mirrors it with sub-pixel (depth-to-space) upsampling. Inputs are
scaled to [-1, 1], channels last: [N, H, W, C] (images) or [N, T, 1] (audio).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from einops import rearrange
from flax import nnx

from igpt.modalities import signal
from igpt.tokenizers.base import TokenizerError
from igpt.tokenizers.vq.quantizers import build_quantizer

ACTIVATIONS = {"relu": nnx.relu, "silu": nnx.silu}


def model_config(modality: str = "image", strides: Sequence[int] = (2, 2), channels: Sequence[int] = (64, 128),
                 res_blocks: int = 2, res_channels: int = 64, in_channels: int = 3,
                 activation: str = "relu", dtype: str = "float32") -> ml_collections.ConfigDict:
    """The VQ-VAE network: one (stride, channels) per downsampling stage."""
    return ml_collections.ConfigDict(dict(
        modality=modality,          # "image" (2-D convolutions) | "audio" (1-D): igpt/modalities/
        strides=tuple(strides),     # per stage; the token grid is the input divided by their product
        channels=tuple(channels),   # per stage, after its strided convolution
        res_blocks=res_blocks,      # residual blocks at the code resolution, in encoder and decoder
        res_channels=res_channels,  # hidden width of a residual block
        in_channels=in_channels,    # 3 for RGB, 1 for gray images and for audio
        activation=activation,      # "relu" (the VQ-VAE paper's) | "silu" (sharper on photos)
        dtype=dtype,                # convolution compute dtype; the quantizer always runs in fp32
    ))

def downsample(model: ml_collections.ConfigDict | dict) -> int:
    """Input pixels per token along each image side, or samples per token of audio."""
    return math.prod(dict(model)["strides"])

def check_model(model: ml_collections.ConfigDict | dict) -> None:
    m = dict(model)
    signal(m["modality"])  # refuses a modality without a VQ-VAE
    if activation_name(m) not in ACTIVATIONS:
        raise TokenizerError(f"model.activation {m['activation']!r} is unknown; use one of {sorted(ACTIVATIONS)}.")
    if not m["strides"] or len(m["strides"]) != len(m["channels"]) or min(m["strides"]) < 1:
        raise TokenizerError(f"model.strides {list(m['strides'])} and model.channels {list(m['channels'])} must "
                             "be non-empty and of equal length: one positive stride and one width per stage.")

def activation_name(m: ml_collections.ConfigDict | dict) -> str:
    """model.activation; tokenizers saved before the option existed used relu."""
    return m.get("activation", "relu")

def activation(m: ml_collections.ConfigDict) -> Callable[[jax.Array], jax.Array]:
    return ACTIVATIONS[activation_name(m)]

def spatial_axes(m: ml_collections.ConfigDict) -> int:
    """Axes the convolutions run over: the modality's (2 for images, 1 for audio)."""
    return signal(m.modality).spatial_axes

class ResBlock(nnx.Module):
    """x + conv1(act(conv3(act(x)))), the VQ-VAE residual block."""

    def __init__(self, width: int, hidden: int, ndim: int, dtype: Any, act: Callable, *, rngs: nnx.Rngs):
        self.wide = nnx.Conv(width, hidden, (3,) * ndim, dtype=dtype, rngs=rngs)
        self.narrow = nnx.Conv(hidden, width, (1,) * ndim, dtype=dtype, rngs=rngs)
        self.act = act

    def __call__(self, x: jax.Array) -> jax.Array:
        return x + self.narrow(self.act(self.wide(self.act(x))))

def _blocks(m: ml_collections.ConfigDict, width: int, rngs: nnx.Rngs) -> nnx.List:
    ndim, dt = spatial_axes(m), jnp.dtype(m.dtype)
    return nnx.List([ResBlock(width, m.res_channels, ndim, dt, activation(m), rngs=rngs) for _ in range(m.res_blocks)])

class Encoder(nnx.Module):
    def __init__(self, m: ml_collections.ConfigDict, out_dim: int, *, rngs: nnx.Rngs):
        ndim, dt = spatial_axes(m), jnp.dtype(m.dtype)
        widths = (m.in_channels, *m.channels)
        self.down = nnx.List([nnx.Conv(widths[i], widths[i + 1], (2 * s,) * ndim, strides=(s,) * ndim,
                                       dtype=dt, rngs=rngs) for i, s in enumerate(m.strides)])
        self.mid = nnx.Conv(widths[-1], widths[-1], (3,) * ndim, dtype=dt, rngs=rngs)
        self.blocks = _blocks(m, widths[-1], rngs)
        self.out = nnx.Conv(widths[-1], out_dim, (1,) * ndim, dtype=dt, rngs=rngs)
        self.act = activation(m)

    def __call__(self, x: jax.Array) -> jax.Array:
        for conv in self.down:
            x = self.act(conv(x))
        x = self.mid(x)
        for block in self.blocks:
            x = block(x)
        return self.out(self.act(x))


def depth_to_space(ndim: int) -> str:
    """The einops pattern moving s**ndim channel groups onto the ndim spatial axes, e.g. for
    two: "n x0 x1 (s0 s1 c) -> n (x0 s0) (x1 s1) c"."""
    axes = [f"x{i}" for i in range(ndim)]
    strides = [f"s{i}" for i in range(ndim)]
    return (f"n {' '.join(axes)} ({' '.join(strides)} c) -> n "
            f"{' '.join(f'({x} {s})' for x, s in zip(axes, strides))} c")


class Upsample(nnx.Module):
    """A 3-wide convolution to s**ndim times the channels, then depth-to-space (sub-pixel
    convolution): on CPU about 1.5x faster than a transposed convolution, which XLA runs as a
    convolution over a zero-dilated input, and free of its checkerboard."""

    def __init__(self, width: int, out: int, stride: int, ndim: int, dtype: Any, act: Callable, *, rngs: nnx.Rngs):
        self.conv = nnx.Conv(width, out * stride**ndim, (3,) * ndim, dtype=dtype, rngs=rngs)
        self.pattern, self.sizes = depth_to_space(ndim), {f"s{i}": stride for i in range(ndim)}
        self.act = act

    def __call__(self, x: jax.Array) -> jax.Array:
        return rearrange(self.conv(self.act(x)), self.pattern, **self.sizes)

class Decoder(nnx.Module):
    def __init__(self, m: ml_collections.ConfigDict, in_dim: int, *, rngs: nnx.Rngs):
        ndim, dt = spatial_axes(m), jnp.dtype(m.dtype)
        widths = (m.in_channels, *m.channels)
        self.inp = nnx.Conv(in_dim, widths[-1], (3,) * ndim, dtype=dt, rngs=rngs)
        self.blocks = _blocks(m, widths[-1], rngs)
        self.up = nnx.List([Upsample(widths[i + 1], widths[i], s, ndim, dt, activation(m), rngs=rngs)
                            for i, s in reversed(list(enumerate(m.strides)))])

    def __call__(self, z: jax.Array) -> jax.Array:
        x = self.inp(z)
        for block in self.blocks:
            x = block(x)
        for up in self.up:
            x = up(x)
        return x

class VQVAE(nnx.Module):
    """Inputs scaled to [-1, 1], channels last: [N, H, W, C] (images) or [N, T, 1] (audio)."""

    def __init__(self, model: ml_collections.ConfigDict, quantizer: ml_collections.ConfigDict, *, rngs: nnx.Rngs):
        check_model(model)
        code_dim = build_quantizer(quantizer).code_dim
        self.encoder = Encoder(model, code_dim, rngs=rngs)
        self.decoder = Decoder(model, code_dim, rngs=rngs)

    def encode(self, x: jax.Array) -> jax.Array:
        """Latents [N, *grid, code_dim] in fp32, the quantizer's precision."""
        return self.encoder(x).astype(jnp.float32)

    def decode(self, z_q: jax.Array) -> jax.Array:
        return self.decoder(z_q).astype(jnp.float32)

def abstract_model(model: ml_collections.ConfigDict, quantizer: ml_collections.ConfigDict) -> VQVAE:
    """The VQVAE with shapes for weights: its structure, without drawing a number."""
    return nnx.eval_shape(lambda: VQVAE(model, quantizer, rngs=nnx.Rngs(0)))

def init_params(model: ml_collections.ConfigDict, quantizer: ml_collections.ConfigDict,
                seed: int) -> tuple[nnx.GraphDef, nnx.State]:
    """(graphdef, params) of a fresh VQVAE, drawn in one jit with the "rbg" PRNG: XLA:CPU
    compiles threefry once per parameter shape (about 5 s for this network), rbg in about 1 s."""
    graphdef = nnx.graphdef(abstract_model(model, quantizer))
    make = lambda: nnx.state(VQVAE(model, quantizer, rngs=nnx.Rngs(jax.random.key(seed, impl="rbg"))), nnx.Param)
    return graphdef, jax.jit(make)()

def to_unit(images: np.ndarray) -> np.ndarray:
    """uint8 -> float32 in [-1, 1]."""
    return images.astype(np.float32) / np.float32(127.5) - np.float32(1.0)

def to_uint8(x: np.ndarray) -> np.ndarray:
    """[-1, 1] -> the nearest uint8, clipped."""
    return np.clip(np.rint((np.asarray(x, np.float64) + 1.0) * 127.5), 0, 255).astype(np.uint8)
