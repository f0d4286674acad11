"""The one training loop. A task (GPT pretraining or fine-tuning, VQ tokenizer fitting, ...)
supplies its state, step, batches and evaluation; the loop owns everything runs share:

  the run directory (config written once, resume checks in resume.py, run.json), the mesh, batch placement,
  the optimizer and schedule, jit with the state donated, the cadence of logging, evaluation and
  checkpoints (`due`), metrics read one step late so dispatch stays ahead, the NaN guard,
  checkpoints with exact resume, SIGTERM / SIGINT (save and stop), metrics.jsonl and progress.

Batch k is a pure function of (data seed, k) and the state is restored bitwise, so a resumed
run continues exactly where an uninterrupted one would.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from typing import Any, Callable, Iterator, Protocol

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx

from igpt import distributed, sharding
from igpt.training import optim
from igpt.training.cadence import due
from igpt.training.checkpoint import Checkpointer
from igpt.training.early_stopping import EarlyStopping
from igpt.training.metrics import MetricsWriter, read_metrics
from igpt.training.preemption import PreemptionFlag
from igpt.training import tracking
from igpt.training.progress import Progress, closing_line, duration, parameter_count, resume_line, start_banner
from igpt.training.resume import check_resume, restore_newest_intact
from igpt.training.rundir import RunDir, write_json_atomic

class NonFiniteLossError(RuntimeError):
    """The loss or gradient became NaN/inf; the last good checkpoint is kept."""


class TrainConfigError(ValueError):
    """A train-section setting no run can use."""


def train_config(steps: int = 1000, global_batch: int = 32, **task_fields: Any) -> ml_collections.ConfigDict:
    """The loop's section. `task_fields` are settings a task reads (e.g. VQ's augment)."""
    return ml_collections.ConfigDict(dict(
        steps=steps, global_batch=global_batch,
        log_every=10, eval_every=100, checkpoint_every=200, keep_checkpoints=3, async_checkpoint=True,
        preemption_check_every=10,  # steps between agreeing on a signal across processes
        patience=0,  # evals without a new best validation loss before the run stops, finished (0: never)
        sample_every=0,  # steps between sample pictures in TensorBoard and RUN/samples/ (0: never)
        accept_config_changes=False,  # resume although the config differs from config.json (recorded)
        **task_fields))


def run_config(*, seed: int = 0, train: ml_collections.ConfigDict, optim_cfg: ml_collections.ConfigDict,
               **task_sections: Any) -> ml_collections.ConfigDict:
    """Every section a run has: the loop's (seed, train, optim, mesh, axis_rules, distributed) and
    the task's, so an override of a missing key is an error."""
    return ml_collections.ConfigDict(dict(
        seed=seed, train=train, optim=optim_cfg, mesh=sharding.mesh_config(), axis_rules=sharding.DEFAULT_RULES,
        distributed=distributed.distributed_config(), wandb=tracking.wandb_config(), **task_sections))


class Task(Protocol):
    """What a task supplies. State is a dict of global arrays; the loop adds "opt_state" and "step"."""

    cfg: ml_collections.ConfigDict
    kind: str                  # run.json's "task"
    optimizers: tuple[str, ...]
    unit: str                  # what throughput counts: "token" or "example"
    units_per_row: int         # of them in one batch row
    flops_per_unit: float      # training FLOPs per unit (0: not counted), for MFU and run.json

    def defaults(self) -> ml_collections.ConfigDict:
        """The config of a run that set nothing: a setting a run's config.json lacks (igpt gained
        it after the run started) resumes as unchanged at this value."""

    def check(self) -> None:
        """Refuse a bad config before the workdir is touched."""

    def setup(self, run: RunDir, mesh: jax.sharding.Mesh) -> None:
        """Load data (and fit or load a tokenizer into run.tokenizer)."""

    def new_state(self, mesh: jax.sharding.Mesh) -> dict[str, Any]:
        """Fresh state on `mesh`: "params" and whatever else the step carries."""

    def optimizer_masks(self, params: Any) -> tuple[Any, Any]:
        """(frozen labels or None, Muon's matrices or None) for these params."""

    def initialize(self, state: dict[str, Any], mesh: jax.sharding.Mesh) -> dict[str, Any]:
        """The state of a run that starts (not resumes): a donor's weights, a codebook from k-means."""

    def meta(self) -> dict[str, Any]:
        """What a checkpoint must have been written with to resume this run (JSON values)."""

    def run_info(self) -> dict[str, Any]:
        """What run.json records of the data and model besides the loop's fields (JSON values),
        for reports that read no checkpoint: e.g. unique train tokens and parameter counts."""

    def rows(self, step: int) -> Any:
        """This process's rows of global batch `step` (numpy)."""

    def make_train_step(self, tx: optax.GradientTransformation) -> Callable:
        """(state, batch) -> (state, metrics): a pure function the loop jits with the state donated."""

    def evaluate(self, state: dict[str, Any]) -> dict[str, dict[str, float]]:
        """Held-out metrics ("loss" among them) per split name, e.g. {"validation": ..., "test": ...}."""

    def describe(self, metrics: dict[str, float], step: int) -> dict[str, float]:
        """Fields derived from a record's metrics (e.g. bits per token, tokens seen)."""

    def finish(self, state: dict[str, Any], run: RunDir, last_eval: dict[str, dict[str, float]]) -> Any:
        """After the last step (not after a stop): e.g. save the fitted tokenizer."""


@dataclasses.dataclass
class Outcome:
    step: int
    preempted: bool
    stopped_early: bool  # patience ran out: the run is finished before train.steps
    train: dict[str, Any]
    eval: dict[str, dict[str, float]]  # split -> metrics of the last evaluation
    result: Any = None


def abstract(tree: Any) -> Any:
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


@contextlib.contextmanager
def on_mesh(mesh: jax.sharding.Mesh, rules: tuple) -> Iterator[None]:
    """The mesh and logical-axis rules every model and state of a run is built under."""
    with jax.set_mesh(mesh), nnx.logical_axis_rules(rules):
        yield


@dataclasses.dataclass
class Built:
    """A task made ready to step: its fresh state and optimizer, the jitted step (state donated,
    reporting the learning rate it applied) and batch placement. Benchmarks time `train_step`
    exactly as runs use it."""
    state: dict[str, Any]
    tx: optax.GradientTransformation
    train_step: Callable
    put: Callable


def build(task: Task, mesh: jax.sharding.Mesh) -> Built:
    """The fresh state and step of a task that is set up; call under on_mesh(mesh, rules)."""
    cfg = task.cfg
    schedule = optim.make_schedule(cfg.optim, cfg.train.steps)
    state = task.new_state(mesh)
    frozen, matrices = task.optimizer_masks(state["params"])
    tx = optim.build(cfg.optim, schedule, matrices=matrices, frozen=frozen)
    state["opt_state"] = jax.jit(tx.init)(state["params"])
    state["step"] = jax.device_put(jnp.zeros((), jnp.int32), sharding.replicated(mesh))
    rules = tuple(cfg.axis_rules)
    return Built(state, tx, jax.jit(with_lr(task.make_train_step(tx), schedule), donate_argnums=0),
                 lambda rows: sharding.put_batch(rows, mesh, rules))


def with_lr(train_step: Callable, schedule: optax.Schedule) -> Callable:
    """The task's step, also returning the learning rate it applied: computed on device inside
    the step, not by an eager schedule call on the host at every log."""
    def step(state, batch):
        new, metrics = train_step(state, batch)
        return new, dict(metrics, lr=schedule(state["step"]))
    return step


def train_problems(t: ml_collections.ConfigDict) -> list[str]:
    """Each train setting out of range, in a line of its own."""
    return [f"train.{k}={t[k]} must be at least {low}." for k, low in
            (("steps", 1), ("global_batch", 1), ("log_every", 1), ("eval_every", 1), ("checkpoint_every", 1),
             ("keep_checkpoints", 1), ("preemption_check_every", 1), ("patience", 0), ("sample_every", 0))
            if t.get(k, low) < low]


def config_problems(task: Task) -> list[ValueError]:
    """Every problem of the task's config no run can use: the loop's, the optimizer's and the
    task's checks all run (no workdir, data or compile needed)."""
    cfg = task.cfg
    problems: list[ValueError] = [TrainConfigError(p) for p in train_problems(cfg.train) + tracking.problems(cfg)]
    for check in (lambda: optim.check(cfg.optim, task.optimizers), task.check):
        try:
            check()
        except ValueError as e:
            problems.append(e)
    return problems


def refuse(problems: list[ValueError]) -> None:
    """Raises the one problem as it is, or all of them, a line each; nothing when there are none."""
    if len(problems) == 1:
        raise problems[0]
    if problems:
        raise TrainConfigError(f"{len(problems)} settings to fix:\n  " + "\n  ".join(map(str, problems)))


def check_config(task: Task) -> None:
    """Refuses a config no run can use before any work, every problem found in a line."""
    refuse(config_problems(task))


def _validation_loss(evals: dict[str, dict[str, float]]) -> float:
    if "loss" not in evals.get("validation", {}):
        raise TrainConfigError(f"train.patience stops on the validation loss, and this task's evals report "
                               f"{sorted(evals)}; set train.patience=0.")
    return evals["validation"]["loss"]


def _check_finite(step: int, metrics: dict[str, float]) -> None:
    bad = {k: v for k, v in metrics.items() if not math.isfinite(v)}
    if bad:
        raise NonFiniteLossError(
            f"non-finite {', '.join(f'{k}={v}' for k, v in bad.items())} at step {step}; stopped. "
            "The last good checkpoint is kept: lower optim.lr, raise optim.warmup_steps (or for GPT set "
            "optim.z_loss=1e-4), then rerun to resume from it.")


def run(task: Task, workdir: str, *, info: dict[str, Any] | None = None) -> Outcome:
    """Trains (or resumes) `task` in `workdir`. `info` (e.g. an experiment's arm and seed) joins run.json."""
    cfg, t = task.cfg, task.cfg.train
    check_config(task)
    distributed.maybe_initialize(cfg.distributed)
    sharding.check_rules(cfg.axis_rules)
    mesh = sharding.make_mesh(cfg.mesh)
    rules = tuple(cfg.axis_rules)
    sharding.check_batch(t.global_batch, mesh, rules)
    run_dir = RunDir.at(workdir).prepare()
    config_json, changed = check_resume(run_dir, cfg, task.defaults())
    is_main = jax.process_index() == 0
    started = time.perf_counter()
    if is_main:
        print("\n".join(start_banner(task, run_dir.root, mesh)), flush=True)

    with on_mesh(mesh, rules):
        task.setup(run_dir, mesh)
        built = build(task, mesh)
        state = built.state
        ckpt = Checkpointer(run_dir.checkpoints, t.keep_checkpoints, t.async_checkpoint)
        start, restored = restore_newest_intact(ckpt, run_dir, abstract(state), task.meta(), is_main)
        if is_main:
            print(resume_line(start, t.steps, parameter_count(state["params"]), run_dir.checkpoints / str(start)),
                  flush=True)
        if start is not None:
            state = restored
        else:
            state = task.initialize(state, mesh)
        if is_main:
            if run_dir.read_config() is None:
                run_dir.write_config(config_json, devices=jax.devices())
            elif start is not None and changed:
                write_json_atomic(run_dir.resumed_config(start), config_json)
            elif start is not None:  # a failed attempt's accepted changes no longer describe this run
                run_dir.resumed_config(start).unlink(missing_ok=True)
            run_dir.update_info(**(info or {}), **task.run_info(), task=task.kind, status="running", step=start or 0,
                                steps=t.steps,
                                schedule=cfg.optim.schedule,
                                **{f"flops_per_{task.unit}": task.flops_per_unit})
        step_fn, put = built.train_step, built.put
        loop = _Loop(task, run_dir, ckpt, is_main, start or 0, config_json)
        try:
            outcome = loop.steps(state, step_fn, put)
        except BaseException:
            if is_main:
                run_dir.update_info(status="failed", step=loop.step)
            raise
        finally:
            ckpt.close()
        if not outcome.preempted:  # a run resumed at its last step has its final evals in metrics.jsonl
            outcome.eval = outcome.eval or _evals_logged_at(run_dir, outcome.step) or task.evaluate(loop.state)
            outcome.result = task.finish(loop.state, run_dir, outcome.eval)
        if is_main:
            run_dir.update_info(status="preempted" if outcome.preempted else "finished", step=outcome.step,
                                **({"stopped_early": True, "best_step": loop.early.best_step}
                                   if outcome.stopped_early else {}))
            if not outcome.preempted:
                finals = {split: dict(m, **task.describe(m, outcome.step)) for split, m in outcome.eval.items()}
                print(closing_line(task.kind, start or 0, outcome.step, time.perf_counter() - started, finals,
                                   run_dir.root), flush=True)
        return outcome


def _evals_logged_at(run_dir: RunDir, step: int) -> dict[str, dict[str, float]]:
    """The held-out metrics metrics.jsonl holds for `step`, by split ({} when none)."""
    return {r["split"]: {k: v for k, v in r.items() if k not in ("step", "split", "wall_time")}
            for r in read_metrics(run_dir.root) if r["step"] == step and r["split"] != "train"}


class _Loop:
    """The steps from `start` to train.steps, with what each step owes: flush, eval, save, stop."""

    def __init__(self, task: Task, run_dir: RunDir, ckpt: Checkpointer, is_main: bool, start: int,
                 config: dict[str, Any]):
        self.task, self.t, self.ckpt = task, task.cfg.train, ckpt
        self.step = self.start = start
        resumed_with_patience = start and self.t.patience
        self.early = EarlyStopping.replay(self.t.patience, read_metrics(run_dir.root) if resumed_with_patience else [],
                                          start)
        self.state: Any = None  # the latest state, also when a step fails
        self.writer = MetricsWriter(run_dir.metrics, enabled=is_main)
        self.progress = Progress(self.t.steps, start, enabled=is_main, tensorboard=run_dir.tensorboard,
                                 pictures=run_dir.root / "samples", config=config,
                                 tracker=tracking.start(task.cfg, run_dir.root, config) if is_main else None)
        self.last_train: dict[str, Any] = {}
        self.last_eval: dict[str, dict[str, float]] = {}
        self.window = (time.perf_counter(), start)  # (time, step) where the step-time window opened

    def flush(self, step: int, dev_metrics: Any) -> None:
        """Reads one step's metrics off the device, stops on NaN, writes them when logging is due."""
        m = {k: float(v) for k, v in jax.device_get(dev_metrics).items()}
        _check_finite(step, m)
        if step == self.start + 1:  # the session's first step compiled the step: its time is no step time
            self.progress.message(f"first step compiled and ran in {duration(time.perf_counter() - self.window[0])}")
        if not due(step, self.t.log_every, self.t.steps):
            if step == self.start + 1:
                self.window = (time.perf_counter(), step)
            return
        now = time.perf_counter()
        dt = (now - self.window[0]) / max(step - self.window[1], 1)
        self.window = (now, step)
        units = self.t.global_batch * self.task.units_per_row
        rec = dict(m, **self.task.describe(m, step), step=step, split="train", step_time=dt, wall_time=time.time(),
                   **{f"{self.task.unit}s_per_s": units / dt})
        self.writer.write(rec)
        self.progress.train(step, rec, flops_per_s=units * self.task.flops_per_unit / dt)
        self.last_train = rec

    def steps(self, state: Any, step_fn: Callable, put: Callable) -> Outcome:
        t, task = self.t, self.task
        preempt = PreemptionFlag(t.preemption_check_every)
        pending = None  # (step, metrics on device): read one step late so dispatch stays ahead
        stop = False
        self.state = state
        try:
            while self.step < t.steps and not stop and not self.early.stopped:
                state, dev_metrics = step_fn(state, put(task.rows(self.step)))
                self.step += 1
                self.state = state
                if pending is not None:
                    self.flush(*pending)
                pending = (self.step, dev_metrics)
                stop = preempt.should_stop(self.step)
                save = due(self.step, t.checkpoint_every, t.steps) or stop
                evaluate = due(self.step, t.eval_every, t.steps)
                sample = bool(t.get("sample_every")) and due(self.step, t.sample_every, t.steps) and hasattr(
                    task, "picture")
                if save or evaluate or sample:
                    self.flush(*pending)  # never save, evaluate or sample past an unchecked step
                    pending = None
                if evaluate:
                    self.last_eval = task.evaluate(state)
                    for split, metrics in self.last_eval.items():
                        rec = dict(metrics, **task.describe(metrics, self.step), step=self.step, split=split,
                                   wall_time=time.time())
                        self.writer.write(rec)
                        self.progress.eval(self.step, split, rec)
                    if t.patience:
                        self.early.update(self.step, _validation_loss(self.last_eval))
                        save = save or self.early.stopped  # a rerun restores here and sees it stopped
                if save:
                    self.writer.flush()  # the records up to a checkpoint are durable (and on gs://, written) first
                    self.ckpt.save(self.step, state, dict(task.meta(), step=self.step))
                if sample:
                    self.progress.image("samples", task.picture(state), self.step)
                if save or evaluate or sample:
                    self.window = (time.perf_counter(), self.step)  # eval, save and sampling time is not step time
            if pending is not None:
                self.flush(*pending)
            self.ckpt.wait()
            if self.early.stopped:
                self.progress.message(f"no better validation loss in {t.patience} evals: stopped at step {self.step} "
                                      f"(best {self.early.best:.4g} at step {self.early.best_step}).")
            if stop:
                self.progress.message(f"{preempt.received or 'a signal to another process'}: saved step "
                                      f"{self.step}; exiting. Rerun the same command to resume.")
        finally:
            preempt.restore()
            self.writer.close()
            self.progress.close()
        return Outcome(self.step, stop, self.early.stopped, self.last_train, self.last_eval)
