"""Class labels of labelled image datasets, row for row with the examples the pipeline reads.

shipped:digits carries scikit-learn's real digit labels; catalog datasets such as tfds:cifar10,
tfds:mnist and tfds:cars196 carry theirs in a ClassLabel feature called "label". The shipped
photos are crops of a handful of photographs: they have no classes, and none are made up.
"""
from __future__ import annotations

import json
import os

import ml_collections
import numpy as np

from igpt.data import pipeline
from igpt.data.errors import DataError
from igpt.data.sources import open_split

LABEL_FEATURE = "label"
LABELLED_EXAMPLES = "shipped:digits, or tfds:cifar10 / tfds:mnist / tfds:cars196 prepared in data.data_dir"


def _features(data_cfg: ml_collections.ConfigDict) -> list[str]:
    """The feature names of data.source, from the shipped builder or the prepared directory."""
    kind, _, name = data_cfg.source.partition(":")
    data_dir = os.path.expanduser(data_cfg.data_dir)
    if kind == "shipped":
        from igpt.data import shipped
        return list(shipped.prepared_builder(name, data_dir).info.features)
    if kind == "tfds":
        from igpt.data import catalog
        features = json.loads((catalog.version_dir(name, data_dir) / "features.json").read_text())
        return list(features["featuresDict"]["features"])
    raise DataError(f"unknown data.source {data_cfg.source!r}; write shipped:NAME or tfds:NAME.")


def check_labelled(data_cfg: ml_collections.ConfigDict) -> None:
    """Raises one DataError line when data.source has no class labels or is not images (a probe
    reads one label per image, and one image is one sequence)."""
    if data_cfg.modality != "image":
        raise DataError(f"{data_cfg.source} is {data_cfg.modality} data; a linear probe reads one class label per "
                        f"image, so probe a run on labelled images ({LABELLED_EXAMPLES}).")
    if data_cfg.source == "shipped:photos":
        raise DataError("shipped:photos has no class labels: its examples are crops of a few photographs, not "
                        f"members of classes, and igpt invents none; probe labelled images ({LABELLED_EXAMPLES}).")
    if LABEL_FEATURE not in _features(data_cfg):
        raise DataError(f"{data_cfg.source} has no {LABEL_FEATURE!r} feature, so no class labels to probe; probe "
                        f"labelled images ({LABELLED_EXAMPLES}).")


def has_labels(data_cfg: ml_collections.ConfigDict) -> bool:
    """Whether check_labelled passes: a transfer experiment probes its target runs only then."""
    try:
        check_labelled(data_cfg)
    except DataError:
        return False
    return True


def _load_labels(data_cfg: ml_collections.ConfigDict, split: str) -> np.ndarray:
    """The labels of a named split, capped at data.max_examples as the examples are."""
    values = open_split(data_cfg, split, LABEL_FEATURE).values
    n = len(values) if data_cfg.max_examples <= 0 else min(len(values), data_cfg.max_examples)
    return np.array([int(values[i]) for i in range(n)], np.int64)


def split_labels(data_cfg: ml_collections.ConfigDict, split: str) -> np.ndarray:
    """int64 labels [n] of one of pipeline.SPLITS, in the order of pipeline.split_examples (and
    so of build_dataset's sequences, one per image)."""
    check_labelled(data_cfg)
    return pipeline.split_examples(data_cfg, split, load=_load_labels)
