"""The main job: does pretraining on English prose or on music speed up learning images?

  igpt-transfer --config configs/demo_transfer.py --workdir runs/demo
A 2-layer, width-64 GPT starts from the shipped prose and music donors (igpt/transfer/donors/
shipped: trained 4,000 steps on shipped English prose as UTF-8 bytes and on synthetic music as
mu-law at 8 kHz by configs/donors.py; nothing is pretrained here), then trains on 8x8
natural-image crops (64-colour palette) against a from-scratch baseline and a statistics-only
control, under the full protocol at a small size: each arm's learning rate chosen from a 3-rate grid on validation
(seeds 0 and 1 run every rate; seeds 2-4 the chosen one), 5 compared seeds with the same data
order and token budget per seed, a constant rate after warm-up, targets from 2 held-out scratch
seeds, curves on test. Two worker processes share the CPU cores. README, "What the demo shows",
gives its time on 2 CPU cores and what it can and cannot conclude; then runs/demo/report/report.html.
"""
from igpt.data import specs
from igpt.gpt import optim_config, train_config
from igpt.model import model_config
from igpt.transfer.arms import SCRATCH
from igpt.transfer.experiment import experiment_config


def get_config():
    c = experiment_config()
    c.name = "prose-and-music-to-images (demo)"
    c.model = model_config("nano")  # the shipped donors' shape
    c.sources = dict(prose="shipped:prose", music="shipped:music")
    c.target.data = specs.images("shipped:photos", res=8, tokenizer="palette:64")  # 64 tokens: the donors' length
    c.target.optim = optim_config(lr=6e-3, warmup_steps=10)  # lr: each run takes one of c.lrs
    c.target.optim.schedule = "constant"
    c.target.train = train_config(steps=80, global_batch=32)
    c.target.train.eval_every = 16
    c.target.train.eval_sequences = 512
    c.target.train.checkpoint_every = 80
    c.bridge.steps, c.bridge.classes, c.bridge.lr = 200, 10, 3e-3  # for a bridge arm: --config.arms adds one
    c.arms = (SCRATCH, "prose/full", "music/full", "prose/stats_init")
    c.seeds = (0, 1, 2, 3, 4)
    c.lr_seeds = (0, 1)
    c.heldout_seeds = (5, 6)
    c.lrs = (3e-3, 6e-3, 1.2e-2)
    c.workers = 2
    return c
