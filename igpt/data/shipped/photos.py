"""shipped:photos: natural-image crops from the colour photos scikit-image and scikit-learn
ship inside their wheels (no download), split by photo so test crops come from unseen photos."""
from __future__ import annotations

import zlib

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

CROP = 64
# Real photographs only (no synthetic test patterns such as colorwheel; `cat` is `chelsea`).
TRAIN_PHOTOS = ("astronaut", "coffee", "rocket", "china", "hubble_deep_field", "immunohistochemistry",
                "retina")
TEST_PHOTOS = ("chelsea", "motorcycle", "flower")
CROPS_PER_PHOTO = {"train": 512, "test": 256}
MIN_STD = 2.0  # grey levels; flatter crops (retina's black border, empty sky) carry no image


def load_photo(name: str) -> np.ndarray:
    """uint8 [H, W, 3] photo by name, read from files installed with scikit-image/scikit-learn."""
    if name in ("china", "flower"):
        from sklearn.datasets import load_sample_image
        return load_sample_image(f"{name}.jpg")
    import skimage.data
    if name == "motorcycle":
        return skimage.data.stereo_motorcycle()[0]  # left view; the right one is a near-duplicate
    return getattr(skimage.data, name)()


def crops(photo: np.ndarray, count: int, seed: int) -> np.ndarray:
    """`count` square crops at random positions and scales (side CROP to half the shorter
    photo side), each resized to CROP x CROP, so one photo yields both detail and layout."""
    rng = np.random.default_rng(seed)
    h, w, _ = photo.shape
    out = []
    while len(out) < count:
        side = int(rng.integers(CROP, min(h, w) // 2 + 1))
        y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        patch = photo[y:y + side, x:x + side]
        if patch[::4, ::4].std() < MIN_STD:  # a strided look suffices and is fast
            continue
        out.append(np.asarray(Image.fromarray(patch).resize((CROP, CROP), Image.Resampling.BICUBIC, reducing_gap=2.0)))
    return np.stack(out)


class ShippedPhotos(tfds.core.GeneratorBasedBuilder):
    """64x64 RGB crops; `photo` names the source photo of each crop."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Crops of 7 train and 3 test photos."}

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=__doc__,
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Tensor(shape=(CROP, CROP, 3), dtype=np.uint8),
                "photo": tfds.features.Text(),
            }))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(TRAIN_PHOTOS, CROPS_PER_PHOTO["train"]),
                "test": self._generate_examples(TEST_PHOTOS, CROPS_PER_PHOTO["test"])}

    def _generate_examples(self, photos, count):
        for name in photos:
            for i, crop in enumerate(crops(load_photo(name), count, seed=zlib.crc32(name.encode()))):
                yield f"{name}-{i:04d}", {"image": crop, "photo": name}
