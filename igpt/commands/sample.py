"""igpt-sample --workdir RUN --out DIR [--num 8] [--temperature 1.0] [--top_k 0] [--prompt_fraction 0.5] [--seconds S]

Loads RUN's config.json, tokenizer and latest checkpoint (written on any mesh), then samples:
completions of the first `prompt_fraction` of real eval sequences (the top half of an image,
the start of a sound) and unconditional samples. Writes by modality (igpt/modalities/):
  images  completions.png (rows: prompt with the rest greyed, completion, original) and
          unconditional.png
  audio   completion_I.wav, original_I.wav, unconditional_I.wav
  text    completions.txt, unconditional.txt
and samples.npz with every token. Temperature 0 is greedy decoding. --workdir and --out may be
local or gs://.

Audio runs only: --seconds S makes the completions and unconditional samples S seconds long at
the run's sample rate (to within one token's worth of samples). Past the model's sequence the
window slides: each further half sequence is drawn seeing the half before it
(igpt.sample.generate_long). The originals stay one sequence long.
"""
from __future__ import annotations

import argparse
import io
import math
import os
import sys

import numpy as np
from etils import epath

from igpt.modalities import get


def save_outputs(out: str | os.PathLike, modality: str, tokenizer, sample_rate: int, prompt_tokens: int,
                 originals: np.ndarray, completions: np.ndarray, unconditional: np.ndarray) -> list[epath.Path]:
    """Decodes the three token sets [n, T] and writes them as the modality's media."""
    return get(modality).write_samples(out, tokenizer, sample_rate, prompt_tokens, originals, completions,
                                       unconditional)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="igpt-sample", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True, help="a training run directory")
    parser.add_argument("--out", required=True, help="where the samples go (created), local or gs://")
    parser.add_argument("--num", type=int, default=8, help="sequences of each kind")
    parser.add_argument("--temperature", type=float, default=1.0, help="0 = greedy")
    parser.add_argument("--top_k", type=int, default=0, help="sample among the k likeliest tokens (0 = all)")
    parser.add_argument("--prompt_fraction", type=float, default=0.5,
                        help="share of each real sequence given as the prompt")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: the latest)")
    parser.add_argument("--seconds", type=float, default=None,
                        help="audio runs only: completions and unconditional samples this many seconds long, "
                             "past the model's sequence by a sliding window (default: one sequence)")
    args = parser.parse_args(argv)
    if args.num < 1 or args.temperature < 0 or args.top_k < 0 or not 0.0 <= args.prompt_fraction < 1.0:
        parser.error("need --num >= 1, --temperature >= 0, --top_k >= 0 and 0 <= --prompt_fraction < 1.")
    if args.seconds is not None and not (math.isfinite(args.seconds) and args.seconds > 0):
        parser.error(f"--seconds {args.seconds:g}: give a positive length in seconds.")
    from igpt.paths import as_path, is_object_storage
    if as_path(args.out).is_file():  # said now, not after the sampling
        parser.error(f"--out {args.out} is a file; give a directory (created if missing).")

    import jax
    from flax import nnx

    from igpt import sharding
    from igpt.data import pipeline
    from igpt.errors import fail_clearly
    from igpt.modalities import ModalityError
    from igpt.sample import axis_rules, generate, generate_long, load_run, read_config, tokens_for_seconds

    with fail_clearly():
        if args.seconds is not None:  # refused before the checkpoint is read
            modality = read_config(args.workdir).data.modality
            if modality != "audio":
                raise ModalityError(f"--seconds is for audio runs; {args.workdir} is a run on {modality} "
                                    "(its samples are one sequence long): drop --seconds.")
        mesh_cfg = sharding.mesh_config()
        mesh_cfg.num_devices = math.gcd(args.num, jax.device_count())  # the batch splits evenly
        mesh = sharding.make_mesh(mesh_cfg)
        run = load_run(args.workdir, mesh, args.step)
        cfg, seq_len = run.config, run.config.data.seq_len
        prompt_tokens = int(round(args.prompt_fraction * seq_len))
        eval_ds = pipeline.build_dataset(cfg.data, "test", run.tokenizer)
        originals = eval_ds.batch(0, args.num, shuffle=False)
        key = jax.random.key(args.seed)
        rules = axis_rules(cfg)
        draw = dict(temperature=args.temperature, top_k=args.top_k, token_offset=run.token_offset)
        with jax.set_mesh(mesh), nnx.logical_axis_rules(rules):
            put = lambda rows: sharding.put_batch(rows, mesh, rules)  # noqa: E731
            if args.seconds is None:
                completions = generate(run.graphdef, run.params, put(originals[:, :prompt_tokens]), key, **draw)
                unconditional = generate(run.graphdef, run.params, put(originals[:, :0]), jax.random.fold_in(key, 1),
                                         **draw)
            else:
                total = tokens_for_seconds(run.tokenizer, seq_len, cfg.data.sample_rate, args.seconds)
                prompt_tokens = min(prompt_tokens, total)
                completions = generate_long(run.graphdef, run.params, originals[:, :prompt_tokens], key, total,
                                            put, **draw)
                unconditional = generate_long(run.graphdef, run.params, originals[:, :0], jax.random.fold_in(key, 1),
                                              total, put, **draw)
        completions, unconditional = np.asarray(completions), np.asarray(unconditional)
        out = as_path(args.out)
        if not is_object_storage(out):  # object storage has no directories to create
            out.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()  # np.savez seeks, which an object being written to gs:// cannot
        np.savez(buffer, originals=originals, completions=completions, unconditional=unconditional,
                 prompt_tokens=prompt_tokens)
        (out / "samples.npz").write_bytes(buffer.getvalue())
        written = save_outputs(out, cfg.data.modality, run.tokenizer, cfg.data.sample_rate, prompt_tokens,
                               originals, completions, unconditional)
    print(f"igpt-sample: step {run.step} of {args.workdir}: wrote {', '.join(p.name for p in written[:6])}"
          f"{' ...' if len(written) > 6 else ''} and samples.npz to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
