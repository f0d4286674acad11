"""The VQ fitting task's training batches: batch k is a pure function of (data seed, k).

Images are random crops' distinct draws, each (per train.augment) mirrored, turned by a multiple
of 90 degrees, its channels shuffled, its hues turned, its saturation and contrast scaled; audio
batches are windows at random places in random clips.
"""
from __future__ import annotations

import numpy as np

from igpt.tokenizers.vq.network import to_unit

def _rng(seed: int, step: int) -> np.random.Generator:
    return np.random.default_rng([seed, step])


AUGMENTATIONS = ("flip", "rotate", "channels", "hue", "saturation", "contrast")
GREY_AXIS = np.full(3, 1 / np.sqrt(3), np.float32)
COLOUR_AUGMENTATIONS = frozenset({"hue", "saturation"})  # need RGB images
SATURATION_RANGE = (0.6, 1.4)  # scale of each image's distance from grey
CONTRAST_RANGE = (0.7, 1.3)  # scale of each image's deviations from its mean level


def recolour(images: np.ndarray, angles: np.ndarray, mirror: np.ndarray, saturation: np.ndarray) -> np.ndarray:
    """uint8 RGB images with each image's colours turned about the grey axis by its angle
    (radians) after swapping red and green where `mirror`, and their distance from grey scaled
    by its saturation: grey levels stay, hues and their strength move. The six channel
    permutations are the turns by multiples of 2 pi / 3, mirrored or not."""
    x = images.astype(np.float32)
    x[mirror] = x[mirror][..., [1, 0, 2]]
    grey = x.mean(axis=-1, keepdims=True)
    chroma, angles = x - grey, angles[:, None, None, None]
    turned = chroma * np.cos(angles) + np.cross(GREY_AXIS, chroma) * np.sin(angles)
    return np.clip(np.rint(grey + turned * saturation[:, None, None, None]), 0, 255).astype(np.uint8)

def rescale_contrast(images: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """uint8 images with each image's deviations from its own mean level scaled by its factor
    (clipped to [0, 255]), so flat photos also train the decoder on strong edges."""
    x = images.astype(np.float32)
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    return np.clip(np.rint(mean + (x - mean) * factors[:, None, None, None]), 0, 255).astype(np.uint8)

def image_batch(images: np.ndarray, step: int, batch: int, seed: int,
                augment: tuple[str, ...] = ("flip",)) -> np.ndarray:
    """float32 [batch, H, W, C] in [-1, 1]: distinct random images, each (per `augment`) mirrored
    with probability 1/2, turned by a random multiple of 90 degrees, its colour channels shuffled,
    its hues turned by a random angle, its saturation scaled, its contrast scaled. A few
    training photos then stand for more of the textures and colours held-out photos have."""
    rng = _rng(seed, step)
    x = images[rng.choice(len(images), batch, replace=len(images) < batch)]
    if "flip" in augment:
        flip = rng.random(batch) < 0.5
        x[flip] = x[flip, :, ::-1]
    if "rotate" in augment:
        x = np.stack([np.rot90(img, k) for img, k in zip(x, rng.integers(0, 4, batch))])
    if "channels" in augment:
        x = np.take_along_axis(x, np.stack([rng.permutation(x.shape[-1]) for _ in x])[:, None, None, :], axis=-1)
    if COLOUR_AUGMENTATIONS & set(augment):
        hue = "hue" in augment
        mirror = rng.random(batch) < 0.5 if hue else np.zeros(batch, bool)
        angles = rng.uniform(0, 2 * np.pi, batch) if hue else np.zeros(batch)
        saturation = rng.uniform(*SATURATION_RANGE, batch) if "saturation" in augment else np.ones(batch)
        x = recolour(x, angles, mirror, saturation)
    if "contrast" in augment:
        x = rescale_contrast(x, rng.uniform(*CONTRAST_RANGE, batch))
    return to_unit(x)

def audio_batch(waves: list[np.ndarray], step: int, batch: int, seed: int, crop: int) -> np.ndarray:
    """float32 [batch, crop, 1]: windows of `crop` samples at random places in random clips."""
    rng = _rng(seed, step)
    clips = rng.integers(0, len(waves), batch)
    starts = [int(rng.integers(0, len(waves[c]) - crop + 1)) for c in clips]
    return np.stack([waves[c][s:s + crop] for c, s in zip(clips, starts)])[..., None]
