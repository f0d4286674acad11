"""The sharded trainer: mesh invariance, exact resume, preemption, NaN guard, bad input,
and the run directory's contract (run.json, config.json written once, resume checks)."""
from __future__ import annotations

import json
import math
import shutil
import signal
import subprocess
import time

import jax.numpy as jnp
import numpy as np
import pytest

from igpt.gpt import GPTTask, train
from igpt.training import loop, optim, resume
from igpt.training.loop import NonFiniteLossError
from igpt.training.metrics import read_metrics
from igpt.training.rundir import RunDir

from trainer_fixtures import (cli_command, cli_env, committed_steps, run_cli, tiny_config,
                              train_losses, REPO)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data_dir):
    """An uninterrupted 40-step run through the CLI, checkpoints every 5 steps."""
    workdir = tmp_path_factory.mktemp("reference")
    out = run_cli(workdir, data_dir)
    assert out.returncode == 0, out.stderr[-3000:]
    return workdir


@pytest.mark.slow  # four trainings; sharded meshes are also covered by test_multiprocess_train and test_attention
def test_first_losses_equal_across_meshes(tmp_path, data_dir):
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


@pytest.mark.slow  # the default set kills and resumes the same CLI with its workdir in a bucket (test_gcs_train)
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


def test_the_logged_learning_rate_is_the_one_each_step_applied(reference):
    cfg = tiny_config("", steps=40)
    schedule = optim.make_schedule(cfg.optim, cfg.train.steps)
    logged = {r["step"]: r["lr"] for r in read_metrics(reference) if r["split"] == "train"}
    assert sorted(logged) == list(range(1, 41))
    np.testing.assert_allclose([logged[s] for s in range(1, 41)], [float(schedule(s - 1)) for s in range(1, 41)],
                               rtol=1e-6)
    assert logged[1] == 0.0 and logged[3] == pytest.approx(cfg.optim.lr), "warm-up from 0, peak after 2 steps"


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


class NanAtStep(GPTTask):
    """The GPT task whose step reports a NaN loss at one step: fault injection lives here, in a
    test task, not in the production step."""

    def __init__(self, cfg, nan_step: int):
        super().__init__(cfg)
        self.nan_step = nan_step

    def make_train_step(self, tx):
        step = super().make_train_step(tx)

        def poisoned(state, tokens):
            new, metrics = step(state, tokens)
            return new, dict(metrics, loss=jnp.where(new["step"] == self.nan_step, jnp.nan, metrics["loss"]))
        return poisoned


def test_a_nan_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path, data_dir):
    cfg = tiny_config(data_dir, steps=20)
    with pytest.raises(NonFiniteLossError, match="non-finite loss=nan at step 8"):
        loop.run(NanAtStep(cfg, nan_step=8), tmp_path)
    assert committed_steps(tmp_path) == [5], "the last good checkpoint stays; nothing past the NaN"
    assert RunDir.at(tmp_path).read_info()["status"] == "failed"


def test_one_step_smoke(tmp_path, data_dir):
    out = train(tiny_config(data_dir, steps=1), tmp_path, info={"role": "single"})
    assert out.step == 1 and not out.preempted
    assert set(out.eval) == {"validation", "test"} and all(math.isfinite(m["loss"]) for m in out.eval.values())
    evals = [r for r in read_metrics(tmp_path) if r["split"] != "train"]
    assert sorted(r["split"] for r in evals) == ["test", "validation"] and all(r["step"] == 1 for r in evals)
    info = RunDir.at(tmp_path).read_info()
    assert info["status"] == "finished" and info["finished"] and info["task"] == "gpt" and info["role"] == "single"
    assert info["step"] == info["steps"] == 1
    assert info["train_tokens"] == (1500 - 150) * 64, "digits: 1,500 train images less 150 for validation"
    assert info["params"] > info["non_embedding_params"] > 0


@pytest.mark.parametrize("override, needle", [
    ("--config.train.stepz=1", """override ('stepz' Did you mean "steps" instead of "stepz"?)"""),
    ("--config.mesh.data=3", "does not divide"),
    ("--config.train.global_batch=12", "global batch 12"),
    ("--config=configs/no_such_config.py", "config file 'configs/no_such_config.py' does not load: OSError"),
])
def test_bad_config_is_one_clear_error(tmp_path, data_dir, override, needle):
    out = run_cli(tmp_path, data_dir, override)
    assert out.returncode != 0
    assert needle in out.stderr
    assert "Traceback" not in out.stderr and "\\n" not in out.stderr, "one line, no repr of a message"


def test_patience_stops_a_run_that_no_longer_improves_and_a_rerun_trains_no_further(tmp_path, data_dir):
    cfg = tiny_config(data_dir, steps=40)
    cfg.optim.lr, cfg.train.eval_every, cfg.train.patience = 0.0, 2, 2  # lr 0: validation never improves
    out = train(cfg, tmp_path)
    assert out.stopped_early and out.step == 6, "best at step 2, no better at 4 and 6"
    info = RunDir.at(tmp_path).read_info()
    assert info["finished"] and info["stopped_early"] and info["best_step"] == 2 and info["step"] == 6
    assert committed_steps(tmp_path)[-1] == 6
    again = train(cfg, tmp_path)
    assert again.stopped_early and again.step == 6
    assert max(train_losses(tmp_path)) == 6, "the rerun took no step"


def test_unwritable_workdir(tmp_path, data_dir):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    out = run_cli(blocker / "run", data_dir)
    assert out.returncode == 1 and "not writable" in out.stderr


def _mtimes(workdir):
    return sorted((str(p), p.stat().st_mtime_ns) for p in workdir.rglob("*") if p.is_file())


def test_a_changed_config_is_refused_on_resume_untouched(tmp_path, data_dir, reference):
    workdir = tmp_path / "other"
    shutil.copytree(reference, workdir)
    before = _mtimes(workdir)
    out = run_cli(workdir, data_dir, "--config.model.width=32", "--config.train.steps=50")
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "another config (model.width: 64 -> 32; train.steps: 40 -> 50)" in out.stderr
    assert "fresh --workdir" in out.stderr and "accept_config_changes" in out.stderr
    assert _mtimes(workdir) == before


def test_a_setting_igpt_gained_after_a_run_started_resumes_at_its_default_and_is_refused_at_another(
        tmp_path, data_dir):
    cfg = tiny_config(data_dir, steps=40)
    run = RunDir.at(tmp_path).prepare()
    written_before = json.loads(cfg.to_json_best_effort())  # config.json of an igpt without these settings
    del written_before["init"]["vocab_init"], written_before["wandb"], written_before["train"]["patience"]
    run.write_config(written_before)
    assert resume.check_resume(run, cfg, GPTTask(cfg).defaults())[1] == []
    cfg.init.vocab_init, cfg.train.patience = "random", 3
    with pytest.raises(resume.ResumeMismatchError, match=r"\(init.vocab_init: 'mean' -> 'random'; "
                                                       r"train.patience: 0 -> 3\)"):
        resume.check_resume(run, cfg, GPTTask(cfg).defaults())


def test_checkpoint_of_another_shape_is_refused_untouched_even_when_changes_are_accepted(
        tmp_path, data_dir, reference):
    workdir = tmp_path / "other"
    shutil.copytree(reference, workdir)
    before = _mtimes(workdir)
    out = run_cli(workdir, data_dir, "--config.model.width=32", "--config.train.accept_config_changes=True")
    assert out.returncode == 1
    assert "another shape" in out.stderr and "fresh --workdir" in out.stderr
    assert _mtimes(workdir) == before


def test_a_checkpoint_of_another_data_seed_is_refused(tmp_path, data_dir, reference):
    """The checkpoint's meta is read on resume: another data order would break bitwise resume."""
    workdir = tmp_path / "seed"
    shutil.copytree(reference, workdir)
    out = run_cli(workdir, data_dir, "--config.data.seed=3", "--config.train.accept_config_changes=True")
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "data_seed: 0 -> 3" in out.stderr and "checkpoint" in out.stderr


def test_accepted_changes_resume_and_keep_the_first_config(tmp_path, data_dir, reference):
    workdir = tmp_path / "longer"
    shutil.copytree(reference, workdir)
    first = (workdir / "config.json").read_text()
    out = run_cli(workdir, data_dir, "--config.train.steps=45", "--config.train.accept_config_changes=True",
                  "--config.train.log_every=5")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "resumed from step 40 of 45" in out.stdout
    assert (workdir / "config.json").read_text() == first
    assert json.loads((workdir / "config.resumed-at-40.json").read_text())["train"]["steps"] == 45
    assert max(train_losses(workdir)) == 45
    assert json.loads((workdir / "run.json").read_text())["status"] == "finished"


def test_cadence_settings_may_change_on_resume(tmp_path, data_dir, reference):
    workdir = tmp_path / "cadence"
    shutil.copytree(reference, workdir)
    out = run_cli(workdir, data_dir, "--config.train.log_every=7", "--config.mesh.fsdp=2")
    assert out.returncode == 0, out.stderr[-3000:]
    assert not list(workdir.glob("config.resumed-at-*"))


@pytest.mark.parametrize("section, key, value, needle", [
    ("train", "steps", 0, "train.steps=0 must be at least 1"),
    ("train", "keep_checkpoints", 0, "train.keep_checkpoints=0 must be at least 1"),
    ("train", "checkpoint_every", 0, "train.checkpoint_every=0 must be at least 1"),
    ("train", "log_every", 0, "train.log_every=0 must be at least 1"),
    ("optim", "grad_accum", 0, "optim.grad_accum=0 must be at least 1"),
    ("model", "width", 50, "model.width=50 does not split into model.num_heads=4"),
    ("optim", "schedule", "linear", "optim.schedule 'linear' is unknown"),
])
def test_settings_out_of_range_are_refused_before_the_workdir_is_made(tmp_path, data_dir, section, key, value,
                                                                      needle):
    cfg = tiny_config(data_dir)
    cfg[section][key] = value
    with pytest.raises(ValueError, match=needle):
        train(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("damage", ["truncated arrays", "garbage metadata"])
def test_a_damaged_checkpoint_is_set_aside_and_the_newest_intact_one_resumes(tmp_path, data_dir, reference, damage):
    workdir = tmp_path / "damaged"
    shutil.copytree(reference, workdir)
    step40 = workdir / "checkpoints" / "40"
    if damage == "truncated arrays":
        biggest = max((p for p in (step40 / "state").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
        biggest.write_bytes(biggest.read_bytes()[: biggest.stat().st_size // 3])
    else:
        (step40 / "meta" / "metadata").write_text("{not json")
    out = run_cli(workdir, data_dir)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "checkpoint 40 is damaged" in out.stdout and "resumed from step 35" in out.stdout
    assert (workdir / "checkpoints" / "40.damaged").is_dir()  # kept aside, never deleted
    ref, resumed = train_losses(reference), train_losses(workdir)
    assert all(resumed[s] == ref[s] for s in range(36, 41))
