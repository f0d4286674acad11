"""The Tokenizer protocol every modality implements, and its on-disk format.

A tokenizer directory holds `tokenizer.json` (kind, format version, small settings) and,
when the tokenizer has learned state, `arrays.npz`. Loading checks the kind and version
first so a wrong directory fails with a sentence, not a KeyError.

The directory may be local or on object storage (gs://bucket/run/tokenizer): every path here is
an `etils.epath.Path` (pathlib would turn "gs://b/t" into the local "gs:/b/t"). Locally each file
is written beside its name and renamed over it; on object storage one object write is already
atomic and a directory exists only once something is written below it.
"""
from __future__ import annotations

import dataclasses
import io
import json
import os
from typing import Any, Mapping, Protocol, runtime_checkable

import numpy as np
from etils import epath

from igpt.paths import as_path, forget_listings, made_dir, write_bytes_atomic

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
    def directory(self) -> epath.Path | None:
        """The saved tokenizer directory the spec names (vq:DIR or a path, local or gs://), else None."""
        return tokenizer_path(self.arg) if self.kind in ("vq", SAVED) and self.arg else None


def parse_spec(spec: str) -> Spec:
    kind, colon, arg = spec.partition(":")
    if kind in SPEC_KINDS:
        return Spec(kind, arg)
    return Spec(SAVED, spec)
ARRAYS_FILE = "arrays.npz"


def tokenizer_path(directory: str | os.PathLike) -> epath.Path:
    """A tokenizer directory: gs:// kept as a URL, a local path made absolute."""
    return as_path(directory)


def has_tokenizer(directory: str | os.PathLike) -> bool:
    """Whether `directory` holds a saved tokenizer (its tokenizer.json), as the store sees it now."""
    path = tokenizer_path(directory)
    forget_listings(path)
    return (path / META_FILE).is_file()


def _read_bytes_or_none(path: epath.Path) -> bytes | None:
    try:
        return path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return None


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
    path = made_dir(directory)
    if arrays:
        buffer = io.BytesIO()  # np.savez seeks, which a gs:// object being written cannot
        np.savez(buffer, **arrays)
        write_bytes_atomic(path / ARRAYS_FILE, buffer.getvalue())
    meta = {"kind": kind, "version": FORMAT_VERSION, "settings": dict(settings)}
    write_bytes_atomic(path / META_FILE, json.dumps(meta, indent=2, sort_keys=True).encode())


def read_tokenizer_meta(directory: str | os.PathLike) -> dict[str, Any]:
    """Reads and checks `tokenizer.json`; returns {'kind', 'version', 'settings'}."""
    meta_path = tokenizer_path(directory) / META_FILE
    forget_listings(meta_path)  # another process may have just saved it
    text = _read_bytes_or_none(meta_path)
    if text is None:
        raise TokenizerError(
            f"{directory!s} is not a tokenizer directory: {META_FILE} is missing. "
            "Point to a directory written by a tokenizer's save() or igpt-fit-tokenizer.")
    try:
        meta = json.loads(text)
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
    data = _read_bytes_or_none(tokenizer_path(directory) / ARRAYS_FILE)
    arrays = {}
    if data is not None:
        with np.load(io.BytesIO(data)) as npz:
            arrays = {k: npz[k] for k in npz.files}
    return meta["settings"], arrays
