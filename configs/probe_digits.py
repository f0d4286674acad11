"""Linear probes on shipped digits: scratch against a prose-pretrained body after a short run.

  python benchmarks/bench_probe.py --config configs/probe_digits.py --workdir runs/probe_digits
(or igpt-transfer --config configs/probe_digits.py --workdir runs/probe_digits, then
igpt-probe --workdir RUN on each target run). A 2-layer, width-64 GPT pretrained 300 steps on
shipped prose (bytes), then trained 150 steps on 8x8 digits (16 gray levels) from scratch and
from the prose body, 5 seeds each; every checkpoint (steps 50, 100, 150) is probed on each
layer, and each prose/full run is compared with scratch's of the same seed (CKA, stitching).
Expect about 7 minutes on 2 CPU cores (benchmarks/RESULTS.md, "Representations").
"""
from igpt.data import specs
from igpt.gpt import optim_config, train_config
from igpt.model import model_config
from igpt.transfer.arms import SCRATCH
from igpt.transfer.experiment import experiment_config

SEQ = 64  # 8x8 digits, and 64-byte windows of prose


def get_config():
    c = experiment_config()
    c.name = "prose-to-digits probes"
    c.model = model_config("nano")
    c.sources = dict(prose=specs.text("shipped:prose", seq_len=SEQ, tokenizer="bytes"))
    c.source.optim = optim_config(lr=2e-3, warmup_steps=30)
    c.source.train = train_config(steps=300, global_batch=32)
    c.source.train.eval_every = 100
    c.target.data = specs.images("shipped:digits", res=8, tokenizer="gray:16")
    c.target.optim = optim_config(lr=6e-3, warmup_steps=10)
    c.target.train = train_config(steps=150, global_batch=32)
    c.target.train.eval_every = 25
    c.target.train.eval_sequences = 512
    c.target.train.checkpoint_every = 50
    c.arms = (SCRATCH, "prose/full")
    c.seeds = (0, 1, 2, 3, 4)
    c.lrs = (6e-3,)  # probes compare representations, not speed: one rate, no grid
    c.workers = 2
    return c
