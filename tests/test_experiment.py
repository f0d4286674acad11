"""Transfer experiments end to end on tiny models, with planted answers."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from igpt.training.rundir import RunDir
from igpt.transfer.experiment import run_experiment
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
            f"--config.sources.noise.data_dir={data_dir}"]


@pytest.mark.slow  # three experiments; a killed run's bitwise resume is test_train's default-set test
def test_killed_experiment_resumes_to_the_same_report(tmp_path, data_dir):
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
