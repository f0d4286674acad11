"""Donors: the pretrained models a run starts from, and how their tensors grow into it.

`init.source` names a donor: an igpt run directory (its latest checkpoint; `igpt-import`
writes such a directory from a Hugging Face checkpoint), `hf:DIR`, a Hugging Face GPT-2
checkpoint read directly (hf_gpt2.py), or `shipped:NAME`, a donor that ships with igpt
(shipped.py: prose, music). growth.py grows a donor's vocabulary, width and depth.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import orbax.checkpoint as ocp

from igpt.paths import as_path
from igpt.quiet import absl_errors_only
from igpt.training.checkpoint import restore_params
from igpt.training.rundir import RunDir
from igpt.transfer.donors import hf_gpt2, shipped

HF_PREFIX, SHIPPED_PREFIX = "hf:", "shipped:"


@dataclass(frozen=True)
class Donor:
    """A donor's params (a tree keyed like an igpt Transformer's nnx.State) and its vocabulary
    size (its BOS is token id `vocab`)."""
    params: Any
    vocab: int


def hf_directory(source: str) -> str | None:
    """DIR of an "hf:DIR" source, else None."""
    return source[len(HF_PREFIX):] if source.startswith(HF_PREFIX) else None


def shipped_name(source: str) -> str | None:
    """NAME of a "shipped:NAME" source, else None."""
    return source[len(SHIPPED_PREFIX):] if source.startswith(SHIPPED_PREFIX) else None


def load(source: str, sharding: jax.sharding.Sharding) -> Donor:
    """The donor named by `source`, its params placed with `sharding`."""
    directory, name = hf_directory(source), shipped_name(source)
    if directory is not None:
        params, hf = hf_gpt2.load(directory)
        vocab = hf_gpt2.vocab_size(hf)
    elif name is not None:
        params, vocab = shipped.load(name)
    else:
        params, meta = restore_params(source, sharding)
        return Donor(params, int(meta["vocab"]))
    return Donor(jax.tree.map(lambda a: jax.device_put(a, sharding), params), vocab)


def vocab_size(source: str) -> int:
    """The donor's vocabulary size, read from its config or checkpoint metadata (no weights)."""
    directory, name = hf_directory(source), shipped_name(source)
    if directory is not None:
        return hf_gpt2.vocab_size(hf_gpt2.read_config(directory))
    if name is not None:
        return int(shipped.info(name)["vocab"])
    return int(_checkpoint_meta(source)["vocab"])


def pretraining_flops(source: str) -> float | None:
    """FLOPs spent training the donor (tokens seen x training FLOPs per token), for the report's
    FLOPs speedup; None when unknown: an imported language model, or a run that did not count them."""
    if hf_directory(source) is not None:
        return None
    name = shipped_name(source)
    if name is not None:
        return shipped.pretraining_flops(name)
    run = RunDir.at(source)
    info, cfg = run.read_info(), run.read_config() or {}
    try:
        tokens = int(info["step"]) * int(cfg["train"]["global_batch"]) * int(cfg["data"]["seq_len"])
    except (KeyError, TypeError, ValueError):
        return None
    return tokens * float(info.get("flops_per_token") or 0.0) or None


def _checkpoint_meta(run_dir: str) -> dict[str, Any]:
    directory = RunDir.at(run_dir).checkpoints
    if not as_path(directory).is_dir():
        raise FileNotFoundError(f"{run_dir} has no {directory.name}/ directory: it is not an igpt run "
                                "with checkpoints. Pretrain it first, or fix init.source.")
    with absl_errors_only():
        manager = ocp.CheckpointManager(directory, item_handlers={"meta": ocp.JsonCheckpointHandler()},
                                        options=ocp.CheckpointManagerOptions(read_only=True, create=False))
    try:
        step = manager.latest_step()
        if step is None:
            raise FileNotFoundError(f"{directory} holds no committed checkpoint; finish the donor run first.")
        return manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
    finally:
        manager.close()
