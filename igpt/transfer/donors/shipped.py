"""Donors that ship with igpt: small GPTs trained on the shipped prose and music
(configs/donors.py), so a transfer can start from a model that has learned its modality with
no pretraining of its own: `init.source = "shipped:prose"`.

Each lives in shipped/<name>/: params.safetensors (params only, fp32, keyed by parameter path:
"blocks/0/attn/wq/value"), config.json (the run that trained it), tokenizer/ (its tokenizer),
metrics.jsonl (its held-out evaluations) and donor.json (its vocabulary, what it reached, and
the loss on the first few validation sequences that a test recomputes).
ship.py writes them from finished runs and measures what donor.json records.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from igpt.transfer.arms import TransferError
from igpt.transfer.donors.growth import nest
from igpt.transfer.donors.safetensors_numpy import read_safetensors

SHIPPED = Path(__file__).parent / "shipped"
PARAMS, INFO, CONFIG, METRICS, TOKENIZER = "params.safetensors", "donor.json", "config.json", "metrics.jsonl", "tokenizer"


def names() -> list[str]:
    return sorted(d.name for d in SHIPPED.iterdir() if (d / INFO).is_file()) if SHIPPED.is_dir() else []


def directory(name: str) -> Path:
    """shipped/<name>, or a TransferError naming the donors that ship."""
    where = SHIPPED / name
    if not (where / INFO).is_file():
        raise TransferError(f"no shipped donor {name!r}; igpt ships {names()} (init.source='shipped:NAME'); "
                            "configs/donors.py trains them.")
    return where


def info(name: str) -> dict[str, Any]:
    return json.loads((directory(name) / INFO).read_text())


def pretraining_flops(name: str) -> float:
    """The FLOPs that trained the donor: its tokens seen x its run's training FLOPs per token."""
    recorded = info(name)
    return float(recorded["tokens_seen"]) * float(recorded["flops_per_token"])


def load(name: str) -> tuple[dict[str, Any], int]:
    """(params as a nested dict of numpy arrays keyed like a Transformer's nnx.State, vocabulary size)."""
    flat = read_safetensors(directory(name) / PARAMS)
    return nest({tuple(key.split("/")): np.array(value) for key, value in flat.items()}), int(info(name)["vocab"])


