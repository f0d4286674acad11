"""A trained VQ-VAE as a tokenizer: one token per code of its grid.

  images uint8 [N, H, W, C]      -> int32 [N, (H/down) * (W/down)], raster order
  audio float32 [N, T] in [-1, 1] -> int32 [N, T/down]
where `down` is the product of the model's strides; the modality (igpt/modalities/) checks
and scales the inputs and shapes the outputs. A data config using "vq:DIR" reads data.seq_len
from it, e.g. `image_seq_len(32, 4)` = 64 for 32x32 images at 4x.
Loading a tokenizer needs only the saved weights: it never imports training code.
"""
from __future__ import annotations

import functools
import json
import os
from typing import Any, Callable

import jax
import ml_collections
import numpy as np
from einops import rearrange
from flax import nnx

from igpt.modalities import signal
from igpt.paths import made_dir, write_bytes_atomic
from igpt.tokenizers.base import TokenizerError, read_tokenizer_dir, tokenizer_path, write_tokenizer_dir
from igpt.tokenizers.checks import as_tokens
from igpt.tokenizers.vq.network import abstract_model, check_model, downsample
from igpt.tokenizers.vq.quantizers import build_quantizer

KIND = "vq"
HELD_OUT_METRICS_FILE = "metrics.json"
CHUNK = 256  # examples per jitted encode/decode call: bounds activation memory


def image_seq_len(res: int, down: int) -> int:
    """Tokens per res x res image: one per down x down patch."""
    if res % down:
        raise TokenizerError(f"image resolution {res} is not a multiple of the VQ downsampling {down}; "
                             f"choose a resolution divisible by {down}.")
    return (res // down) ** 2

@functools.lru_cache(maxsize=8)
def _codec(model_json: str, quantizer_json: str) -> tuple[Callable, Callable]:
    """Jitted (encode, decode) of (params, qstate, x), shared by every tokenizer of one config so
    a new instance (an eval during training, a reload) compiles nothing again."""
    model = ml_collections.ConfigDict(_tuples(json.loads(model_json)))
    q = ml_collections.ConfigDict(_tuples(json.loads(quantizer_json)))
    graphdef, quantizer = nnx.graphdef(abstract_model(model, q)), build_quantizer(q)

    def encode(params, qstate, x):
        return quantizer.quantize(qstate, nnx.merge(graphdef, params).encode(x)).codes

    def decode(params, qstate, codes):
        return nnx.merge(graphdef, params).decode(quantizer.lookup(qstate, codes))

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
        self.modality = signal(self.model_cfg.modality)
        self.quantizer = build_quantizer(self.quantizer_cfg)
        self.downsample = downsample(self.model_cfg)
        self._encode, self._decode = _codec(self.model_cfg.to_json(), self.quantizer_cfg.to_json())

    @property
    def vocab_size(self) -> int:
        return self.quantizer.num_codes

    def _chunked(self, fn: Callable, x: np.ndarray) -> np.ndarray:
        """fn over CHUNK examples at a time (once for an empty batch, which keeps its shape)."""
        return np.concatenate([np.asarray(fn(self.params, self.qstate, x[i:i + CHUNK]))
                               for i in range(0, max(len(x), 1), CHUNK)])

    def encode(self, batch: np.ndarray) -> np.ndarray:
        """Images uint8 [N, H, W, C] or audio float32 [N, T] -> int32 tokens [N, L]."""
        x = self.modality.vq_input(batch, self.model_cfg.in_channels)
        sizes = x.shape[1:-1]
        if any(s % self.downsample or s == 0 for s in sizes):
            raise TokenizerError(
                f"vq tokenizer got {self.modality.name} examples of size {list(sizes)}; each must be a positive "
                f"multiple of its downsampling {self.downsample}: crop or pad to a multiple of {self.downsample}.")
        codes = self._chunked(self._encode, x)
        return rearrange(codes, "n ... -> n (...)").astype(np.int32)

    def decode(self, tokens: np.ndarray) -> np.ndarray:
        """Tokens [N, L] (square L for images) or [N, h, w] -> uint8 images [N, H, W, C] or
        float32 audio [N, L * down] in [-1, 1]."""
        grid = self.modality.vq_grid(as_tokens(tokens, self.vocab_size, KIND).astype(np.int32))
        return self.modality.vq_output(self._chunked(self._decode, grid))

    def save(self, directory: str | os.PathLike) -> None:
        """Weights and codebook to arrays.npz, configs to tokenizer.json, metrics to metrics.json
        (local or gs://)."""
        path = made_dir(directory)
        write_bytes_atomic(path / HELD_OUT_METRICS_FILE, json.dumps(self.metrics, indent=2, sort_keys=True).encode())
        arrays = {**_flatten(nnx.to_pure_dict(self.params), "params/"), **_flatten(self.qstate, "quantizer/")}
        write_tokenizer_dir(path, KIND, {"model": _jsonable(self.model_cfg), "quantizer": _jsonable(self.quantizer_cfg),
                                         "vocab_size": self.vocab_size, "downsample": self.downsample}, arrays)

    @classmethod
    def load(cls, directory: str | os.PathLike) -> VQTokenizer:
        directory = tokenizer_path(directory)
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
        try:
            metrics = json.loads((directory / HELD_OUT_METRICS_FILE).read_text())
        except FileNotFoundError:
            metrics = {}
        return cls(model, quantizer, state, qstate, metrics)

def _jsonable(cfg: ml_collections.ConfigDict) -> dict[str, Any]:
    return json.loads(cfg.to_json())

def _tuples(d: dict[str, Any]) -> dict[str, Any]:
    """JSON lists back to the tuples the configs hold."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
