"""Data-layer throughput on this machine: palette encoding and the batch pipeline per modality.

  nice -n 19 python benchmarks/bench_data.py [--data_dir DIR]

Prints palette encode images/s (32x32 crops, 512 colours), then for images, text and audio:
the tokens/s of build_dataset (read, resize/resample, tokenize, pack) and of serving shuffled
64 x 1024-token batches. Shipped data is prepared into data_dir first if needed (not timed).
"""
from __future__ import annotations

import argparse
import time

from igpt.data import pipeline, specs

BATCH, SEQ_LEN = 64, 1024
SERVE_STEPS = 200


def _timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def palette_encode(data_dir: str | None):
    cfg = specs.images("shipped:photos", res=32, tokenizer="palette:512", data_dir=data_dir)
    crops = pipeline.load_examples(cfg, "train")
    tokenizer, fit_s = _timed(lambda: pipeline.build_tokenizer(cfg))
    tokenizer.encode(crops[:64])  # warm-up
    _, encode_s = _timed(lambda: tokenizer.encode(crops))
    print(f"palette:512 fit on {len(crops)} 32x32 crops: {fit_s:.1f} s (incl. JIT); "
          f"encode: {len(crops) / encode_s:,.0f} images/s ({len(crops) * 1024 / encode_s / 1e6:.2f} M pixels/s)")
    return tokenizer


def pipeline_throughput(name: str, cfg, tokenizer) -> None:
    pipeline.load_examples(cfg, cfg.train_split)  # prepare/cache outside the timing
    ds, build_s = _timed(lambda: pipeline.build_dataset(cfg, "train", tokenizer))
    built = ds.tokens.size
    _, serve_s = _timed(lambda: [ds.batch(step, BATCH) for step in range(SERVE_STEPS)])
    served = SERVE_STEPS * BATCH * SEQ_LEN
    print(f"{name:6s} {cfg.source:15s} {cfg.tokenizer:11s} build_dataset: {built / build_s / 1e6:6.2f} M tokens/s "
          f"({len(ds)} sequences in {build_s:.1f} s); batches of {BATCH}x{SEQ_LEN}: "
          f"{served / serve_s / 1e6:6.1f} M tokens/s ({SERVE_STEPS / serve_s:,.0f} batches/s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", default=None, help="TFDS data_dir (default ~/.cache/igpt/tfds)")
    args = parser.parse_args()
    palette = palette_encode(args.data_dir)
    pipeline_throughput("images", specs.images("shipped:photos", res=32, tokenizer="palette:512",
                                               data_dir=args.data_dir), palette)
    text = specs.text("shipped:prose", seq_len=SEQ_LEN, data_dir=args.data_dir)
    music = specs.audio("shipped:music", seq_len=SEQ_LEN, sample_rate=8000, data_dir=args.data_dir)
    for name, cfg in (("text", text), ("audio", music)):
        pipeline_throughput(name, cfg, pipeline.build_tokenizer(cfg))


if __name__ == "__main__":
    main()
