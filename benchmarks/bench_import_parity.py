"""GPT-2 import parity (issue 22): the largest difference between igpt's logits and
transformers' PyTorch forward on the same tokens, for the GPT-2-shaped model the slow test
builds (transformers' random init, perturbed, saved as safetensors), on 1 and 8 devices.

  XLA_FLAGS=--xla_force_host_platform_device_count=8 python benchmarks/bench_import_parity.py

Needs the `hf` extra (pip install -c constraints.txt -e '.[hf]'); downloads nothing.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import test_donors  # noqa: E402  (the slow test's model and helpers: one definition of both)

from igpt.transfer import init as transfer_init  # noqa: E402
from igpt.transfer.donors import hf_gpt2  # noqa: E402


def main() -> None:
    directory = tempfile.mkdtemp()
    fixture = test_donors.transformers_gpt2.__wrapped__  # the pytest fixture's body
    factory = type("Factory", (), {"mktemp": staticmethod(lambda name: Path(directory) / name)})
    (Path(directory) / "transformers_gpt2").mkdir()
    path, tokens, want = fixture(factory)
    gpt2 = test_donors.GPT2
    vocab = gpt2["vocab_size"]
    init = transfer_init.init_config("full", f"hf:{path}")
    inputs = np.where(tokens == gpt2["bos_token_id"], vocab, tokens)
    for devices in (1, 8):
        got = test_donors.igpt_logits(hf_gpt2.model_config(path), vocab, gpt2["n_positions"], init, init.source,
                                      inputs, devices)
        print(f"{devices} device(s): max |igpt - transformers| = {np.max(np.abs(got - want)):.2g} "
              f"(logits' std {np.std(want):.2f}, tokens {tokens.shape})")


if __name__ == "__main__":
    main()
