"""Grey levels as tokens: uniform bins over 0..255, the simplest image vocabulary, and the one
that lets a small model see whole images (16 levels cost 4 bits a pixel instead of 9)."""
from __future__ import annotations

import os

import numpy as np
from einops import rearrange

from igpt.tokenizers.base import TokenizerError, read_tokenizer_dir, write_tokenizer_dir
from igpt.tokenizers.checks import as_tokens, as_uint8_images, token_grid

KIND = "gray"
LUMA_601 = np.array([0.299, 0.587, 0.114])  # ITU-R BT.601 weights for R, G, B


def to_gray(images: np.ndarray) -> np.ndarray:
    """uint8 [N, H, W, 1 or 3] -> uint8 [N, H, W]; RGB goes through BT.601 luma, rounded."""
    if images.shape[-1] == 1:
        return images[..., 0]
    return np.clip(np.rint(images @ LUMA_601), 0, 255).astype(np.uint8)


class GrayscaleTokenizer:
    """uint8 grey (or RGB) images <-> raster-order ids int32 [N, H*W] in `levels` uniform bins.

    Token t holds the grey values v with floor(v * levels / 256) == t and decodes to the middle of
    that run, so the round trip is off by at most half a bin: exactly 128 / levels grey values
    when levels divides 256, at most ceil(128 / levels) otherwise."""

    kind = KIND

    def __init__(self, levels: int):
        if isinstance(levels, bool) or not isinstance(levels, (int, np.integer)) or not 2 <= levels <= 256:
            raise TokenizerError(f"gray tokenizer got levels={levels!r}; use an integer from 2 to 256 (e.g. gray:16).")
        self.levels = int(levels)
        t = np.arange(self.levels)
        first = -(-256 * t // self.levels)            # smallest v in bin t
        last = -(-256 * (t + 1) // self.levels) - 1   # largest v in bin t
        self.centres = ((first + last + 1) // 2).astype(np.uint8)

    @property
    def vocab_size(self) -> int:
        return self.levels

    def encode(self, images: np.ndarray) -> np.ndarray:
        """uint8 [N, H, W], [N, H, W, 1] or [N, H, W, 3] -> int32 [N, H*W]."""
        gray = to_gray(as_uint8_images(images, KIND, channels=(1, 3)))
        tokens = gray.astype(np.int32) * self.levels // 256
        return rearrange(tokens, "n h w -> n (h w)")

    def decode(self, tokens: np.ndarray) -> np.ndarray:
        """[N, H*W] (square) or [N, H, W] ids -> uint8 [N, H, W] bin centres."""
        return self.centres[token_grid(as_tokens(tokens, self.levels, KIND), KIND)]

    def save(self, directory: str | os.PathLike) -> None:
        write_tokenizer_dir(directory, KIND, {"levels": self.levels})

    @classmethod
    def load(cls, directory: str | os.PathLike) -> GrayscaleTokenizer:
        settings, _ = read_tokenizer_dir(directory, KIND)
        return cls(settings.get("levels"))
