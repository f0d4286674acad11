"""A transfer experiment with its directory in a bucket (the local GCS emulator): its runs train
there (from a shipped donor, so nothing pretrains), a rerun skips what finished, and the report is
written into the bucket."""
from __future__ import annotations

import json
from pathlib import Path

from tiny_experiment import get_config

from igpt.commands.report import main as report_main
from igpt.training.rundir import RunDir
from igpt.transfer.arms import SCRATCH
from igpt.transfer.donors import shipped
from igpt.transfer.experiment import run_experiment


def _config(data_dir: str):
    c = get_config(data_dir, variant="donors")  # a shipped donor: nothing to pretrain
    c.arms, c.seeds = (SCRATCH, "prose/full"), (0,)
    c.representations = False  # probes have their own tests
    c.target.train.steps, c.target.train.eval_every = 10, 5
    c.target.train.checkpoint_every = 5
    return c


def test_an_experiment_in_a_bucket_trains_resumes_and_reports(data_dir, gcs_root, capsys):
    exp_url = str(gcs_root / "exp")
    lines: list[str] = []
    exp = run_experiment(_config(data_dir), exp_url, log=lines.append)
    assert str(exp) == exp_url and not Path("gs:").exists()
    assert json.loads((exp / "experiment.json").read_text())["complete"]
    runs = ["target/scratch/lr0.01/seed0", "target/prose__full/lr0.01/seed0"]
    for rel in runs:
        info = RunDir(exp / rel).read_info()
        assert info["finished"] and info["step"] == 10, rel
    events = list((exp / runs[0] / "tb").iterdir())
    assert len(events) == 1 and b"train/loss" in events[0].read_bytes(), "TensorBoard events in the bucket"

    again: list[str] = []
    run_experiment(_config(data_dir), exp_url, log=again.append)
    assert sorted(line for line in again if line.startswith("done already")) == sorted(
        f"done already: {exp / rel}" for rel in runs)

    assert report_main([exp_url, "--out", f"{exp_url}/report"]) == 0
    summary = json.loads((exp / "report" / "summary.json").read_text())
    assert summary["experiments"][0]["dir"] == exp_url
    assert set(summary["experiments"][0]["headline"]) == {"prose/full"}
    assert json.loads((exp / "experiment.json").read_text())["donor_flops"] == {
        "prose": shipped.pretraining_flops("prose")}
    assert not summary["experiments"][0]["notes"]  # the donor's training FLOPs are known: no "No FLOPs speedup"
    assert (exp / "report" / "report.html").exists()
