"""Does pretraining on English prose speed up learning images as learned VQ codes?

The target is 32x32 natural-image crops as 64 VQ tokens each (4x downsampling, 512 codes),
so fit the tokenizer first, then run the experiment:

  igpt-fit-tokenizer --config configs/vq_images.py --workdir runs/vq_images
  igpt-transfer --config configs/transfer_vq_images.py --workdir runs/transfer_vq

A 2-layer, width-128 GPT is pretrained on shipped prose (UTF-8 bytes), then trained on the VQ
tokens against a from-scratch baseline and a statistics-only control under the demo's protocol
(configs/demo_transfer.py: rates chosen on validation of seeds 0-1, 5 compared seeds, 2
held-out scratch seeds, a constant rate). Another tokenizer directory is
--config.target.data.tokenizer=vq:DIR; the tokens per image come from it. Not timed: 29 target
runs of 200 steps at width 128, several times the demo's work; then
runs/transfer_vq/report/report.html.
"""
from igpt.data import specs
from igpt.model import model_config
from igpt.gpt import optim_config, train_config
from igpt.transfer.arms import SCRATCH
from igpt.transfer.experiment import experiment_config

RES = 32
VQ_DIR = "runs/vq_images/tokenizer"  # written by the igpt-fit-tokenizer command above


def get_config():
    c = experiment_config()
    c.name = "prose-to-vq-image-tokens"
    c.model = model_config("nano", width=128)
    c.sources = dict(prose=specs.text("shipped:prose", seq_len=256, tokenizer="bytes"))
    c.source.optim = optim_config(lr=2e-3, warmup_steps=30)
    c.source.train = train_config(steps=300, global_batch=16)
    c.source.train.eval_every = 100
    c.target.data = specs.images("shipped:photos", res=RES, tokenizer=f"vq:{VQ_DIR}")
    c.target.optim = optim_config(lr=2e-3, warmup_steps=20)  # lr: each run takes one of c.lrs
    c.target.optim.schedule = "constant"
    c.target.train = train_config(steps=200, global_batch=32)
    c.target.train.eval_every = 20
    c.target.train.eval_sequences = 512
    c.target.train.checkpoint_every = 100
    c.arms = (SCRATCH, "prose/full", "prose/stats_init")
    c.seeds = (0, 1, 2, 3, 4)
    c.lr_seeds = (0, 1)
    c.heldout_seeds = (5, 6)
    c.lrs = (1e-3, 2e-3, 4e-3)
    c.workers = 2
    return c
