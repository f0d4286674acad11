"""The training loop: sharded state, a pure jitted step, eval, checkpoints, preemption.

One trainer serves pretraining, fine-tuning and baselines; what differs is config
(`init.mode`, `init.source`). Batch k is a pure function of (data seed, k) and the state is
restored bitwise, so a resumed run continues exactly where an uninterrupted one would.
"""
from __future__ import annotations

import dataclasses
import math
import signal
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx
from jax.experimental import multihost_utils

from igpt import checkpoint, distributed, sharding
from igpt.data import pipeline
from igpt.metrics import MetricsWriter, bits
from igpt.model import Transformer, count_params, flops_per_token, with_bos
from igpt.progress import Progress
from igpt.transfer import init as transfer_init
from igpt.workdir import prepare_workdir, write_run_files


class NonFiniteLossError(RuntimeError):
    """The loss or gradient became NaN/inf; the last good checkpoint is kept."""


def optim_config(lr: float = 3e-4, warmup_steps: int = 100) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(
        lr=lr, warmup_steps=warmup_steps, min_lr_ratio=0.1, b1=0.9, b2=0.95, eps=1e-8,
        weight_decay=0.1, clip_norm=1.0, grad_accum=1, z_loss=0.0))


def train_config(steps: int = 1000, global_batch: int = 32) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(
        steps=steps, global_batch=global_batch,
        log_every=10, eval_every=100, eval_batches=4,
        checkpoint_every=200, keep_checkpoints=3, async_checkpoint=True,
        inject_nan_at_step=-1,  # fault injection: step whose loss is reported NaN (tests the guard)
    ))


def base_config(model: ml_collections.ConfigDict, data: ml_collections.ConfigDict, *,
                optim: ml_collections.ConfigDict | None = None,
                train: ml_collections.ConfigDict | None = None, seed: int = 0) -> ml_collections.ConfigDict:
    """Every section the trainer reads, so an override of a missing key is an error."""
    return ml_collections.ConfigDict(dict(
        seed=seed,  # parameter init
        model=model,
        data=data,
        mesh=sharding.mesh_config(),
        axis_rules=sharding.DEFAULT_RULES,
        optim=optim or optim_config(),
        train=train or train_config(),
        init=transfer_init.init_config(),
        distributed=distributed.distributed_config(),
    ))


def make_schedule(c: ml_collections.ConfigDict, steps: int) -> optax.Schedule:
    """Linear warm-up to lr, cosine decay to lr * min_lr_ratio at the last step."""
    warmup = min(c.warmup_steps, max(steps - 1, 0))
    return optax.warmup_cosine_decay_schedule(
        0.0, c.lr, warmup, max(steps, warmup + 1), end_value=c.lr * c.min_lr_ratio)


def make_optimizer(c: ml_collections.ConfigDict, schedule: optax.Schedule, labels: Any) -> optax.GradientTransformation:
    """AdamW with global-norm clipping; weight decay on matrices only; frozen params get no update."""
    decay_mask = lambda params: jax.tree.map(lambda p: p.ndim >= 2, params)
    adamw = optax.chain(
        optax.clip_by_global_norm(c.clip_norm),
        optax.adamw(schedule, b1=c.b1, b2=c.b2, eps=c.eps, weight_decay=c.weight_decay, mask=decay_mask))
    return optax.multi_transform(
        {transfer_init.TRAIN: adamw, transfer_init.FREEZE: optax.set_to_zero()}, labels)


def token_loss(logits: jax.Array, targets: jax.Array, z_loss: float) -> tuple[jax.Array, jax.Array]:
    """(mean cross-entropy in nats, objective with z-loss) over all tokens."""
    logz = jax.nn.logsumexp(logits, axis=-1)
    nll = logz - jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    ce = jnp.mean(nll)
    return ce, ce + z_loss * jnp.mean(jnp.square(logz))


@dataclasses.dataclass(frozen=True)
class StepFns:
    train: Callable
    eval: Callable


def make_step_fns(graphdef: Any, tx: optax.GradientTransformation, bos_id: int,
                  optim: ml_collections.ConfigDict, nan_step: int) -> StepFns:
    """Pure functions of (state, batch): jit them with the state donated."""

    def objective(params, tokens):
        model = nnx.merge(graphdef, params)
        ce, obj = token_loss(model(with_bos(tokens, bos_id)), tokens, optim.z_loss)
        return obj, ce

    def train_step(state, tokens):
        accum = optim.grad_accum
        micro = tokens.reshape(accum, tokens.shape[0] // accum, tokens.shape[1])
        grad_fn = jax.value_and_grad(objective, has_aux=True)

        def add(carry, mb):
            (_, ce), g = grad_fn(state["params"], mb)
            return jax.tree.map(jnp.add, carry, (ce, g)), None

        zero = (jnp.zeros((), jnp.float32), jax.tree.map(jnp.zeros_like, state["params"]))
        (ce, grads), _ = jax.lax.scan(add, zero, micro)
        ce, grads = ce / accum, jax.tree.map(lambda g: g / accum, grads)
        ce = jnp.where(state["step"] + 1 == nan_step, jnp.nan, ce)
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        new = dict(state, params=params, opt_state=opt_state, step=state["step"] + 1)
        return new, {"loss": ce, "grad_norm": optax.tree.norm(grads)}

    def eval_step(state, tokens):
        return objective(state["params"], tokens)[1]

    return StepFns(train_step, eval_step)


def create_state(cfg: ml_collections.ConfigDict, vocab_size: int, seq_len: int, mesh: jax.sharding.Mesh,
                 tx: optax.GradientTransformation | None = None) -> tuple[Any, dict[str, Any]]:
    """(graphdef, state) with every array already sharded on `mesh` (which must be set)."""
    model = Transformer(cfg.model, vocab_size, seq_len, rngs=nnx.Rngs(cfg.seed))
    graphdef, params = nnx.split(model, nnx.Param)
    put = lambda x: jax.device_put(x, sharding.replicated(mesh))
    state = {"params": params, "step": put(jnp.zeros((), jnp.int32)),
             "rng": put(jax.random.key_data(jax.random.key(cfg.seed)))}
    if tx is not None:
        state["opt_state"] = jax.jit(tx.init)(params)
    return graphdef, state


def abstract(tree: Any) -> Any:
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


class PreemptionFlag:
    """SIGTERM (TPU VM maintenance, SLURM preemption) sets a flag; the loop saves and exits."""

    def __init__(self):
        self.raised = False
        self._previous = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame):
        self.raised = True

    def agreed(self) -> bool:
        """True on every process once any process got the signal, so all save the same step."""
        if jax.process_count() == 1:
            return self.raised
        return bool(np.any(multihost_utils.process_allgather(np.array(self.raised))))

    def restore(self) -> None:
        signal.signal(signal.SIGTERM, self._previous)


def evaluate(eval_fn: Callable, state: Any, dataset: pipeline.SequenceDataset, batches: int,
             global_batch: int, mesh, rules) -> float:
    """Mean loss (nats/token) over the fixed first `batches` eval batches."""
    total = 0.0
    for i in range(batches):
        rows = dataset.batch(i, global_batch, process_index=jax.process_index(),
                             process_count=jax.process_count(), shuffle=False)
        total += float(eval_fn(state, sharding.put_batch(rows, mesh, rules)))
    return total / batches


def _check_finite(step: int, metrics: dict[str, float]) -> None:
    bad = {k: v for k, v in metrics.items() if not math.isfinite(v)}
    if bad:
        raise NonFiniteLossError(
            f"non-finite {', '.join(f'{k}={v}' for k, v in bad.items())} at step {step}; stopped. "
            "The last good checkpoint is kept: lower optim.lr, raise optim.warmup_steps or set "
            "optim.z_loss=1e-4, then rerun to resume from it.")


def train(cfg: ml_collections.ConfigDict, workdir: str | Path) -> dict[str, Any]:
    """Trains (or resumes) the run in `workdir`; returns the final metrics."""
    distributed.maybe_initialize(cfg.distributed)
    workdir = prepare_workdir(workdir)
    sharding.check_rules(cfg.axis_rules)
    mesh = sharding.make_mesh(cfg.mesh)
    rules = tuple(cfg.axis_rules)
    sharding.check_batch(cfg.train.global_batch, mesh, rules)
    if cfg.train.global_batch % (cfg.optim.grad_accum * sharding.batch_shards(mesh, rules)):
        raise sharding.MeshError(
            f"global batch {cfg.train.global_batch} must split into optim.grad_accum={cfg.optim.grad_accum} "
            f"micro-batches that each divide over {sharding.batch_shards(mesh, rules)} batch shards.")
    transfer_init.check_mode(cfg.init.mode, cfg.init.layers, cfg.model.num_layers)

    tokenizer = pipeline.build_tokenizer(cfg.data, cache_dir=str(workdir / "tokenizer"))
    train_ds = pipeline.build_dataset(cfg.data, cfg.data.train_split, tokenizer)
    eval_ds = pipeline.build_dataset(cfg.data, cfg.data.eval_split, tokenizer)
    vocab, seq_len = tokenizer.vocab_size, cfg.data.seq_len
    is_main = jax.process_index() == 0

    with jax.set_mesh(mesh), nnx.logical_axis_rules(rules):
        schedule = make_schedule(cfg.optim, cfg.train.steps)
        shapes = nnx.state(nnx.eval_shape(lambda: Transformer(cfg.model, vocab, seq_len, rngs=nnx.Rngs(0))),
                           nnx.Param)
        labels = transfer_init.param_labels(shapes, cfg.init.mode, cfg.init.layers)
        tx = make_optimizer(cfg.optim, schedule, labels)
        graphdef, state = create_state(cfg, vocab, seq_len, mesh, tx)
        ckpt = checkpoint.Checkpointer(workdir, cfg.train.keep_checkpoints, cfg.train.async_checkpoint)
        start = ckpt.latest_step()
        if start is not None:
            state, meta = ckpt.restore(start, abstract(state))
        elif cfg.init.mode != "scratch":
            source, _ = checkpoint.restore_params(cfg.init.source, sharding.replicated(mesh))
            state["params"] = transfer_init.transplant(state["params"], source, cfg.init.positions)
        write_run_files(workdir, cfg, enabled=is_main)  # only once the state is known to fit
        n_params = count_params(nnx.merge(graphdef, state["params"]))
        fns = make_step_fns(graphdef, tx, bos_id=vocab, optim=cfg.optim, nan_step=cfg.train.inject_nan_at_step)
        train_step = jax.jit(fns.train, donate_argnums=0)
        eval_step = jax.jit(fns.eval)
        return _loop(cfg, workdir, mesh, rules, state, train_step, eval_step, train_ds, eval_ds, ckpt,
                     schedule, start or 0, n_params, flops_per_token(cfg.model, vocab, seq_len), is_main)


def _loop(cfg, workdir, mesh, rules, state, train_step, eval_step, train_ds, eval_ds, ckpt, schedule,
          start, n_params, flops_tok, is_main) -> dict[str, Any]:
    t = cfg.train
    tokens_per_step = t.global_batch * cfg.data.seq_len
    writer = MetricsWriter(workdir, enabled=is_main)
    progress = Progress(t.steps, start, enabled=is_main, workdir=workdir)
    preempt = PreemptionFlag()
    meta = {"data_seed": cfg.data.seed, "seq_len": cfg.data.seq_len, "params": n_params}
    last: dict[str, Any] = {}
    pending = None  # (step, metrics on device): read one step late so dispatch stays ahead

    def save(step):
        ckpt.save(step, state, dict(meta, step=step, data_step=step))

    def flush(item):
        step, dev, dt = item
        m = {k: float(v) for k, v in jax.device_get(dev).items()}
        _check_finite(step, m)
        if step % t.log_every == 0 or step == t.steps:
            rec = {"step": step, "split": "train", "loss": m["loss"], "bits_per_token": bits(m["loss"]),
                   "tokens_seen": step * tokens_per_step, "lr": float(schedule(step - 1)),
                   "grad_norm": m["grad_norm"], "step_time": dt, "tokens_per_s": tokens_per_step / dt,
                   "wall_time": time.time()}
            writer.write(rec)
            progress.update(step, rec, mfu_flops=flops_tok * tokens_per_step / dt)
            last.update(rec)

    try:
        step = start
        tick = time.perf_counter()
        while step < t.steps:
            rows = train_ds.batch(step, t.global_batch, process_index=jax.process_index(),
                                  process_count=jax.process_count())
            state, dev_metrics = train_step(state, sharding.put_batch(rows, mesh, rules))
            step += 1
            if pending is not None:
                flush(pending)
            now = time.perf_counter()
            pending, tick = (step, dev_metrics, now - tick), now
            boundary = step % t.checkpoint_every == 0 or step == t.steps
            stop = preempt.agreed()
            if boundary or stop or step % t.eval_every == 0:
                flush(pending)  # never save or evaluate past an unchecked step
                pending = None
            if step % t.eval_every == 0 or step == t.steps:
                loss = evaluate(eval_step, state, eval_ds, t.eval_batches, t.global_batch, mesh, rules)
                rec = {"step": step, "split": "eval", "loss": loss, "bits_per_token": bits(loss),
                       "tokens_seen": step * tokens_per_step, "wall_time": time.time()}
                writer.write(rec)
                progress.log_eval(step, rec)
                last["eval_loss"] = loss
            if boundary or stop:
                save(step)
            if stop:
                progress.message(f"SIGTERM: saved step {step}; exiting. Rerun the same command to resume.")
                break
            if boundary or step % t.eval_every == 0:
                tick = time.perf_counter()  # eval and save time is not step time
        if pending is not None:
            flush(pending)
        ckpt.wait()
    finally:
        preempt.restore()
        writer.close()
        progress.close()
        ckpt.close()
    return dict(last, step=step, preempted=preempt.raised)
