"""igpt-sample --workdir RUN --out DIR [--num 8] [--temperature 1.0] [--top_k 0] [--prompt_fraction 0.5]

Loads RUN's config.json, tokenizer and latest checkpoint (written on any mesh), then samples:
completions of the first `prompt_fraction` of real eval sequences (the top half of an image,
the start of a sound) and unconditional samples. Writes by modality:
  images  completions.png (rows: prompt with the rest greyed, completion, original) and
          unconditional.png
  audio   completion_I.wav, original_I.wav, unconditional_I.wav
  text    completions.txt, unconditional.txt
and samples.npz with every token. Temperature 0 is greedy decoding.
"""
from __future__ import annotations

import argparse
import math
import sys
import wave
from pathlib import Path

import numpy as np
from einops import rearrange

GREY = 128
MIN_TILE = 64  # small images (8x8 digits) are scaled up to at least this many pixels a side


def image_grid(images: np.ndarray) -> np.ndarray:
    """uint8 [rows, cols, H, W(, C)] -> one RGB picture with a 1-pixel grey border around
    every tile, each tile scaled up by a whole factor to at least MIN_TILE pixels."""
    if images.ndim == 4:
        images = images[..., None]
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    scale = max(1, math.ceil(MIN_TILE / images.shape[2]))
    images = np.repeat(np.repeat(images, scale, axis=2), scale, axis=3)
    images = np.pad(images, ((0, 0), (0, 0), (1, 1), (1, 1), (0, 0)), constant_values=GREY)
    return rearrange(images, "r c h w ch -> (r h) (c w) ch")


def grey_after(images: np.ndarray, prompt_tokens: int, token_rows: int, token_cols: int) -> np.ndarray:
    """Images [n, H, W(, C)] with every pixel outside the first `prompt_tokens` raster-order
    tokens of a token_rows x token_cols grid set to grey: what the model was shown."""
    shown = (np.arange(token_rows * token_cols) < prompt_tokens).reshape(token_rows, token_cols)
    h, w = images.shape[1] // token_rows, images.shape[2] // token_cols
    shown = np.repeat(np.repeat(shown, h, axis=0), w, axis=1)
    shown = shown.reshape(shown.shape + (1,) * (images.ndim - 3))
    return np.where(shown, images, np.uint8(GREY))


def write_wav(path: Path, wave_float: np.ndarray, sample_rate: int) -> None:
    """Mono 16-bit PCM from floats in [-1, 1]."""
    pcm = np.round(np.clip(wave_float, -1.0, 1.0) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(sample_rate)
        f.writeframes(pcm.tobytes())


def save_outputs(out: Path, modality: str, tokenizer, sample_rate: int, prompt_tokens: int,
                 originals: np.ndarray, completions: np.ndarray, unconditional: np.ndarray) -> list[Path]:
    """Decodes the three token sets [n, T] and writes them as the modality's media."""
    written = []
    if modality == "image":
        side = math.isqrt(originals.shape[1])
        orig, comp, uncond = (tokenizer.decode(t) for t in (originals, completions, unconditional))
        shown = grey_after(orig, prompt_tokens, side, side)
        from PIL import Image
        for name, grid in (("completions.png", np.stack([shown, comp, orig], axis=1)),
                           ("unconditional.png", uncond[:, None])):
            Image.fromarray(image_grid(grid)).save(out / name)
            written.append(out / name)
    elif modality == "audio":
        for name, tokens in (("completion", completions), ("original", originals), ("unconditional", unconditional)):
            for i, w in enumerate(tokenizer.decode(tokens)):
                write_wav(out / f"{name}_{i}.wav", w, sample_rate)
                written.append(out / f"{name}_{i}.wav")
    else:
        for name, tokens in (("completions.txt", completions), ("unconditional.txt", unconditional)):
            texts = tokenizer.decode(tokens)
            (out / name).write_text("\n\n=====\n\n".join(texts))
            written.append(out / name)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="igpt-sample", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True, help="a training run directory")
    parser.add_argument("--out", required=True, help="where the samples go (created)")
    parser.add_argument("--num", type=int, default=8, help="sequences of each kind")
    parser.add_argument("--temperature", type=float, default=1.0, help="0 = greedy")
    parser.add_argument("--top_k", type=int, default=0, help="sample among the k likeliest tokens (0 = all)")
    parser.add_argument("--prompt_fraction", type=float, default=0.5,
                        help="share of each real sequence given as the prompt")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: the latest)")
    args = parser.parse_args(argv)
    if args.num < 1 or args.temperature < 0 or args.top_k < 0 or not 0.0 <= args.prompt_fraction < 1.0:
        parser.error("need --num >= 1, --temperature >= 0, --top_k >= 0 and 0 <= --prompt_fraction < 1.")

    import jax
    from flax import nnx

    from igpt import sharding
    from igpt.data import pipeline
    from igpt.errors import fail_clearly
    from igpt.sample import axis_rules, generate, load_run

    with fail_clearly():
        mesh_cfg = sharding.mesh_config()
        mesh_cfg.num_devices = math.gcd(args.num, jax.device_count())  # the batch splits evenly
        mesh = sharding.make_mesh(mesh_cfg)
        run = load_run(args.workdir, mesh, args.step)
        cfg, seq_len = run.config, run.config.data.seq_len
        prompt_tokens = int(round(args.prompt_fraction * seq_len))
        eval_ds = pipeline.build_dataset(cfg.data, cfg.data.eval_split, run.tokenizer)
        originals = eval_ds.batch(0, args.num, shuffle=False)
        key = jax.random.key(args.seed)
        rules = axis_rules(cfg)
        with jax.set_mesh(mesh), nnx.logical_axis_rules(rules):
            prompt = sharding.put_batch(originals[:, :prompt_tokens], mesh, rules)
            completions = generate(run.graphdef, run.params, prompt, key, args.temperature, args.top_k)
            empty = sharding.put_batch(originals[:, :0], mesh, rules)
            unconditional = generate(run.graphdef, run.params, empty, jax.random.fold_in(key, 1),
                                     args.temperature, args.top_k)
        completions, unconditional = np.asarray(completions), np.asarray(unconditional)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        np.savez(out / "samples.npz", originals=originals, completions=completions, unconditional=unconditional,
                 prompt_tokens=prompt_tokens)
        written = save_outputs(out, cfg.data.modality, run.tokenizer, cfg.data.sample_rate, prompt_tokens,
                               originals, completions, unconditional)
    print(f"igpt-sample: step {run.step} of {args.workdir}: wrote {', '.join(p.name for p in written[:6])}"
          f"{' ...' if len(written) > 6 else ''} and samples.npz to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
