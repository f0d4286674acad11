"""shipped:noise: images of independent, uniformly random pixels (synthetic).

The control source of a transfer experiment: under a gray:L tokenizer whose L divides 256
its tokens are uniform and independent, so there is nothing to learn and nothing to
transfer. A speedup measured from it is noise, which is what a fair report must show.
"""
from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

SIZE = 8
COUNTS = {"train": 2000, "test": 300}
SEEDS = {"train": 0, "test": 1}


class ShippedNoise(tfds.core.GeneratorBasedBuilder):
    """8x8x1 uint8 images of uniform random pixels."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "2000 train / 300 test, seeds 0 and 1."}

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=__doc__,
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Tensor(shape=(SIZE, SIZE, 1), dtype=np.uint8)}))

    def _split_generators(self, dl_manager):
        return {split: self._generate_examples(split) for split in COUNTS}

    def _generate_examples(self, split):
        rng = np.random.default_rng(SEEDS[split])
        for i in range(COUNTS[split]):
            yield i, {"image": rng.integers(0, 256, (SIZE, SIZE, 1), dtype=np.uint8)}
