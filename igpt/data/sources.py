"""From `data.source` to one split's raw feature values: shipped builders or the TFDS catalog.

data.data_dir must be on local disk (or a mounted bucket): igpt reads and prepares datasets as
ArrayRecord shards, whose C++ reader and writer open local files only, so TFDS cannot serve
them from gs:// (a read hangs, a prepare fails). `check_data_dir` says so before any work.
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
    """Raises one DataError line when `data_dir` is on object storage (gs://...), saying why and what to do."""
    data_dir = os.fspath(data_dir)
    if "://" not in data_dir:
        return
    local = "/path/on/local/disk/tfds"
    raise DataError(
        f"data.data_dir={data_dir} (for {source}) is on object storage, but igpt reads datasets as ArrayRecord "
        "shards, whose reader and writer open local files only (TFDS cannot read or prepare them on gs://); "
        f"copy the prepared dataset to local disk (`gsutil -m cp -r {data_dir.rstrip('/')}/NAME {local}/`) or "
        f"mount the bucket with gcsfuse, and set data.data_dir to that local directory ({local}); run "
        "directories (--workdir) may stay on gs://.")


def open_split(data_cfg: ml_collections.ConfigDict, split: str, key: str) -> RawSplit:
    """Opens feature `key` of `split` of `data_cfg.source`, preparing a shipped dataset on first use.

    Backends are imported here, not at the top, so importing igpt.data stays free of TFDS.
    """
    kind, _, name = data_cfg.source.partition(":")
    check_data_dir(data_cfg.source, data_cfg.data_dir)
    data_dir = os.path.expanduser(data_cfg.data_dir)
    where = f"{data_cfg.source} split {split!r} in {data_dir}"
    if kind == "shipped":
        from igpt.data import shipped
        return RawSplit(*shipped.open_split(name, split, data_dir, key), where)
    if kind == "tfds":
        from igpt.data import catalog
        return RawSplit(*catalog.open_split(name, split, data_dir, key), where)
    raise DataError(f"unknown data.source {data_cfg.source!r}; write shipped:NAME (photos, digits, prose, music) "
                    "or tfds:NAME[/CONFIG][:VERSION] (e.g. tfds:cifar10).")
