"""Issue 26: bad input never reaches a traceback, damaged checkpoints fall back, nothing is lost.

One test (or parametrized case) per defect the issue reproduced, each the repro itself, in
process where it can be (the CLIs' main() or their error boundary, igpt.errors.fail_clearly);
the SIGKILL soak and the start-up SIGTERM through a real CLI process are slow tests.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl import flags
from jax.sharding import NamedSharding, PartitionSpec as P
from ml_collections import config_flags

from igpt.commands import fit_tokenizer, sample
from igpt.data import pipeline, shipped, specs
from igpt.data.errors import DataError
from igpt.errors import fail_clearly, parse_flags_clearly
from igpt.gpt import GPTTask
from igpt.training import loop, resume
from igpt.training import checkpoint
from igpt.training.checkpoint import CheckpointDamagedError, Checkpointer
from igpt.training.metrics import MetricsWriter, read_metrics
from igpt.training.preemption import PreemptionFlag
from igpt.training.rundir import RunDir

from trainer_fixtures import REPO, cli_command, cli_env, committed_steps, run_cli, tiny_config, train_losses


def one_clear_line(capsys, prefix: str = "igpt") -> str:
    """The command's stderr: one line, `igpt: error: ...` or `igpt: stopped ...`; an argparse
    error (prefix `igpt-NAME: error`) comes after argparse's usage lines."""
    lines = capsys.readouterr().err.strip().splitlines()
    assert not any("Traceback" in line for line in lines), lines
    assert len(lines) == 1 or (prefix != "igpt" and lines[0].startswith("usage:")), lines
    assert lines[-1].startswith(prefix), lines
    return lines[-1]


def exits(code: int, fn, *args) -> None:
    with pytest.raises(SystemExit) as e:
        fn(*args)
    assert e.value.code == code


def under_boundary(fn, *args):
    """fn(*args) inside the CLIs' error boundary."""
    with fail_clearly():
        return fn(*args)


# ------------------------------------------- 1, 5, 6, 10: settings refused before any work


@pytest.mark.parametrize("section, key, value, needle", [
    ("train", "keep_checkpoints", 0, "train.keep_checkpoints=0 must be at least 1"),        # 1: deleted every checkpoint
    ("train", "keep_checkpoints", -1, "train.keep_checkpoints=-1 must be at least 1"),      # 1: orbax traceback
    ("train", "checkpoint_every", 0, "train.checkpoint_every=0 must be at least 1"),        # 5: ZeroDivisionError
    ("train", "log_every", 0, "train.log_every=0 must be at least 1"),                      # 5
    ("optim", "grad_accum", 0, "optim.grad_accum=0 must be at least 1"),                    # 5
    ("model", "width", 50, "model.width=50 does not split into model.num_heads=4"),         # 5: ValueError traceback
    ("train", "steps", 0, "train.steps=0 must be at least 1"),                              # 6: exit 0, fitted, wrote
    ("train", "steps", -5, "train.steps=-5 must be at least 1"),                            # 6
    ("optim", "lr", float("nan"), "optim.lr=nan"),                                          # 10: recorded lr=nan
])
def test_a_setting_out_of_range_is_one_line_before_any_work(tmp_path, capsys, section, key, value, needle):
    cfg = tiny_config(str(tmp_path / "tfds"))
    cfg[section][key] = value
    exits(1, under_boundary, loop.run, GPTTask(cfg), str(tmp_path / "run"))
    assert needle in one_clear_line(capsys)
    assert not (tmp_path / "run").exists() and not (tmp_path / "tfds").exists(), "no workdir, no data, no palette"


def test_every_problem_in_a_config_gets_a_line(tmp_path, capsys):
    cfg = tiny_config(str(tmp_path / "tfds"))
    cfg.train.log_every, cfg.train.checkpoint_every, cfg.optim.grad_accum = 0, 0, 0
    exits(1, under_boundary, loop.run, GPTTask(cfg), str(tmp_path / "run"))
    err = capsys.readouterr().err
    assert "Traceback" not in err and "3 settings to fix" in err
    assert [line.strip() for line in err.splitlines()[1:]] == [
        "train.log_every=0 must be at least 1.", "train.checkpoint_every=0 must be at least 1.",
        "optim.grad_accum=0 must be at least 1."]


# ------------------------------------------------------ 2: damaged checkpoints fall back


@pytest.fixture(scope="module")
def saved_steps(tmp_path_factory):
    """Checkpoints 5, 10 and 15 of a small state (the same arrays at every step but the step)."""
    root = tmp_path_factory.mktemp("checkpoints")
    params = {"w": jnp.arange(4096, dtype=jnp.float32).reshape(64, 64) / 7, "b": jnp.ones(64, jnp.bfloat16)}
    ckpt = Checkpointer(root, keep=5, async_save=False)
    for step in (5, 10, 15):
        ckpt.save(step, {"params": params, "step": jnp.int32(step)}, {"seed": 0})
    ckpt.close()
    return root, {"params": params, "step": jnp.int32(0)}


def _biggest_array_file(step_dir: Path) -> Path:
    return max((p for p in (step_dir / "state").rglob("*") if p.is_file() and "ocdbt.process" in str(p)),
               key=lambda p: p.stat().st_size)


def _truncate(path: Path, keep: float = 1 / 3) -> None:
    path.write_bytes(path.read_bytes()[: int(path.stat().st_size * keep)])


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(b ^ 0xFF for b in data[middle:middle + 64])
    path.write_bytes(bytes(data))


DAMAGE = {
    "truncated array file": lambda d: _truncate(_biggest_array_file(d)),     # OUT_OF_RANGE in OCDBT database
    "truncated state/_METADATA": lambda d: _truncate(d / "state" / "_METADATA", 0.1),   # JSONDecodeError
    "garbage meta/metadata": lambda d: (d / "meta" / "metadata").write_text("garbage"),  # JSONDecodeError
    "bytes changed in place": lambda d: _flip(_biggest_array_file(d)),        # read back silently before
}


def _restore(root: Path, template):
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), template)
    ckpt = Checkpointer(root, keep=5, async_save=False)
    try:
        return resume.restore_newest_intact(ckpt, RunDir.at(root.parent), abstract, {"seed": 0}, is_main=True)
    finally:
        ckpt.close()


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_checkpoint_is_named_kept_aside_and_the_newest_intact_one_restores(
        tmp_path, capsys, saved_steps, damage):
    root = tmp_path / "checkpoints"
    shutil.copytree(saved_steps[0], root)
    DAMAGE[damage](root / "15")
    step, state = _restore(root, saved_steps[1])
    assert step == 10 and int(state["step"]) == 10
    assert all(np.array_equal(state["params"][k], saved_steps[1]["params"][k]) for k in ("w", "b"))
    out = capsys.readouterr().out
    assert "checkpoint 15 is damaged (" in out and "kept as 15.damaged" in out and "(step 10)" in out
    assert sorted(p.name for p in root.iterdir()) == ["10", "15.damaged", "5"], "kept aside, never deleted"


def test_the_newest_intact_checkpoint_is_found_past_several_damaged_ones(tmp_path, capsys, saved_steps):
    root = tmp_path / "checkpoints"
    shutil.copytree(saved_steps[0], root)
    DAMAGE["truncated array file"](root / "15")
    DAMAGE["garbage meta/metadata"](root / "10")
    assert _restore(root, saved_steps[1])[0] == 5
    assert sorted(p.name for p in root.iterdir()) == ["10.damaged", "15.damaged", "5"]


def test_when_no_checkpoint_reads_back_nothing_is_moved_and_the_error_is_one_line(tmp_path, capsys, saved_steps):
    root = tmp_path / "checkpoints"
    shutil.copytree(saved_steps[0], root)
    for step in ("5", "10", "15"):
        DAMAGE["garbage meta/metadata"](root / step)
    exits(1, under_boundary, _restore, root, saved_steps[1])
    err = one_clear_line(capsys)
    assert "step 15: JSONDecodeError" in err and "step 5: JSONDecodeError" in err and "nothing was moved" in err
    assert sorted(p.name for p in root.iterdir()) == ["10", "15", "5"]


def test_the_fingerprint_is_the_same_on_any_mesh_and_sees_one_changed_bit():
    x = jnp.arange(8 * 6 * 4, dtype=jnp.float32).reshape(8, 6, 4)
    tree = {"x": x, "h": x.astype(jnp.bfloat16), "n": jnp.int32(3)}
    one = checkpoint.fingerprint(tree)
    for shape, spec in [((8,), P("a")), ((4, 2), P("a", "b")), ((2, 4), P(None, "a", "b"))]:
        mesh = jax.make_mesh(shape, ("a", "b")[:len(shape)], axis_types=(jax.sharding.AxisType.Auto,) * len(shape))
        sharded = {k: jax.make_array_from_callback(v.shape, NamedSharding(mesh, spec if v.ndim else P()),
                                                   lambda index, v=np.asarray(v): v[index]) for k, v in tree.items()}
        assert len(sharded["x"].addressable_shards) == 8 and not sharded["x"].is_fully_replicated
        assert checkpoint.fingerprint(sharded) == one, (shape, spec)
    flipped = np.asarray(x).copy()
    flipped.view(np.uint32)[5, 3, 1] ^= 1 << 7
    assert checkpoint.fingerprint(dict(tree, x=jnp.asarray(flipped)))["x"] != one["x"]
    swapped = np.asarray(x).copy()
    swapped[[0, 1]] = swapped[[1, 0]]
    assert checkpoint.fingerprint(dict(tree, x=jnp.asarray(swapped)))["x"] != one["x"], "positions count"


def test_reading_params_of_a_changed_checkpoint_is_refused_naming_it(tmp_path, capsys, saved_steps):
    """igpt-sample and donors read params only: the same check, one line."""
    root = tmp_path / "checkpoints"
    shutil.copytree(saved_steps[0], root)
    DAMAGE["bytes changed in place"](root / "15")
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                            saved_steps[1]["params"])
    ckpt = Checkpointer(root, async_save=False)
    try:
        assert np.array_equal(ckpt.restore_params(10, abstract)["w"], saved_steps[1]["params"]["w"])
        with pytest.raises(CheckpointDamagedError, match=r"checkpoints/15 is damaged \(1 of 2 arrays differ"):
            ckpt.restore_params(15, abstract)
        exits(1, under_boundary, ckpt.restore_params, 15, abstract)
    finally:
        ckpt.close()
    assert "params/w" in one_clear_line(capsys)


# ------------------------------------------------------ 3: a torn metrics line


def test_a_torn_last_metrics_line_loses_no_later_record(tmp_path):
    lines = [json.dumps({"step": s, "split": "train", "loss": 1.0 / s}) for s in range(1, 11)]
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines[:9]) + "\n" + lines[9][:20])  # killed mid-write
    writer = MetricsWriter(tmp_path / "metrics.jsonl")
    for s in (11, 12):
        writer.write({"step": s, "split": "train", "loss": 1.0 / s})
    writer.close()
    assert [r["step"] for r in read_metrics(tmp_path)] == [*range(1, 10), 11, 12]


# ------------------------------------------------------ 4: config files that do not load


@pytest.fixture
def bad_configs(tmp_path):
    (tmp_path / "syntax.py").write_text("def get_config(:\n")
    (tmp_path / "raises.py").write_text("def get_config():\n    return {}['model']\n")
    return {"missing": (str(tmp_path / "nope.py"), "does not load: OSError"),
            "syntax error": (str(tmp_path / "syntax.py"), "does not load: SyntaxError"),
            "raising": (str(tmp_path / "raises.py"), "raises.py' does not load: KeyError: 'model'")}


@pytest.mark.parametrize("case", ["missing", "syntax error", "raising"])
def test_a_config_file_that_does_not_load_is_one_line_in_train_and_transfer(capsys, bad_configs, case):
    """igpt-train and igpt-transfer parse with these very definitions."""
    path, needle = bad_configs[case]
    values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "", lock_config=True, flag_values=values)
    flags.DEFINE_string("workdir", None, "", flag_values=values)
    exits(1, parse_flags_clearly, ["igpt-train", f"--config={path}", "--workdir=/tmp/x"], values)
    assert needle in one_clear_line(capsys)


@pytest.mark.parametrize("case", ["missing", "syntax error", "unknown override"])
def test_a_bad_vq_config_is_one_line_in_fit_tokenizer(tmp_path, capsys, bad_configs, case):
    if case == "unknown override":
        argv, needle = [f"--config={REPO / 'configs' / 'vq_images.py'}", "--config.no_such_key=1"], "no_such_key"
    else:
        argv, needle = [f"--config={bad_configs[case][0]}"], bad_configs[case][1]
    exits(1, fit_tokenizer.main, [*argv, f"--workdir={tmp_path / 'vq'}"])
    assert needle in one_clear_line(capsys)
    assert not (tmp_path / "vq").exists()


# ------------------------------------------------------ 7: corrupt catalog data


@pytest.fixture(scope="module")
def digits_version_dir(data_dir):
    """A prepared TFDS dataset (the shipped digits' ArrayRecord files) to damage copies of."""
    shipped.prepared_builder("digits", data_dir)
    return Path(data_dir) / "shipped_digits" / "1.0.0"


def _shard(d: Path) -> Path:
    return d / "shipped_digits-train.array_record-00000-of-00001"


CORRUPT = {
    "garbage dataset_info.json": (lambda d: (d / "dataset_info.json").write_text("{garbage"),
                                  "dataset_info.json does not read as JSON (JSONDecodeError"),
    "garbage features.json": (lambda d: (d / "features.json").write_bytes(b"\xff\xfe"), "features.json does not read"),
    "truncated shard": (lambda d: _truncate(_shard(d), 0.5), "shard shipped_digits-train.array_record-00000-of-00001"),
    "missing shard": (lambda d: _shard(d).unlink(), "shipped_digits-train.array_record-00000-of-00001 of split "
                                                    "'train' is missing"),
    "bytes changed in a shard": (lambda d: _flip(_shard(d)), "does not read (Corrupted Riegeli/records file"),
}


@pytest.mark.parametrize("corruption", CORRUPT)
def test_corrupt_catalog_data_is_one_line_naming_the_file(tmp_path, capsys, digits_version_dir, corruption):
    version_dir = tmp_path / "shipped_digits" / "1.0.0"
    shutil.copytree(digits_version_dir, version_dir)
    damage, needle = CORRUPT[corruption]
    damage(version_dir)
    cfg = specs.images("tfds:shipped_digits", res=8, tokenizer="gray:16", data_dir=str(tmp_path))
    with pytest.raises(DataError) as e:
        pipeline.load_examples(cfg, "train")
    assert needle in str(e.value) and str(version_dir) in str(e.value) and "prepare it again" in str(e.value)
    exits(1, under_boundary, pipeline.load_examples, cfg, "train")
    one_clear_line(capsys)


def test_an_intact_catalog_copy_reads_whole(tmp_path, digits_version_dir):
    shutil.copytree(digits_version_dir, tmp_path / "shipped_digits" / "1.0.0")
    cfg = specs.images("tfds:shipped_digits", res=8, tokenizer="gray:16", data_dir=str(tmp_path))
    assert len(pipeline.load_examples(cfg, "train")) == 1500


# ------------------------------------------------------ 8: a path that is a file


def test_an_experiment_workdir_that_is_a_file_is_one_line(tmp_path, capsys):
    from tiny_experiment import get_config
    from igpt.transfer.experiment import run_experiment
    blocker = tmp_path / "file"
    blocker.write_text("x")
    exits(1, under_boundary, run_experiment, get_config(str(tmp_path / "tfds")), str(blocker))
    assert str(blocker) in one_clear_line(capsys)


def test_a_sample_out_that_is_a_file_is_refused_before_sampling(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    exits(2, sample.main, ["--workdir", str(tmp_path / "no_run"), "--out", str(blocker)])
    assert f"--out {blocker} is a file" in one_clear_line(capsys, "igpt-sample: error")


# ------------------------------------------------------ 9: igpt-fit-tokenizer's palette path


@pytest.mark.parametrize("args, code, needle", [
    (["--tokenizer", "palette:abc"], 1, "igpt: error: tokenizer spec 'palette:abc' needs a whole number"),
    (["--data", "shipped:nope"], 1, "igpt: error: unknown shipped dataset 'nope'"),
    (["--res", "0"], 2, "igpt-fit-tokenizer: error: need --res >= 1"),
    (["--tokenizer", "mulaw:256"], 2, "igpt-fit-tokenizer: error: --tokenizer 'mulaw:256': this fits an image"),
])
def test_fit_tokenizer_palette_errors_are_one_line_and_leave_no_files(tmp_path, capsys, args, code, needle):
    given = dict(zip(args[::2], args[1::2]))
    argv = {"--data": "shipped:digits", "--tokenizer": "palette:8", "--res": "8", **given}
    out = tmp_path / "tok"
    exits(code, fit_tokenizer.main, [*(x for kv in argv.items() for x in kv), "--out", str(out),
                                     "--data_dir", str(tmp_path / "tfds")])
    assert needle in one_clear_line(capsys, "igpt" if code == 1 else "igpt-fit-tokenizer: error")
    assert not out.exists()


def test_fit_tokenizer_fails_before_writing_when_the_held_out_split_does_not_load(tmp_path, capsys,
                                                                                   digits_version_dir):
    """The palette fits on train; the test split is missing: no tokenizer.json is left in --out."""
    version_dir = tmp_path / "shipped_digits" / "1.0.0"
    shutil.copytree(digits_version_dir, version_dir)
    info = json.loads((version_dir / "dataset_info.json").read_text())
    info["splits"] = [s for s in info["splits"] if s["name"] == "train"]
    (version_dir / "dataset_info.json").write_text(json.dumps(info))
    out = tmp_path / "tok"
    exits(1, fit_tokenizer.main, ["--data", "tfds:shipped_digits", "--tokenizer", "palette:8", "--res", "8",
                                  "--max_examples", "64", "--out", str(out), "--data_dir", str(tmp_path)])
    assert "split 'test' of tfds:shipped_digits" in one_clear_line(capsys)
    assert not out.exists()


# ------------------------------------------------------ 10: signals outside the training steps


def test_sigterm_outside_the_training_steps_ends_the_command_in_one_line(capsys):
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as e:
        with fail_clearly():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(10)  # start-up work, cut short
    assert e.value.code == 128 + signal.SIGTERM
    assert "stopped by SIGTERM outside the training steps" in one_clear_line(capsys)
    assert signal.getsignal(signal.SIGTERM) is before


def test_during_the_steps_a_sigterm_still_asks_the_loop_to_save_and_stop(capsys):
    with fail_clearly():
        flag = PreemptionFlag()
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            assert flag.should_stop(1)
        finally:
            flag.restore()
        with pytest.raises(SystemExit):  # the boundary's handler is back once the steps are over
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(10)
    assert capsys.readouterr().err.count("stopped by SIGTERM") == 1


# ------------------------------------------------------ slow: through real CLI processes


@pytest.mark.slow
def test_sigterm_during_start_up_of_igpt_train_is_one_line(tmp_path, data_dir):
    workdir = tmp_path / "run"
    proc = subprocess.Popen(cli_command(workdir, data_dir), env=cli_env(), cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not workdir.exists() and time.time() < deadline:  # made once the config passed: start-up follows
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, (out, err)
    assert "Traceback" not in err and "igpt: stopped by SIGTERM outside the training steps" in err
    assert committed_steps(workdir) == []


def _last_logged_step(workdir: Path) -> int:
    return max((r["step"] for r in read_metrics(workdir) if r["split"] == "train"), default=0)


@pytest.mark.slow
def test_soak_random_sigkills_including_mid_save_resume_bitwise(tmp_path, data_dir):
    """An uninterrupted run against one SIGKILLed, then rerun, at eight moments: during start-up,
    mid-save (a temporary checkpoint directory exists), right after a commit (while old
    checkpoints are deleted) and a random few steps on (within a step, an eval or a save):
    every loss, eval and record equal, bit for bit."""
    settings = ("--config.train.keep_checkpoints=2", "--config.train.checkpoint_every=3")
    reference = tmp_path / "reference"
    assert run_cli(reference, data_dir, *settings).returncode == 0
    workdir, rng = tmp_path / "killed", random.Random(26)
    checkpoints = workdir / "checkpoints"
    plan = ["start-up", "mid-save", "after-commit", "random step", "mid-save", "random step", "after-commit",
            "mid-save"]
    kills = []
    for when in [*plan, None]:
        proc = subprocess.Popen(cli_command(workdir, data_dir, *settings), env=cli_env(), cwd=REPO,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if when is None:
            assert proc.wait(timeout=300) == 0, proc.stderr.read()[-3000:]
            break
        seen, logged, started = set(committed_steps(workdir)), _last_logged_step(workdir), time.time()
        target = logged + rng.randint(1, 4)
        startup = rng.uniform(0.5, 4.0)
        while proc.poll() is None and time.time() < started + 300:
            if when == "start-up" and time.time() > started + startup:
                break
            if when == "mid-save" and checkpoints.is_dir() and any(".orbax-checkpoint-tmp" in p.name
                                                                    for p in checkpoints.iterdir()):
                break
            if when == "after-commit" and set(committed_steps(workdir)) - seen:
                break
            if when == "random step" and _last_logged_step(workdir) >= target:
                time.sleep(rng.uniform(0.0, 0.05))
                break
            time.sleep(0.002)
        assert proc.poll() is None, (f"the run ended before kill {len(kills) + 1} ({when}); kills so far: {kills}; "
                                     f"{proc.stderr.read()[-3000:]}")
        proc.kill()
        proc.wait()
        kills.append((when, _last_logged_step(workdir), committed_steps(workdir)))
    assert len(kills) == 8
    ref, got = read_metrics(reference), read_metrics(workdir)
    strip = lambda recs: [{k: v for k, v in r.items() if k not in ("wall_time", "step_time", "tokens_per_s")}
                          for r in recs]
    assert strip(got) == strip(ref), f"kills: {kills}"
    assert len(train_losses(workdir)) == 40
    assert RunDir.at(workdir).read_info()["status"] == "finished"
    assert not list(checkpoints.glob("*.damaged*")), "no kill left a checkpoint that reads back damaged"
    print("kills (moment, last logged step, committed steps):", kills)
