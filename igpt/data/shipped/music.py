"""shipped:music: synthetic music clips from `igpt.data.music.synthesize_music` (see its
docstring for the generator); train and test use disjoint seeds."""
from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

from igpt.data.music import synthesize_music

SAMPLE_RATE = 16000
SECONDS = 4.0
CLIPS = {"train": 256, "test": 32}
SEED_OFFSET = {"train": 0, "test": 1_000_000}


class ShippedMusic(tfds.core.GeneratorBasedBuilder):
    """4 s mono clips at 16 kHz as int16 PCM (`audio`), with the `seed` that made each."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "256 train / 32 test clips of 4 s."}

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=__doc__,
            features=tfds.features.FeaturesDict({
                "audio": tfds.features.Tensor(shape=(int(SAMPLE_RATE * SECONDS),), dtype=np.int16),
                "seed": tfds.features.Scalar(dtype=np.int64),
            }))

    def _split_generators(self, dl_manager):
        return {split: self._generate_examples(range(SEED_OFFSET[split], SEED_OFFSET[split] + n))
                for split, n in CLIPS.items()}

    def _generate_examples(self, seeds):
        for seed in seeds:
            wave = synthesize_music(SECONDS, SAMPLE_RATE, seed)
            yield seed, {"audio": np.round(wave * 32767).astype(np.int16), "seed": seed}
