"""TFDS catalog datasets (`tfds:NAME[/CONFIG][:VERSION]`) read from a prepared data_dir, no TF.

Reading goes through the prepared directory itself (`dataset_info.json`, `features.json` and the
ArrayRecord shards), so neither the dataset's builder code nor a network is needed, and every
way it can be missing or damaged (unreadable JSON, a shard missing, truncated or short of
records, a record that does not read back) is reported naming the file and the command that
fixes it.
"""
from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from igpt.data.errors import DataError
from igpt.data.columns import Column, check_index
from igpt.paths import as_path

_VERSION = re.compile(r"\d+\.\d+\.\d+")


def parse_name(spec: str) -> tuple[str, str | None, str | None]:
    """Splits a catalog name: "cifar10" -> ("cifar10", None, None), "nsynth/full:2.3.3" ->
    ("nsynth", "full", "2.3.3")."""
    match = re.fullmatch(r"([\w-]+)(?:/([\w.-]+))?(?::(\d+\.\d+\.\d+))?", spec)
    if not match:
        raise DataError(f"data.source 'tfds:{spec}' is not a TFDS name; write tfds:NAME, tfds:NAME/CONFIG "
                        "or tfds:NAME/CONFIG:1.2.3 (e.g. tfds:cifar10).")
    return match.group(1), match.group(2), match.group(3)


def _prepare_hint(name: str, data_dir: Path) -> str:
    return (f"prepare it there as ArrayRecord on a machine with network (`tfds build {name} "
            f"--data_dir={data_dir} --file_format=array_record`), or set data.data_dir to where it is")


def _versions(directory: Path) -> list[Path]:
    prepared = (d for d in directory.iterdir() if _VERSION.fullmatch(d.name) and (d / "dataset_info.json").is_file())
    return sorted(prepared, key=lambda d: tuple(int(p) for p in d.name.split(".")))


def version_dir(spec: str, data_dir: str | Path) -> Path:
    """The prepared `DATA_DIR/NAME[/CONFIG]/VERSION` directory of `spec` (newest version if unnamed)."""
    name, config, version = parse_name(spec)
    data_dir = as_path(data_dir)  # local, or a bucket (igpt.data.staging lists it there)
    if not data_dir.is_dir():
        raise DataError(f"data_dir {data_dir} (data.data_dir for tfds:{spec}) does not exist; "
                        f"{_prepare_hint(name, data_dir)}.")
    root = data_dir / name
    if not root.is_dir():
        raise DataError(f"tfds:{spec} is not prepared in data_dir {data_dir} (no {root}); "
                        f"{_prepare_hint(name, data_dir)}.")
    if config is None and not _versions(root):
        configs = sorted(d.name for d in root.iterdir() if d.is_dir() and _versions(d))
        if len(configs) != 1:
            raise DataError(f"tfds:{spec} in {data_dir} has prepared configs {configs or 'none'}; "
                            f"name one as tfds:{name}/CONFIG, or {_prepare_hint(name, data_dir)}.")
        config = configs[0]
    if config is not None:
        root = root / config
    found = _versions(root) if root.is_dir() else []
    chosen = [d for d in found if version is None or d.name == version]
    if not chosen:
        have = [d.name for d in found] or "none"
        raise DataError(f"tfds:{spec} is not prepared in data_dir {data_dir} (versions found under {root}: "
                        f"{have}); {_prepare_hint(name, data_dir)}.")
    return chosen[-1]


def _damaged(spec: str, what: str, directory: Path) -> DataError:
    """What to say of a prepared directory that is there but does not read."""
    return DataError(f"tfds:{spec}: {what}; the prepared dataset in {directory} is damaged: prepare it again "
                     f"(delete that directory, then `tfds build {parse_name(spec)[0]} --file_format=array_record` "
                     "with --data_dir set to data.data_dir).")


def _read_json(spec: str, path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:  # missing, unreadable, not JSON (JSONDecodeError, UnicodeDecodeError)
        raise _damaged(spec, f"{path.name} does not read as JSON ({type(e).__name__}: {e})", path.parent) from e


def check_shards(spec: str, directory: Path, info: dict, split: str) -> None:
    """Each shard of the splits `split` reads from is there, whole (its footer reads), and holds
    the records dataset_info.json counts: a truncated or missing shard is named here, not met as
    a reader error half-way through loading."""
    from array_record.python.array_record_module import ArrayRecordReader
    for name in dict.fromkeys(re.sub(r"\[.*\]$", "", part.strip()) for part in split.split("+")):
        (split_info,) = [s for s in info["splits"] if s["name"] == name]
        for path, expected in zip(_shard_files(directory, info, name), split_info["shardLengths"]):
            if not path.is_file():
                raise _damaged(spec, f"shard {path.name} of split {name!r} is missing", directory)
            try:
                reader = ArrayRecordReader(str(path))
                found = reader.num_records() if reader.ok() else 0
                reader.close()
            except RuntimeError as e:  # "Corrupted Riegeli/records file: ... Failed to read RiegeliPostscript"
                raise _damaged(spec, f"shard {path.name} does not open ({str(e).splitlines()[0][:200]})",
                               directory) from e
            if found != int(expected):
                raise _damaged(spec, f"shard {path.name} holds {found} of its {expected} records", directory)


class _Checked(Sequence):
    """A data source whose read errors (a record that fails its checksum) name the dataset."""

    def __init__(self, source: Sequence, spec: str, directory: Path):
        self._source, self._spec, self._directory = source, spec, directory

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, index: int) -> Any:
        try:
            return self._source[index]
        except RuntimeError as e:  # array_record's "Corrupted Riegeli/records file: ..."
            raise _damaged(self._spec, f"record {index} does not read ({str(e).splitlines()[0][:200]})",
                           self._directory) from e


def _check_format_and_split(spec: str, directory: Path, info: dict, split: str) -> None:
    formats = [info.get("fileFormat", "tfrecord"), *info.get("alternativeFileFormats", [])]
    if "array_record" not in formats:
        raise DataError(
            f"tfds:{spec} in {directory} is prepared as {formats[0]}, which cannot be read without "
            f"TensorFlow. Convert it once with the tf extra installed (pip install 'igpt[tf]'; "
            f"`tfds convert_format --dataset_version_dir={directory} --out_file_format=array_record`), "
            f"or re-prepare it with file_format=array_record.")
    available = [s["name"] for s in info.get("splits", [])]
    for part in split.split("+"):
        if re.sub(r"\[.*\]$", "", part.strip()) not in available:
            raise DataError(f"split {split!r} of tfds:{spec} is not in {directory} (splits: {available}); "
                            "set data.train_split / data.test_split to one of them.")


class _RawAudio(Sequence):
    """One Audio feature parsed straight from ArrayRecord shards of tf.Example protos.

    TFDS cannot even construct an Audio feature without TensorFlow, so audio skips it; this is
    exactly what TFDS stores when an Audio feature is not lazily decoded: the samples as an
    int64 or float list.
    """

    def __init__(self, files: list[Path], key: str, dtype: np.dtype):
        from array_record.python.array_record_data_source import ArrayRecordDataSource
        self._records = ArrayRecordDataSource([str(f) for f in files])
        self._key, self._dtype = key, dtype

    def __len__(self) -> int:
        return len(self._records)

    def __getitem__(self, index: int) -> np.ndarray:
        from tensorflow_datasets.proto import tf_example_pb2
        example = tf_example_pb2.Example.FromString(self._records[check_index(index, len(self))])
        feature = example.features.feature[self._key]
        return np.asarray(getattr(feature, feature.WhichOneof("kind")).value, dtype=self._dtype)


def _shard_files(directory: Path, info: dict, split: str) -> list[Path]:
    (split_info,) = [s for s in info["splits"] if s["name"] == split]
    template = split_info.get("filepathTemplate", "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}")
    n = len(split_info["shardLengths"])
    return [directory / template.format(DATASET=info["name"], SPLIT=split, FILEFORMAT="array_record",
                                        SHARD_X_OF_Y=f"{i:05d}-of-{n:05d}") for i in range(n)]


def open_split(spec: str, split: str, data_dir: str | Path, key: str) -> tuple[Sequence[Any], int]:
    """Feature `key` of `split` as a random-access sequence, and its sample rate (0 if not audio)."""
    directory = version_dir(spec, data_dir)
    info = _read_json(spec, directory / "dataset_info.json")
    _check_format_and_split(spec, directory, info, split)
    check_shards(spec, directory, info, split)
    features = _read_json(spec, directory / "features.json")["featuresDict"]["features"]
    if key not in features:
        raise DataError(f"tfds:{spec} has no feature {key!r} (features: {sorted(features)}); "
                        "set data.feature to one of them.")
    if features[key]["pythonClassName"].endswith(".Audio"):
        audio = features[key]["audio"]
        if audio.get("lazyDecode") or len(audio["shape"]["dimensions"]) != 1:
            raise DataError(f"feature {key!r} of tfds:{spec} stores encoded or multi-channel audio; igpt reads "
                            "mono audio stored as samples (Audio(lazy_decode=False), shape (None,)).")
        if split not in {s["name"] for s in info["splits"]}:
            raise DataError(f"split {split!r} of tfds:{spec}: split slicing is not supported for audio; "
                            "use a whole split and data.max_examples.")
        files = _shard_files(directory, info, split)
        return _Checked(_RawAudio(files, key, np.dtype(audio["dtype"])), spec, directory), int(audio.get("sampleRate", 0))
    import tensorflow_datasets as tfds
    builder = tfds.builder_from_directory(str(directory))
    try:
        count = builder.info.splits[split].num_examples
    except ValueError as e:
        raise DataError(f"split {split!r} of tfds:{spec} is not a valid TFDS split ({e}); write e.g. 'train', "
                        "'train[:90%]' or 'train+test' in data.train_split / data.test_split.") from e
    if count == 0:
        raise DataError(f"split {split!r} of tfds:{spec} in {directory} has no examples; choose a split or "
                        "slice that selects some (data.train_split / data.test_split).")
    return Column(_Checked(builder.as_data_source(split=split, file_format="array_record"), spec, directory), key), 0
