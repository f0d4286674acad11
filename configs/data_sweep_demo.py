"""Effective data transferred from prose to images over fine-tuning set sizes (Hernandez et al. 2021).

  igpt-transfer --config configs/data_sweep_demo.py --workdir runs/data_sweep
The demo's model and prose source (configs/demo_transfer.py); the target's train split is cut
to its first 50, 150 and 450 8x8 photo crops (each a prefix of the next) and every arm trains
on each with early stopping on validation (patience 4 evals of 20 steps, at most 400 steps);
scratch also trains on 1,350 and all 3,226 crops, so D_E is read inside its measured range.
5 seeds, the rate the demo chose for every arm (6e-3 of 3e-3, 6e-3, 1.2e-2; one rate here, as
a per-size grid would triple the cost), two worker processes. The report adds a section with
D_T = D_E - D_F and the multiplier (D_F + D_T) / D_F per size, and says why there is no
scaling fit (one model size). Expect 10 to 15 minutes on 2 CPU cores (benchmarks/RESULTS.md).
"""
from igpt.data import specs
from igpt.gpt import optim_config, train_config
from igpt.model import model_config
from igpt.transfer.arms import SCRATCH
from igpt.transfer.experiment import experiment_config

SEQ = 64


def get_config():
    c = experiment_config()
    c.name = "prose-to-images effective data (data-size sweep)"
    c.model = model_config("nano")
    c.sources = dict(prose=specs.text("shipped:prose", seq_len=SEQ, tokenizer="bytes"))
    c.source.optim = optim_config(lr=2e-3, warmup_steps=30)
    c.source.train = train_config(steps=300, global_batch=32)
    c.source.train.eval_every = 100
    c.target.data = specs.images("shipped:photos", res=8, tokenizer="palette:64")
    c.target.optim = optim_config(lr=6e-3, warmup_steps=10)
    c.target.optim.schedule = "constant"
    c.target.train = train_config(steps=400, global_batch=32)
    c.target.train.eval_every = 20
    c.target.train.patience = 4
    c.target.train.eval_sequences = 512
    c.target.train.checkpoint_every = 100
    c.arms = (SCRATCH, "prose/full")
    c.seeds = (0, 1, 2, 3, 4)
    c.lrs = (6e-3,)
    c.target_sizes = (50, 150, 450)
    c.scratch_sizes = (1350, 3226)
    c.workers = 2
    return c
