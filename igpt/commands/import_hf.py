"""igpt-import HF_DIR --out DONOR_DIR

Converts a Hugging Face GPT-2-family checkpoint (HF_DIR: config.json and model.safetensors,
or model.safetensors.index.json and its shards; nothing is downloaded) into an igpt donor:
DONOR_DIR/checkpoints/0 (orbax; restores onto any mesh), config.json (the igpt model config
that runs it) and run.json. Train from it with --config.init.source=DONOR_DIR and that model
config (`igpt.transfer.donors.hf_gpt2.model_config(HF_DIR)` in a config file).
"""
from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="igpt-import", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("hf_dir", metavar="HF_DIR", help="directory with config.json and the safetensors weights")
    parser.add_argument("--out", required=True, help="donor directory to write (local or gs://)")
    args = parser.parse_args(argv)

    import jax

    from igpt.errors import fail_clearly
    from igpt.model import model_config
    from igpt.training.checkpoint import Checkpointer
    from igpt.training.rundir import RunDir
    from igpt.transfer.donors import hf_gpt2

    with fail_clearly():
        params, hf = hf_gpt2.load(args.hf_dir)
        overrides = hf_gpt2.model_overrides(hf)
        vocab, seq_len = hf_gpt2.vocab_size(hf), hf_gpt2.seq_len(hf)
        run = RunDir.at(args.out).prepare()
        ckpt = Checkpointer(run.checkpoints, keep=1, async_save=False)
        ckpt.save(0, {"params": jax.device_put(params)}, {"vocab": vocab, "seq_len": seq_len, "imported_from": str(args.hf_dir)})
        ckpt.close()
        run.write_config({"model": model_config("tiny", **overrides).to_dict(), "data": {"seq_len": seq_len}})
        run.update_info(task="hf-import", status="finished", step=0, steps=0, source=str(args.hf_dir))
    flags = " ".join(f"--config.model.{k}={v}" for k, v in overrides.items())
    print(f"igpt-import: {hf.get('model_type')} from {args.hf_dir} ({overrides['num_layers']} layers, width "
          f"{overrides['width']}, {overrides['num_heads']} heads, vocab {vocab}, {seq_len} positions) -> {args.out}\n"
          f"train from it with --config.init.source={args.out} {flags}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
