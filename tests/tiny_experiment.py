"""A tiny transfer experiment on 8x8 digits (16 gray levels), for the experiment tests.

  igpt-transfer --config tests/tiny_experiment.py --workdir /tmp/exp --config.target.data.data_dir=/tmp/tfds
Sources: "digits" (the target's own distribution: a planted positive) and "noise" (uniform
random pixels as 256 gray levels: uniformly random tokens, another vocabulary, so only the
body is carried over: nothing to transfer). Sources train at lr 2e-3: at 1e-2, Adam on pure
noise gradients random-walks the body weights to several times their init scale, and the
noise arm shows real negative transfer (0.4x measured), not a neutral control.
The "donors" variant starts from the shipped prose donor instead (nothing pretrained here).
"""
import ml_collections

from igpt.data import specs
from igpt.model import model_config
from igpt.gpt import optim_config, train_config
from igpt.transfer.arms import SCRATCH
from igpt.transfer.experiment import experiment_config


def get_config(data_dir: str = "~/.cache/igpt/tfds", variant: str = "planted"):
    """variant "planted": the two planted arms at one rate, 3 seeds (the machinery); "controls":
    every control arm beside digits/full, 5 seeds, a 3-rate grid and fixed targets (a claim);
    "donors": the shipped prose donor through full, bridge, partial bridge (block 1 only) and
    grow_vocab arms, 2 seeds at one rate."""
    c = experiment_config()
    c.name = "tiny digits transfer"
    c.model = model_config("nano")
    c.sources = ml_collections.ConfigDict(dict(
        digits=specs.images("shipped:digits", res=8, tokenizer="gray:16", data_dir=data_dir),
        noise=specs.images("shipped:noise", res=8, tokenizer="gray:256", data_dir=data_dir)))
    c.source.optim = optim_config(lr=2e-3, warmup_steps=10)
    c.source.train = train_config(steps=150, global_batch=32)
    c.source.train.eval_every = 50
    c.target.data = specs.images("shipped:digits", res=8, tokenizer="gray:16", data_dir=data_dir)
    c.target.optim = optim_config(lr=1e-2, warmup_steps=5)
    c.target.train = train_config(steps=60, global_batch=32)
    c.target.train.eval_every = 5
    c.target.train.eval_sequences = 128
    c.target.train.checkpoint_every = 20
    c.arms = (SCRATCH, "digits/full", "noise/full")
    c.seeds = (0, 1, 2)
    c.lrs = (1e-2,)
    c.representations = False  # probes of these runs: tests/test_representations.py
    c.workers = 1  # in the test's process: tests time it, patch it and read its log
    if variant == "controls":
        c.target.optim.schedule = "constant"
        c.arms = (SCRATCH, "digits/full", "digits/stats_init", "digits/shuffled_source", "mimetic", "frozen_random")
        c.seeds = (0, 1, 2, 3, 4)
        c.lrs = (3e-3, 1e-2, 3e-2)
        c.report.targets = (2.6, 2.5)
    if variant == "donors":
        c.sources = ml_collections.ConfigDict(dict(prose="shipped:prose"))
        c.arms = (SCRATCH, "prose/full", "prose/bridge", "prose/bridge=1", "prose/grow_vocab")
        c.seeds = (0, 1)
        c.bridge.steps, c.bridge.lr = 30, 3e-3
        c.target.train.steps = 40
        c.target.train.eval_every = 10
    return c
