"""Transfer experiments end to end on tiny models, with planted answers."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from igpt.training.rundir import RunDir
from igpt.transfer.arms import TransferError
from igpt.transfer.experiment import (check_seeds, experiment_config, remaining_runs, run_experiment, source_runs,
                                      sweep_runs)
from igpt.transfer.report import write_report
from trainer_fixtures import REPO, cli_env
from tiny_experiment import get_config


TARGETS = [2.5, 2.4]  # bits/token, fixed before the runs: every seed of every arm reaches them


@pytest.fixture(scope="module")
def planted(tmp_path_factory, data_dir):
    exp = run_experiment(get_config(data_dir), tmp_path_factory.mktemp("planted"), log=lambda *_: None)
    return write_report([exp], exp / "report", targets=TARGETS)


@pytest.mark.slow  # the planted experiment trains 11 runs (minutes); the estimators' known answers are fast tests
def test_same_distribution_pretraining_transfers(planted):
    h = planted["experiments"][0]["headline"]["digits/full"]
    assert h["n_reached"] == 3 and h["lo"] > 1.2, h  # every seed's speedup well above 1 (a range over 3 seeds)


@pytest.mark.slow
def test_random_token_pretraining_claims_no_transfer(planted):
    h = planted["experiments"][0]["headline"]["noise/full"]
    assert h["reached"] and h["lo"] <= 1.0 <= h["hi"], h


def _summary_without_paths(exp_dir) -> str:
    summary = json.loads((exp_dir / "report" / "summary.json").read_text())
    return json.dumps(summary["experiments"][0]["comparison"], sort_keys=True)


def _transfer_cli(workdir, data_dir):
    return [sys.executable, "-m", "igpt.commands.transfer", f"--config={REPO / 'tests' / 'tiny_experiment.py'}",
            f"--workdir={workdir}", "--config.arms=('scratch','digits/full')", "--config.seeds=(0,1)",
            "--config.source.train.steps=40", "--config.target.train.steps=20",
            f"--config.target.data.data_dir={data_dir}", f"--config.sources.digits.data_dir={data_dir}",
            f"--config.sources.noise.data_dir={data_dir}", "--config.workers=2", "--config.lrs=(3e-3,1e-2)",
            "--config.lr_seeds=(0,)"]


@pytest.mark.slow  # two experiments; a killed run's bitwise resume is test_train's default-set test
def test_killed_experiment_with_workers_resumes_to_the_same_report(tmp_path, data_dir):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    done = subprocess.run(_transfer_cli(whole, data_dir), env=cli_env(), cwd=REPO, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "digits/full" in done.stdout and "report:" in done.stdout
    proc = subprocess.Popen(_transfer_cli(killed, data_dir), env=cli_env(), cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first_target = killed / "target" / "scratch" / "lr0.01" / "seed0"
    deadline = time.time() + 600
    while not RunDir(first_target).read_info().get("finished") and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "report").exists()
    running = lambda: [p for p in killed.rglob("run.json") if json.loads(p.read_text()).get("status") == "running"]
    settle = time.time() + 60
    while running() and time.time() < settle:  # the workers, told by SIGTERM, checkpoint and stop
        time.sleep(0.1)
    again = subprocess.run(_transfer_cli(killed, data_dir), env=cli_env(), cwd=REPO, capture_output=True,
                           text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "done already" in again.stdout
    assert _summary_without_paths(killed) == _summary_without_paths(whole)


@pytest.mark.slow
def test_every_control_arm_runs_and_the_claim_is_stated_against_the_best_control(tmp_path, data_dir):
    c = get_config(data_dir, variant="controls")
    exp = run_experiment(c, tmp_path / "controls", log=lambda *_: None)
    summary = write_report([exp], exp / "report", targets=list(c.report.targets))
    ran = {json.loads(p.read_text())["mode"] for p in (exp / "target").rglob("run.json")}
    assert ran == {"scratch", "full", "stats_init", "shuffled_source", "mimetic", "frozen_random"}
    assert json.loads((exp / "sources" / "digits__shuffled" / "run.json").read_text())["shuffled_tokens"]
    h = summary["experiments"][0]["headline"]["digits/full"]
    assert h["control"] in {"digits/stats_init", "digits/shuffled_source", "mimetic", "frozen_random"}, h
    assert h["claim"]["verdict"] in {"transfer", "negative", "no_evidence", "no_claim"}, h
    md = (exp / "report" / "report.md").read_text()
    assert "best control" in md.lower()


def test_two_stages_run_every_rate_on_the_lr_seeds_then_the_chosen_rate_on_the_rest(tmp_path):
    c = get_config("unused")
    c.seeds, c.lr_seeds, c.heldout_seeds, c.lrs = (0, 1, 2, 3, 4), (0, 1), (7,), (3e-3, 1e-2, 3e-2)
    check_seeds(c)
    sweep = sweep_runs(c, tmp_path)
    assert {(i["arm"], i["lr"], i["seed"]) for _, i in sweep.values()} == {
        (arm, lr, seed) for arm in c.arms for lr in c.lrs for seed in (0, 1)}
    rest = remaining_runs(c, tmp_path, {("scratch", 0): 1e-2, ("digits/full", 0): 3e-3, ("noise/full", 0): 3e-2})
    assert sorted((i["arm"], i["lr"], i["seed"]) for _, i in rest.values()) == sorted(
        [("scratch", 1e-2, s) for s in (2, 3, 4, 7)] + [("digits/full", 3e-3, s) for s in (2, 3, 4)]
        + [("noise/full", 3e-2, s) for s in (2, 3, 4)])
    assert set(sweep).isdisjoint(rest)
    c.lr_seeds = ()
    assert remaining_runs(c, tmp_path, {}) == {} and len(sweep_runs(c, tmp_path)) == 3 * 3 * 5 + 3
    c.lr_seeds = (0, 9)
    with pytest.raises(TransferError, match=r"lr_seeds \[9\] are not in seeds"):
        check_seeds(c)
    c.arms = ("scratch", "digits/shuffled_source")
    assert list(source_runs(c)) == ["digits__shuffled"], "only the sources an arm starts from pretrain"


def test_a_data_size_sweep_runs_every_arm_at_each_size_and_scratch_also_above(tmp_path):
    c = get_config("unused")
    c.arms, c.seeds, c.lrs, c.target_sizes, c.scratch_sizes = ("scratch", "digits/full"), (0, 1), (1e-2,), (50, 200), (800,)
    check_seeds(c)
    runs = sweep_runs(c, tmp_path)
    assert sorted((i["arm"], i["train_examples"], i["seed"]) for _, i in runs.values()) == sorted(
        [("scratch", n, s) for n in (50, 200, 800) for s in (0, 1)] + [("digits/full", n, s) for n in (50, 200) for s in (0, 1)])
    assert all(cfg.data.train_examples == info["train_examples"] and f"/n{info['train_examples']}/" in rel
               for rel, (cfg, info) in runs.items())
    c.scratch_sizes = (100,)
    with pytest.raises(TransferError, match="increasing order"):
        check_seeds(c)


@pytest.mark.slow  # 12 short trainings with early stopping
def test_a_tiny_data_size_sweep_runs_end_to_end_and_reports_effective_data(tmp_path, data_dir):
    c = get_config(data_dir)
    c.arms, c.seeds, c.target_sizes, c.scratch_sizes = ("scratch", "digits/full"), (0, 1), (30, 100), (300, 1000)
    c.target.train.steps, c.target.train.eval_every, c.target.train.patience = 300, 10, 3
    exp = run_experiment(c, tmp_path / "sweep", log=lambda *_: None)
    infos = [json.loads(p.read_text()) for p in (exp / "target").rglob("run.json")]
    assert len(infos) == 2 * 4 + 2 * 2 and all(i["finished"] for i in infos)
    assert any(i.get("stopped_early") for i in infos), "small training sets overfit: patience stops them"
    summary = write_report([exp], exp / "report")
    cells = summary["experiments"][0]["effective_data"]["cells"]
    assert {(c["arm"], c["examples"]) for c in cells} == {("digits/full", 30), ("digits/full", 100)}
    assert "Effective data transferred" in (exp / "report" / "report.md").read_text()


def test_every_runs_settings_are_checked_before_any_source_pretrains(tmp_path):
    from igpt.training.loop import TrainConfigError

    c = get_config(str(tmp_path / "tfds"))
    c.target.train.log_every = 0
    c.source.optim.lr = float("nan")
    with pytest.raises(TrainConfigError) as error:
        run_experiment(c, tmp_path / "exp", log=lambda *_: None)
    lines = [line.strip() for line in str(error.value).splitlines()]
    assert lines == ["2 settings to fix:", "optim.lr=nan and optim.warmup_steps=10 must be finite and >= 0.",
                     "train.log_every=0 must be at least 1."]
    assert not (tmp_path / "exp").exists() and not (tmp_path / "tfds").exists(), "nothing made before the check"


def test_workers_default_to_one_per_core_on_a_cpu_host_and_to_one_elsewhere(monkeypatch):
    from igpt import hardware
    from igpt.transfer import workers
    assert experiment_config().workers == 0
    assert workers.count(0) == hardware.usable_cores() and workers.count(3) == 3
    with pytest.raises(TransferError, match=r"workers=-1: give the trainings to run at once"):
        workers.check(-1)
    monkeypatch.setattr(workers, "on_one_cpu_host", lambda: False)  # an accelerator, or several hosts
    assert workers.count(0) == 1
    workers.check(0)
    with pytest.raises(TransferError, match="set workers=1"):
        workers.check(2)
