"""The Tokenizer protocol every modality implements, and its on-disk format.

A tokenizer directory holds `tokenizer.json` (kind, format version, small settings) and,
when the tokenizer has learned state, `arrays.npz`. Loading checks the kind and version
first so a wrong directory fails with a sentence, not a KeyError.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Mapping, Protocol, runtime_checkable

import numpy as np

FORMAT_VERSION = 1
META_FILE = "tokenizer.json"
SPEC_KINDS = ("palette", "gray", "mulaw", "bytes", "vq")
SAVED = "saved"  # a spec that is the path of a saved tokenizer directory


@dataclasses.dataclass(frozen=True)
class Spec:
    """A tokenizer spec (data.tokenizer) parsed once: "palette:512" -> Spec("palette", "512"),
    "vq:DIR" -> Spec("vq", "DIR"), any other string -> Spec("saved", it): a directory."""
    kind: str
    arg: str

    @property
    def directory(self) -> Path | None:
        """The saved tokenizer directory the spec names (vq:DIR or a path), else None."""
        return Path(self.arg).expanduser() if self.kind in ("vq", SAVED) and self.arg else None


def parse_spec(spec: str) -> Spec:
    kind, colon, arg = spec.partition(":")
    if kind in SPEC_KINDS:
        return Spec(kind, arg)
    return Spec(SAVED, spec)
ARRAYS_FILE = "arrays.npz"


class TokenizerError(ValueError):
    """Bad input to a tokenizer: the message names the input and the fix."""


@runtime_checkable
class Tokenizer(Protocol):
    """Turns a batch of raw examples into int32 tokens in [0, vocab_size) and back."""

    kind: str

    @property
    def vocab_size(self) -> int: ...

    def encode(self, batch: np.ndarray) -> np.ndarray: ...

    def decode(self, tokens: np.ndarray) -> np.ndarray: ...

    def save(self, directory: str | os.PathLike) -> None: ...


def write_tokenizer_dir(
    directory: str | os.PathLike,
    kind: str,
    settings: Mapping[str, Any],
    arrays: Mapping[str, np.ndarray] | None = None,
) -> None:
    """Writes arrays first and the JSON last, each atomically, so a half-written
    directory never loads as a whole tokenizer."""
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    if arrays:
        tmp = path / (ARRAYS_FILE + ".tmp.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, path / ARRAYS_FILE)
    meta = {"kind": kind, "version": FORMAT_VERSION, "settings": dict(settings)}
    tmp = path / (META_FILE + ".tmp")
    tmp.write_text(json.dumps(meta, indent=2, sort_keys=True))
    os.replace(tmp, path / META_FILE)


def read_tokenizer_meta(directory: str | os.PathLike) -> dict[str, Any]:
    """Reads and checks `tokenizer.json`; returns {'kind', 'version', 'settings'}."""
    meta_path = Path(directory) / META_FILE
    if not meta_path.is_file():
        raise TokenizerError(
            f"{directory!s} is not a tokenizer directory: {META_FILE} is missing. "
            "Point to a directory written by a tokenizer's save() or igpt-fit-tokenizer.")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as e:
        raise TokenizerError(f"{meta_path} is not valid JSON ({e}); re-fit and save the tokenizer.") from e
    if meta.get("version") != FORMAT_VERSION:
        raise TokenizerError(
            f"{meta_path} has format version {meta.get('version')!r}, this igpt reads version "
            f"{FORMAT_VERSION}; re-save the tokenizer with this igpt version.")
    return meta


def read_tokenizer_dir(
    directory: str | os.PathLike, expected_kind: str
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Returns (settings, arrays) after checking the directory holds a `expected_kind` tokenizer."""
    meta = read_tokenizer_meta(directory)
    if meta["kind"] != expected_kind:
        raise TokenizerError(
            f"{directory!s} holds a {meta['kind']!r} tokenizer, not {expected_kind!r}; load it with "
            f"igpt.tokenizers.load() or point to a {expected_kind!r} tokenizer directory.")
    arrays_path = Path(directory) / ARRAYS_FILE
    arrays = {}
    if arrays_path.is_file():
        with np.load(arrays_path) as npz:
            arrays = {k: npz[k] for k in npz.files}
    return meta["settings"], arrays
