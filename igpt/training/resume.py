"""Resuming a run: whether the config may continue the run in its workdir, and which
checkpoint to continue from (the newest that reads back as it was saved)."""
from __future__ import annotations

import json
from typing import Any

import ml_collections

from igpt.training.checkpoint import CheckpointDamagedError, Checkpointer, damage_reason
from igpt.training.rundir import RunDir, config_differences, with_defaults

# Settings a resume may change without train.accept_config_changes: where and how often, not what.
RESUMABLE_CHANGES = ("mesh.", "distributed.", "data.data_dir", "train.log_every", "train.eval_every",
                     "train.checkpoint_every", "train.keep_checkpoints", "train.async_checkpoint", "train.sample_every",
                     "wandb.",
                     "train.preemption_check_every", "train.accept_config_changes")


class ResumeMismatchError(ValueError):
    """The workdir holds a run that the given config did not start."""


def check_resume(run: RunDir, cfg: ml_collections.ConfigDict,
                 defaults: ml_collections.ConfigDict) -> tuple[dict[str, Any], list[str]]:
    """(the config as JSON, its accepted changes to what the run computes); refuses such changes
    to config.json's unless train.accept_config_changes. A setting config.json lacks counts at
    its value in `defaults` (the run started before igpt had it)."""
    current = json.loads(cfg.to_json_best_effort())
    saved = run.read_config()
    if saved is None:
        return current, []
    saved = with_defaults(saved, json.loads(defaults.to_json_best_effort()))
    changed = [d for d in config_differences(saved, current) if not d.startswith(RESUMABLE_CHANGES)]
    if changed and not cfg.train.accept_config_changes:
        raise ResumeMismatchError(
            f"{run.root} holds a run started with another config ({'; '.join(changed)}); rerun with its "
            "config, start in a fresh --workdir, or pass --config.train.accept_config_changes=True to resume "
            "with the new one (recorded beside config.json).")
    return current, changed


def check_meta(run: RunDir, step: int, saved: dict[str, Any], expected: dict[str, Any]) -> None:
    bad = [f"{k}: {saved.get(k)!r} -> {v!r}" for k, v in expected.items() if saved.get(k, v) != v]
    if bad:
        raise ResumeMismatchError(
            f"checkpoint {run.checkpoints / str(step)} was written with {'; '.join(bad)}: resuming would not "
            "continue that run. Resume with the config that wrote it, or start in a fresh --workdir.")


def restore_newest_intact(ckpt: Checkpointer, run_dir: RunDir, abstract_state: Any, meta: dict[str, Any],
                          is_main: bool) -> tuple[int | None, Any]:
    """(step, state) of the newest checkpoint that reads back as it was saved, or (None, None) when
    there is none. Newer ones that fail (truncated arrays, garbage metadata, changed bytes) are set
    aside as STEP.damaged (kept, never deleted) and named, once an older one restored; when none
    restores, nothing is moved and the failures are raised in one line. A checkpoint of another
    run (meta or shapes) is refused, not set aside."""
    damaged: list[tuple[int, CheckpointDamagedError]] = []
    for step in ckpt.steps():
        try:
            check_meta(run_dir, step, ckpt.read_meta(step), meta)
            state = ckpt.restore(step, abstract_state)[0]
        except CheckpointDamagedError as e:
            damaged.append((step, e))
            continue
        for bad, error in damaged:
            _set_aside(ckpt, bad, error, is_main, step)
        return step, state
    if damaged:
        raise CheckpointDamagedError(
            str(ckpt.directory), "; ".join(f"step {step}: {damage_reason(e)}" for step, e in damaged),
            "no checkpoint in it reads back and nothing was moved; to start over, move it aside or use a fresh "
            "--workdir")
    return None, None


def _set_aside(ckpt: Checkpointer, step: int, error: CheckpointDamagedError, is_main: bool, intact: int) -> None:
    if is_main:
        aside = ckpt.set_aside(step)
        print(f"checkpoint {step} is damaged ({damage_reason(error)}); kept as {aside.name}, "
              f"falling back to the newest intact one (step {intact}).", flush=True)
