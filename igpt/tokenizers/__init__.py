"""Tokenizers for every modality, and the two ways a config names one: a spec string
("palette:512", "gray:16", "mulaw:256", "bytes", "vq:PATH") or a saved tokenizer directory.

  tok = from_spec("palette:512", fit_images=lambda: train_images)
  tok.save("runs/tok"); assert load("runs/tok").vocab_size == 512
Directories may be local or gs:// (see igpt.tokenizers.base).
"""
from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np

from igpt.tokenizers.base import SAVED, Tokenizer, TokenizerError, has_tokenizer, parse_spec, read_tokenizer_meta
from igpt.tokenizers.bytes import ByteTokenizer
from igpt.tokenizers.grayscale import GrayscaleTokenizer
from igpt.tokenizers.mulaw import MulawTokenizer
from igpt.tokenizers.palette import PaletteTokenizer, fit_palette

__all__ = ["ByteTokenizer", "GrayscaleTokenizer", "MulawTokenizer", "PaletteTokenizer", "Tokenizer",
           "TokenizerError", "fit_palette", "from_spec", "load"]

_BUILTIN = {cls.kind: cls for cls in (PaletteTokenizer, GrayscaleTokenizer, MulawTokenizer, ByteTokenizer)}

SPEC_FORMS = ('"palette:K" (K colours fitted on the training images, e.g. palette:512), '
              '"gray:LEVELS" (2..256), "mulaw:VOCAB" (VOCAB = mu + 1, e.g. mulaw:256), "bytes", '
              '"vq:PATH" (a trained VQ tokenizer directory) or the path of a saved tokenizer directory')


def load(directory: str | os.PathLike) -> Tokenizer:
    """Loads whatever tokenizer `directory` holds, by the kind recorded in its tokenizer.json."""
    kind = read_tokenizer_meta(directory)["kind"]
    if kind == "vq":
        from igpt.tokenizers.vq import VQTokenizer  # imported only here: it brings the VQ model code
        return VQTokenizer.load(directory)
    if kind not in _BUILTIN:
        raise TokenizerError(
            f"{directory!s} holds a tokenizer of kind {kind!r}, which this igpt does not know; known kinds: "
            f"{', '.join(sorted([*_BUILTIN, 'vq']))}.")
    return _BUILTIN[kind].load(directory)


def _count(spec: str, arg: str) -> int:
    try:
        return int(arg)
    except ValueError:
        raise TokenizerError(f"tokenizer spec {spec!r} needs a whole number after the colon; valid forms: "
                             f"{SPEC_FORMS}.") from None


def from_spec(spec: str, fit_images: Callable[[], np.ndarray] | None = None) -> Tokenizer:
    """Builds the tokenizer a config names. Only "palette:K" fits anything, on fit_images()
    (uint8 [N, H, W, 3]), called only then so other specs never load images."""
    parsed = parse_spec(spec)
    name, arg = parsed.kind, parsed.arg
    if name == "palette" and arg:
        if fit_images is None:
            raise TokenizerError(
                f"tokenizer spec {spec!r} fits a palette, so it needs fit_images (a callable returning uint8 "
                "[N, H, W, 3] training images); pass it, or point to a saved palette directory instead.")
        k = _count(spec, arg)
        return PaletteTokenizer.fit(fit_images(), k=k)
    if name == "gray" and arg:
        return GrayscaleTokenizer(_count(spec, arg))
    if name == "mulaw" and arg:
        return MulawTokenizer(mu=_count(spec, arg) - 1)
    if spec == "bytes":
        return ByteTokenizer()
    if name == "vq" and arg:
        from igpt.tokenizers.vq import VQTokenizer  # imported only here: it brings the VQ model code
        return VQTokenizer.load(arg)
    if name == SAVED and (has_tokenizer(parsed.directory) or parsed.directory.is_dir()):
        return load(parsed.directory)  # a directory without tokenizer.json fails there, with the fix
    raise TokenizerError(f"unknown tokenizer spec {spec!r}; valid forms: {SPEC_FORMS}.")
