"""The GPT task: next-token prediction on token streams, for pretraining and fine-tuning alike
(what differs is config: `init.mode`, `init.source`). A task for igpt/training/loop.py.

  igpt-train --config configs/tiny_images.py --workdir DIR
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from igpt import sharding
from igpt.data import pipeline, sources, specs
from igpt.model import Transformer, flops_per_token, model_config, with_bos
from igpt.training import loop, optim
from igpt.training.metrics import bits
from igpt.training.rundir import RunDir
from igpt.transfer import donors, init as transfer_init
from igpt.transfer.arms import check_mode
from igpt.transfer.init import needs_source


def optim_config(lr: float = 3e-4, warmup_steps: int = 100) -> ml_collections.ConfigDict:
    """AdamW with GPT's settings, plus grad_accum (micro-batches per step) and z_loss (weight of
    the log-partition penalty that keeps the logits from drifting)."""
    return optim.optim_config("adamw", lr, warmup_steps, grad_accum=1, z_loss=0.0)


def train_config(steps: int = 1000, global_batch: int = 32) -> ml_collections.ConfigDict:
    return loop.train_config(
        steps, global_batch,
        eval_sequences=512,  # each eval reads the first this many sequences of validation and test (0: all)
        shuffle_tokens=False)  # train on each sequence's tokens in random order (the shuffled-source control)


def shuffle_within_rows(rows: np.ndarray, seed: int, step: int) -> np.ndarray:
    """Each row's tokens in a random order drawn from (seed, step): the unigram statistics of
    every sequence stay, its structure goes."""
    rng = np.random.default_rng([seed, step, 1])
    return np.take_along_axis(rows, rng.permuted(np.broadcast_to(np.arange(rows.shape[1]), rows.shape), axis=1), 1)


def base_config(model: ml_collections.ConfigDict, data: ml_collections.ConfigDict, *,
                optim: ml_collections.ConfigDict | None = None,
                train: ml_collections.ConfigDict | None = None, seed: int = 0) -> ml_collections.ConfigDict:
    """Every section a GPT run reads, so an override of a missing key is an error."""
    return loop.run_config(seed=seed, train=train or train_config(), optim_cfg=optim or optim_config(),
                           model=model, data=data, init=transfer_init.init_config())


def token_loss(logits: jax.Array, targets: jax.Array, z_loss: float) -> tuple[jax.Array, jax.Array]:
    """(mean cross-entropy in nats, objective with z-loss) over all tokens."""
    logz = jax.nn.logsumexp(logits, axis=-1)
    nll = logz - jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    ce = jnp.mean(nll)
    return ce, ce + z_loss * jnp.mean(jnp.square(logz))


def make_objective(graphdef: Any, bos_id: int, z_loss: float) -> Callable:
    """(params, tokens) -> (objective, mean cross-entropy)."""
    def objective(params, tokens):
        model = nnx.merge(graphdef, params)
        ce, obj = token_loss(model(with_bos(tokens, bos_id)), tokens, z_loss)
        return obj, ce
    return objective


def row_losses(model: Transformer, tokens: jax.Array, bos_id: int) -> jax.Array:
    """Mean cross-entropy (nats/token) of each sequence [batch]: evals average exactly the rows they read."""
    logits = model(with_bos(tokens, bos_id))
    nll = jax.nn.logsumexp(logits, axis=-1) - jnp.take_along_axis(logits, tokens[..., None], axis=-1)[..., 0]
    return jnp.mean(nll, axis=-1)


def make_train_step(objective: Callable, tx: optax.GradientTransformation, grad_accum: int) -> Callable:
    """(state, tokens) -> (state, {"loss", "grad_norm"}): gradients summed over `grad_accum`
    micro-batches in a scan, then one optimizer update."""
    grad_fn = jax.value_and_grad(objective, has_aux=True)

    def train_step(state, tokens):
        micro = tokens.reshape(grad_accum, tokens.shape[0] // grad_accum, tokens.shape[1])

        def add(carry, mb):
            (_, ce), g = grad_fn(state["params"], mb)
            return jax.tree.map(jnp.add, carry, (ce, g)), None

        zero = (jnp.zeros((), jnp.float32), jax.tree.map(jnp.zeros_like, state["params"]))
        (ce, grads), _ = jax.lax.scan(add, zero, micro)
        ce, grads = ce / grad_accum, jax.tree.map(lambda g: g / grad_accum, grads)
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        new = dict(state, params=params, opt_state=opt_state, step=state["step"] + 1)
        return new, {"loss": ce, "grad_norm": optax.tree.norm(grads)}

    return train_step


def new_params(cfg: ml_collections.ConfigDict, vocab_size: int, seq_len: int) -> tuple[Any, Any]:
    """(graphdef, params) of a fresh model, sharded on the mesh that is set."""
    return nnx.split(Transformer(cfg.model, vocab_size, seq_len, rngs=nnx.Rngs(cfg.seed)), nnx.Param)


EMBEDDING_PARAMS = ("embed", "pos", "head")  # top-level params that scale with vocabulary or length


def parameter_counts(params: Any) -> dict[str, int]:
    """{"params": all, "non_embedding_params": all but EMBEDDING_PARAMS}."""
    sizes = {tuple(str(getattr(k, "key", k)) for k in path): int(np.prod(leaf.shape))
             for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]}
    return {"params": sum(sizes.values()),
            "non_embedding_params": sum(n for path, n in sizes.items() if path[0] not in EMBEDDING_PARAMS)}


class GPTTask:
    """Trains the transformer of `cfg` (base_config's sections) on `cfg.data`'s token stream."""

    kind = "gpt"
    optimizers = ("adamw",)
    unit = "token"
    flops_per_unit = 0.0  # known once setup() has read the vocabulary

    def __init__(self, cfg: ml_collections.ConfigDict):
        pipeline.resolve_seq_len(cfg.data)  # before the config is compared and written: it is what runs
        self.cfg = cfg
        self.units_per_row = cfg.data.seq_len

    def check(self) -> None:
        cfg = self.cfg
        if cfg.optim.grad_accum < 1:
            raise optim.OptimizerError(f"optim.grad_accum={cfg.optim.grad_accum} must be at least 1.")
        if cfg.train.eval_sequences < 0:
            raise loop.TrainConfigError(f"train.eval_sequences={cfg.train.eval_sequences} must be at least 0 "
                                        "(0: whole splits).")
        check_mode(cfg.init.mode, cfg.init.layers, cfg.model.num_layers)
        sources.check_source(cfg.data.source, cfg.data.data_dir)  # before the run dir holds anything
        if cfg.model.width % cfg.model.num_heads:
            raise loop.TrainConfigError(f"model.width={cfg.model.width} does not split into model.num_heads="
                                        f"{cfg.model.num_heads} heads; use a width that is a multiple of the heads.")

    def setup(self, run: RunDir, mesh: jax.sharding.Mesh) -> None:
        cfg = self.cfg
        shards = sharding.batch_shards(mesh, tuple(cfg.axis_rules))
        if cfg.train.global_batch % (cfg.optim.grad_accum * shards):
            raise sharding.MeshError(
                f"global batch {cfg.train.global_batch} must split into optim.grad_accum={cfg.optim.grad_accum} "
                f"micro-batches that each divide over {shards} batch shards.")
        self.tokenizer = pipeline.build_tokenizer(cfg.data, cache_dir=str(run.tokenizer))
        self.data = {split: pipeline.build_dataset(cfg.data, split, self.tokenizer) for split in pipeline.SPLITS}
        self.use_vocab(self.tokenizer.vocab_size, mesh, transfer_init.token_offset(cfg.init))

    def use_vocab(self, vocab_size: int, mesh: jax.sharding.Mesh, token_offset: int = 0) -> None:
        """What the model needs to know of the data; benchmarks call it alone to time steps on random tokens.
        The model's vocabulary is `token_offset` tokens (a donor's, under grow_vocab), then the data's."""
        self.token_offset = token_offset
        self.vocab = token_offset + vocab_size
        self.flops_per_unit = flops_per_token(self.cfg.model, self.vocab, self.cfg.data.seq_len)
        self.mesh = mesh

    def new_state(self, mesh: jax.sharding.Mesh) -> dict[str, Any]:
        self.graphdef, params = new_params(self.cfg, self.vocab, self.cfg.data.seq_len)
        self.param_counts = parameter_counts(params)
        return {"params": params}

    def run_info(self) -> dict[str, Any]:
        """Unique train tokens (D of a data-size sweep), parameters with and without the
        embeddings, positions and head (N of a scaling fit counts the rest), and where the data's
        token ids start in the model's vocabulary (a grow_vocab donor's size, else 0: what
        igpt-sample and igpt-probe add to the data's tokens)."""
        return {"train_tokens": len(self.data["train"]) * self.cfg.data.seq_len, **self.param_counts,
                "token_offset": self.token_offset}

    def optimizer_masks(self, params: Any) -> tuple[Any, Any]:
        return transfer_init.param_labels(params, self.cfg.init.mode, self.cfg.init.layers), None

    def initialize(self, state: dict[str, Any], mesh: jax.sharding.Mesh) -> dict[str, Any]:
        init = self.cfg.init
        donor = donors.load(init.source, sharding.replicated(mesh)) if needs_source(init.mode) else None
        state["params"] = transfer_init.initialize(init, state["params"], donor, self.cfg.seed, self.vocab)
        return state

    def meta(self) -> dict[str, Any]:
        cfg = self.cfg
        return {"seed": cfg.seed, "data_seed": cfg.data.seed, "seq_len": cfg.data.seq_len, "vocab": self.vocab}

    def rows(self, step: int) -> Any:
        rows = self.data["train"].batch(step, self.cfg.train.global_batch, process_index=jax.process_index(),
                                     process_count=jax.process_count())
        if self.cfg.train.shuffle_tokens:
            rows = shuffle_within_rows(rows, self.cfg.data.seed, step * jax.process_count() + jax.process_index())
        return rows + self.token_offset

    def make_train_step(self, tx: optax.GradientTransformation) -> Callable:
        graphdef, bos = self.graphdef, self.vocab
        self._row_losses = jax.jit(lambda state, tokens: row_losses(nnx.merge(graphdef, state["params"]), tokens, bos),
                                   out_shardings=sharding.replicated(self.mesh))  # every process reads every row
        return make_train_step(make_objective(graphdef, bos, self.cfg.optim.z_loss), tx, self.cfg.optim.grad_accum)

    def evaluate(self, state: dict[str, Any]) -> dict[str, dict[str, float]]:
        """Mean loss (nats/token) of validation and test, each over the same first
        train.eval_sequences sequences (or all of them) for every run."""
        return {split: {"loss": self._mean_loss(state, self.data[split])} for split in ("validation", "test")}

    def _mean_loss(self, state: dict[str, Any], data: pipeline.SequenceDataset) -> float:
        t = self.cfg.train
        n = len(data) if t.eval_sequences == 0 else min(t.eval_sequences, len(data))
        losses = []
        for i in range(-(-n // t.global_batch)):  # the last batch wraps to the start; its extra rows are dropped
            rows = data.batch(i, t.global_batch, process_index=jax.process_index(), process_count=jax.process_count(),
                              shuffle=False)
            losses.append(np.asarray(jax.device_get(self._row_losses(state, sharding.put_batch(
                rows + self.token_offset, self.mesh, tuple(self.cfg.axis_rules))))))
        return float(np.mean(np.concatenate(losses)[:n]))

    def describe(self, metrics: dict[str, float], step: int) -> dict[str, float]:
        return {"bits_per_token": bits(metrics["loss"]),
                "tokens_seen": step * self.cfg.train.global_batch * self.cfg.data.seq_len}

    def picture(self, state: dict[str, Any]) -> np.ndarray | None:
        """What the model draws now, every train.sample_every steps (igpt.sample.completion_picture)."""
        from igpt.sample import completion_picture
        return completion_picture(self.graphdef, state["params"], self.data["test"], self.tokenizer, self.cfg,
                                  self.mesh, self.token_offset)

    def finish(self, state: dict[str, Any], run: RunDir, last_eval: dict[str, float]) -> None:
        return None

    def defaults(self) -> ml_collections.ConfigDict:
        return base_config(model_config(), specs.text(""))


def train(cfg: ml_collections.ConfigDict, workdir: str, info: dict[str, Any] | None = None) -> loop.Outcome:
    """Trains (or resumes) the run in `workdir`."""
    return loop.run(GPTTask(cfg), workdir, info=info)
