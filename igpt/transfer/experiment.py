"""A transfer experiment: pretrain each source (or take a ready donor), bridge the arms that
ask for it, run every arm on the target for every seed and learning rate, then write the
report. Resumable as a whole: finished runs are skipped and unfinished ones resume from their
own checkpoints.

A source is a data spec (igpt.data.specs), pretrained here with `source`'s optim and train, or
a donor string used as it is: "shipped:prose" (igpt.transfer.donors.shipped), "hf:DIR", or an
igpt run directory.

With `lr_seeds`, the target runs come in two stages: every arm runs every rate on lr_seeds,
each arm's rate is chosen on their validation curves (the report's own choose_rates), then the
other seeds (and scratch's held-out seeds) run at the chosen rate only.

Layout (igpt.transfer.report reads it; igpt/training/rundir.py names each run's files):
  EXP/experiment.json                 what was asked, and whether it is complete
  EXP/sources/<source>/               pretraining runs
  EXP/bridges/<arm>/                  a bridge arm's random-label bridge run (igpt.transfer.bridge), one
                                      per arm, shared by its seeds and rates as its source is
  EXP/target_tokenizer/               fitted once on the target's train split, shared by all arms
  EXP/target/<arm>/lr<lr>/seed<k>/    target runs; arm "scratch" is the baseline, others are
                                      "<source>/<mode>", in directory Arm.dirname ("prose__full");
                                      a data-size sweep adds n<examples>/ before lr<lr>
  EXP/report/                         report.html, report.md, figures, summary.json
Fairness: within a seed every arm sees the same target data order, token budget and schedule;
with several learning rates each arm is reported at its own best rate on validation.
"""
from __future__ import annotations

from typing import Any

import jax
import ml_collections
from etils.epath import Path

from igpt import distributed, sharding
from igpt.data import pipeline
from igpt.gpt import GPTTask, base_config, optim_config, train, train_config
from igpt.paths import as_path, is_object_storage, local_cache
from igpt.representation_runs import probe_experiment
from igpt.training import loop
from igpt.training.rundir import RunDir, write_json_atomic
from igpt.transfer import bridge, donors
from igpt.transfer import init as transfer_init
from igpt.transfer import workers
from igpt.transfer.arms import BRIDGE, SCRATCH, Arm, TransferError, parse_arm
from igpt.transfer.report.analysis import choose_rates
from igpt.transfer.report.collect import discover, read_experiment

TARGET_TOKENIZER = "target_tokenizer"
BRIDGES = "bridges"
COMPILATION_CACHE = ".jax_cache"  # compiled programs every run of the experiment shares


def compilation_cache(exp_dir: Path) -> str:
    """Where the experiment's runs share compiled programs: beside them on a local disk; in the
    user's cache directory when the experiment lives in a bucket (a cache is read at every
    compile and belongs near the host)."""
    return local_cache("jax_compilation") if is_object_storage(exp_dir) else str(exp_dir / COMPILATION_CACHE)


def experiment_config() -> ml_collections.ConfigDict:
    """Fields every experiment config fills (configs/demo_transfer.py is the example). `source`
    and `target` are run templates, in the sections and spellings of a GPT run's config
    (igpt.gpt.base_config): every source pretrains with `source`'s optim and train on its own
    data; every target run takes `target`'s data, optim and train, with the arm's init, the
    seed's data order and the learning rate of the grid."""
    return ml_collections.ConfigDict(dict(
        name="experiment",
        model=ml_collections.ConfigDict(),      # one body shape for sources and target
        sources=ml_collections.ConfigDict(),    # name -> data spec (igpt.data.specs), or a donor: "shipped:NAME",
                                                # "hf:DIR", an igpt run directory
        source=ml_collections.ConfigDict(dict(optim=optim_config(), train=train_config())),
        target=ml_collections.ConfigDict(dict(data=ml_collections.ConfigDict(), optim=optim_config(),
                                              train=train_config())),
        arms=(SCRATCH,),                        # "scratch" | "<source>/full" | "<source>/frozen_body" | "<source>/layers=0,1"
                                                # | "<source>/bridge" | "<source>/bridge=0-1" (igpt.transfer.arms)
        bridge=bridge.bridge_config(),          # the bridge arms' stage: steps, classes, lr, batch, warm-up, label seed
        seeds=(0, 1, 2, 3, 4),                  # the seeds every arm runs and the report compares
        heldout_seeds=(),                       # seeds only scratch runs: the report fixes its targets on them
        lrs=(1e-4, 3e-4, 1e-3),                 # target learning-rate grid, run for every arm
        lr_seeds=(),                            # seeds that run every rate and choose each arm's on validation;
                                                # the other seeds run the chosen rate only (empty: all run all)
        target_sizes=(),                        # a data-size sweep: train examples per point, each a prefix of the
                                                # next; every arm runs each (empty: the whole train split)
        scratch_sizes=(),                       # larger sizes only scratch runs, to read D_E within its range
        workers=0,                              # trainings at once, each its own process on a CPU host;
                                                # 0: one per CPU core there, 1 on accelerators (workers.count)
        representations=True,                   # with a labelled target: linear probes of every target run
                                                # and CKA / stitching between arms (igpt.representation_runs)
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


RunSpecs = dict[str, tuple[ml_collections.ConfigDict, dict[str, Any]]]  # relative run dir -> (config, run.json info)


def is_donor(source: Any) -> bool:
    """A source given as a ready donor (a string), not as data to pretrain on."""
    return isinstance(source, str)


def source_runs(c) -> dict[str, ml_collections.ConfigDict]:
    """Source run name -> config: each source given as data that an arm starts from (a
    shuffled_source arm's source pretrains as a token-shuffled twin)."""
    runs = {}
    for arm in _arms(c):
        if arm.source and not is_donor(c.sources[arm.source]):
            runs[arm.source_run] = _run_config(c, c.source, c.sources[arm.source], seed=0)
            runs[arm.source_run].train.shuffle_tokens = arm.mode == "shuffled_source"
    return runs


def donor(c, exp_dir: Path, arm: Arm) -> str:
    """What the arm's first run starts from: the source's donor string, or its pretraining run."""
    given = c.sources[arm.source]
    return given if is_donor(given) else str(exp_dir / "sources" / arm.source_run)


def bridge_runs(c, exp_dir: Path) -> RunSpecs:
    """Each bridge arm's bridge run: the source's model on the target's inputs (the experiment's
    target tokenizer) with random labels, at seed 0, every block or the arm's blocks trained."""
    runs: RunSpecs = {}
    b = c.bridge
    for arm in _arms(c):
        if arm.mode != BRIDGE:
            continue
        template = ml_collections.ConfigDict(dict(
            optim=optim_config(lr=b.lr, warmup_steps=b.warmup_steps), train=ml_collections.ConfigDict(dict(
                c.target.train.to_dict(), steps=b.steps, global_batch=b.global_batch, patience=0))))
        cfg = _run_config(c, template, c.target.data, seed=0)
        cfg.bridge = bridge.task_section(b.classes, arm.layers, b.label_seed)
        cfg.data.tokenizer = str(exp_dir / TARGET_TOKENIZER)
        cfg.init = transfer_init.init_config("full", donor(c, exp_dir, arm), (), c.positions)
        runs[f"{BRIDGES}/{arm.dirname}"] = (cfg, {"role": "bridge", "arm": arm.name, "seed": 0, "lr": b.lr,
                                                 "mode": BRIDGE, "source": arm.source})
    return runs


def _target_run(c, exp_dir: Path, arm: Arm, lr: float, seed: int, size: int) -> RunSpecs:
    cfg = _run_config(c, c.target, c.target.data, seed=seed)
    cfg.data.seed = seed  # the same data order for every arm within a seed
    cfg.data.tokenizer = str(exp_dir / TARGET_TOKENIZER)  # one tokenizer for every arm
    cfg.data.train_examples = size
    cfg.optim.lr = lr
    if arm.mode == BRIDGE:  # the bridged model, all of it trained, as "full" trains a source's
        cfg.init = transfer_init.init_config("full", str(exp_dir / BRIDGES / arm.dirname), (), c.positions)
    else:
        cfg.init = transfer_init.init_config(arm.mode, donor(c, exp_dir, arm) if arm.source else "", arm.layers,
                                             c.positions)
    at = f"n{size}/" if size else ""
    return {f"target/{arm.dirname}/{at}lr{lr:g}/seed{seed}": (cfg, {
        "role": "target", "arm": arm.name, "seed": seed, "lr": lr, "mode": arm.mode, "source": arm.source,
        "train_examples": size})}


def _arms(c) -> list[Arm]:
    return [parse_arm(text, list(c.sources), c.model.num_layers) for text in c.arms]


def _heldout(c, arm: Arm) -> tuple[int, ...]:
    """The held-out seeds the arm runs besides the compared ones: scratch's only."""
    return tuple(c.heldout_seeds) if arm.mode == SCRATCH else ()


def sizes(c, arm: Arm) -> tuple[int, ...]:
    """The train-set sizes (examples) the arm runs at: the whole split (0) unless the
    experiment sweeps data sizes, where scratch also runs the larger `scratch_sizes`."""
    return tuple(c.target_sizes) + (tuple(c.scratch_sizes) if arm.mode == SCRATCH else ()) or (0,)


def check_sources(c) -> None:
    """Every donor given ready exists (its vocabulary is read); a token-shuffled twin needs the
    source's data, which a donor given ready does not have."""
    for source in {source for source in c.sources.values() if is_donor(source)}:
        donors.vocab_size(source)
    for arm in _arms(c):
        if arm.mode == "shuffled_source" and is_donor(c.sources[arm.source]):
            raise TransferError(f"arm {arm.name!r} pretrains a token-shuffled twin of {arm.source!r}, which is given as "
                                f"the donor {c.sources[arm.source]!r}, not as data; give the source as a data spec "
                                "(igpt.data.specs) or drop the arm.")


def check_seeds(c) -> None:
    """Held-out seeds must not be compared; seeds that choose rates must be compared seeds;
    a data-size sweep's sizes grow."""
    overlap = set(c.seeds) & set(c.heldout_seeds)
    if overlap:
        raise TransferError(f"heldout_seeds {sorted(overlap)} are also in seeds: a target fixed on a seed must not "
                            "be judged on it; use seeds no arm compares.")
    stray = set(c.lr_seeds) - set(c.seeds)
    if stray:
        raise TransferError(f"lr_seeds {sorted(stray)} are not in seeds {tuple(c.seeds)}: the seeds that choose "
                            "each arm's rate are a subset of the compared seeds.")
    grid = tuple(c.target_sizes) + tuple(c.scratch_sizes)
    if c.scratch_sizes and not c.target_sizes or list(grid) != sorted(set(grid)) or any(n <= 0 for n in grid):
        raise TransferError(f"target_sizes {tuple(c.target_sizes)} then scratch_sizes {tuple(c.scratch_sizes)} must "
                            "be positive example counts in increasing order, scratch_sizes above every target size.")


def sweep_runs(c, exp_dir: Path) -> RunSpecs:
    """Every arm at every size and rate of the grid, on the seeds that choose rates: `lr_seeds`,
    or when none are listed every seed (and scratch's held-out seeds)."""
    runs: RunSpecs = {}
    for arm in _arms(c):
        seeds = c.lr_seeds or c.seeds + _heldout(c, arm)
        for size in sizes(c, arm):
            for lr in c.lrs:
                for seed in seeds:
                    runs.update(_target_run(c, exp_dir, arm, lr, seed, size))
    return runs


def remaining_runs(c, exp_dir: Path, rates: dict[tuple[str, int], float]) -> RunSpecs:
    """With `lr_seeds`, the other seeds (and scratch's held-out seeds) at each arm's rate chosen
    at each size (`rates[arm, size]`)."""
    if not c.lr_seeds:
        return {}
    runs: RunSpecs = {}
    for arm in _arms(c):
        for size in sizes(c, arm):
            for seed in tuple(s for s in c.seeds if s not in c.lr_seeds) + _heldout(c, arm):
                runs.update(_target_run(c, exp_dir, arm, rates[arm.name, size], seed, size))
    return runs


def check_runs(tasks: list[loop.Task]) -> None:
    """Every run's settings checked as its trainer will check them, before the first run starts:
    each distinct problem once, so an out-of-range target setting is not met after the sources
    have pretrained."""
    problems = {str(p): p for task in tasks for p in loop.config_problems(task)}
    loop.refuse(list(problems.values()))


def _write_experiment(exp_dir: Path, c, complete: bool) -> None:
    if jax.process_index() != 0:
        return
    info = {"name": c.name, "target": c.target.data.source, "sources": list(c.sources), "arms": list(c.arms),
            "seeds": list(c.seeds), "heldout_seeds": list(c.heldout_seeds), "lr_seeds": list(c.lr_seeds),
            "lrs": list(c.lrs), "target_sizes": list(c.target_sizes), "scratch_sizes": list(c.scratch_sizes),
            "donors": {name: source for name, source in c.sources.items() if is_donor(source)},
            "donor_flops": {name: donors.pretraining_flops(source) for name, source in c.sources.items()
                            if is_donor(source)},
            "bridge": c.bridge.to_dict() if any(a.mode == BRIDGE for a in _arms(c)) else None,
            "complete": complete}
    write_json_atomic(exp_dir / "experiment.json", info)


def train_once(cfg: ml_collections.ConfigDict, run_dir: Path, info: dict[str, Any], log=print) -> None:
    """Trains (or resumes) one run of an experiment (a bridge run by its task, every other run
    as GPT); stops the experiment if it was preempted."""
    log(f"training {run_dir}")
    trainer = bridge.train if info.get("role") == "bridge" else train
    if trainer(cfg, run_dir, info=dict(info, name=run_dir.name)).preempted:
        raise SystemExit(f"preempted during {run_dir}; rerun the same command to resume the experiment.")


def _train_all(runs: RunSpecs, exp_dir: Path, c, log) -> None:
    """Every run not finished yet: in this process, or spread over workers.count(c.workers) processes."""
    todo = []
    for rel, (cfg, info) in runs.items():
        if RunDir(exp_dir / rel).read_info().get("finished"):
            log(f"done already: {exp_dir / rel}")
        else:
            todo.append((cfg, exp_dir / rel, dict(info, experiment=c.name)))
    n = workers.count(c.workers)
    if n > 1 and len(todo) > 1:
        workers.train_in_parallel(todo, n, compilation_cache(exp_dir), log)
        return
    with pipeline.examples_cache():  # the runs read the same data
        for cfg, run_dir, info in todo:
            train_once(cfg, run_dir, info, log)


def chosen_rates(exp_dir: Path) -> dict[tuple[str, int], float]:
    """Each arm's learning rate at each train-set size as the report chooses it, from the runs on disk."""
    owned, _ = discover([exp_dir])
    exp = read_experiment(exp_dir, owned.get(as_path(exp_dir), []))
    return {(arm, size): choice.lr for size in exp.sizes for arm, choice in choose_rates(exp.at_size(size)).items()}


def run_experiment(c: ml_collections.ConfigDict, exp_dir: str | Path, log=print) -> Path:
    """Runs (or resumes) everything and returns the experiment directory."""
    exp_dir = as_path(exp_dir)
    distributed.maybe_initialize(c.distributed)
    check_seeds(c)
    sweep = sweep_runs(c, exp_dir)  # validates every arm before any training
    check_sources(c)
    gpt_runs = [*source_runs(c).values(), *(cfg for cfg, _ in sweep.values())]
    check_runs([*map(GPTTask, gpt_runs), *(bridge.BridgeTask(cfg) for cfg, _ in bridge_runs(c, exp_dir).values())])
    workers.check(c.workers)
    RunDir(exp_dir).prepare()  # a bucket that cannot be written is said before any work
    _write_experiment(exp_dir, c, complete=False)
    pipeline.build_tokenizer(c.target.data, cache_dir=exp_dir / TARGET_TOKENIZER)
    jax.config.update("jax_compilation_cache_dir", compilation_cache(exp_dir))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    given = [f"{name} ({source})" for name, source in c.sources.items() if is_donor(source)]
    log(f"sources: {', '.join(source_runs(c)) or 'none to pretrain'}" + (f"; donors given: {', '.join(given)}"
                                                                         if given else ""))
    _train_all({f"sources/{name}": (cfg, {"role": "source", "arm": None, "seed": 0, "lr": cfg.optim.lr, "mode": None,
                                          "source": name, "shuffled_tokens": cfg.train.shuffle_tokens})
                for name, cfg in source_runs(c).items()}, exp_dir, c, log)
    bridges = bridge_runs(c, exp_dir)
    if bridges:
        log(f"bridges: {', '.join(bridges)}")
        _train_all(bridges, exp_dir, c, log)
    log(f"target: {len(c.arms)} arms x {len(c.lrs)} rates on seeds {tuple(c.lr_seeds or c.seeds)}")
    _train_all(sweep, exp_dir, c, log)
    if c.lr_seeds:
        rates = chosen_rates(exp_dir)
        log("chosen rates (validation): " + ", ".join(f"{arm}{f' n{n}' if n else ''} {lr:g}"
                                                      for (arm, n), lr in rates.items()))
        _train_all(remaining_runs(c, exp_dir, rates), exp_dir, c, log)
    if c.representations and jax.process_count() == 1:  # features are not gathered across hosts
        probe_experiment(exp_dir, c.target.data, log=log)
    _write_experiment(exp_dir, c, complete=True)
    return exp_dir
