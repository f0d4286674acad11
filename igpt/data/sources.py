"""From `data.source` to one split's raw feature values: shipped builders or the TFDS catalog.

igpt reads and prepares datasets as ArrayRecord shards, whose C++ reader and writer open local
files only. A catalog dataset prepared in a bucket (data.data_dir=gs://...) is copied to this
host's disk once before it is read (igpt.data.staging); shipped data is prepared where it is
read, so its data_dir must be local (`check_data_dir` says so before any work).
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import ml_collections

from igpt.data.errors import DataError

@dataclasses.dataclass(frozen=True)
class RawSplit:
    """One split's chosen feature, random access, and what is needed to interpret it."""

    values: Sequence[Any]  # uint8 image arrays | str/bytes | waveform arrays
    sample_rate: int       # Hz of audio values; 0 for other modalities
    where: str             # e.g. "tfds:mnist split 'train' in /data/tfds", for messages


def check_data_dir(source: str, data_dir: str | os.PathLike) -> None:
    """Raises one DataError line for shipped data with its data_dir on object storage (gs://...):
    shipped datasets are prepared in data_dir on first use, as ArrayRecord, which is written to
    local files only. Catalog datasets may be read from a bucket."""
    data_dir = os.fspath(data_dir)
    if "://" not in data_dir or not source.startswith("shipped:"):
        return
    raise DataError(
        f"data.data_dir={data_dir} (for {source}) is on object storage, but shipped data is prepared in data_dir "
        "on first use as ArrayRecord shards, which are written to local files only; set data.data_dir to a local "
        "directory (the default is fine). Catalog datasets (tfds:NAME) may stay in a bucket, and run "
        "directories (--workdir) too.")


def check_source(source: str, data_dir: str | os.PathLike) -> None:
    """The source's spelling, and where it may live, checked before any work (no data is read):
    an unknown kind or shipped name, a malformed catalog name, shipped data in a bucket."""
    kind, _, name = source.partition(":")
    if kind == "shipped":
        from igpt.data.shipped import BUILDERS
        if name not in BUILDERS:
            raise DataError(f"unknown shipped dataset {name!r} (from data.source {source!r}); "
                            f"choose one of {', '.join('shipped:' + n for n in BUILDERS)}.")
    elif kind == "tfds":
        from igpt.data.catalog import parse_name
        parse_name(name)
    else:
        raise DataError(f"unknown data.source {source!r}; write shipped:NAME (photos, digits, prose, music) "
                        "or tfds:NAME[/CONFIG][:VERSION] (e.g. tfds:cifar10).")
    check_data_dir(source, data_dir)


def open_split(data_cfg: ml_collections.ConfigDict, split: str, key: str) -> RawSplit:
    """Opens feature `key` of `split` of `data_cfg.source`, preparing a shipped dataset on first use.

    Backends are imported here, not at the top, so importing igpt.data stays free of TFDS.
    """
    kind, _, name = data_cfg.source.partition(":")
    check_data_dir(data_cfg.source, data_cfg.data_dir)
    data_dir = os.path.expanduser(data_cfg.data_dir)
    where = f"{data_cfg.source} split {split!r} in {data_dir}"
    if kind == "tfds" and "://" in data_dir:
        from igpt.data import staging
        data_dir = staging.staged_data_dir(name, data_dir)
    if kind == "shipped":
        from igpt.data import shipped
        return RawSplit(*shipped.open_split(name, split, data_dir, key), where)
    if kind == "tfds":
        from igpt.data import catalog
        return RawSplit(*catalog.open_split(name, split, data_dir, key), where)
    raise DataError(f"unknown data.source {data_cfg.source!r}; write shipped:NAME (photos, digits, prose, music) "
                    "or tfds:NAME[/CONFIG][:VERSION] (e.g. tfds:cifar10).")
