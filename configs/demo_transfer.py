"""The main job: does pretraining on English prose or on music speed up learning images?

  igpt-transfer --config configs/demo_transfer.py --workdir runs/demo
A 2-layer, width-64 GPT is pretrained on shipped English prose (UTF-8 bytes) and on synthetic
music (mu-law, 8 kHz), then trained on 8x8 natural-image crops (64-colour palette) against a
from-scratch baseline and a statistics-only control, under the full protocol at a small size:
each arm's learning rate chosen from a 3-rate grid on validation (seeds 0 and 1 run every
rate; seeds 2-4 the chosen one), 5 compared seeds with the same data order and token budget
per seed, a constant rate after warm-up, targets from 2 held-out scratch seeds, curves on
test. Two worker processes share the CPU cores. Expect 6 to 8 minutes on 2 CPU cores
(benchmarks/RESULTS.md), then runs/demo/report/report.html; README, "What the demo shows",
says what it can and cannot conclude.
"""
from igpt.data import specs
from igpt.gpt import optim_config, train_config
from igpt.model import model_config
from igpt.transfer.arms import SCRATCH
from igpt.transfer.experiment import experiment_config

SEQ = 64  # 8x8 images, and 64-token windows of the sources: one length, nothing interpolated


def get_config():
    c = experiment_config()
    c.name = "prose-and-music-to-images (demo)"
    c.model = model_config("nano")
    c.sources = dict(
        prose=specs.text("shipped:prose", seq_len=SEQ, tokenizer="bytes"),
        music=specs.audio("shipped:music", seq_len=SEQ, tokenizer="mulaw:256", sample_rate=8000),
    )
    c.source.optim = optim_config(lr=2e-3, warmup_steps=30)
    c.source.train = train_config(steps=300, global_batch=32)
    c.source.train.eval_every = 100
    c.source.train.eval_sequences = 512
    c.target.data = specs.images("shipped:photos", res=8, tokenizer="palette:64")
    c.target.optim = optim_config(lr=6e-3, warmup_steps=10)  # lr: each run takes one of c.lrs
    c.target.optim.schedule = "constant"
    c.target.train = train_config(steps=80, global_batch=32)
    c.target.train.eval_every = 16
    c.target.train.eval_sequences = 512
    c.target.train.checkpoint_every = 80
    c.arms = (SCRATCH, "prose/full", "music/full", "prose/stats_init")
    c.seeds = (0, 1, 2, 3, 4)
    c.lr_seeds = (0, 1)
    c.heldout_seeds = (5, 6)
    c.lrs = (3e-3, 6e-3, 1.2e-2)
    c.workers = 2
    return c
