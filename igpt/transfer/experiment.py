"""A transfer experiment: pretrain each source, run every arm on the target for every seed
and learning rate, then write the report. Resumable as a whole: finished runs are skipped
and unfinished ones resume from their own checkpoints.

Layout (igpt.transfer.report reads it; igpt/training/rundir.py names each run's files):
  EXP/experiment.json                 what was asked, and whether it is complete
  EXP/sources/<source>/               pretraining runs
  EXP/target_tokenizer/               fitted once on the target's train split, shared by all arms
  EXP/target/<arm>/lr<lr>/seed<k>/    target runs; arm "scratch" is the baseline, others are
                                      "<source>/<mode>", in directory Arm.dirname ("prose__full")
  EXP/report/                         report.html, report.md, figures, summary.json
Fairness: within a seed every arm sees the same target data order, token budget and schedule;
with several learning rates each arm is reported at its own best rate on the eval split.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import jax
import ml_collections

from igpt import distributed, sharding
from igpt.data import pipeline
from igpt.gpt import base_config, optim_config, train, train_config
from igpt.training.rundir import RunDir
from igpt.transfer import init as transfer_init
from igpt.transfer.arms import SCRATCH, TransferError, parse_arm

TARGET_TOKENIZER = "target_tokenizer"


def experiment_config() -> ml_collections.ConfigDict:
    """Fields every experiment config fills (configs/demo_transfer.py is the example). `source`
    and `target` are run templates, in the sections and spellings of a GPT run's config
    (igpt.gpt.base_config): every source pretrains with `source`'s optim and train on its own
    data; every target run takes `target`'s data, optim and train, with the arm's init, the
    seed's data order and the learning rate of the grid."""
    return ml_collections.ConfigDict(dict(
        name="experiment",
        model=ml_collections.ConfigDict(),      # one body shape for sources and target
        sources=ml_collections.ConfigDict(),    # name -> data spec (igpt.data.specs)
        source=ml_collections.ConfigDict(dict(optim=optim_config(), train=train_config())),
        target=ml_collections.ConfigDict(dict(data=ml_collections.ConfigDict(), optim=optim_config(),
                                              train=train_config())),
        arms=(SCRATCH,),                        # "scratch" | "<source>/full" | "<source>/frozen_body" | "<source>/layers=0,1"
        seeds=(0, 1, 2, 3, 4),                  # the seeds every arm runs and the report compares
        heldout_seeds=(),                       # seeds only scratch runs: the report fixes its targets on them
        lrs=(1e-4, 3e-4, 1e-3),                 # target learning-rate grid, run for every arm
        positions="interpolate",
        mesh=sharding.mesh_config(),
        axis_rules=sharding.DEFAULT_RULES,
        distributed=distributed.distributed_config(),
        report=ml_collections.ConfigDict(dict(log_x=False, targets=())),
    ))


def _run_config(c, template: ml_collections.ConfigDict, data: ml_collections.ConfigDict,
                seed: int) -> ml_collections.ConfigDict:
    """A GPT run's config from a template; each run gets its own copy of every section."""
    copy = lambda section: ml_collections.ConfigDict(section.to_dict())
    cfg = base_config(model=copy(c.model), data=copy(data), optim=copy(template.optim), train=copy(template.train),
                      seed=seed)
    cfg.mesh, cfg.axis_rules, cfg.distributed = copy(c.mesh), c.axis_rules, copy(c.distributed)
    return cfg


def source_runs(c) -> dict[str, ml_collections.ConfigDict]:
    """Source run name -> config: each source, and the token-shuffled twin of each source a
    shuffled_source arm names."""
    runs = {name: _run_config(c, c.source, c.sources[name], seed=0) for name in c.sources}
    for text in c.arms:
        arm = parse_arm(text, list(c.sources), c.model.num_layers)
        if arm.mode == "shuffled_source":
            runs[arm.source_run] = _run_config(c, c.source, c.sources[arm.source], seed=0)
            runs[arm.source_run].train.shuffle_tokens = True
    return runs


def target_runs(c, exp_dir: Path) -> dict[str, tuple[ml_collections.ConfigDict, dict[str, Any]]]:
    """Relative run dir -> (config, run.json info) for every arm x lr x seed, and scratch's runs on
    the held-out seeds."""
    runs = {}
    overlap = set(c.seeds) & set(c.heldout_seeds)
    if overlap:
        raise TransferError(f"heldout_seeds {sorted(overlap)} are also in seeds: a target fixed on a seed must not "
                            "be judged on it; use seeds no arm compares.")
    for text in c.arms:
        arm = parse_arm(text, list(c.sources), c.model.num_layers)
        for lr in c.lrs:
            for seed in c.seeds + (c.heldout_seeds if arm.mode == SCRATCH else ()):
                cfg = _run_config(c, c.target, c.target.data, seed=seed)
                cfg.data.seed = seed  # the same data order for every arm within a seed
                cfg.data.tokenizer = str(exp_dir / TARGET_TOKENIZER)  # one tokenizer for every arm
                cfg.optim.lr = lr
                cfg.init = transfer_init.init_config(
                    arm.mode, str(exp_dir / "sources" / arm.source_run) if arm.source else "", arm.layers,
                    c.positions)
                rel = f"target/{arm.dirname}/lr{lr:g}/seed{seed}"
                runs[rel] = (cfg, {"role": "target", "arm": arm.name, "seed": seed, "lr": lr,
                                   "mode": arm.mode, "source": arm.source})
    return runs


def _write_experiment(exp_dir: Path, c, complete: bool) -> None:
    if jax.process_index() != 0:
        return
    info = {"name": c.name, "target": c.target.data.source, "sources": list(c.sources), "arms": list(c.arms),
            "seeds": list(c.seeds), "heldout_seeds": list(c.heldout_seeds), "lrs": list(c.lrs), "complete": complete}
    tmp = exp_dir / "experiment.json.tmp"
    tmp.write_text(json.dumps(info, indent=2))
    os.replace(tmp, exp_dir / "experiment.json")


def _train_once(cfg, run_dir: Path, info: dict[str, Any], c, log) -> None:
    if RunDir(run_dir).read_info().get("finished"):
        log(f"  done already: {run_dir}")
        return
    log(f"  training {run_dir}")
    if train(cfg, run_dir, info=dict(info, name=run_dir.name, experiment=c.name)).preempted:
        raise SystemExit(f"preempted during {run_dir}; rerun the same command to resume the experiment.")


def run_experiment(c: ml_collections.ConfigDict, exp_dir: str | Path, log=print) -> Path:
    """Runs (or resumes) everything and returns the experiment directory."""
    exp_dir = Path(exp_dir).expanduser().absolute()
    exp_dir.mkdir(parents=True, exist_ok=True)
    distributed.maybe_initialize(c.distributed)
    targets = target_runs(c, exp_dir)  # validates every arm before any training
    _write_experiment(exp_dir, c, complete=False)
    pipeline.build_tokenizer(c.target.data, cache_dir=exp_dir / TARGET_TOKENIZER)
    jax.config.update("jax_compilation_cache_dir", str(exp_dir / ".jax_cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    for name, cfg in source_runs(c).items():
        log(f"source {name}: pretraining on {cfg.data.source}")
        _train_once(cfg, exp_dir / "sources" / name, {"role": "source", "arm": None, "seed": 0, "lr": cfg.optim.lr,
                                                      "mode": None, "source": name,
                                                      "shuffled_tokens": cfg.train.shuffle_tokens}, c, log)
    with pipeline.examples_cache():  # every target run reads the same target data
        for rel, (cfg, info) in targets.items():
            log(f"target arm {info['arm']} lr {info['lr']:g} seed {info['seed']}")
            _train_once(cfg, exp_dir / rel, info, c, log)
    _write_experiment(exp_dir, c, complete=True)
    return exp_dir
