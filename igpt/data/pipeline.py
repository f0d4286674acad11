"""From a `c.data` config to fixed-length int32 token sequences and step-indexed global batches.

Three splits (SPLITS): "train" draws the batches; "validation" chooses (learning rates, early
stopping, targets); "test" measures what is reported. Validation is the dataset's own split
when data.validation_split names one, else a deterministic part of the train split that
training never sees (`validation_rows`).

Batch k is a pure function of (data.seed, k) and the data: a resumed run needs only its step,
and P processes that each take their slice of the global batch read exactly the rows one
process would have read.
"""
from __future__ import annotations

import contextlib
import json
import os
from typing import Callable, Iterator

import grain
import ml_collections
import numpy as np

from igpt.data.errors import DataError
from igpt.data.locking import file_lock
from igpt.data.sources import open_split
from igpt.modalities import Examples, get
from igpt.modalities.image import as_tokenizer_input
from igpt.tokenizers.base import SAVED, Tokenizer, has_tokenizer, parse_spec, read_tokenizer_meta, tokenizer_path

SPLITS = ("train", "validation", "test")


EXAMPLE_FIELDS = ("source", "data_dir", "modality", "max_examples", "resolution", "sample_rate", "feature")


def load_examples(data_cfg: ml_collections.ConfigDict, split: str) -> Examples:
    """Raw examples of `split`, at most data.max_examples, in the source's order, as the
    modality makes them: image uint8 [N, res, res, C] (C = 1 or 3, as stored); text a list of
    str; audio a list of float32 waveforms in [-1, 1] at data.sample_rate. Inside
    `examples_cache()` a split read once is served again from memory: treat it as read-only."""
    if _cache is None:
        return _read_examples(data_cfg, split)
    key = (json.dumps({k: data_cfg[k] for k in EXAMPLE_FIELDS}, sort_keys=True), split)
    if key not in _cache:
        _cache[key] = _read_examples(data_cfg, split)
    return _cache[key]


_cache: dict[tuple[str, str], Examples] | None = None


@contextlib.contextmanager
def examples_cache() -> Iterator[None]:
    """Within it, each split is read and decoded once (the many runs of an experiment share
    their data); the data on disk must not change meanwhile."""
    global _cache
    outer, _cache = _cache, {} if _cache is None else _cache
    try:
        yield
    finally:
        _cache = outer


def _read_examples(data_cfg: ml_collections.ConfigDict, split: str) -> Examples:
    modality = get(data_cfg.modality)
    raw = open_split(data_cfg, split, data_cfg.feature or modality.default_feature)
    n = len(raw.values) if data_cfg.max_examples <= 0 else min(len(raw.values), data_cfg.max_examples)
    return modality.examples(raw, n, data_cfg)


def validation_rows(n: int, fraction: float) -> np.ndarray:
    """Which of n train examples are held out for validation: every k-th, k = round(1 / fraction),
    starting at k - 1, so the held-out part spreads over the whole split (e.g. every photo)."""
    if not 0.0 < fraction < 1.0:
        raise DataError(f"data.validation_fraction={fraction} must lie in (0, 1), e.g. 0.1; or name the "
                        "dataset's own split in data.validation_split.")
    k = max(2, round(1.0 / fraction))
    return np.arange(k - 1, n, k)


def _take(examples: Examples, rows: np.ndarray) -> Examples:
    return examples[rows] if isinstance(examples, np.ndarray) else [examples[i] for i in rows]


def split_examples(data_cfg: ml_collections.ConfigDict, split: str,
                   load: Callable[[ml_collections.ConfigDict, str], Examples] = load_examples) -> Examples:
    """Raw examples of one of SPLITS (see the module docstring); `load` reads a named split of
    the dataset (igpt.data.labels passes its class-label reader, to get the same rows)."""
    if split not in SPLITS:
        raise DataError(f"split {split!r} is not one of {SPLITS}.")
    if split == "test":
        return load(data_cfg, data_cfg.test_split)
    if data_cfg.validation_split:
        if split == "validation":
            return load(data_cfg, data_cfg.validation_split)
        examples = load(data_cfg, data_cfg.train_split)
        return _first(examples, np.arange(len(examples)), data_cfg.train_examples)
    examples = load(data_cfg, data_cfg.train_split)
    held = validation_rows(len(examples), data_cfg.validation_fraction)
    if split == "validation":
        return _take(examples, held)
    return _first(examples, np.setdiff1d(np.arange(len(examples)), held), data_cfg.train_examples)


def _first(examples: Examples, rows: np.ndarray, n: int) -> Examples:
    """The first n of `rows` (all when n is 0): a smaller training set is a prefix of a larger
    one, and the validation rows never change with n."""
    if n < 0 or n > len(rows):
        raise DataError(f"data.train_examples={n} must lie in [0, {len(rows)}] (the train examples left after "
                        "validation); 0 uses them all.")
    return _take(examples, rows[:n] if n else rows)


def resolve_seq_len(data_cfg: ml_collections.ConfigDict) -> None:
    """Sets data.seq_len when it is 0: the tokens per image of the saved tokenizer data.tokenizer
    names ("vq:DIR" or a directory), one per (resolution / downsample)^2 patch."""
    if data_cfg.seq_len:
        return
    directory = parse_spec(data_cfg.tokenizer).directory
    if data_cfg.modality != "image" or directory is None or not has_tokenizer(directory):
        raise DataError(f"data.seq_len is 0 but {data_cfg.tokenizer!r} is no saved image tokenizer to read the "
                        "tokens per image from; set data.seq_len.")
    down = int(read_tokenizer_meta(directory)["settings"]["downsample"])
    if data_cfg.resolution % down:
        raise DataError(f"data.resolution={data_cfg.resolution} is not a multiple of the tokenizer's downsampling "
                        f"{down}; choose a resolution divisible by {down}.")
    data_cfg.seq_len = (data_cfg.resolution // down) ** 2


def build_tokenizer(data_cfg: ml_collections.ConfigDict, cache_dir: str | os.PathLike | None = None) -> Tokenizer:
    """The tokenizer data.tokenizer names, fitted on the train split (without its validation
    part) if it learns (palette).

    With `cache_dir` (local or gs://, e.g. the run's tokenizer/), a tokenizer saved there is
    reused (a resume keeps its palette), and a missing one is fitted and saved under a lock
    (igpt.data.locking: flock locally, a create-if-absent object on gs://), so processes and
    hosts starting together fit it once and all use the same one.
    """
    from igpt.tokenizers import from_spec

    spec = data_cfg.tokenizer

    def fit_images() -> np.ndarray:
        return as_tokenizer_input(parse_spec(spec).kind, split_examples(data_cfg, "train"))

    if cache_dir is None:
        tokenizer = from_spec(spec, fit_images=fit_images)
    else:
        cache = tokenizer_path(cache_dir)
        with file_lock(cache / ".fit.lock"):
            if has_tokenizer(cache):  # asks the store again: another host may have just saved it
                tokenizer = from_spec(str(cache))
            else:
                tokenizer = from_spec(spec, fit_images=fit_images)
                tokenizer.save(cache)
    check_tokenizer(data_cfg, tokenizer, where=str(cache_dir) if cache_dir else "the tokenizer")
    return tokenizer


def check_tokenizer(data_cfg: ml_collections.ConfigDict, tokenizer: Tokenizer, where: str = "the tokenizer") -> None:
    """Raises DataError when `tokenizer` is not the kind and vocabulary data.tokenizer names."""
    spec = parse_spec(data_cfg.tokenizer)
    if spec.kind == SAVED:
        return  # a saved tokenizer is its own spec
    if tokenizer.kind != spec.kind or (spec.arg.isdigit() and int(spec.arg) != tokenizer.vocab_size):
        raise DataError(
            f"tokenizer vocab mismatch: {where} is {tokenizer.kind}:{tokenizer.vocab_size} but data.tokenizer is "
            f"{data_cfg.tokenizer!r}; build it with build_tokenizer(data_cfg), or delete a stale cached "
            "tokenizer directory so it is fitted again.")


def build_dataset(data_cfg: ml_collections.ConfigDict, split: str, tokenizer: Tokenizer) -> SequenceDataset:
    """Tokenizes all of `split`, one of SPLITS (capped by data.max_examples), into [n, seq_len]
    sequences as the modality cuts them: one per image; packed windows of text; seq_len-sample
    frames of audio."""
    check_tokenizer(data_cfg, tokenizer)
    tokens = get(data_cfg.modality).sequences(split_examples(data_cfg, split), tokenizer, data_cfg)
    if len(tokens) == 0:
        raise DataError(f"{data_cfg.source} split {split!r} yields no {data_cfg.seq_len}-token sequence; lower "
                        "data.seq_len or raise data.max_examples.")
    return SequenceDataset(tokens, tokenizer, data_cfg.seed)


class SequenceDataset:
    """Token sequences [n, seq_len] and the step-indexed batches the trainer reads."""

    def __init__(self, tokens: np.ndarray, tokenizer: Tokenizer, seed: int):
        tokens = np.asarray(tokens)
        if seed < 0:
            raise DataError(f"data.seed is {seed}; use a non-negative integer.")
        if tokens.ndim != 2 or len(tokens) == 0:
            raise DataError(f"SequenceDataset needs tokens [n > 0, seq_len], got shape {tokens.shape}.")
        if tokens.min() < 0 or tokens.max() >= tokenizer.vocab_size:
            raise DataError(f"token ids span [{tokens.min()}, {tokens.max()}] but the tokenizer's vocab_size is "
                            f"{tokenizer.vocab_size}: the tokens were made by another tokenizer; rebuild the dataset.")
        # uint16 halves the memory of a tokenized corpus; batches are cast back to int32.
        self.tokens = tokens.astype(np.uint16 if tokenizer.vocab_size <= 2**16 else np.int32)
        self.tokenizer = tokenizer
        self.seed = seed
        # Seed hashed so that runs with seeds s and s+1 do not share epoch permutations (grain
        # seeds epoch e with seed + e).
        grain_seed = int(np.random.SeedSequence(seed).generate_state(1)[0])
        self._order = grain.MapDataset.range(len(tokens)).shuffle(seed=grain_seed).repeat()

    @property
    def seq_len(self) -> int:
        return self.tokens.shape[1]

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size

    def __len__(self) -> int:
        return len(self.tokens)

    def batch(self, step: int, global_batch: int, *, process_index: int = 0, process_count: int = 1,
              shuffle: bool = True) -> np.ndarray:
        """This process's rows of global batch `step`: int32 [global_batch // process_count, seq_len].

        Global row r of batch k is sequence order[k * global_batch + r], where order is a fresh
        seeded permutation each epoch (shuffle) or 0, 1, 2, ... wrapping (shuffle=False, for a
        fixed eval set). Process p takes rows [p * B / P, (p + 1) * B / P).
        """
        if global_batch <= 0 or process_count <= 0 or global_batch % process_count:
            raise DataError(f"global_batch {global_batch} must be a positive multiple of process_count "
                            f"{process_count}; change the batch size or the number of processes.")
        if not 0 <= process_index < process_count:
            raise DataError(f"process_index {process_index} is outside [0, {process_count}).")
        if step < 0:
            raise DataError(f"step {step} is negative; batches are indexed from step 0.")
        local = global_batch // process_count
        rows = range(step * global_batch + process_index * local, step * global_batch + (process_index + 1) * local)
        index = [self._order[r] if shuffle else r % len(self) for r in rows]
        return self.tokens[np.asarray(index)].astype(np.int32)
