"""Transfer at accelerator scale on TFDS catalog data: lm1b (text) and nsynth (audio) -> cifar10.

  igpt-transfer --config configs/catalog_transfer.py --workdir gs://bucket/exp \
      --config.target.data.data_dir=gs://bucket/tfds --config.sources.text.data_dir=gs://bucket/tfds \
      --config.sources.audio.data_dir=gs://bucket/tfds
The datasets must be prepared beforehand as ArrayRecord (`tfds build lm1b nsynth cifar10
--file_format=array_record`). An iGPT-S body (24 x 512) in bf16 with fp32 master weights,
sequence 1,024 (32x32 images in a 512-colour palette), 5 seeds, 2 held-out scratch seeds, a
3-point learning-rate grid, and the four controls: the protocol a transfer claim needs.
Expect the scratch arm near 3.3 bits/token on cifar10 after 20k steps; the report gives each
arm's speedup at that loss. On a v4-32 slice, launch with scripts/launch_tpu_pod.py.
"""
import ml_collections

from igpt.data import specs
from igpt.model import model_config
from igpt.gpt import optim_config, train_config
from igpt.transfer.arms import SCRATCH
from igpt.transfer.experiment import experiment_config


def get_config():
    c = experiment_config()
    c.name = "lm1b-and-nsynth-to-cifar10"
    c.model = model_config("igpt-s", dtype="bfloat16", remat="dots")
    c.sources = ml_collections.ConfigDict(dict(
        text=specs.text("tfds:lm1b", seq_len=1024, tokenizer="bytes", max_examples=2_000_000),
        audio=specs.audio("tfds:nsynth", seq_len=1024, tokenizer="mulaw:256", sample_rate=16000),
    ))
    c.source.optim = optim_config(lr=3e-4, warmup_steps=2000)
    c.source.train = train_config(steps=50_000, global_batch=256)
    c.source.train.eval_every = 2000
    c.target.data = specs.images("tfds:cifar10", res=32, tokenizer="palette:512")
    c.target.optim = optim_config(lr=3e-4, warmup_steps=1000)
    c.target.train = train_config(steps=20_000, global_batch=256)
    c.target.train.eval_every = 500
    c.target.train.eval_sequences = 4096
    c.target.train.checkpoint_every = 2000
    c.target.optim.schedule = "constant"  # steps to a loss read where no arm's schedule is further along
    c.arms = (SCRATCH, "text/full", "audio/full", "text/frozen_body", "audio/frozen_body",
              "text/stats_init", "text/shuffled_source", "mimetic", "frozen_random")
    c.seeds = (0, 1, 2, 3, 4)
    c.heldout_seeds = (5, 6)  # scratch only: the report fixes its targets on them
    c.lrs = (1e-4, 3e-4, 1e-3)
    c.mesh.fsdp = 4
    return c
