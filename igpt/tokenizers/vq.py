"""Learned VQ tokenizers: a VQ-VAE whose convolutional encoder turns an image (2-D) or a
waveform (1-D) into a grid of codes, one token per code, and whose decoder turns tokens back.

  images uint8 [N, H, W, C]      -> int32 [N, (H/down) * (W/down)], raster order
  audio float32 [N, T] in [-1, 1] -> int32 [N, T/down]
where `down` is the product of the model's strides. A data config using "vq:DIR" sets
data.seq_len to that token count, e.g. `image_seq_len(32, 4)` = 64 for 32x32 images at 4x.

The network is the VQ-VAE of van den Oord et al. (2017) for any number of spatial axes:
strided convolutions down, a 3-wide convolution and residual blocks, a 1-wide projection to
the code dimension; the decoder mirrors it with sub-pixel (depth-to-space) upsampling. It
trains in igpt/vq_train.py; this module only needs the saved weights, so loading a tokenizer
never imports training code.
"""
from __future__ import annotations

import functools
import json
import math
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from einops import rearrange
from flax import nnx

from igpt.tokenizers import quantizers
from igpt.tokenizers.base import TokenizerError, read_tokenizer_dir, write_tokenizer_dir
from igpt.tokenizers.checks import as_tokens, as_uint8_images

KIND = "vq"
METRICS_FILE = "metrics.json"
MODALITIES = {"image": 2, "audio": 1}  # modality -> spatial axes of its convolutions
CHUNK = 256  # examples per jitted encode/decode call: bounds activation memory
ACTIVATIONS = {"relu": nnx.relu, "silu": nnx.silu}


def model_config(modality: str = "image", strides: Sequence[int] = (2, 2), channels: Sequence[int] = (64, 128),
                 res_blocks: int = 2, res_channels: int = 64, in_channels: int = 3,
                 activation: str = "relu", dtype: str = "float32") -> ml_collections.ConfigDict:
    """The VQ-VAE network: one (stride, channels) per downsampling stage."""
    return ml_collections.ConfigDict(dict(
        modality=modality,          # "image" (2-D convolutions) | "audio" (1-D)
        strides=tuple(strides),     # per stage; the token grid is the input divided by their product
        channels=tuple(channels),   # per stage, after its strided convolution
        res_blocks=res_blocks,      # residual blocks at the code resolution, in encoder and decoder
        res_channels=res_channels,  # hidden width of a residual block
        in_channels=in_channels,    # 3 for RGB, 1 for gray images and for audio
        activation=activation,      # "relu" (the VQ-VAE paper's) | "silu" (+0.2 dB PSNR on photos)
        dtype=dtype,                # convolution compute dtype; the quantizer always runs in fp32
    ))


def quantizer_config(kind: str = "vq", *, num_codes: int = 512, code_dim: int = 64, l2: bool = False,
                     decay: float = 0.99, beta: float = 0.25, dead_threshold: float = 1.0,
                     kmeans_batches: int = 4, kmeans_iters: int = 10,
                     levels: Sequence[int] = (8, 8, 8)) -> ml_collections.ConfigDict:
    """"vq": EMA vector quantization; "fsq": finite scalar quantization with `levels`.
    Each kind has only its own fields, so overriding the other kind's is an error."""
    if kind == "vq":
        return ml_collections.ConfigDict(dict(
            kind=kind,
            num_codes=num_codes,
            code_dim=code_dim,              # a low dimension (8-32) with l2=True gives ViT-VQGAN's factorised codes
            l2=l2,                          # codes and latents on the unit sphere (cosine matching)
            decay=decay,                    # EMA decay of code counts and sums
            beta=beta,                      # commitment weight on the encoder term
            dead_threshold=dead_threshold,  # EMA count below which a code restarts at a batch latent
            kmeans_batches=kmeans_batches,  # the first batches whose latents seed the codebook by k-means
            kmeans_iters=kmeans_iters,
        ))
    if kind == "fsq":
        return ml_collections.ConfigDict(dict(kind=kind, levels=tuple(quantizers.check_levels(levels))))
    raise TokenizerError(f"quantizer kind {kind!r} is unknown; use 'vq' (EMA vector quantization) or 'fsq'.")


def num_codes(quantizer: ml_collections.ConfigDict | dict) -> int:
    q = dict(quantizer)
    return quantizers.fsq_num_codes(q["levels"]) if q["kind"] == "fsq" else int(q["num_codes"])


def code_dim(quantizer: ml_collections.ConfigDict | dict) -> int:
    q = dict(quantizer)
    return len(q["levels"]) if q["kind"] == "fsq" else int(q["code_dim"])


def downsample(model: ml_collections.ConfigDict | dict) -> int:
    """Input pixels per token along each image side, or samples per token of audio."""
    return math.prod(dict(model)["strides"])


def image_seq_len(res: int, down: int) -> int:
    """Tokens per res x res image: one per down x down patch."""
    if res % down:
        raise TokenizerError(f"image resolution {res} is not a multiple of the VQ downsampling {down}; "
                             f"choose a resolution divisible by {down}.")
    return (res // down) ** 2


def check_model(model: ml_collections.ConfigDict | dict) -> None:
    m = dict(model)
    if m["modality"] not in MODALITIES:
        raise TokenizerError(f"model.modality {m['modality']!r} is unknown; use 'image' or 'audio'.")
    if activation_name(m) not in ACTIVATIONS:
        raise TokenizerError(f"model.activation {m['activation']!r} is unknown; use one of {sorted(ACTIVATIONS)}.")
    if not m["strides"] or len(m["strides"]) != len(m["channels"]) or min(m["strides"]) < 1:
        raise TokenizerError(f"model.strides {list(m['strides'])} and model.channels {list(m['channels'])} must "
                             "be non-empty and of equal length: one positive stride and one width per stage.")


# ---------------------------------------------------------------------------------------------
# The network

def activation_name(m: ml_collections.ConfigDict | dict) -> str:
    """model.activation; tokenizers saved before the option existed used relu."""
    return m.get("activation", "relu")


def activation(m: ml_collections.ConfigDict) -> Callable[[jax.Array], jax.Array]:
    return ACTIVATIONS[activation_name(m)]


class ResBlock(nnx.Module):
    """x + conv1(act(conv3(act(x)))), the VQ-VAE residual block."""

    def __init__(self, width: int, hidden: int, ndim: int, dtype: Any, act: Callable, *, rngs: nnx.Rngs):
        self.wide = nnx.Conv(width, hidden, (3,) * ndim, dtype=dtype, rngs=rngs)
        self.narrow = nnx.Conv(hidden, width, (1,) * ndim, dtype=dtype, rngs=rngs)
        self.act = act

    def __call__(self, x: jax.Array) -> jax.Array:
        return x + self.narrow(self.act(self.wide(self.act(x))))


def _blocks(m: ml_collections.ConfigDict, width: int, rngs: nnx.Rngs) -> nnx.List:
    ndim, dt = MODALITIES[m.modality], jnp.dtype(m.dtype)
    return nnx.List([ResBlock(width, m.res_channels, ndim, dt, activation(m), rngs=rngs) for _ in range(m.res_blocks)])


class Encoder(nnx.Module):
    def __init__(self, m: ml_collections.ConfigDict, out_dim: int, *, rngs: nnx.Rngs):
        ndim, dt = MODALITIES[m.modality], jnp.dtype(m.dtype)
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


DEPTH_TO_SPACE = {2: "n h w (a b c) -> n (h a) (w b) c", 1: "n t (a c) -> n (t a) c"}


class Upsample(nnx.Module):
    """A 3-wide convolution to s**ndim times the channels, then depth-to-space (sub-pixel
    convolution): on CPU about 1.5x faster than a transposed convolution, which XLA runs as a
    convolution over a zero-dilated input, and free of its checkerboard."""

    def __init__(self, width: int, out: int, stride: int, ndim: int, dtype: Any, act: Callable, *, rngs: nnx.Rngs):
        self.conv = nnx.Conv(width, out * stride**ndim, (3,) * ndim, dtype=dtype, rngs=rngs)
        self.pattern, self.sizes = DEPTH_TO_SPACE[ndim], dict(zip("ab", (stride,) * ndim))
        self.act = act

    def __call__(self, x: jax.Array) -> jax.Array:
        return rearrange(self.conv(self.act(x)), self.pattern, **self.sizes)


class Decoder(nnx.Module):
    def __init__(self, m: ml_collections.ConfigDict, in_dim: int, *, rngs: nnx.Rngs):
        ndim, dt = MODALITIES[m.modality], jnp.dtype(m.dtype)
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
        self.encoder = Encoder(model, code_dim(quantizer), rngs=rngs)
        self.decoder = Decoder(model, code_dim(quantizer), rngs=rngs)

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


def quantize(quantizer: ml_collections.ConfigDict, qstate: dict[str, jax.Array], z: jax.Array) -> quantizers.Quantized:
    if quantizer.kind == "fsq":
        return quantizers.fsq_quantize(z, quantizer.levels)
    return quantizers.vq_quantize(z, qstate, quantizer.l2)


def lookup(quantizer: ml_collections.ConfigDict, qstate: dict[str, jax.Array], codes: jax.Array) -> jax.Array:
    if quantizer.kind == "fsq":
        return quantizers.fsq_lookup(codes, quantizer.levels)
    return quantizers.vq_lookup(codes, qstate, quantizer.l2)


def to_unit(images: np.ndarray) -> np.ndarray:
    """uint8 -> float32 in [-1, 1]."""
    return images.astype(np.float32) / np.float32(127.5) - np.float32(1.0)


def to_uint8(x: np.ndarray) -> np.ndarray:
    """[-1, 1] -> the nearest uint8, clipped."""
    return np.clip(np.rint((np.asarray(x, np.float64) + 1.0) * 127.5), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# The tokenizer

@functools.lru_cache(maxsize=8)
def _codec(model_json: str, quantizer_json: str) -> tuple[Callable, Callable]:
    """Jitted (encode, decode) of (params, qstate, x), shared by every tokenizer of one config so
    a new instance (an eval during training, a reload) compiles nothing again."""
    model = ml_collections.ConfigDict(_tuples(json.loads(model_json)))
    q = ml_collections.ConfigDict(_tuples(json.loads(quantizer_json)))
    graphdef = nnx.graphdef(abstract_model(model, q))

    def encode(params, qstate, x):
        return quantize(q, qstate, nnx.merge(graphdef, params).encode(x)).codes

    def decode(params, qstate, codes):
        return nnx.merge(graphdef, params).decode(lookup(q, qstate, codes))

    return jax.jit(encode), jax.jit(decode)


def _flatten(tree: Any, prefix: str) -> dict[str, np.ndarray]:
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {prefix + "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path): np.asarray(leaf)
            for path, leaf in leaves}


class VQTokenizer:
    """A trained VQ-VAE as a tokenizer (see the module docstring for shapes).

    `metrics` (held-out PSNR or SNR, codebook usage, perplexity, ...) travel with it: save()
    writes them to metrics.json next to tokenizer.json, and load() reads them back.
    """

    kind = KIND

    def __init__(self, model: ml_collections.ConfigDict, quantizer: ml_collections.ConfigDict, params: nnx.State,
                 qstate: dict[str, Any], metrics: dict[str, float] | None = None):
        self.model_cfg = ml_collections.ConfigDict(model)
        self.quantizer_cfg = ml_collections.ConfigDict(quantizer)
        check_model(self.model_cfg)
        self.params = jax.tree.map(np.asarray, params)
        self.qstate = {k: np.asarray(v, np.float32) for k, v in qstate.items()}
        self.metrics = dict(metrics or {})
        self.modality = self.model_cfg.modality
        self.downsample = downsample(self.model_cfg)
        self._encode, self._decode = _codec(self.model_cfg.to_json(), self.quantizer_cfg.to_json())

    @property
    def vocab_size(self) -> int:
        return num_codes(self.quantizer_cfg)

    def _chunked(self, fn: Callable, x: np.ndarray) -> np.ndarray:
        """fn over CHUNK examples at a time (once for an empty batch, which keeps its shape)."""
        return np.concatenate([np.asarray(fn(self.params, self.qstate, x[i:i + CHUNK]))
                               for i in range(0, max(len(x), 1), CHUNK)])

    def _check_divisible(self, sizes: Sequence[int], what: str) -> None:
        if any(s % self.downsample or s == 0 for s in sizes):
            raise TokenizerError(
                f"vq tokenizer got {what} of size {list(sizes)}; each must be a positive multiple of its "
                f"downsampling {self.downsample}: crop or pad to a multiple of {self.downsample}.")

    def encode(self, batch: np.ndarray) -> np.ndarray:
        """Images uint8 [N, H, W, C] or audio float32 [N, T] -> int32 tokens [N, L]."""
        if self.modality == "image":
            images = as_uint8_images(batch, KIND, channels=(self.model_cfg.in_channels,))
            self._check_divisible(images.shape[1:3], "images")
            x = to_unit(images)
        else:
            x = self._as_audio(batch)[..., None]
        codes = self._chunked(self._encode, x)
        return rearrange(codes, "n ... -> n (...)").astype(np.int32)

    def _as_audio(self, batch: np.ndarray) -> np.ndarray:
        wave = np.asarray(batch)
        if wave.ndim != 2 or wave.dtype.kind != "f":
            raise TokenizerError(
                f"vq audio tokenizer got an array of shape {list(wave.shape)} and dtype {wave.dtype}; it expects "
                "float frames [N, T] in [-1, 1] (add a batch axis for one frame: wave[None]).")
        if not np.isfinite(wave).all() or np.abs(wave).max(initial=0.0) > 1.0:
            raise TokenizerError("vq audio tokenizer got samples that are NaN/inf or outside [-1, 1]; "
                                 "peak-normalise the waveform first.")
        self._check_divisible(wave.shape[1:], "frames")
        return wave.astype(np.float32)

    def decode(self, tokens: np.ndarray) -> np.ndarray:
        """Tokens [N, L] (square L for images) or [N, h, w] -> uint8 images [N, H, W, C] or
        float32 audio [N, L * down] in [-1, 1]."""
        tokens = as_tokens(tokens, self.vocab_size, KIND).astype(np.int32)
        if self.modality == "image":
            if tokens.ndim == 2:
                side = math.isqrt(tokens.shape[1])
                if side * side != tokens.shape[1]:
                    raise TokenizerError(
                        f"vq tokenizer got tokens of shape {list(tokens.shape)}: {tokens.shape[1]} per row is not a "
                        "square grid; pass [N, h, w] for non-square images.")
                tokens = rearrange(tokens, "n (h w) -> n h w", h=side)
            if tokens.ndim != 3:
                raise TokenizerError(f"vq tokenizer got tokens of shape {list(tokens.shape)}; decode expects "
                                     "[N, h*w] or [N, h, w].")
            return to_uint8(self._chunked(self._decode, tokens))
        if tokens.ndim != 2:
            raise TokenizerError(f"vq audio tokenizer got tokens of shape {list(tokens.shape)}; decode expects [N, L].")
        return np.clip(self._chunked(self._decode, tokens)[..., 0], -1.0, 1.0)

    def save(self, directory: str | os.PathLike) -> None:
        """Weights and codebook to arrays.npz, configs to tokenizer.json, metrics to metrics.json."""
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        (path / METRICS_FILE).write_text(json.dumps(self.metrics, indent=2, sort_keys=True))
        arrays = {**_flatten(nnx.to_pure_dict(self.params), "params/"), **_flatten(self.qstate, "quantizer/")}
        write_tokenizer_dir(path, KIND, {"model": _jsonable(self.model_cfg), "quantizer": _jsonable(self.quantizer_cfg),
                                         "vocab_size": self.vocab_size, "downsample": self.downsample}, arrays)

    @classmethod
    def load(cls, directory: str | os.PathLike) -> VQTokenizer:
        directory = Path(directory).expanduser()
        settings, arrays = read_tokenizer_dir(directory, KIND)
        model = ml_collections.ConfigDict(_tuples(settings["model"]))
        quantizer = ml_collections.ConfigDict(_tuples(settings["quantizer"]))
        state = nnx.state(abstract_model(model, quantizer), nnx.Param)
        pure = nnx.to_pure_dict(state)
        names = _flatten(jax.tree.map(lambda _: np.zeros(()), pure), "params/")
        missing = [n for n in names if n not in arrays]
        if missing:
            raise TokenizerError(f"{directory!s} lacks weights {missing[:3]} for its model config; the directory "
                                 "is damaged or was written by another igpt version: fit the tokenizer again.")
        leaves = [arrays[n] for n in names]
        nnx.replace_by_pure_dict(state, jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(pure), leaves))
        qstate = {k[len("quantizer/"):]: v for k, v in arrays.items() if k.startswith("quantizer/")}
        metrics_path = Path(directory) / METRICS_FILE
        metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
        return cls(model, quantizer, state, qstate, metrics)


def _jsonable(cfg: ml_collections.ConfigDict) -> dict[str, Any]:
    return json.loads(cfg.to_json())


def _tuples(d: dict[str, Any]) -> dict[str, Any]:
    """JSON lists back to the tuples the configs hold."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
