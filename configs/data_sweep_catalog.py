"""Effective data transferred from lm1b text to cifar10 images, at two model sizes (Hernandez et al. 2021).

  igpt-transfer --config configs/data_sweep_catalog.py:igpt-s --workdir gs://bucket/sweep_s \
      --config.target.data.data_dir=gs://bucket/tfds --config.sources.text.data_dir=gs://bucket/tfds
  igpt-transfer --config configs/data_sweep_catalog.py:mini --workdir gs://bucket/sweep_mini \
      --config.target.data.data_dir=gs://bucket/tfds --config.sources.text.data_dir=gs://bucket/tfds
  igpt-report gs://bucket/sweep_s gs://bucket/sweep_mini --out gs://bucket/sweep_report
The size after the colon picks the body: iGPT-S (24 x 512, 75.5M non-embedding parameters) or
mini (4 x 256, 3.1M). Each experiment has one model size; the report over both fits
D_T = k D_F^alpha N^beta per arm. cifar10's train split is cut to its first 1k, 3k and 10k
images (each a prefix of the next; 1,024 tokens each in a 512-colour palette); scratch also
trains on 30k and all 45k (after the 10% validation cut), so D_E is read inside its range.
Every run stops early on validation (patience 5 evals) or at 20k steps of 64 sequences; the
rate is chosen per arm and size on seeds 0-1 over a 3-point grid, then seeds 2-4 run it.
Prepare the data first as ArrayRecord (`tfds build lm1b cifar10 --file_format=array_record`)
and copy it to the bucket; each host copies it to local disk once.

Cost, as an upper bound (every run to its 20k-step cap: 1.3B tokens; FLOPs = 6 x parameters x
tokens): iGPT-S, 72 target runs x 6e17 FLOPs plus the lm1b source (50k steps x 256 x 1,024
tokens, 6e18): about 5e19 FLOPs, 8 hours on a v4-32 slice (16 chips at 40% of 275 TFLOP/s).
mini: about 25 times less, 20 minutes on the same slice. Early stopping ends the small sizes
well before the cap.
"""
import ml_collections

from igpt.data import specs
from igpt.gpt import optim_config, train_config
from igpt.model import model_config
from igpt.transfer.arms import SCRATCH
from igpt.transfer.experiment import experiment_config

SIZES = {"igpt-s": dict(lr=3e-4, lrs=(1e-4, 3e-4, 1e-3)), "mini": dict(lr=1e-3, lrs=(3e-4, 1e-3, 3e-3))}


def get_config(size: str = "igpt-s"):
    if size not in SIZES:
        raise ValueError(f"configs/data_sweep_catalog.py:{size}: choose a model size of {sorted(SIZES)}")
    c = experiment_config()
    c.name = f"lm1b-to-cifar10 effective data ({size})"
    c.model = model_config(size, dtype="bfloat16", remat="dots")
    c.sources = ml_collections.ConfigDict(dict(
        text=specs.text("tfds:lm1b", seq_len=1024, tokenizer="bytes", max_examples=2_000_000)))
    c.source.optim = optim_config(lr=SIZES[size]["lr"], warmup_steps=2000)
    c.source.train = train_config(steps=50_000, global_batch=256)
    c.source.train.eval_every = 2000
    c.target.data = specs.images("tfds:cifar10", res=32, tokenizer="palette:512")
    c.target.optim = optim_config(lr=SIZES[size]["lr"], warmup_steps=200)
    c.target.optim.schedule = "constant"  # early stopping decides the length, not a decay
    c.target.train = train_config(steps=20_000, global_batch=64)
    c.target.train.eval_every = 250
    c.target.train.patience = 5
    c.target.train.eval_sequences = 4096
    c.target.train.checkpoint_every = 1000
    c.arms = (SCRATCH, "text/full")
    c.seeds = (0, 1, 2, 3, 4)
    c.lr_seeds = (0, 1)
    c.lrs = SIZES[size]["lrs"]
    c.target_sizes = (1_000, 3_000, 10_000)
    c.scratch_sizes = (30_000, 45_000)
    c.mesh.fsdp = 4
    return c
