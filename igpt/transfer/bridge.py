"""Random-label bridge training: a stage between a donor and the target run (Luo & Shen 2026,
"Language-Pretraining-Induced Bias", TMLR). The donor's model reads target-modality sequences
and a linear classifier on its average-pooled final features learns C random classes, each
example's class fixed by a seed; the body adapts to the new inputs without any target-task
signal. Every block trains, or only the listed ones (a partial bridge: the others frozen);
the token embeddings, positions and final norm train too, the language-model head (unused
here) is frozen. The bridged model, classifier dropped, then starts the usual target run
(init mode "full" from this run's directory).

A task for igpt/training/loop.py, a GPT task in all but its step and evaluations: a batch row
is an example's tokens followed by its class (one array, placed like any batch).
"""
from __future__ import annotations

import functools
import hashlib
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from igpt import sharding
from igpt.data import pipeline
from igpt.gpt import GPTTask, make_train_step
from igpt.model import Transformer, with_bos
from igpt.training import loop
from igpt.training.optim import FREEZE, TRAIN
from igpt.transfer.arms import check_blocks
from igpt.treepaths import path_names

CLASSIFIER = "classifier"  # the top-level params the bridge adds to a Transformer's; never carried on
# eval name -> split: fixed train examples (what the bridge fits), unseen ones (chance is all there is)
BRIDGE_EVALS = {"train_examples": "train", "validation": "validation"}


def bridge_config(steps: int = 200, classes: int = 10, lr: float = 1e-3, global_batch: int = 32,
                  warmup_steps: int = 20, label_seed: int = 0) -> ml_collections.ConfigDict:
    """An experiment's bridge stage (c.bridge): one bridge per arm, shared by its seeds and rates."""
    return ml_collections.ConfigDict(dict(steps=steps, classes=classes, lr=lr, global_batch=global_batch,
                                          warmup_steps=warmup_steps, label_seed=label_seed))


def task_section(classes: int = 10, blocks: tuple[int, ...] = (), label_seed: int = 0) -> ml_collections.ConfigDict:
    """A bridge run's own section (cfg.bridge, beside a GPT run's sections: igpt.gpt.base_config):
    its classes, the blocks it trains (none: all), the seed of the labels."""
    return ml_collections.ConfigDict(dict(classes=classes, blocks=tuple(blocks), label_seed=label_seed))


def random_labels(rows: np.ndarray, classes: int, seed: int) -> np.ndarray:
    """Each example's class in [0, classes), from a keyed hash of its tokens: fixed per example
    (in whatever batch, order or process it comes), independent of what it shows, another draw
    for another seed."""
    key = seed.to_bytes(8, "little", signed=True)
    return np.asarray([int.from_bytes(hashlib.blake2b(np.asarray(row, "<i4").tobytes(), digest_size=8,
                                                      key=key).digest(), "little") % classes
                       for row in rows], np.int32)


def pooled_features(model: Transformer, tokens: jax.Array) -> jax.Array:
    """Final-norm features [b, d] averaged over the positions of the BOS-prefixed inputs (the
    inputs the target run will read)."""
    x = model.embed_tokens(with_bos(tokens, model.bos_id), 0)
    x = model.scan_blocks(x) if model.scan_layers else functools.reduce(lambda h, block: block(h), model.blocks, x)
    return jnp.mean(model.final_norm(x).astype(jnp.float32), axis=1)


def split_params(params: Any) -> tuple[Any, Any]:
    """(the Transformer's params, the classifier's)."""
    return nnx.State({k: v for k, v in params.items() if k != CLASSIFIER}), params[CLASSIFIER]


def row_outcomes(graphdef: Any, params: Any, batch: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(cross-entropy [b], correct [b]) of the classifier on rows of tokens then label."""
    body, head = split_params(params)
    tokens, labels = batch[:, :-1], batch[:, -1]
    logits = pooled_features(nnx.merge(graphdef, body), tokens) @ head["w"] + head["b"]
    nll = jax.nn.logsumexp(logits, axis=-1) - jnp.take_along_axis(logits, labels[:, None], axis=-1)[:, 0]
    return nll, (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)


def bridge_labels(params: Any, blocks: tuple[int, ...]) -> Any:
    """TRAIN / FREEZE per weight: the listed blocks (none: all), embeddings, positions, final
    norm and classifier train; the other blocks and the language-model head are frozen."""
    def label(path, _):
        names = path_names(path)
        frozen = names[0] == "head" or (names[0] == "blocks" and blocks and int(names[1]) not in blocks)
        return FREEZE if frozen else TRAIN
    return jax.tree_util.tree_map_with_path(label, params)


class BridgeTask(GPTTask):
    """GPTTask's data, model and init; a classifier on pooled features learns random labels."""

    kind = "bridge"

    def check(self) -> None:
        super().check()
        b = self.cfg.bridge
        if b.classes < 2:
            raise loop.TrainConfigError(f"bridge.classes={b.classes}: random labels need at least 2 classes.")
        check_blocks(b.blocks, self.cfg.model.num_layers, "bridge.blocks")

    def new_state(self, mesh: jax.sharding.Mesh) -> dict[str, Any]:
        state = super().new_state(mesh)
        width, classes = self.cfg.model.width, self.cfg.bridge.classes
        w = jax.random.normal(jax.random.key(self.cfg.seed), (width, classes), jnp.float32) * width ** -0.5
        head = {"w": w, "b": jnp.zeros((classes,), jnp.float32)}
        state["params"] = nnx.State({**state["params"], CLASSIFIER: jax.device_put(head, sharding.replicated(mesh))})
        return state

    def run_info(self) -> dict[str, Any]:
        """GPT's (parameter counts of the Transformer, classifier not counted), the classes and blocks."""
        return dict(super().run_info(), classes=self.cfg.bridge.classes, blocks=list(self.cfg.bridge.blocks))

    def defaults(self) -> ml_collections.ConfigDict:
        c = super().defaults()
        c.bridge = task_section()
        return c

    def optimizer_masks(self, params: Any) -> tuple[Any, Any]:
        return bridge_labels(params, tuple(self.cfg.bridge.blocks)), None

    def meta(self) -> dict[str, Any]:
        b = self.cfg.bridge
        return dict(super().meta(), classes=b.classes, label_seed=b.label_seed, blocks=list(b.blocks))

    def rows(self, step: int) -> Any:
        return self._with_labels(super().rows(step))

    def _with_labels(self, tokens: np.ndarray) -> np.ndarray:
        b = self.cfg.bridge
        return np.concatenate([tokens, random_labels(tokens, b.classes, b.label_seed)[:, None]], axis=1)

    def make_train_step(self, tx: optax.GradientTransformation) -> Callable:
        graphdef = self.graphdef

        def objective(params, batch):
            loss = jnp.mean(row_outcomes(graphdef, params, batch)[0])
            return loss, loss

        self._outcomes = jax.jit(lambda state, batch: row_outcomes(graphdef, state["params"], batch),
                                 out_shardings=sharding.replicated(self.mesh))
        return make_train_step(objective, tx, self.cfg.optim.grad_accum)

    def evaluate(self, state: dict[str, Any]) -> dict[str, dict[str, float]]:
        """Loss and accuracy on the same first train.eval_sequences examples (or all) of train
        (fixed random labels: how far the bridge has fitted them) and of validation (unseen
        examples: chance, 1/classes, is all there is to reach)."""
        out = {}
        for name, split in BRIDGE_EVALS.items():
            nll, correct = self._outcomes_on(state, self.data[split])
            out[name] = {"loss": float(np.mean(nll)), "accuracy": float(np.mean(correct))}
        return out

    def _outcomes_on(self, state: dict[str, Any], data: pipeline.SequenceDataset) -> tuple[np.ndarray, np.ndarray]:
        t = self.cfg.train
        n = len(data) if t.eval_sequences == 0 else min(t.eval_sequences, len(data))
        outcomes = []
        for i in range(-(-n // t.global_batch)):  # the last batch wraps to the start; its extra rows are dropped
            rows = data.batch(i, t.global_batch, process_index=jax.process_index(), process_count=jax.process_count(),
                              shuffle=False) + self.token_offset
            batch = sharding.put_batch(self._with_labels(rows), self.mesh, tuple(self.cfg.axis_rules))
            outcomes.append(jax.device_get(self._outcomes(state, batch)))
        nll, correct = (np.concatenate([np.asarray(o[k]) for o in outcomes])[:n] for k in (0, 1))
        return nll, correct

    def describe(self, metrics: dict[str, float], step: int) -> dict[str, float]:
        examples = step * self.cfg.train.global_batch
        return {"examples_seen": examples, "tokens_seen": examples * self.cfg.data.seq_len}


def train(cfg: ml_collections.ConfigDict, workdir: str, info: dict[str, Any] | None = None) -> loop.Outcome:
    """Trains (or resumes) the bridge run in `workdir`."""
    return loop.run(BridgeTask(cfg), workdir, info=info)

