"""Images: any-size uint8 pictures to square res x res examples, one raster-order token
sequence each; a VQ-VAE's 2-D grid of codes; PNG grids of samples."""
from __future__ import annotations

import io
import math
import os
from typing import Callable, Sequence

import ml_collections
import numpy as np
from einops import rearrange
from etils import epath
from PIL import Image, ImageDraw, ImageFont

from igpt.data.errors import DataError
from igpt.data.sources import RawSplit
from igpt.tokenizers.base import Tokenizer, TokenizerError
from igpt.tokenizers.checks import as_uint8_images
from igpt.tokenizers.reconstruction import psnr
from igpt.tokenizers.vq import augment
from igpt.tokenizers.vq.network import to_uint8, to_unit
from igpt.tokenizers.vq.tokenizer import KIND as VQ_KIND

IMAGES_PER_ENCODE = 1024  # images per tokenizer call: bounds the float copy palette encoding makes
GREY = 128
WHITE = 255
MIN_TILE = 64  # small images (8x8 digits) are scaled up to at least this many pixels a side in sample grids
GAP = 6  # white pixels between and around tiles, so neighbours of similar colours do not merge
HEADER_PIXELS = 20  # height of the row of column headers
GRID_COLUMNS = 4  # columns of a grid of unconditional samples


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


def as_tokenizer_input(kind: str, examples: np.ndarray) -> np.ndarray:
    """Images as tokenizer `kind` reads them: gray is replicated to RGB for a palette (a set of
    RGB colours); other kinds take the images as they are."""
    return to_rgb(examples) if kind == "palette" else examples


def image_grid(images: np.ndarray, headers: Sequence[str] = ()) -> np.ndarray:
    """uint8 [rows, cols, H, W(, C)] -> one RGB picture: each tile scaled up by a whole factor to
    at least MIN_TILE pixels, GAP white pixels between and around the tiles, and when `headers`
    are given (one per column) a row of them above the tiles."""
    if images.ndim == 4:
        images = images[..., None]
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    scale = max(1, math.ceil(MIN_TILE / images.shape[2]))
    images = np.repeat(np.repeat(images, scale, axis=2), scale, axis=3)
    images = np.pad(images, ((0, 0), (0, 0), (0, GAP), (0, GAP), (0, 0)), constant_values=WHITE)
    grid = np.pad(rearrange(images, "r c h w ch -> (r h) (c w) ch"), ((GAP, 0), (GAP, 0), (0, 0)),
                  constant_values=WHITE)
    if headers:
        if len(headers) != images.shape[1]:
            raise ValueError(f"{len(headers)} headers for {images.shape[1]} columns")
        grid = np.concatenate([header_row(headers, images.shape[3], grid.shape[1]), grid])
    return grid


def header_row(headers: Sequence[str], column_pixels: int, width: int) -> np.ndarray:
    """A white strip [HEADER_PIXELS, width, 3] with each header centred over its column."""
    strip = Image.new("RGB", (width, HEADER_PIXELS), (WHITE,) * 3)
    draw = ImageDraw.Draw(strip)
    font = ImageFont.load_default(size=HEADER_PIXELS - 6)
    for k, text in enumerate(headers):
        centre = GAP + k * column_pixels + (column_pixels - GAP) / 2
        draw.text((centre, HEADER_PIXELS - 2), text, fill=(0, 0, 0), font=font, anchor="ms")
    return np.asarray(strip)


def rows_of(images: np.ndarray, columns: int = GRID_COLUMNS) -> np.ndarray:
    """[n, H, W(, C)] laid out as [rows, columns, ...] (white tiles fill the last row)."""
    columns = max(1, min(columns, len(images)))
    fill = -len(images) % columns
    images = np.concatenate([images, np.full((fill,) + images.shape[1:], WHITE, images.dtype)])
    return rearrange(images, "(r c) ... -> r c ...", c=columns)


def write_png(path: str | os.PathLike, image: np.ndarray) -> None:
    """A uint8 image [H, W(, C)] as a PNG at `path`, local or gs:// (one object write there)."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    epath.Path(path).write_bytes(buffer.getvalue())


def grey_after(images: np.ndarray, prompt_tokens: int, token_rows: int, token_cols: int) -> np.ndarray:
    """Images [n, H, W(, C)] with every pixel outside the first `prompt_tokens` raster-order
    tokens of a token_rows x token_cols grid set to grey: what the model was shown."""
    shown = (np.arange(token_rows * token_cols) < prompt_tokens).reshape(token_rows, token_cols)
    h, w = images.shape[1] // token_rows, images.shape[2] // token_cols
    shown = np.repeat(np.repeat(shown, h, axis=0), w, axis=1)
    shown = shown.reshape(shown.shape + (1,) * (images.ndim - 3))
    return np.where(shown, images, np.uint8(GREY))


class ImageModality:
    """uint8 [N, res, res, C] examples (C = 1 or 3, as stored)."""

    name = "image"
    default_feature = "image"
    spatial_axes = 2

    def examples(self, raw: RawSplit, count: int, data_cfg: ml_collections.ConfigDict) -> np.ndarray:
        if data_cfg.resolution <= 0:
            raise DataError(f"data.resolution is {data_cfg.resolution}; set it (e.g. specs.images(..., res=32)).")
        return np.stack([square(raw.values[i], data_cfg.resolution) for i in range(count)])

    def sequences(self, examples: np.ndarray, tokenizer: Tokenizer, data_cfg: ml_collections.ConfigDict) -> np.ndarray:
        """One raster-order sequence per image."""
        examples = as_tokenizer_input(tokenizer.kind, examples)
        tokens = np.concatenate([tokenizer.encode(examples[i:i + IMAGES_PER_ENCODE])
                                 for i in range(0, len(examples), IMAGES_PER_ENCODE)])
        if tokens.shape[1] != data_cfg.seq_len:
            raise DataError(f"{data_cfg.source} images at resolution {data_cfg.resolution} give {tokens.shape[1]} "
                            f"tokens each with tokenizer {data_cfg.tokenizer!r}, but data.seq_len is {data_cfg.seq_len}; "
                            f"pass --config.data.seq_len={tokens.shape[1]} (or 0: derived from a saved tokenizer), or "
                            "build the data section with specs.images(...), which sets both.")
        return tokens

    def picture(self, tokenizer: Tokenizer, prompt_tokens: int, originals: np.ndarray,
                completions: np.ndarray) -> np.ndarray:
        """Columns headed prompt (the rest greyed) | completion | original, one row per sequence."""
        side = math.isqrt(originals.shape[1])
        orig, comp = tokenizer.decode(originals), tokenizer.decode(completions)
        shown = grey_after(orig, prompt_tokens, side, side)
        return image_grid(np.stack([shown, comp, orig], axis=1), headers=("prompt", "completion", "original"))

    def write_samples(self, out: str | os.PathLike, tokenizer: Tokenizer, sample_rate: int, prompt_tokens: int,
                      originals: np.ndarray, completions: np.ndarray, unconditional: np.ndarray) -> list[epath.Path]:
        """completions.png (the picture above), unconditional.png (a grid), into `out` (an existing
        local directory, or gs://)."""
        out = epath.Path(out)
        write_png(out / "completions.png", self.picture(tokenizer, prompt_tokens, originals, completions))
        write_png(out / "unconditional.png", image_grid(rows_of(tokenizer.decode(unconditional))))
        return [out / "completions.png", out / "unconditional.png"]

    def reconstruction_picture(self, examples: np.ndarray, reconstructed: np.ndarray) -> np.ndarray:
        """Held-out images beside their reconstructions (uint8 [N, H, W, C]): columns original |
        reconstruction, twice side by side."""
        pairs = np.stack([examples, reconstructed], axis=1)  # [n, 2, H, W, C]
        k = 2 if len(pairs) >= 2 else 1
        pairs = pairs[: len(pairs) // k * k]
        return image_grid(rearrange(pairs, "(r k) two h w c -> r (k two) h w c", k=k),
                          headers=("original", "reconstruction") * k)

    def channels(self, examples: np.ndarray) -> int:
        return examples.shape[-1]

    def vq_input(self, batch: np.ndarray, channels: int) -> np.ndarray:
        return to_unit(as_uint8_images(batch, VQ_KIND, channels=(channels,)))

    def vq_grid(self, tokens: np.ndarray) -> np.ndarray:
        """[N, h*w] rows of a square grid, or [N, h, w] as they are."""
        if tokens.ndim == 2:
            side = math.isqrt(tokens.shape[1])
            if side * side != tokens.shape[1]:
                raise TokenizerError(
                    f"vq tokenizer got tokens of shape {list(tokens.shape)}: {tokens.shape[1]} per row is not a "
                    "square grid; pass [N, h, w] for non-square images.")
            tokens = rearrange(tokens, "n (h w) -> n h w", h=side)
        if tokens.ndim != 3:
            raise TokenizerError(f"vq tokenizer got tokens of shape {list(tokens.shape)}; decode expects "
                                 "[N, h*w] or [N, h, w].")
        return tokens

    def vq_output(self, x: np.ndarray) -> np.ndarray:
        return to_uint8(x)

    def check_fit(self, cfg: ml_collections.ConfigDict) -> None:
        """Nothing to refuse before the images are read (fit_batches checks train.augment)."""

    def fit_batches(self, cfg: ml_collections.ConfigDict, train: np.ndarray) -> Callable[[int], np.ndarray]:
        """Distinct random training images, augmented per train.augment (augment.image_batch)."""
        unknown = set(cfg.train.augment) - set(augment.AUGMENTATIONS)
        if unknown:
            raise TokenizerError(f"train.augment has {sorted(unknown)}; choose from {augment.AUGMENTATIONS}.")
        colour = augment.COLOUR_AUGMENTATIONS & set(cfg.train.augment)
        if colour and train.shape[-1] != 3:
            raise TokenizerError(f"train.augment {sorted(colour)} recolour RGB images, but {cfg.data.source} images "
                                 f"have {train.shape[-1]} channel(s); drop them from train.augment.")
        b, seed, augmentations = cfg.train.global_batch, cfg.data.seed, tuple(cfg.train.augment)
        return lambda step: augment.image_batch(train, step, b, seed, augmentations)

    def held_out(self, cfg: ml_collections.ConfigDict, examples: np.ndarray) -> np.ndarray:
        """Every held-out image."""
        return examples

    def reconstruction(self, inputs: np.ndarray, reconstructed: np.ndarray) -> dict[str, float]:
        """psnr from the mean squared error over all pixels of all images (hard images weigh in
        fully); psnr_image_mean averages per-image PSNRs, as many papers do (about 1 dB higher)."""
        return {"loss": float(np.mean(np.square(to_unit(inputs) - to_unit(reconstructed)))),
                "psnr": psnr(inputs, reconstructed),
                "psnr_image_mean": float(np.mean(psnr(inputs, reconstructed, axis=(1, 2, 3))))}


MODALITY = ImageModality()
