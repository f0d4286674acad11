"""A tiny GPT on 16x16 natural-image crops (shipped photos, 64-colour palette): a smoke run.

  igpt-train --config configs/tiny_images.py --workdir runs/tiny_images
Expect eval loss to fall from ~4.2 nats (ln 64) to below 3 nats within 300 steps on 2 CPU
cores (about 2 minutes).
"""
from igpt.data import specs
from igpt.model import model_config
from igpt.gpt import base_config, optim_config, train_config


def get_config():
    c = base_config(
        model=model_config("nano"),
        data=specs.images("shipped:photos", res=16, tokenizer="palette:64"),
        optim=optim_config(lr=3e-3, warmup_steps=20),
        train=train_config(steps=300, global_batch=16),
    )
    c.train.eval_every = 50
    c.train.checkpoint_every = 100
    return c
