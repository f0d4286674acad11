"""What differs between modalities, as plug-ins chosen by name.

A config names a modality (data.modality, and model.modality of a VQ tokenizer); `get` imports
the module of this package with that name and returns its MODALITY. Adding one (video, say) is
one new file here. `Modality` is what every one supplies on the way from raw examples to token
sequences and back to media; `Signal` is what a modality of continuous values on a grid adds
so that a VQ-VAE can learn to tokenize it.
"""
from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import Any, Callable, Protocol, Union, runtime_checkable

import ml_collections
import numpy as np

from igpt.data.sources import RawSplit
from igpt.tokenizers.base import Tokenizer

Examples = Union[np.ndarray, list[str], list[np.ndarray]]


class ModalityError(ValueError):
    """A modality name that no module of igpt/modalities/ answers to, or one without a VQ-VAE."""


@runtime_checkable
class Modality(Protocol):
    """Raw examples to token sequences, and sampled tokens back to media files."""

    name: str
    default_feature: str  # the TFDS feature read when data.feature is ""

    def examples(self, raw: RawSplit, count: int, data_cfg: ml_collections.ConfigDict) -> Examples:
        """The first `count` raw values as model-sized examples (data.resolution, data.sample_rate)."""

    def sequences(self, examples: Examples, tokenizer: Tokenizer, data_cfg: ml_collections.ConfigDict) -> np.ndarray:
        """Token sequences [n, data.seq_len]; n may be 0."""

    def write_samples(self, out: Path, tokenizer: Tokenizer, sample_rate: int, prompt_tokens: int,
                      originals: np.ndarray, completions: np.ndarray, unconditional: np.ndarray) -> list[Path]:
        """Decodes the three token sets [n, T] and writes them under `out` as this modality's media."""

    def picture(self, tokenizer: Tokenizer, prompt_tokens: int, originals: np.ndarray,
                completions: np.ndarray) -> np.ndarray | None:
        """Completions of the first `prompt_tokens` of `originals` beside them, as a uint8 RGB picture
        with a header over each column (None: the modality has no picture)."""


@runtime_checkable
class Signal(Modality, Protocol):
    """A modality a VQ-VAE tokenizes: values on a grid of `spatial_axes` axes, scaled to [-1, 1]."""

    spatial_axes: int  # of the VQ-VAE's convolutions

    def channels(self, examples: Examples) -> int:
        """Channels the examples have: the VQ-VAE's model.in_channels."""

    def vq_input(self, batch: Any, channels: int) -> np.ndarray:
        """Examples checked and scaled to the network's input, float32 [N, *grid, channels]."""

    def vq_grid(self, tokens: np.ndarray) -> np.ndarray:
        """Token rows [N, L] (or grids) as the grids of codes the decoder reads, [N, *grid]."""

    def vq_output(self, x: np.ndarray) -> np.ndarray:
        """The decoder's output [N, *grid, channels] as examples, like those vq_input reads."""

    def check_fit(self, cfg: ml_collections.ConfigDict) -> None:
        """Refuses a VQ fitting config this modality cannot train on, before any data is read."""

    def fit_batches(self, cfg: ml_collections.ConfigDict, train: Examples) -> Callable[[int], np.ndarray]:
        """step -> the global training batch of VQ fitting, a pure function of (data.seed, step)."""

    def held_out(self, cfg: ml_collections.ConfigDict, examples: Examples) -> np.ndarray:
        """The VQ fitting's eval inputs, all of the held-out split in vq_input's form."""

    def reconstruction(self, inputs: np.ndarray, reconstructed: np.ndarray) -> dict[str, float]:
        """How close the reconstructions are: "loss" (MSE on the [-1, 1] scale) and its own metrics."""

    def reconstruction_picture(self, examples: np.ndarray, reconstructed: np.ndarray) -> np.ndarray:
        """Held-out examples beside their reconstructions (as a VQ tokenizer encodes and decodes
        them), a uint8 RGB picture with headers."""


def names() -> list[str]:
    """The modalities this igpt knows: the modules of this package but this one."""
    return sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)]) if m.name != "base")


def get(name: str) -> Modality:
    """The modality called `name`."""
    if name not in names():
        raise ModalityError(f"modality {name!r} is unknown; use one of {names()}.")
    return importlib.import_module(f"igpt.modalities.{name}").MODALITY


def signal(name: str) -> Signal:
    """The modality called `name`, which a VQ-VAE must be able to tokenize."""
    modality = get(name)
    if not isinstance(modality, Signal):
        known = [n for n in names() if isinstance(get(n), Signal)]
        raise ModalityError(f"modality {name!r} has no VQ-VAE; model.modality must be one of {known}.")
    return modality
