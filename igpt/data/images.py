"""Image geometry and channels: any-size uint8 images to square res x res model inputs."""
from __future__ import annotations

import numpy as np
from PIL import Image

from igpt.data.errors import DataError


def as_hwc(image: np.ndarray, name: str = "image") -> np.ndarray:
    """uint8 [H, W, C] with C in (1, 3): gray [H, W] gains a channel axis, RGBA drops alpha."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise DataError(f"{name} has dtype {image.dtype}; expected uint8 pixels (0-255).")
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
        raise DataError(f"{name} has shape {image.shape}; expected [H, W], [H, W, 1], [H, W, 3] "
                        "or [H, W, 4]. Point data.feature at the image feature.")
    return image[..., :3]


def square(image: np.ndarray, res: int) -> np.ndarray:
    """Resizes so the shorter side is `res` (antialiased bicubic), then crops the centre square.

    Centre-cropping keeps the aspect ratio, so objects are not stretched.
    """
    image = as_hwc(image)
    h, w, c = image.shape
    if (h, w) == (res, res):
        return image
    scale = res / min(h, w)
    size = (max(res, round(w * scale)), max(res, round(h * scale)))
    pil = Image.fromarray(image[..., 0] if c == 1 else image)
    out = np.asarray(pil.resize(size, Image.Resampling.BICUBIC)).reshape(size[1], size[0], c)
    top, left = (size[1] - res) // 2, (size[0] - res) // 2
    return out[top:top + res, left:left + res]


def to_rgb(images: np.ndarray) -> np.ndarray:
    """[N, H, W, 1] gray replicated to 3 channels (palette tokenizers read RGB); RGB unchanged."""
    return np.repeat(images, 3, axis=-1) if images.shape[-1] == 1 else images
