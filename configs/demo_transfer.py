"""The main job: does pretraining on English prose or on music speed up learning images?

  igpt-transfer --config configs/demo_transfer.py --workdir runs/demo
A 2-layer, width-128 GPT is pretrained on shipped English prose (UTF-8 bytes) and on
synthetic music (mu-law, 8 kHz), then trained on 8x8 natural-image crops (64-colour palette)
against a from-scratch baseline and a statistics-only control, 3 seeds each, with the same
data order and token budget per seed, a constant learning rate after warm-up, selection on
validation and curves on test. Expect about 5 minutes on 2 CPU cores, then
runs/demo/report/report.html. It shows the machinery, not a claim: one learning rate and 3
seeds cannot support one, and the report says so (README, "What the demo shows").
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
    c.model = model_config("nano", width=128)
    c.sources = dict(
        prose=specs.text("shipped:prose", seq_len=SEQ, tokenizer="bytes"),
        music=specs.audio("shipped:music", seq_len=SEQ, tokenizer="mulaw:256", sample_rate=8000),
    )
    c.source.optim = optim_config(lr=2e-3, warmup_steps=30)
    c.source.train = train_config(steps=300, global_batch=32)
    c.source.train.eval_every = 100
    c.source.train.eval_sequences = 512
    c.target.data = specs.images("shipped:photos", res=8, tokenizer="palette:64")
    c.target.optim = optim_config(lr=2e-3, warmup_steps=10)
    c.target.optim.schedule = "constant"
    c.target.train = train_config(steps=100, global_batch=32)
    c.target.train.eval_every = 20
    c.target.train.eval_sequences = 512
    c.target.train.checkpoint_every = 100
    c.arms = (SCRATCH, "prose/full", "music/full", "prose/stats_init")
    c.seeds = (0, 1, 2)
    c.lrs = (2e-3,)
    return c
