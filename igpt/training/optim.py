"""The optimizer section of every run config: one owner, one builder.

  adamw  AdamW, weight decay on matrices only (GPT)
  adam   Adam, no weight decay
  muon   Muon (igpt.training.muon) on the weights a task marks as matrices, Adam on the rest
All are clipped by global norm and follow one of SCHEDULES after a linear warm-up to lr:
  cosine    decay to lr * min_lr_ratio at the last step
  constant  lr to the end: a curve whose every point was trained alike, so the steps it takes
            to reach a loss do not depend on where a schedule stood (transfer speedups)
  wsd       warm-up, stable, decay (Hägele et al. 2024): lr until the last decay_fraction of
            the steps, then linearly down to lr * min_lr_ratio
Weights a task freezes get no update.
"""
from __future__ import annotations

import math
from typing import Any

import jax
import ml_collections
import optax

from igpt.training import muon

OPTIMIZERS = ("adamw", "adam", "muon")
SCHEDULES = ("cosine", "constant", "wsd")
TRAIN, FREEZE = "train", "freeze"  # labels of a task's frozen-weights tree


class OptimizerError(ValueError):
    """The optim section names an optimizer or a setting the task cannot use."""


def optim_config(name: str = "adamw", lr: float = 3e-4, warmup_steps: int = 100, *, schedule: str = "cosine",
                 min_lr_ratio: float = 0.1, decay_fraction: float = 0.2, b1: float = 0.9, b2: float = 0.95,
                 eps: float = 1e-8, weight_decay: float = 0.1, clip_norm: float = 1.0,
                 adam_modules: tuple[str, ...] = (), **task_fields: Any) -> ml_collections.ConfigDict:
    """adam_modules: with "muon", the modules (dotted paths: "encoder", "decoder.up.1") whose
    matrices Adam trains instead. `task_fields` are settings a task reads (e.g. GPT's grad_accum)."""
    return ml_collections.ConfigDict(dict(
        name=name, lr=lr, warmup_steps=warmup_steps, schedule=schedule, min_lr_ratio=min_lr_ratio,
        decay_fraction=decay_fraction, b1=b1, b2=b2, eps=eps,
        weight_decay=weight_decay, clip_norm=clip_norm, adam_modules=tuple(adam_modules), **task_fields))


def check(o: ml_collections.ConfigDict, allowed: tuple[str, ...]) -> None:
    if o.name not in allowed:
        raise OptimizerError(f"optim.name {o.name!r} is unknown; use one of {allowed}.")
    if not (math.isfinite(o.lr) and o.lr >= 0 and o.warmup_steps >= 0):
        raise OptimizerError(f"optim.lr={o.lr} and optim.warmup_steps={o.warmup_steps} must be finite and >= 0.")
    if o.schedule not in SCHEDULES:
        raise OptimizerError(f"optim.schedule {o.schedule!r} is unknown; use one of {SCHEDULES}.")
    if not 0.0 < o.decay_fraction <= 1.0:
        raise OptimizerError(f"optim.decay_fraction={o.decay_fraction} must lie in (0, 1]: the share of the "
                             "steps the wsd schedule spends decaying.")
    if o.weight_decay and o.name != "adamw":
        raise OptimizerError(f"optim.weight_decay={o.weight_decay} applies to adamw only; set it to 0 for {o.name}.")


def make_schedule(o: ml_collections.ConfigDict, steps: int) -> optax.Schedule:
    """The learning rate at each step: linear warm-up to lr, then o.schedule (see SCHEDULES)."""
    warmup = min(o.warmup_steps, max(steps - 1, 0))
    end = o.lr * o.min_lr_ratio
    if o.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(0.0, o.lr, warmup, max(steps, warmup + 1), end_value=end)
    ramp = optax.linear_schedule(0.0, o.lr, warmup)
    if o.schedule == "constant":
        return optax.join_schedules([ramp, optax.constant_schedule(o.lr)], [warmup])
    decay = max(1, round(o.decay_fraction * steps))
    stable = max(warmup, steps - decay)
    cool = optax.linear_schedule(o.lr, end, max(decay - 1, 1))  # reaches `end` at the last step
    return optax.join_schedules([ramp, optax.constant_schedule(o.lr), cool], [warmup, stable])


def build(o: ml_collections.ConfigDict, schedule: optax.Schedule, *, matrices: Any = None,
          frozen: Any = None) -> optax.GradientTransformation:
    """The optimizer `o` names. `matrices`: a tree (or function of the params) marking Muon's
    weights; `frozen`: a tree of TRAIN / FREEZE labels, or None when everything trains."""
    if o.name == "muon":
        inner = muon.muon(schedule, matrices, adam_b1=o.b1, adam_b2=o.b2)
    elif o.name == "adam":
        inner = optax.adam(schedule, b1=o.b1, b2=o.b2, eps=o.eps)
    else:
        decay_mask = lambda params: jax.tree.map(lambda p: p.ndim >= 2, params)
        inner = optax.adamw(schedule, b1=o.b1, b2=o.b2, eps=o.eps, weight_decay=o.weight_decay, mask=decay_mask)
    tx = optax.chain(optax.clip_by_global_norm(o.clip_norm), inner)
    if frozen is None:
        return tx
    return optax.multi_transform({TRAIN: tx, FREEZE: optax.set_to_zero()}, frozen)
