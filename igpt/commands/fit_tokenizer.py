"""igpt-fit-tokenizer: fit an image tokenizer on a dataset's train split, save it, and show
what it keeps: held-out originals over their reconstructions (a PNG grid) and the held-out PSNR.

  igpt-fit-tokenizer --data shipped:photos --tokenizer palette:512 --res 32 --out runs/palette512

A training run then uses it with `--config.data.tokenizer=runs/palette512`.

  igpt-fit-tokenizer --config configs/vq_images.py --workdir runs/vq_images [--config.a.b=v ...]

trains a learned VQ tokenizer instead (igpt/tokenizers/vq/task.py) and saves it to runs/vq_images/tokenizer,
used as `data.tokenizer="vq:runs/vq_images/tokenizer"`.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np
from einops import rearrange

GRID_COLUMNS = 8
GRID_PIXELS = 96  # each cell is upscaled (nearest) to about this size so pixels stay visible
IMAGE_KINDS = ("palette", "gray")  # the tokenizers this command fits without a config


def comparison_grid(original: np.ndarray, reconstructed: np.ndarray, columns: int = GRID_COLUMNS) -> np.ndarray:
    """uint8 RGB image: rows of originals, each followed by the row of their reconstructions."""
    columns = max(1, min(columns, len(original)))
    n = len(original) // columns * columns
    pairs = np.stack([original[:n], reconstructed[:n]])  # [2, n, h, w, c]
    grid = rearrange(pairs, "two (r k) h w c -> (r two h) (k w) c", k=columns)
    grid = np.repeat(grid, 3, axis=-1) if grid.shape[-1] == 1 else grid
    scale = max(1, GRID_PIXELS // original.shape[1])
    return np.repeat(np.repeat(grid, scale, axis=0), scale, axis=1)


def fit_vq(argv: list[str]) -> None:
    """igpt-fit-tokenizer --config configs/vq_images.py --workdir DIR [--config.a.b=v ...]

    Flags live in a FlagValues of their own, so this shares a command with the argparse
    palette path and defines nothing at import time."""
    from absl import flags
    from ml_collections import config_flags

    from igpt import distributed
    from igpt.errors import fail_clearly, parse_flags_clearly
    from igpt.tokenizers.vq.task import fit

    values = flags.FlagValues()
    config = config_flags.DEFINE_config_file("config", None, "VQ tokenizer config with get_config().",
                                             flag_values=values)
    workdir = flags.DEFINE_string("workdir", None, "Run directory: checkpoints, metrics.jsonl, tokenizer/.",
                                  flag_values=values)
    rest = parse_flags_clearly(["igpt-fit-tokenizer", *argv], values)
    if len(rest) > 1 or config.value is None or not workdir.value:
        raise SystemExit("usage: igpt-fit-tokenizer --config configs/vq_images.py --workdir DIR "
                         f"[--config.a.b=v ...]{f' (unexpected {rest[1:]})' if len(rest) > 1 else ''}")
    with fail_clearly():
        fit(config.value, workdir.value)
    distributed.shutdown()


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if any(a.startswith(("--config", "--workdir")) for a in argv):
        return fit_vq(argv)
    parser = argparse.ArgumentParser(
        prog="igpt-fit-tokenizer", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="%(prog)s --data SOURCE --tokenizer palette:K|gray:L [--res N] --out DIR\n"
              "       %(prog)s --config configs/vq_X.py --workdir DIR [--config.a.b=v ...]")
    parser.add_argument("--data", required=True, help="shipped:photos | shipped:digits | tfds:NAME")
    parser.add_argument("--tokenizer", required=True, help="palette:K or gray:LEVELS")
    parser.add_argument("--res", type=int, default=32, help="images are resized/centre-cropped to res x res")
    parser.add_argument("--out", required=True, help="directory the tokenizer is saved to (local or gs://)")
    parser.add_argument("--data_dir", default=None, help="TFDS data_dir (default ~/.cache/igpt/tfds)")
    parser.add_argument("--max_examples", type=int, default=0, help="cap on images read per split (0 = all)")
    args = parser.parse_args(argv)

    from igpt.paths import as_path
    from igpt.tokenizers.base import parse_spec
    if parse_spec(args.tokenizer).kind not in IMAGE_KINDS:
        parser.error(f"--tokenizer {args.tokenizer!r}: this fits an image tokenizer, palette:K or gray:LEVELS "
                     "(a learned VQ one: --config configs/vq_images.py --workdir DIR).")
    if args.res < 1 or args.max_examples < 0:
        parser.error(f"need --res >= 1 and --max_examples >= 0 (got {args.res} and {args.max_examples}).")
    if as_path(args.out).is_file():
        parser.error(f"--out {args.out} is a file; give a directory (created if missing).")

    from igpt.errors import fail_clearly
    with fail_clearly():
        fit_palette(args)


def fit_palette(args: argparse.Namespace) -> None:
    """Fits, measures and draws first; writes --out only once all of that worked, so a failed
    command leaves no tokenizer behind."""
    from igpt.data import pipeline, specs
    from igpt.modalities.image import as_tokenizer_input, write_png
    from igpt.tokenizers.base import tokenizer_path
    from igpt.tokenizers.reconstruction import psnr

    data_cfg = specs.images(args.data, res=args.res, tokenizer=args.tokenizer, data_dir=args.data_dir,
                            max_examples=args.max_examples)
    tokenizer = pipeline.build_tokenizer(data_cfg)
    held_out = as_tokenizer_input(tokenizer.kind, pipeline.load_examples(data_cfg, data_cfg.test_split))
    reconstructed = tokenizer.decode(tokenizer.encode(held_out)).reshape(held_out.shape)
    # Spread the grid over the whole split so several held-out photos appear.
    shown = np.linspace(0, len(held_out) - 1, min(len(held_out), 4 * GRID_COLUMNS)).astype(int)
    grid = comparison_grid(held_out[shown], reconstructed[shown])
    out = tokenizer_path(args.out)
    tokenizer.save(out)
    grid_path = out / "reconstructions.png"
    write_png(grid_path, grid)
    print(f"{args.tokenizer} on {args.data} at {args.res}x{args.res}: held-out PSNR "
          f"{psnr(held_out, reconstructed):.2f} dB over {len(held_out)} {data_cfg.test_split} images; "
          f"vocab {tokenizer.vocab_size}; saved to {out}; grid {grid_path}")


if __name__ == "__main__":
    sys.exit(main())
