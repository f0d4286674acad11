"""The main job: does pretraining on English prose or on music speed up learning images?

  igpt-transfer --config configs/demo_transfer.py --workdir runs/demo
A 2-layer, width-128 GPT is pretrained on shipped English prose (UTF-8 bytes) and on
synthetic music (mu-law, 8 kHz), then trained on 16x16 natural-image crops (128-colour
palette) against a from-scratch baseline, 3 seeds each, with the same data order and token
budget per seed. Expect about 8 minutes on 2 CPU cores, then runs/demo/report/report.html.
"""
from igpt.data import specs
from igpt.model import model_config
from igpt.gpt import optim_config, train_config
from igpt.transfer.arms import SCRATCH
from igpt.transfer.experiment import experiment_config


def get_config():
    c = experiment_config()
    c.name = "prose-and-music-to-images (demo)"
    c.model = model_config("nano", width=128)
    c.sources = dict(
        prose=specs.text("shipped:prose", seq_len=256, tokenizer="bytes"),
        music=specs.audio("shipped:music", seq_len=256, tokenizer="mulaw:256", sample_rate=8000),
    )
    c.source.optim = optim_config(lr=2e-3, warmup_steps=30)
    c.source.train = train_config(steps=200, global_batch=16)
    c.source.train.eval_every = 100
    c.target.data = specs.images("shipped:photos", res=16, tokenizer="palette:128")
    c.target.optim = optim_config(lr=2e-3, warmup_steps=20)
    c.target.train = train_config(steps=120, global_batch=16)
    c.target.train.eval_every = 10
    c.target.train.eval_batches = 2
    c.target.train.checkpoint_every = 50
    c.arms = (SCRATCH, "prose/full", "music/full")
    c.seeds = (0, 1, 2)
    c.lrs = (2e-3,)
    return c
