"""Shipping a donor: python -m igpt.transfer.donors.ship RUN_DIR NAME [DATA_DIR]

Writes igpt/transfer/donors/shipped/NAME (shipped.py reads it) from a finished run of
configs/donors.py: params only (fp32; no optimizer state), its config, tokenizer and held-out
evaluations, and donor.json with the loss it reaches on the first CHECK_SEQUENCES validation
sequences, which a test recomputes.
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
from flax import nnx

from igpt import sharding
from igpt.data import pipeline
from igpt.gpt import row_losses
from igpt.model import Transformer
from igpt.training import loop
from igpt.training.checkpoint import restore_params
from igpt.transfer.arms import TransferError
from igpt.transfer.donors import shipped
from igpt.transfer.donors.growth import flatten
from igpt.transfer.donors.safetensors_numpy import write_safetensors
from igpt.treepaths import path_names

CHECK_SEQUENCES = 64  # validation sequences donor.json's check loss is measured on: a test recomputes it in seconds


def run_config(name: str) -> ml_collections.ConfigDict:
    """The config of the run that trained the donor."""
    return ml_collections.ConfigDict(json.loads((shipped.directory(name) / shipped.CONFIG).read_text()))


def eval_loss(name: str, split: str = "validation", sequences: int = CHECK_SEQUENCES,
              data_dir: str | None = None) -> float:
    """The donor's mean loss (nats/token) on the first `sequences` (at most all) of `split` of
    its own data, tokenized with its own tokenizer, on one device."""
    cfg = run_config(name)
    data = ml_collections.ConfigDict(cfg.data.to_dict())
    if data_dir is not None:
        data.data_dir = data_dir
    tokenizer = pipeline.build_tokenizer(ml_collections.ConfigDict(dict(data.to_dict(), tokenizer=str(
        shipped.directory(name) / shipped.TOKENIZER))))
    dataset = pipeline.build_dataset(data, split, tokenizer)
    rows = dataset.batch(0, min(sequences, len(dataset)), shuffle=False)
    params, vocab = shipped.load(name)
    one_device = sharding.mesh_config()
    one_device.num_devices = 1
    with loop.on_mesh(sharding.make_mesh(one_device), tuple(cfg.axis_rules)):
        graphdef, fresh = nnx.split(Transformer(cfg.model, vocab, data.seq_len, rngs=nnx.Rngs(0)), nnx.Param)
        model = nnx.merge(graphdef, in_structure_of(fresh, params))
        return float(np.mean(np.asarray(row_losses(model, rows, vocab))))


def in_structure_of(template: Any, params: dict[str, Any]) -> Any:
    """`params` (a nested dict keyed by path names) in the tree structure and dtypes of `template`."""
    flat = flatten(params)
    leaves, structure = jax.tree_util.tree_flatten_with_path(template)
    return jax.tree_util.tree_unflatten(structure, [np.asarray(flat[path_names(p)], leaf.dtype) for p, leaf in leaves])


def ship(run_dir: str, name: str, data_dir: str | None = None) -> dict[str, Any]:
    """Writes shipped/<name> from the finished run in `run_dir`: its params as fp32 safetensors,
    config, tokenizer and evaluations, and donor.json with the loss a test checks."""
    run = Path(run_dir)
    state = json.loads((run / "run.json").read_text())
    if state.get("status") != "finished":
        raise TransferError(f"{run} is {state.get('status')!r}, not finished: ship a donor once its run is done.")
    params, meta = restore_params(run, jax.sharding.SingleDeviceSharding(jax.devices()[0]))
    out = shipped.SHIPPED / name
    out.mkdir(parents=True, exist_ok=True)
    write_safetensors(out / shipped.PARAMS, {"/".join(k): np.asarray(v, np.float32) for k, v in flatten(params).items()})
    shutil.copyfile(run / shipped.CONFIG, out / shipped.CONFIG)
    shutil.copytree(run / shipped.TOKENIZER, out / shipped.TOKENIZER, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns(".*"))  # its files, not the lock that guarded its fitting
    records = [json.loads(line) for line in (run / shipped.METRICS).read_text().splitlines() if line.strip()]
    evals = [r for r in records if r.get("split") in ("validation", "test")]
    (out / shipped.METRICS).write_text("".join(json.dumps(r) + "\n" for r in evals))
    last = {r["split"]: r["loss"] for r in evals if r["step"] == state["step"]}
    cfg = json.loads((run / shipped.CONFIG).read_text())
    donor = {"name": name, "vocab": int(meta["vocab"]), "seq_len": cfg["data"]["seq_len"], "dtype": "float32",
             "steps": state["step"], "tokens_seen": state["step"] * cfg["train"]["global_batch"] * cfg["data"]["seq_len"],
             "flops_per_token": state["flops_per_token"],
             "eval": last, "eval_sequences": cfg["train"]["eval_sequences"],
             "train_wall_seconds": round(records[-1]["wall_time"] - records[0]["wall_time"]),
             "check": {"split": "validation", "sequences": CHECK_SEQUENCES}}
    (out / shipped.INFO).write_text(json.dumps(donor, indent=1) + "\n")
    donor["check"]["loss"] = eval_loss(name, "validation", CHECK_SEQUENCES, data_dir)
    donor["check"]["eval_sequences_loss"] = again = eval_loss(name, "validation", cfg["train"]["eval_sequences"],
                                                              data_dir)
    if abs(again - last["validation"]) > 1e-4:
        raise TransferError(f"shipped/{name} gives validation loss {again:.6f}, its run recorded "
                            f"{last['validation']:.6f}: the export does not reproduce the run.")
    (out / shipped.INFO).write_text(json.dumps(donor, indent=1) + "\n")
    return donor


if __name__ == "__main__":
    print(json.dumps(ship(*sys.argv[1:]), indent=1))
