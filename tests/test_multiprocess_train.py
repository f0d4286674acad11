"""Two processes (4 CPU devices each, gloo) train and checkpoint into a bucket (the local GCS
emulator, as on a pod slice); one process with 8 devices restores that checkpoint from the bucket
onto other meshes and gets the same parameters and eval loss."""
from __future__ import annotations

import os
import subprocess
import sys
import uuid

import jax
import numpy as np
import pytest

from igpt import sharding
from igpt.gpt import GPTTask
from igpt.training.checkpoint import Checkpointer
from igpt.training.loop import abstract, build, on_mesh
from igpt.training.metrics import read_metrics
from igpt.training.rundir import RunDir
from gcs_emulator import subprocess_env
from trainer_fixtures import REPO, committed_steps, tiny_config

STEPS = 10


@pytest.fixture(scope="module")
def two_process_run(gcs_bucket, data_dir):
    workdir = f"gs://{gcs_bucket}/two_process-{uuid.uuid4().hex[:8]}"
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"} | subprocess_env()
    env["PYTHONUNBUFFERED"] = "1"
    out = subprocess.run(
        [sys.executable, "scripts/launch_local.py", "--num-processes", "2", "--devices-per-process", "4", "--",
         sys.executable, "-m", "igpt.commands.train", "--config=tests/tiny_config.py", f"--workdir={workdir}",
         f"--config.data.data_dir={data_dir}", f"--config.train.steps={STEPS}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    assert "[p1]" in out.stdout + out.stderr
    return workdir


def _restore(workdir, data_dir, mesh_shape):
    cfg = tiny_config(data_dir, steps=STEPS, data=mesh_shape[0], fsdp=mesh_shape[1], tensor=mesh_shape[2])
    mesh = sharding.make_mesh(cfg.mesh)
    run = RunDir.at(workdir)
    task = GPTTask(cfg)
    with on_mesh(mesh, tuple(cfg.axis_rules)):
        task.setup(run, mesh)  # the trainer's own model, tokenizer (the run's) and eval
        fresh = build(task, mesh).state
        ckpt = Checkpointer(run.checkpoints)
        params = ckpt.restore_params(STEPS, abstract(fresh["params"]))
        ckpt.close()
        loss = task.evaluate({"params": params})["test"]["loss"]
    flat = {jax.tree_util.keystr(p): np.asarray(v) for p, v in jax.tree_util.tree_flatten_with_path(params)[0]}
    return flat, loss, params


def test_two_processes_train_and_restore_in_one(two_process_run, data_dir):
    assert STEPS in committed_steps(two_process_run)
    records = read_metrics(two_process_run)
    final_eval = [r["loss"] for r in records if r["split"] == "test" and r["step"] == STEPS][0]
    a, loss_a, params_a = _restore(two_process_run, data_dir, (8, 1, 1))
    b, loss_b, _ = _restore(two_process_run, data_dir, (2, 2, 2))
    assert a.keys() == b.keys()
    assert all(np.array_equal(a[k], b[k]) for k in a), "restores onto two meshes must be bitwise equal"
    assert {d.id for d in jax.tree.leaves(params_a)[0].sharding.device_set} == set(range(8))
    np.testing.assert_allclose([loss_a, loss_b], final_eval, rtol=1e-5)
