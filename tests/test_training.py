"""The loop's small parts: cadence, the run directory's files, metrics.jsonl, signals."""
from __future__ import annotations

import json
import os
import signal

import pytest

from igpt.training.cadence import due
from igpt.training.metrics import MetricsWriter, read_metrics
from igpt.training.preemption import PreemptionFlag
from igpt.training.rundir import RunDir, WorkdirError, config_differences


def test_due_at_each_multiple_and_at_the_last_step():
    assert [s for s in range(1, 24) if due(s, 5, 23)] == [5, 10, 15, 20, 23]
    assert [s for s in range(1, 6) if due(s, 0, 5)] == [5]


def test_config_differences_name_dotted_keys():
    saved = {"train": {"steps": 40, "lr": 1.0}, "model": {"width": 64}, "seed": 0}
    current = {"train": {"steps": 50, "lr": 1.0}, "model": {"width": 64, "new": 1}, "seed": 0}
    assert config_differences(saved, current) == ["model.new: '<absent>' -> 1", "train.steps: 40 -> 50"]
    assert config_differences(saved, saved) == []


def test_run_info_status_and_finished_agree(tmp_path):
    run = RunDir.at(tmp_path / "run").prepare()
    run.update_info(task="gpt", status="running", step=0, steps=10, arm="scratch")
    assert run.read_info() == {"task": "gpt", "status": "running", "finished": False, "step": 0, "steps": 10,
                               "arm": "scratch"}
    run.update_info(status="finished", step=10)
    info = run.read_info()
    assert info["finished"] and info["step"] == 10 and info["arm"] == "scratch"
    with pytest.raises(ValueError, match="not one of"):
        run.update_info(status="done")
    assert not list(run.root.glob("*.tmp"))


def test_an_unwritable_workdir_is_refused(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(WorkdirError, match="not writable"):
        RunDir.at(blocker / "run").prepare()


def test_a_torn_last_line_does_not_swallow_the_next_record(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps({"step": 9, "split": "train", "loss": 1.0}) + "\n" + '{"step": 10, "spl')
    writer = MetricsWriter(path)
    writer.write({"step": 10, "split": "train", "loss": 0.5})
    writer.write({"step": 11, "split": "train", "loss": 0.4})
    writer.close()
    assert [(r["step"], r["loss"]) for r in read_metrics(tmp_path)] == [(9, 1.0), (10, 0.5), (11, 0.4)]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_sigint_ask_to_stop(sig):
    flag = PreemptionFlag(check_every=10)
    try:
        assert not flag.should_stop(1)
        os.kill(os.getpid(), sig)
        assert flag.should_stop(2) and flag.received == signal.Signals(sig).name
    finally:
        flag.restore()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
