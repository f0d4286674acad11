"""UTF-8 bytes as tokens: 256 symbols with nothing to fit, the same vocabulary size as 8-bit
mu-law audio, so text and audio runs compare like for like."""
from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from igpt.tokenizers.base import TokenizerError, read_tokenizer_dir, write_tokenizer_dir
from igpt.tokenizers.checks import as_tokens

KIND = "bytes"


def _utf8(text: str) -> np.ndarray:
    try:
        raw = text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise TokenizerError(
            f"bytes tokenizer got text with a lone surrogate {text[e.start]!r} at character {e.start}, which "
            "UTF-8 cannot encode; read the text with errors='replace' or repair it first.") from e
    return np.frombuffer(raw, np.uint8).astype(np.int32)


class ByteTokenizer:
    """str <-> int32 UTF-8 byte ids in [0, 256)."""

    kind = KIND
    vocab_size = 256

    def encode(self, text: str | Sequence[str]) -> np.ndarray | list[np.ndarray]:
        """A str -> int32 [bytes]; a sequence of str -> a list of such arrays."""
        if isinstance(text, str):
            return _utf8(text)
        if isinstance(text, Sequence) and not isinstance(text, (bytes, bytearray)) \
                and all(isinstance(t, str) for t in text):
            return [_utf8(t) for t in text]
        raise TokenizerError(
            f"bytes tokenizer got {type(text).__name__}; it encodes a str or a sequence of str "
            "(decode bytes to str first, e.g. data.decode('utf-8', errors='replace')).")

    def decode(self, tokens: np.ndarray) -> str | list[str]:
        """int ids [L] -> str, or [N, L] -> list of str. Bytes that are not valid UTF-8 (a window
        may cut a character in two) become U+FFFD rather than an error."""
        tokens = as_tokens(tokens, self.vocab_size, KIND)
        if tokens.ndim == 1:
            return tokens.astype(np.uint8).tobytes().decode("utf-8", errors="replace")
        if tokens.ndim == 2:
            return [row.astype(np.uint8).tobytes().decode("utf-8", errors="replace") for row in tokens]
        raise TokenizerError(
            f"bytes tokenizer got tokens of shape {list(tokens.shape)}; decode expects [L] or [N, L].")

    def save(self, directory: str | os.PathLike) -> None:
        write_tokenizer_dir(directory, KIND, {})

    @classmethod
    def load(cls, directory: str | os.PathLike) -> ByteTokenizer:
        read_tokenizer_dir(directory, KIND)
        return cls()
