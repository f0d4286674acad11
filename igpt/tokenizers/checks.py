"""Input checks shared by the tokenizers, so every bad input fails with the same kind of
sentence: what was given, what was expected, and how to fix it."""
from __future__ import annotations

import math

import numpy as np
from einops import rearrange

from igpt.tokenizers.base import TokenizerError


def as_uint8_images(images: np.ndarray, kind: str, channels: tuple[int, ...]) -> np.ndarray:
    """Returns `images` as uint8 [N, H, W, C] with C in `channels`; a channel count of 1 also
    accepts [N, H, W]. Rejects floats rather than guessing their scale."""
    images = np.asarray(images)
    want = " or ".join(f"[N, H, W, {c}]" for c in channels)
    if 1 in channels:
        want = "[N, H, W] or " + want
    if images.dtype != np.uint8:
        hint = (" (for floats in [0, 1] use np.round(x * 255).astype(np.uint8))"
                if images.dtype.kind == "f" else "")
        raise TokenizerError(
            f"{kind} tokenizer got images of dtype {images.dtype}; it expects uint8 {want}{hint}.")
    if images.ndim == 3 and 1 in channels:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in channels:
        raise TokenizerError(
            f"{kind} tokenizer got images of shape {list(images.shape)}; it expects uint8 {want}. "
            "Add a batch axis for a single image (images[None]).")
    return images


def as_tokens(tokens: np.ndarray, vocab_size: int, kind: str) -> np.ndarray:
    """Returns `tokens` as an int array after checking every id is in [0, vocab_size)."""
    tokens = np.asarray(tokens)
    if tokens.dtype.kind not in "iu":
        raise TokenizerError(
            f"{kind} tokenizer got tokens of dtype {tokens.dtype}; decode expects integer token ids "
            f"in [0, {vocab_size}).")
    if tokens.size and (tokens.min() < 0 or tokens.max() >= vocab_size):
        raise TokenizerError(
            f"{kind} tokenizer got token ids in [{tokens.min()}, {tokens.max()}], outside its vocabulary "
            f"[0, {vocab_size}); decode tokens made by this tokenizer (or one with the same vocab size).")
    return tokens


def token_grid(tokens: np.ndarray, kind: str) -> np.ndarray:
    """Raster-order [N, L] (L a square) or [N, H, W] token ids -> [N, H, W]."""
    if tokens.ndim == 3:
        return tokens
    if tokens.ndim == 2:
        side = math.isqrt(tokens.shape[1])
        if side * side == tokens.shape[1]:
            return rearrange(tokens, "n (h w) -> n h w", h=side)
        raise TokenizerError(
            f"{kind} tokenizer got tokens of shape {list(tokens.shape)}: {tokens.shape[1]} per row is not a "
            "square number of pixels; pass [N, H, W] for non-square images.")
    raise TokenizerError(
        f"{kind} tokenizer got tokens of shape {list(tokens.shape)}; decode expects [N, H*W] (square images) "
        "or [N, H, W].")
