"""Representations of trained runs: each layer's residual stream read from a run's checkpoints,
a linear probe per layer and checkpoint, and CKA and linear stitching between two runs on the
same inputs. The measures themselves are igpt/representations.py (pure numpy); this module
runs the models, on any mesh their checkpoints restore onto, and writes the records there.

  probe_run("runs/digits")                       -> RUN/probe.jsonl (igpt-probe --workdir RUN)
  compare_runs("EXP/target/prose__full/...", "EXP/target/scratch/...")
                                                 -> A/similarity.jsonl (igpt-probe --compare B)
  probe_experiment("EXP")                        every target run of a labelled target, and
                                                 each arm against scratch (igpt-transfer's step)

Features follow iGPT: a sequence is read as the model reads it in training ([BOS, x_0 ..
x_{T-2}]) and each layer's output is averaged over the positions. Stitching (Bansal et al.
2021) runs model A up to layer i, maps its residual stream with an affine map learned on the
train split, then runs model B from block j + 1 on; its test loss above B's own says how far
A's layer i is from being linearly readable as B's layer j. The map is the least-squares fit of
B's stream from A's; `stitch_steps` > 0 then trains it on B's next-token loss with both models
frozen, as Bansal et al. do (on a CPU that costs minutes per pair of runs, hence not by default).
"""
from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from igpt import sharding, tokenizers
from igpt.data import pipeline
from igpt.data.errors import DataError
from igpt.data.labels import check_labelled, has_labels, split_labels
from igpt.gpt import row_losses
from igpt.model import Transformer, with_bos
from igpt.paths import as_path, dirs_holding
from igpt.representations import (DEFAULT_CS, PROBE_FILE, SIMILARITY_FILE, cka_matrix, fit_linear_map,
                                  layer_names, linear_probe, read_records, replace_records)
from igpt.sample import Run, axis_rules, load_run, read_config
from igpt.training.checkpoint import Checkpointer
from igpt.training.metrics import bits
from igpt.training.rundir import RUN_INFO_FILE, RunDir
from igpt.transfer.arms import SCRATCH

BATCH = 64  # sequences per forward pass when features are read


# ----------------------------------------------------------------------------- features

def residual_streams(model: Transformer, inputs: jax.Array) -> list[jax.Array]:
    """The residual stream [b, t, d] after the embeddings, after each block, and after the
    final norm: num_layers + 2 readouts (igpt.representations.layer_names)."""
    x = model.embed_tokens(inputs, 0)
    streams = [x]
    for block in model.blocks:
        x = block(x)
        streams.append(x)
    return streams + [model.final_norm(x)]


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _pooled(graphdef: nnx.GraphDef, params: nnx.State, tokens: jax.Array) -> jax.Array:
    model = nnx.merge(graphdef, params)
    streams = residual_streams(model, with_bos(tokens, model.bos_id))
    return jnp.stack([s.astype(jnp.float32).mean(axis=1) for s in streams])


def _in_batches(tokens: np.ndarray, batch: int, fn: Callable[[np.ndarray], np.ndarray], axis: int = 0) -> np.ndarray:
    """fn over rows of `tokens` in batches of exactly `batch` (the last one padded by repeating
    rows, so every call has one shape and compiles once), concatenated along `axis`."""
    out = []
    for start in range(0, len(tokens), batch):
        rows = tokens[start:start + batch]
        padded = np.concatenate([rows, np.repeat(rows[-1:], batch - len(rows), axis=0)])
        out.append(np.take(fn(padded), np.arange(len(rows)), axis=axis))
    return np.concatenate(out, axis=axis)


def feature_mesh(batch: int = BATCH) -> jax.sharding.Mesh:
    """The default mesh for reading features: data parallel over as many local devices as
    divide the batch, params laid as the run's rules say. A model too large for one device
    passes its own mesh (e.g. fsdp) to probe_run / compare_runs instead."""
    cfg = sharding.mesh_config()
    cfg.num_devices = math.gcd(batch, jax.local_device_count())
    return sharding.make_mesh(cfg)


def pooled_features(run: Run, tokens: np.ndarray, mesh: jax.sharding.Mesh, batch: int = BATCH) -> np.ndarray:
    """Average-pooled residual streams [num_layers + 2, n, d] of token sequences [n, T] (the data
    tokenizer's ids: the model reads them + the run's token_offset, as it did in training)."""
    rules = axis_rules(run.config)
    with jax.set_mesh(mesh), nnx.logical_axis_rules(rules):
        fn = lambda rows: np.asarray(_pooled(run.graphdef, run.params, sharding.put_batch(rows, mesh, rules)))
        return _in_batches(np.asarray(tokens, np.int32) + run.token_offset, batch, fn, axis=1)


# ----------------------------------------------------------------------------- data

def probe_data(cfg: ml_collections.ConfigDict, workdir: str | os.PathLike, source: str | None = None,
               data_dir: str | None = None, max_examples: int | None = None) -> ml_collections.ConfigDict:
    """The run's data section, tokenized by the run's own saved tokenizer, on the whole train
    split (not a data-size sweep's prefix); `source` swaps the dataset (its own train and test
    splits, validation held out of train) at the run's resolution."""
    data = ml_collections.ConfigDict(cfg.data.to_dict())
    data.tokenizer = str(RunDir.at(workdir).tokenizer)
    data.train_examples = 0
    if source and source != data.source:
        data.source, data.train_split, data.test_split, data.validation_split = source, "train", "test", ""
        data.feature = ""
    if data_dir:
        data.data_dir = data_dir
    if max_examples is not None:
        data.max_examples = max_examples
    return data


def _sequences(data_cfg: ml_collections.ConfigDict, split: str, tokenizer: tokenizers.Tokenizer) -> np.ndarray:
    return pipeline.build_dataset(data_cfg, split, tokenizer).tokens


def committed_steps(workdir: str | os.PathLike) -> list[int]:
    """The run's committed checkpoint steps, oldest first."""
    checkpoints = RunDir.at(workdir).checkpoints
    if not checkpoints.is_dir():
        raise FileNotFoundError(f"{workdir} has no {checkpoints.name}/: the run saved no checkpoint to probe; "
                                "train it until its first train.checkpoint_every step.")
    ckpt = Checkpointer(checkpoints)
    try:
        steps = sorted(ckpt.steps())
    finally:
        ckpt.close()
    if not steps:
        raise FileNotFoundError(f"{workdir} holds no committed checkpoint yet; wait for the run's first save.")
    return steps


# ----------------------------------------------------------------------------- probe

def probe_run(workdir: str | os.PathLike, source: str | None = None, steps: Sequence[int] | None = None, *,
              data_dir: str | None = None, max_examples: int | None = None, cs: Sequence[float] = DEFAULT_CS,
              mesh: jax.sharding.Mesh | None = None, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """A linear probe on every layer at each of `steps` (default: every committed checkpoint),
    fitted on train, C chosen on validation, accuracy on test; the records replace any earlier
    ones for the same data and step in RUN/probe.jsonl, and are returned."""
    cfg = read_config(workdir)
    data_cfg = probe_data(cfg, workdir, source, data_dir, max_examples)
    check_labelled(data_cfg)
    tokenizer = tokenizers.load(RunDir.at(workdir).tokenizer)
    splits = {}
    for split in pipeline.SPLITS:
        tokens, labels = _sequences(data_cfg, split, tokenizer), split_labels(data_cfg, split)
        if len(tokens) != len(labels):
            raise DataError(f"{data_cfg.source} split {split!r}: {len(tokens)} sequences but {len(labels)} labels; "
                            "a probe needs one sequence per labelled image.")
        splits[split] = (tokens, labels)
    available = committed_steps(workdir)
    missing = sorted(set(steps or ()) - set(available))
    if missing:
        raise FileNotFoundError(f"{workdir} has no committed checkpoint at step(s) {missing}; it has {available}.")
    mesh = mesh or feature_mesh()
    names = layer_names(cfg.model.num_layers)
    records = []
    for step in sorted(steps or available):
        run = load_run(workdir, mesh, step)
        features = {split: pooled_features(run, tokens, mesh) for split, (tokens, _) in splits.items()}
        for layer, name in enumerate(names):
            result = linear_probe(*((features[s][layer], splits[s][1]) for s in pipeline.SPLITS), cs=cs)
            records.append({"data": data_cfg.source, "step": step, "layer": layer, "layer_name": name,
                            "test_accuracy": result.test_accuracy,
                            "validation_accuracy": result.validation_accuracy, "c": result.c,
                            "chance": result.chance, "classes": result.classes,
                            **{f"{s}_examples": len(splits[s][1]) for s in pipeline.SPLITS}})
        best = max(records[-len(names):], key=lambda r: r["validation_accuracy"])
        log(f"probe {workdir} step {step} on {data_cfg.source}: "
            + ", ".join(f"{r['layer_name']} {r['test_accuracy']:.3f}" for r in records[-len(names):])
            + f" (test accuracy; best on validation: {best['layer_name']}; chance {best['chance']:.3f})")
    replace_records(as_path(workdir) / PROBE_FILE, records, same=lambda r: [r["data"], r["step"]])
    return records


# ----------------------------------------------------------------------------- stitching

def _body_streams(model: Transformer, tokens: jax.Array) -> jax.Array:
    """The residual stream after 0 .. num_layers blocks, stacked: [num_layers + 1, b, t, d]."""
    return jnp.stack(residual_streams(model, with_bos(tokens, model.bos_id))[:-1])


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _stream_rows(graphdef: nnx.GraphDef, params: nnx.State, tokens: jax.Array, positions: jax.Array) -> jax.Array:
    """The streams after 0 .. num_layers blocks at the given positions of each row: [layers + 1, b, p, d]."""
    streams = _body_streams(nnx.merge(graphdef, params), tokens).astype(jnp.float32)
    return jnp.take_along_axis(streams, positions[None, :, :, None], axis=2)


def _stitched_row_losses(graph_a, params_a, graph_b, params_b, affine, tokens_a, tokens_b, i, j):
    """Mean nats per token of each row when A runs to layer i, the affine map carries its stream
    into B's width, and B runs from block j + 1 on, predicting B's tokens. i and j are traced:
    both models run whole and the unused blocks are discarded, so every (i, j) shares one program."""
    a, b = nnx.merge(graph_a, params_a), nnx.merge(graph_b, params_b)
    h = (_body_streams(a, tokens_a)[i].astype(jnp.float32) @ affine["w"] + affine["b"]).astype(b.dtype)
    for k, block in enumerate(b.blocks):
        h = jnp.where(k >= j, block(h), h)
    logits = b.logits(h)
    nll = jax.nn.logsumexp(logits, axis=-1) - jnp.take_along_axis(logits, tokens_b[..., None], axis=-1)[..., 0]
    return jnp.mean(nll, axis=-1)


_stitched_eval = jax.jit(_stitched_row_losses, static_argnames=("graph_a", "graph_b"))


@functools.partial(jax.jit, static_argnames=("graph_a", "graph_b", "tx"))
def _stitch_step(graph_a, params_a, graph_b, params_b, affine, opt_state, tokens_a, tokens_b, i, j, tx):
    loss = lambda m: jnp.mean(_stitched_row_losses(graph_a, params_a, graph_b, params_b, m, tokens_a, tokens_b, i, j))
    value, grads = jax.value_and_grad(loss)(affine)
    updates, opt_state = tx.update(grads, opt_state, affine)
    return optax.apply_updates(affine, updates), opt_state, value


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _own_row_losses(graphdef: nnx.GraphDef, params: nnx.State, tokens: jax.Array) -> jax.Array:
    model = nnx.merge(graphdef, params)
    return row_losses(model, tokens, model.bos_id)


def stitching_penalties(a: Run, b: Run, train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray],
                        mesh: jax.sharding.Mesh, *, steps: int = 0, lr: float = 1e-3, batch: int = BATCH,
                        positions_per_row: int = 16, seed: int = 0) -> tuple[np.ndarray, float]:
    """(stitched test loss minus B's own [layers of A + 1, layers of B + 1], B's own test loss),
    both in bits/token. `train` and `test` are (A's tokens, B's tokens) of the same inputs, row
    for row, as the data tokenizers give them (each model reads them + its run's token_offset).
    Each map is fitted on train: least squares over `positions_per_row` random positions of each
    row, then `steps` Adam steps on B's next-token loss at batch `batch`."""
    rules = axis_rules(b.config)
    rng = np.random.default_rng(seed)
    (train_a, train_b), (test_a, test_b) = ((np.asarray(x, np.int32) + run.token_offset for x, run in zip(pair, (a, b)))
                                            for pair in (train, test))
    length = train_a.shape[1]
    if {train_b.shape[1], test_a.shape[1], test_b.shape[1]} != {length}:
        raise DataError(f"stitching needs both runs to read sequences of one length; got {train_a.shape[1]} "
                        f"(A) and {train_b.shape[1]} (B) tokens.")
    positions = np.stack([rng.choice(length, min(positions_per_row, length), replace=False)
                          for _ in train_a]).astype(np.int32)
    layers_a, layers_b = a.config.model.num_layers, b.config.model.num_layers
    tx = optax.adam(lr)
    with jax.set_mesh(mesh), nnx.logical_axis_rules(rules):
        put = lambda rows: sharding.put_batch(rows, mesh, rules)

        def fit_rows(run: Run, tokens: np.ndarray) -> np.ndarray:
            """[layers + 1, rows * positions, d]: the streams at the sampled positions of every row."""
            fn = lambda idx: np.asarray(_stream_rows(run.graphdef, run.params, put(tokens[idx]), put(positions[idx])))
            streams = _in_batches(np.arange(len(tokens)), BATCH, fn, axis=1)
            return streams.reshape(streams.shape[0], -1, streams.shape[-1])

        def test_bits(losses: Callable[[np.ndarray], jax.Array]) -> float:
            return bits(float(np.mean(_in_batches(np.arange(len(test_b)), BATCH, lambda idx: np.asarray(losses(idx))))))

        base = test_bits(lambda idx: _own_row_losses(b.graphdef, b.params, put(test_b[idx])))
        sources, targets = fit_rows(a, train_a), fit_rows(b, train_b)
        penalty = np.zeros((layers_a + 1, layers_b + 1))
        for i in range(layers_a + 1):
            for j in range(layers_b + 1):
                w, bias = fit_linear_map(sources[i], targets[j])
                affine = {"w": jnp.asarray(w, jnp.float32), "b": jnp.asarray(bias, jnp.float32)}
                opt_state = tx.init(affine)
                for _ in range(steps):
                    idx = rng.choice(len(train_a), batch, replace=len(train_a) < batch)
                    affine, opt_state, loss = _stitch_step(a.graphdef, a.params, b.graphdef, b.params, affine,
                                                           opt_state, put(train_a[idx]), put(train_b[idx]),
                                                           np.int32(i), np.int32(j), tx=tx)
                    # One step in flight: a queue of all-reduces over many virtual CPU devices on few
                    # cores can miss XLA's 40 s rendezvous timeout and abort the process.
                    loss.block_until_ready()
                penalty[i, j] = test_bits(lambda idx: _stitched_eval(
                    a.graphdef, a.params, b.graphdef, b.params, affine, put(test_a[idx]), put(test_b[idx]),
                    np.int32(i), np.int32(j))) - base
    return penalty, base


# ----------------------------------------------------------------------------- two runs

def _who(workdir: str | os.PathLike) -> tuple[str, str]:
    """(the run as the report names it, the group it is averaged in): its arm and seed from
    run.json, and its arm; else its name (or directory) for both."""
    info = RunDir.at(workdir).read_info()
    if info.get("arm") is not None:
        return f"{info['arm']} seed {info.get('seed')}", str(info["arm"])
    name = str(info.get("name") or as_path(workdir).name)
    return name, name


def _aligned_data(cfg_a: ml_collections.ConfigDict, cfg_b: ml_collections.ConfigDict, a, b, source, data_dir,
                  max_examples) -> tuple[ml_collections.ConfigDict, ml_collections.ConfigDict]:
    """Each run's data section for the same inputs (B's dataset unless `source`): one sequence per
    image, or for text and audio the same tokenizer and length, so rows match."""
    source = source or cfg_b.data.source
    data_a = probe_data(cfg_a, a, source, data_dir or cfg_b.data.data_dir, max_examples)
    data_b = probe_data(cfg_b, b, source, data_dir, max_examples)
    if data_a.modality != data_b.modality or (data_a.modality != "image" and (
            cfg_a.data.tokenizer != cfg_b.data.tokenizer or data_a.seq_len != data_b.seq_len)):
        raise DataError(f"runs {a} ({data_a.modality}, {cfg_a.data.tokenizer}) and {b} ({data_b.modality}, "
                        f"{cfg_b.data.tokenizer}) cannot read the same inputs row for row; compare two image runs, "
                        "or two runs with one tokenizer and sequence length.")
    return data_a, data_b


def compare_runs(workdir_a: str | os.PathLike, workdir_b: str | os.PathLike, source: str | None = None, *,
                 step_a: int | None = None, step_b: int | None = None, data_dir: str | None = None,
                 max_examples: int | None = None, eval_sequences: int = 512, stitch: bool = True,
                 stitch_steps: int = 0, mesh: jax.sharding.Mesh | None = None,
                 log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Linear CKA between every layer of run A and of run B on the first `eval_sequences` test
    inputs (pooled features), and, with `stitch`, the stitching penalty of every (layer of A,
    layer of B); written to A/similarity.jsonl (replacing an earlier comparison of the same
    runs, steps, data and kind) and returned."""
    cfg_a, cfg_b = read_config(workdir_a), read_config(workdir_b)
    data_a, data_b = _aligned_data(cfg_a, cfg_b, workdir_a, workdir_b, source, data_dir, max_examples)
    tok_a, tok_b = (tokenizers.load(RunDir.at(w).tokenizer) for w in (workdir_a, workdir_b))
    mesh = mesh or feature_mesh()
    run_a, run_b = load_run(workdir_a, mesh, step_a), load_run(workdir_b, mesh, step_b)
    test = [_sequences(d, "test", t) for d, t in ((data_a, tok_a), (data_b, tok_b))]
    if len(test[0]) != len(test[1]):
        raise DataError(f"{data_b.source} gives {len(test[0])} test sequences to {workdir_a} but {len(test[1])} to "
                        f"{workdir_b}; compare runs that cut the data alike.")
    n = min(len(test[0]), eval_sequences or len(test[0]))
    test = [t[:n] for t in test]
    (a_name, a_group), (b_name, b_group) = _who(workdir_a), _who(workdir_b)
    common = {"a": str(as_path(workdir_a)), "b": str(as_path(workdir_b)), "a_name": a_name, "b_name": b_name,
              "a_group": a_group, "b_group": b_group, "step_a": run_a.step, "step_b": run_b.step,
              "data": data_b.source, "split": "test", "examples": n}
    features_a, features_b = (pooled_features(r, t, mesh) for r, t in ((run_a, test[0]), (run_b, test[1])))
    records = [dict(common, kind="cka", layers_a=layer_names(cfg_a.model.num_layers),
                    layers_b=layer_names(cfg_b.model.num_layers),
                    matrix=cka_matrix(features_a, features_b).round(6).tolist())]
    log(f"CKA {common['a_name']} (rows) vs {common['b_name']} (columns) on {n} test inputs:\n"
        + "\n".join("  " + " ".join(f"{v:.2f}" for v in row) for row in records[0]["matrix"]))
    if stitch:
        train = [_sequences(d, "train", t) for d, t in ((data_a, tok_a), (data_b, tok_b))]
        penalty, base = stitching_penalties(run_a, run_b, train, test, mesh, steps=stitch_steps)
        records.append(dict(common, kind="stitching", layers_a=layer_names(cfg_a.model.num_layers)[:-1],
                            layers_b=layer_names(cfg_b.model.num_layers)[:-1], base_bits=base,
                            stitch_steps=stitch_steps, train_examples=len(train[0]),
                            matrix=penalty.round(6).tolist()))
        log(f"stitching penalty (bits/token over {common['b_name']}'s own {base:.3f}), A's layer (rows) into B's "
            "(columns):\n" + "\n".join("  " + " ".join(f"{v:+.3f}" for v in row) for row in penalty))
    replace_records(as_path(workdir_a) / SIMILARITY_FILE, records,
                    same=lambda r: [r["kind"], r["b"], r["step_a"], r["step_b"], r["data"]])
    return records


# ----------------------------------------------------------------------------- an experiment

def _target_runs(exp_dir: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """Finished target runs of the experiment: run dir -> run.json."""
    runs = {}
    for d in dirs_holding(as_path(exp_dir) / "target", RUN_INFO_FILE):
        info = RunDir(d).read_info()
        if info.get("role") == "target" and info.get("finished"):
            runs[str(d)] = info
    return runs


def comparison_pairs(runs: dict[str, dict[str, Any]]) -> list[tuple[str, str]]:
    """(A, B) pairs of target runs (dir -> run.json) an experiment compares: each transfer arm's
    run with scratch's at the same rate, seed and train size; and each scratch run with scratch's
    next seed there, the reference for how alike two trainings of one recipe come out."""
    key = lambda info: (info.get("lr"), info.get("train_examples") or 0)
    scratch: dict[tuple, dict[int, str]] = {}
    for d, info in runs.items():
        if info.get("arm") == SCRATCH:
            scratch.setdefault(key(info), {})[info["seed"]] = d
    pairs = []
    for d, info in sorted(runs.items()):
        seeds = scratch.get(key(info), {})
        if info.get("arm") != SCRATCH and info.get("seed") in seeds:
            pairs.append((d, seeds[info["seed"]]))
        elif info.get("arm") == SCRATCH and len(seeds) > 1:
            order = sorted(seeds)
            pairs.append((d, seeds[order[(order.index(info["seed"]) + 1) % len(order)]]))
    return pairs


def probe_experiment(exp_dir: str | os.PathLike, data_cfg: ml_collections.ConfigDict, *, stitch_steps: int = 0,
                     log: Callable[[str], None] = print) -> bool:
    """igpt-transfer's representations step, run once the target runs are trained: when the
    target (`data_cfg`) has class labels, probes every finished target run at each checkpoint
    not probed yet, and compares the `comparison_pairs` not compared yet (CKA, stitching).
    False, doing nothing, when the target has no labels."""
    if not has_labels(data_cfg):
        log(f"representations: {data_cfg.source} has no class labels; no linear probes.")
        return False
    runs = _target_runs(exp_dir)
    for run_dir in runs:
        probed = {r["step"] for r in read_records(as_path(run_dir) / PROBE_FILE) if r["data"] == data_cfg.source}
        todo = [s for s in committed_steps(run_dir) if s not in probed]
        if todo:
            probe_run(run_dir, steps=todo, log=log)
    for a, b in comparison_pairs(runs):
        done = {r["kind"] for r in read_records(as_path(a) / SIMILARITY_FILE) if r["b"] == str(as_path(b))}
        if not {"cka", "stitching"} <= done:
            compare_runs(a, b, stitch_steps=stitch_steps, log=log)
    return True
