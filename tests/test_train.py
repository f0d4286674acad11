"""The sharded trainer: mesh invariance, exact resume, preemption, NaN guard, bad input."""
from __future__ import annotations

import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from trainer_fixtures import (cli_command, cli_env, committed_steps, run_cli, tiny_config,
                              train_losses, REPO)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data_dir):
    """An uninterrupted 40-step run through the CLI, checkpoints every 5 steps."""
    workdir = tmp_path_factory.mktemp("reference")
    out = run_cli(workdir, data_dir)
    assert out.returncode == 0, out.stderr[-3000:]
    return workdir


def test_first_losses_equal_across_meshes(tmp_path, data_dir):
    from igpt.train import train
    curves = {}
    for shape in [(1, 1, 1), (8, 1, 1), (2, 2, 2), (1, 4, 2)]:
        cfg = tiny_config(data_dir, steps=10, data=shape[0], fsdp=shape[1], tensor=shape[2],
                          num_devices=int(np.prod(shape)))
        cfg.train.eval_every = 100
        workdir = tmp_path / "x".join(map(str, shape))
        train(cfg, workdir)
        curves[shape] = [train_losses(workdir)[s] for s in range(1, 11)]
    base = np.array(curves[(1, 1, 1)])
    assert base[-1] < base[0], "the tiny model should learn in 10 steps"
    for shape, losses in curves.items():
        np.testing.assert_allclose(losses, base, rtol=1e-5, err_msg=f"mesh {shape}")


def _wait_for(predicate, timeout=240, proc=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"trainer exited early: {proc.stdout.read()[-3000:]}")
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_sigkill_after_checkpoint_resumes_bitwise(tmp_path, data_dir, reference):
    workdir = tmp_path / "killed"
    proc = subprocess.Popen(cli_command(workdir, data_dir), env=cli_env(), cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _wait_for(lambda: 15 in committed_steps(workdir), proc=proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = max(committed_steps(workdir))
    assert killed_at < 40
    out = run_cli(workdir, data_dir)
    assert out.returncode == 0, out.stderr[-3000:]
    ref, resumed = train_losses(reference), train_losses(workdir)
    later = [s for s in ref if s > killed_at]
    assert later and all(resumed[s] == ref[s] for s in later), "resumed losses must be bitwise equal"


def test_save_killed_midway_resumes_from_previous_checkpoint(tmp_path, data_dir, reference):
    """A step directory orbax never committed (its temporary name) is never loaded."""
    workdir = tmp_path / "torn"
    shutil.copytree(reference, workdir)
    ckpts = workdir / "checkpoints"
    shutil.rmtree(ckpts / "40")  # keep-3 left 30, 35 and 40
    torn = ckpts / "40.orbax-checkpoint-tmp-1234"
    shutil.copytree(ckpts / "35", torn)
    for f in list(torn.rglob("*"))[::2]:
        if f.is_file():
            f.write_bytes(b"torn")
    out = run_cli(workdir, data_dir)
    assert out.returncode == 0, out.stderr[-3000:]
    ref, resumed = train_losses(reference), train_losses(workdir)
    assert committed_steps(workdir)[-1] == 40
    assert all(resumed[s] == ref[s] for s in range(36, 41))


def test_sigterm_saves_current_step_and_resumes(tmp_path, data_dir, reference):
    workdir = tmp_path / "preempted"
    proc = subprocess.Popen(cli_command(workdir, data_dir), env=cli_env(), cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _wait_for(lambda: len(train_losses(workdir)) >= 7, proc=proc)
    proc.send_signal(signal.SIGTERM)
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == 0, output[-3000:]
    assert "SIGTERM" in output
    saved = max(committed_steps(workdir))
    assert saved == max(train_losses(workdir)) and saved < 40
    assert saved % 5 != 0 or saved >= 7  # saved where it stopped, not only on the 5-step cadence
    out = run_cli(workdir, data_dir)
    assert out.returncode == 0, out.stderr[-3000:]
    assert train_losses(workdir)[40] == train_losses(reference)[40]


def test_injected_nan_stops_naming_the_step(tmp_path, data_dir):
    out = run_cli(tmp_path, data_dir, "--config.train.inject_nan_at_step=8")
    assert out.returncode == 1
    assert "step 8" in out.stderr and "non-finite" in out.stderr
    assert committed_steps(tmp_path) == [5], "the last good checkpoint stays; nothing past the NaN"


@pytest.mark.parametrize("override, needle", [
    ("--config.train.no_such_key=1", "no_such_key"),
    ("--config.mesh.data=3", "does not divide"),
    ("--config.train.global_batch=12", "global batch 12"),
])
def test_bad_config_is_one_clear_error(tmp_path, data_dir, override, needle):
    out = run_cli(tmp_path, data_dir, override)
    assert out.returncode != 0
    assert needle in out.stderr
    assert "Traceback" not in out.stderr


def test_unwritable_workdir(tmp_path, data_dir):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    out = run_cli(blocker / "run", data_dir)
    assert out.returncode == 1 and "not writable" in out.stderr


def test_checkpoint_of_another_shape_is_refused_untouched(tmp_path, data_dir, reference):
    workdir = tmp_path / "other"
    shutil.copytree(reference, workdir)
    before = sorted(p.stat().st_mtime_ns for p in (workdir / "checkpoints").rglob("*"))
    out = run_cli(workdir, data_dir, "--config.model.width=32", "--config.train.steps=50")
    assert out.returncode == 1
    assert "another shape" in out.stderr and "fresh --workdir" in out.stderr
    assert sorted(p.stat().st_mtime_ns for p in (workdir / "checkpoints").rglob("*")) == before
