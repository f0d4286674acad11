"""Data configs as code: one function per modality returns the `c.data` ConfigDict.

  c.data = specs.images("shipped:photos", res=16, tokenizer="palette:512")

Every field a pipeline reads is set here, so a typo in an override is an error.
"""
from __future__ import annotations

import ml_collections

from igpt.tokenizers.base import parse_spec

SHIPPED_DATA_DIR = "~/.cache/igpt/tfds"


def _common(source: str, modality: str, tokenizer: str, seq_len: int, data_dir: str | None,
            train_split: str, test_split: str, seed: int, max_examples: int) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(
        source=source,              # "shipped:NAME" (offline builder) or "tfds:NAME[/CONFIG][:VERSION]"
        data_dir=data_dir or SHIPPED_DATA_DIR,  # where TFDS data is (or is prepared, for shipped)
        modality=modality,          # "image" | "text" | "audio"
        tokenizer=tokenizer,        # "palette:512" | "gray:16" | "mulaw:256" | "bytes" | "vq:PATH" | a dir
        seq_len=seq_len,            # tokens per training sequence (the model adds one BOS); 0: the tokenizer's
        train_split=train_split,    # the dataset's split that training draws from
        validation_split="",        # the dataset's own validation split; "" = hold out part of train_split
        validation_fraction=0.1,    # with validation_split "": every 10th train example is held out
        test_split=test_split,      # what every reported curve is measured on
        seed=seed,                  # data order: batch k is a pure function of (seed, k)
        max_examples=max_examples,  # cap on examples read per split (0 = all)
        train_examples=0,           # train on the first this many train examples (0 = all; validation unchanged)
        resolution=0,
        sample_rate=0,
        feature="",                 # TFDS feature key; "" = the modality's default
    ))


def images(source: str, res: int = 32, tokenizer: str = "palette:512", *, data_dir: str | None = None,
           train_split: str = "train", test_split: str = "test", seed: int = 0,
           max_examples: int = 0) -> ml_collections.ConfigDict:
    """Images resized/cropped to res x res, one raster-order sequence each: seq_len = res*res
    tokens of a pixel tokenizer, or 0 for a learned (vq) one: the run reads its tokens per image
    from the tokenizer (igpt.data.pipeline.resolve_seq_len)."""
    seq_len = 0 if parse_spec(tokenizer).kind == "vq" else res * res
    c = _common(source, "image", tokenizer, seq_len, data_dir, train_split, test_split, seed, max_examples)
    c.resolution = res
    return c


def text(source: str, seq_len: int = 256, tokenizer: str = "bytes", *, data_dir: str | None = None,
         train_split: str = "train", test_split: str = "test", seed: int = 0,
         max_examples: int = 0) -> ml_collections.ConfigDict:
    """Documents tokenized and packed end to end into seq_len windows."""
    return _common(source, "text", tokenizer, seq_len, data_dir, train_split, test_split, seed, max_examples)


def audio(source: str, seq_len: int = 256, tokenizer: str = "mulaw:256", *, sample_rate: int = 8000,
          data_dir: str | None = None, train_split: str = "train", test_split: str = "test", seed: int = 0,
          max_examples: int = 0) -> ml_collections.ConfigDict:
    """Waveforms resampled to sample_rate and cut into seq_len-sample frames."""
    c = _common(source, "audio", tokenizer, seq_len, data_dir, train_split, test_split, seed, max_examples)
    c.sample_rate = sample_rate
    return c
