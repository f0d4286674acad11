"""shipped:digits: scikit-learn's 1,797 handwritten 8x8 digits (real scans), as uint8 gray."""
from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

TEST_COUNT = 297  # about one in six, held out by a fixed permutation
SPLIT_SEED = 0


class ShippedDigits(tfds.core.GeneratorBasedBuilder):
    """8x8x1 uint8 digits (the 0-16 ink levels scaled to 0-255) with their labels."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "load_digits, 1500 train / 297 test."}

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=__doc__,
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Tensor(shape=(8, 8, 1), dtype=np.uint8),
                "label": tfds.features.ClassLabel(num_classes=10),
            }))

    def _split_generators(self, dl_manager):
        order = np.random.default_rng(SPLIT_SEED).permutation(1797)
        return {"train": self._generate_examples(order[TEST_COUNT:]),
                "test": self._generate_examples(order[:TEST_COUNT])}

    def _generate_examples(self, indices):
        from sklearn.datasets import load_digits
        digits = load_digits()
        images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
        for i in indices:
            yield int(i), {"image": images[i], "label": int(digits.target[i])}
