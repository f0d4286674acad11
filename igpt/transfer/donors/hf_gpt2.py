"""Hugging Face GPT-2-family checkpoints (config.json + safetensors) as igpt parameters.

GPT-2 is igpt's Transformer with `bias`, `tie_embeddings` and `norm_eps` set: learned
positions, pre-LayerNorm, GELU in its tanh form (igpt's), the head tied to the embedding.
HF's Conv1D stores weights [in, out] (igpt's layout, no transpose); the fused `c_attn`
[d, 3d] splits into q, k, v and each into heads [d, heads, head_dim].

BOS: igpt's BOS is token id vocab_size, a row GPT-2 does not have. The import fills that row
with the donor's `bos_token_id` row (<|endoftext|>, 50256 in GPT-2), so igpt's "start of
sequence" input is GPT-2's. The tied head covers the vocab_size real tokens only.

Reads local files only (no download): `huggingface-cli download gpt2 config.json
model.safetensors --local-dir gpt2` on a networked machine fetches what it needs.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np

from igpt.model import model_config as igpt_model_config
from igpt.transfer.arms import TransferError
from igpt.transfer.donors.safetensors_numpy import read_safetensors

CONFIG_FILE, WEIGHTS_FILE, INDEX_FILE = "config.json", "model.safetensors", "model.safetensors.index.json"
TANH_GELUS = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast")  # the same function: GELU's tanh form
_PREFIX = "transformer."  # GPT2LMHeadModel's key prefix; a bare GPT2Model's keys have none
_UNUSED = re.compile(r"h\.\d+\.attn\.(bias|masked_bias)$")  # causal-mask buffers of old checkpoints


def read_config(directory: str | os.PathLike) -> dict[str, Any]:
    """config.json of a checkpoint directory, checked to describe a model igpt can run."""
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: an hf:DIR donor is a directory holding config.json and "
                                f"{WEIGHTS_FILE} (or {INDEX_FILE} and its shards).")
    hf = json.loads(path.read_text())
    check_architecture(hf, str(path))
    return hf


def check_architecture(hf: dict[str, Any], where: str) -> None:
    """Raises TransferError naming the first setting igpt's Transformer cannot reproduce."""
    kind = hf.get("model_type")
    if kind != "gpt2":
        raise TransferError(f"{where} describes model_type {kind!r} ({', '.join(hf.get('architectures') or [])}); "
                            "igpt imports GPT-2-family checkpoints only (model_type 'gpt2').")
    width, inner = hf.get("n_embd", 768), hf.get("n_inner") or 4 * hf.get("n_embd", 768)
    unsupported = [
        (hf.get("activation_function", "gelu_new") not in TANH_GELUS,
         f"activation_function {hf.get('activation_function')!r} (igpt's MLP is GELU's tanh form: {TANH_GELUS})"),
        (not hf.get("scale_attn_weights", True), "scale_attn_weights false (igpt scales by 1/sqrt(head_dim))"),
        (hf.get("scale_attn_by_inverse_layer_idx", False), "scale_attn_by_inverse_layer_idx true"),
        (hf.get("add_cross_attention", False), "add_cross_attention true"),
        (inner % width, f"n_inner {inner} not a multiple of n_embd {width} (igpt's mlp_ratio is an integer)"),
        (width % hf.get("n_head", 12), f"n_embd {width} not divisible by n_head {hf.get('n_head')}"),
    ]
    for bad, what in unsupported:
        if bad:
            raise TransferError(f"{where}: {what}; igpt's Transformer cannot reproduce this GPT-2 variant.")


def model_overrides(hf: dict[str, Any]) -> dict[str, Any]:
    """The igpt model config fields that make its Transformer this checkpoint's architecture."""
    width = hf.get("n_embd", 768)
    return dict(num_layers=hf.get("n_layer", 12), width=width, num_heads=hf.get("n_head", 12),
                mlp_ratio=(hf.get("n_inner") or 4 * width) // width, mlp="gelu", positions="learned",
                bias=True, tie_embeddings=bool(hf.get("tie_word_embeddings", True)),
                norm_eps=float(hf.get("layer_norm_epsilon", 1e-5)))


def model_config(directory: str | os.PathLike, **overrides) -> ml_collections.ConfigDict:
    """igpt's model config for the checkpoint in `directory`, for a config file:
    `c.model = hf_gpt2.model_config("gpt2")`; other fields (dtype, attention) may be overridden."""
    return igpt_model_config("tiny", **{**model_overrides(read_config(directory)), **overrides})


def vocab_size(hf: dict[str, Any]) -> int:
    return int(hf.get("vocab_size", 50257))


def seq_len(hf: dict[str, Any]) -> int:
    return int(hf.get("n_positions") or hf.get("n_ctx") or 1024)


def read_weights(directory: str | os.PathLike) -> dict[str, np.ndarray]:
    """All tensors of model.safetensors, or of the shards model.safetensors.index.json lists."""
    directory = Path(directory)
    index = directory / INDEX_FILE
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    elif (directory / WEIGHTS_FILE).is_file():
        files = [WEIGHTS_FILE]
    else:
        raise FileNotFoundError(f"{directory} holds neither {WEIGHTS_FILE} nor {INDEX_FILE}; download the "
                                "safetensors weights beside config.json (README: importing GPT-2).")
    tensors = {}
    for name in files:
        tensors.update(read_safetensors(directory / name))
    return tensors


def to_params(tensors: dict[str, np.ndarray], hf: dict[str, Any]) -> dict[str, Any]:
    """igpt Transformer params (a nested dict keyed like its nnx.State, float32 numpy leaves)
    from GPT-2 tensors named as HF saves them."""
    t = {name.removeprefix(_PREFIX): np.asarray(v, np.float32) for name, v in tensors.items()
         if not _UNUSED.search(name)}
    cfg = model_overrides(hf)
    d, heads, vocab = cfg["width"], cfg["num_heads"], vocab_size(hf)

    def take(name: str) -> np.ndarray:
        if name not in t:
            raise TransferError(f"the GPT-2 checkpoint has no tensor {name!r} (its config.json says "
                                f"{cfg['num_layers']} layers); the weights do not match config.json.")
        return t.pop(name)

    def norm(prefix: str) -> dict[str, Any]:
        return {"scale": {"value": take(f"{prefix}.weight")}, "bias": {"value": take(f"{prefix}.bias")}}

    def split_heads(w: np.ndarray) -> np.ndarray:
        return w.reshape(*w.shape[:-1], heads, d // heads)

    wte = take("wte.weight")
    embed = np.zeros((-(-(vocab + 1) // 128) * 128, d), np.float32)
    embed[:vocab] = wte
    embed[vocab] = wte[int(hf.get("bos_token_id", vocab - 1))]  # igpt's BOS is the donor's BOS token
    params: dict[str, Any] = {"embed": {"value": embed}, "pos": {"value": take("wpe.weight")}, "blocks": {}}
    for i in range(cfg["num_layers"]):
        h = f"h.{i}"
        wq, wk, wv = np.split(take(f"{h}.attn.c_attn.weight"), 3, axis=1)
        bq, bk, bv = np.split(take(f"{h}.attn.c_attn.bias"), 3)
        attn = {"wq": split_heads(wq), "wk": split_heads(wk), "wv": split_heads(wv),
                "bq": split_heads(bq), "bk": split_heads(bk), "bv": split_heads(bv),
                "wo": take(f"{h}.attn.c_proj.weight").reshape(heads, d // heads, d),
                "bo": take(f"{h}.attn.c_proj.bias")}
        mlp = {"w_in": take(f"{h}.mlp.c_fc.weight"), "b_in": take(f"{h}.mlp.c_fc.bias"),
               "w_out": take(f"{h}.mlp.c_proj.weight"), "b_out": take(f"{h}.mlp.c_proj.bias")}
        params["blocks"][str(i)] = {"norm1": norm(f"{h}.ln_1"), "norm2": norm(f"{h}.ln_2"),
                                    "attn": {k: {"value": v} for k, v in attn.items()},
                                    "mlp": {k: {"value": v} for k, v in mlp.items()}}
    params["final_norm"] = norm("ln_f")
    head = t.pop("lm_head.weight", None)
    if not cfg["tie_embeddings"]:
        if head is None:
            raise TransferError("config.json says tie_word_embeddings false but the checkpoint has no "
                                "lm_head.weight.")
        params["head"] = {"value": head.T.copy()}
    if t:
        raise TransferError(f"the GPT-2 checkpoint has tensors igpt does not map: {sorted(t)[:5]}; its config.json "
                            f"says {cfg['num_layers']} layers.")
    return params


def load(directory: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any]]:
    """(igpt params, config.json) of the GPT-2 checkpoint in `directory`."""
    hf = read_config(directory)
    return to_params(read_weights(directory), hf), hf
