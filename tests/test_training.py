"""The loop's small parts: cadence, the run directory's files, metrics.jsonl, signals."""
from __future__ import annotations

import json
import os
import signal

import pytest

from igpt.training.cadence import due
from igpt.training.early_stopping import EarlyStopping
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


@pytest.mark.slow  # test_vq's image_run fits the VQ task through the same loop and checks the same files
def test_one_step_smoke_of_the_vq_fitting_task(tmp_path, data_dir):
    """The VQ task through the same loop as GPT's: run.json, metrics, the saved tokenizer."""
    from igpt import tokenizers
    from igpt.data import specs
    from igpt.tokenizers import vq
    from igpt.tokenizers.vq import task as vqtask

    cfg = vqtask.base_config(
        model=vq.model_config("image", strides=(2, 2), channels=(8, 8), res_blocks=1, res_channels=8),
        quantizer=vq.quantizer_config("fsq", levels=(4, 4)),
        data=specs.images("shipped:photos", res=8, tokenizer="vq", data_dir=data_dir, max_examples=16),
        train=vqtask.train_config(steps=1, global_batch=4))
    cfg.mesh.num_devices = 1
    tok = vqtask.fit(cfg, tmp_path)
    run = RunDir.at(tmp_path)
    info = run.read_info()
    assert (info["task"], info["status"], info["step"]) == ("vq", "finished", 1)
    evals = [r for r in read_metrics(tmp_path) if r["split"] == "eval"]
    assert [r["step"] for r in evals] == [1] and evals[0]["psnr"] == tok.metrics["psnr"]
    assert tokenizers.load(run.tokenizer).vocab_size == 16


def _lrs(schedule: str, steps: int = 100, **fields) -> list[float]:
    from igpt.training import optim
    o = optim.optim_config(lr=1.0, warmup_steps=10, schedule=schedule, min_lr_ratio=0.1, **fields)
    optim.check(o, optim.OPTIMIZERS)
    f = optim.make_schedule(o, steps)
    return [float(f(s)) for s in range(steps)]


def test_schedules_warm_up_then_decay_as_named():
    cosine, constant, wsd = _lrs("cosine"), _lrs("constant"), _lrs("wsd", decay_fraction=0.2)
    for lrs in (cosine, constant, wsd):
        assert lrs[0] == 0.0 and lrs[5] == pytest.approx(0.5) and lrs[10] == pytest.approx(1.0)
    assert all(lr == pytest.approx(1.0) for lr in constant[10:])
    assert all(lr == pytest.approx(1.0) for lr in wsd[10:81]) and wsd[-1] == pytest.approx(0.1, abs=0.01)
    assert all(a >= b for a, b in zip(wsd[80:], wsd[81:]))
    assert cosine[55] < 0.6 and cosine[-1] == pytest.approx(0.1, abs=0.01)


def test_a_bad_schedule_is_refused():
    from igpt.training import optim
    with pytest.raises(optim.OptimizerError, match="optim.schedule 'linear' is unknown"):
        optim.check(optim.optim_config(schedule="linear"), optim.OPTIMIZERS)


def test_early_stopping_waits_patience_evals_and_replays_to_the_same_state():
    stop = EarlyStopping(patience=2)
    for step, loss in ((10, 3.0), (20, 2.5), (30, 2.6), (40, 2.5)):
        stop.update(step, loss)
    assert (stop.best, stop.best_step, stop.since_best, stop.stopped) == (2.5, 20, 2, True)
    records = [{"split": s, "step": step, "loss": loss} for step, loss in ((10, 3.0), (20, 2.5), (30, 2.6), (40, 2.5))
               for s in ("train", "validation")]
    assert EarlyStopping.replay(2, records, until=30) == EarlyStopping(2, 2.5, 20, 1)
    assert EarlyStopping.replay(2, records, until=40).stopped
    assert not EarlyStopping.replay(0, records, until=40).stopped, "patience 0 never stops"
