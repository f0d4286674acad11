"""Text: documents tokenized as one stream and packed end to end into seq_len windows; text
files of samples."""
from __future__ import annotations

import os

import ml_collections
import numpy as np
from einops import rearrange
from etils import epath

from igpt.data.sources import RawSplit
from igpt.tokenizers.base import Tokenizer

TEXT_SEPARATOR = "\n\n"  # between packed documents, so the model sees where one ends
SAMPLE_SEPARATOR = "\n\n=====\n\n"  # between samples in a text file


def _as_str(value: bytes | str) -> str:
    """A TFDS text feature's value (bytes, as UTF-8 with bad bytes replaced) as str."""
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def pack_text(docs: list[str], tokenizer: Tokenizer, seq_len: int) -> np.ndarray:
    """Documents joined by TEXT_SEPARATOR, tokenized as one stream and cut into [n, seq_len]
    windows end to end (no padding; the last partial window is dropped)."""
    stream = np.asarray(tokenizer.encode(TEXT_SEPARATOR.join(docs)))
    n = len(stream) // seq_len
    return rearrange(stream[: n * seq_len], "(n t) -> n t", t=seq_len)


class TextModality:
    """Examples are documents (str)."""

    name = "text"
    default_feature = "text"

    def examples(self, raw: RawSplit, count: int, data_cfg: ml_collections.ConfigDict) -> list[str]:
        return [_as_str(raw.values[i]) for i in range(count)]

    def sequences(self, examples: list[str], tokenizer: Tokenizer, data_cfg: ml_collections.ConfigDict) -> np.ndarray:
        return pack_text(examples, tokenizer, data_cfg.seq_len)

    def picture(self, tokenizer: Tokenizer, prompt_tokens: int, originals: np.ndarray,
                completions: np.ndarray) -> None:
        """Text has no picture: its samples are read in completions.txt (igpt-sample)."""
        return None

    def write_samples(self, out: str | os.PathLike, tokenizer: Tokenizer, sample_rate: int, prompt_tokens: int,
                      originals: np.ndarray, completions: np.ndarray, unconditional: np.ndarray) -> list[epath.Path]:
        """completions.txt and unconditional.txt into `out` (an existing local directory, or gs://)."""
        out, written = epath.Path(out), []
        for name, tokens in (("completions.txt", completions), ("unconditional.txt", unconditional)):
            (out / name).write_text(SAMPLE_SEPARATOR.join(tokenizer.decode(tokens)))
            written.append(out / name)
        return written


MODALITY = TextModality()
