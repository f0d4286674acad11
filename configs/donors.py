"""The shipped donors: a prose and a music GPT in the demo's body shape, trained long enough to
have learned their modality; igpt/transfer/donors/shipped/ holds them (init.source="shipped:prose").

  igpt-train --config configs/donors.py:prose --workdir runs/donors/prose
  igpt-train --config configs/donors.py:music --workdir runs/donors/music
  python -m igpt.transfer.donors.ship runs/donors/prose prose
Each trains a 2-layer, width-64 GPT (configs/demo_transfer.py's target model, so the demo
transfers from it) on 64-token windows with the demo's tokenizers, 4,000 steps of 2,048 tokens.
README, "Shipped donors", gives the time and the eval loss each reached.
"""
import ml_collections

from igpt.data import specs
from igpt.gpt import base_config, optim_config, train_config
from igpt.model import model_config

SEQ = 64  # the demo's sequence length: 8x8 images and 64-token windows of the sources
DATA = {
    "prose": lambda: specs.text("shipped:prose", seq_len=SEQ, tokenizer="bytes"),
    "music": lambda: specs.audio("shipped:music", seq_len=SEQ, tokenizer="mulaw:256", sample_rate=8000),
}


def get_config(name: str = "prose") -> ml_collections.ConfigDict:
    if name not in DATA:
        raise ValueError(f"unknown donor {name!r}; choose one of {sorted(DATA)} (--config configs/donors.py:prose).")
    c = base_config(
        model=model_config("nano"),
        data=DATA[name](),
        optim=optim_config(lr=2e-3, warmup_steps=200),
        train=train_config(steps=4000, global_batch=32),
    )
    c.train.eval_every = 500
    c.train.eval_sequences = 1024
    c.train.checkpoint_every = 500
    return c
