"""TFDS builders over data that ships inside installed packages, so training needs no network.

Real: photos (scikit-image/scikit-learn photographs), digits (scikit-learn scans), prose
(Python's help text). Synthetic: music (igpt.data.music), noise (uniform random pixels). Each is prepared as ArrayRecord into
data_dir on first use, once even when several processes start together, and read with
`as_data_source`. Bumping a builder's VERSION makes the next use prepare it afresh.

  igpt-prepare-data [NAME ...] [--data_dir DIR]

prepares them ahead of time (all by default), e.g. on a cluster's login node before jobs that
start offline: the same preparation a first use makes, done once.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import io
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import tensorflow_datasets as tfds

from igpt.data.errors import DataError
from igpt.quiet import absl_errors_only
from igpt.data.locking import file_lock
from igpt.data.sources import check_data_dir
from igpt.data.shipped import digits, music, noise, photos, prose
from igpt.data.columns import Column

BUILDERS: dict[str, type[tfds.core.GeneratorBasedBuilder]] = {
    "photos": photos.ShippedPhotos,
    "digits": digits.ShippedDigits,
    "prose": prose.ShippedProse,
    "music": music.ShippedMusic,
    "noise": noise.ShippedNoise,
}
SAMPLE_RATES = {"music": music.SAMPLE_RATE}
TYPICAL_PREPARE_S = {"photos": 40, "digits": 2, "prose": 2, "music": 25, "noise": 2}  # on 2 busy CPU cores


def prepared_builder(name: str, data_dir: str | os.PathLike) -> tfds.core.DatasetBuilder:
    """The builder of shipped:`name`, prepared in `data_dir` first if it is not there yet."""
    if name not in BUILDERS:
        raise DataError(f"unknown shipped dataset {name!r} (from data.source 'shipped:{name}'); "
                        f"choose one of {', '.join('shipped:' + n for n in BUILDERS)}.")
    check_data_dir(f"shipped:{name}", data_dir)  # ArrayRecord shards are written and read on local disk only
    make = functools.partial(BUILDERS[name], data_dir=os.fspath(data_dir), file_format="array_record")
    with absl_errors_only():  # TFDS warns that a folder not prepared yet has no dataset_info.json
        builder = make()
        if not builder.is_prepared():
            with file_lock(Path(data_dir) / f".{builder.name}.lock"):
                builder = make()  # re-read: another process may have prepared it while we waited
                if not builder.is_prepared():
                    _prepare_quietly(builder, name)
    return builder


def _prepare_quietly(builder: tfds.core.DatasetBuilder, name: str) -> None:
    """One line instead of TFDS's "Downloading and preparing" banner and progress bars: nothing
    is downloaded, the data comes from installed packages."""
    print(f"preparing shipped:{name} in {builder.data_dir}, once, ~{TYPICAL_PREPARE_S.get(name, 10)} s "
          "(from installed packages: nothing is downloaded)", flush=True)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        tfds.disable_progress_bar()
        try:
            builder.download_and_prepare(file_format="array_record")
        finally:
            tfds.enable_progress_bar()


def open_split(name: str, split: str, data_dir: str | os.PathLike, key: str) -> tuple[Sequence[Any], int]:
    """Feature `key` of `split` of shipped:`name` as a random-access sequence, and its sample rate."""
    builder = prepared_builder(name, data_dir)
    if split not in builder.info.splits:
        raise DataError(f"shipped:{name} has no split {split!r} (splits: {sorted(builder.info.splits)}); "
                        "set data.train_split / data.test_split to one of them.")
    if key not in builder.info.features:
        raise DataError(f"shipped:{name} has no feature {key!r} (features: {sorted(builder.info.features)}); "
                        "set data.feature to one of them.")
    return Column(builder.as_data_source(split=split), key), SAMPLE_RATES.get(name, 0)


def prepare(names: Sequence[str], data_dir: str | os.PathLike) -> list[tuple[str, float]]:
    """Prepares each shipped dataset of `names` in `data_dir` unless it is there already;
    (name, seconds it took) for each."""
    took = []
    for name in names:
        start = time.perf_counter()
        prepared_builder(name, data_dir)
        took.append((name, time.perf_counter() - start))
    return took


def main(argv: Sequence[str] | None = None) -> int:
    """igpt-prepare-data: every shipped dataset (or those named) prepared ahead of time."""
    from igpt.data.specs import SHIPPED_DATA_DIR
    parser = argparse.ArgumentParser(prog="igpt-prepare-data", description=main.__doc__.split(": ", 1)[1])
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"of {', '.join(BUILDERS)} (default: all)")
    parser.add_argument("--data_dir", default=SHIPPED_DATA_DIR,
                        help=f"where runs read them (data.data_dir; default {SHIPPED_DATA_DIR})")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    unknown = [n for n in args.names if n.removeprefix("shipped:") not in BUILDERS]
    if unknown:
        parser.error(f"unknown shipped dataset(s) {', '.join(unknown)}; choose from {', '.join(BUILDERS)}.")
    from igpt.errors import fail_clearly
    data_dir = os.path.expanduser(args.data_dir)
    with fail_clearly():
        took = prepare([n.removeprefix("shipped:") for n in args.names] or list(BUILDERS), data_dir)
    print(f"igpt-prepare-data: ready in {data_dir}: " + ", ".join(f"shipped:{n} ({t:.0f} s)" for n, t in took))
    return 0
