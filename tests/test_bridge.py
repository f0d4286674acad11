"""Random-label bridge training: labels fixed per example, the bridge trains exactly what it
says (frozen weights bitwise unchanged), its model (classifier dropped) starts the target run,
and an experiment plans one bridge per bridge arm; the slow test runs a tiny experiment with
bridge, partial-bridge and grow_vocab arms from the shipped prose donor to its report."""
from __future__ import annotations

import json

import jax
import numpy as np
import pytest
from etils.epath import Path

from igpt import sharding
from igpt.data import specs
from igpt.gpt import base_config, new_params, optim_config, train_config
from igpt.model import model_config
from igpt.training.checkpoint import restore_params
from igpt.training.loop import on_mesh
from igpt.training.optim import FREEZE
from igpt.transfer import bridge, donors, init as transfer_init
from igpt.transfer.arms import BRIDGE, TransferError, parse_arm
from igpt.transfer.donors import growth
from igpt.transfer.experiment import BRIDGES, bridge_runs, check_sources, run_experiment, sweep_runs
from tiny_experiment import get_config

DONOR = "shipped:prose"  # nano, 64 positions: the shape of the tiny experiment's digits model
CPU = jax.sharding.SingleDeviceSharding(jax.devices()[0])


def test_random_labels_are_fixed_per_example_whatever_the_batch_and_drawn_anew_per_seed():
    rows = np.random.default_rng(0).integers(0, 16, (3000, 64))
    labels = bridge.random_labels(rows, 10, seed=0)
    np.testing.assert_array_equal(bridge.random_labels(rows[::-1], 10, seed=0), labels[::-1])
    np.testing.assert_array_equal(bridge.random_labels(rows[5:6], 10, seed=0), labels[5:6])
    counts = np.bincount(labels, minlength=10)
    assert counts.min() > 240 and counts.max() < 360  # ~uniform: 300 each
    assert np.mean(bridge.random_labels(rows, 10, seed=1) == labels) < 0.15  # another seed, other labels


def test_a_partial_bridge_freezes_the_other_blocks_and_the_language_model_head():
    params = {"embed": 0, "pos": 0, "head": 0, "final_norm": {"scale": 0}, bridge.CLASSIFIER: {"w": 0, "b": 0},
              "blocks": {str(i): {"attn": {"wq": 0}, "norm1": {"scale": 0}} for i in range(3)}}
    frozen = lambda labels: sorted("/".join(k) for k, v in growth.flatten(labels).items() if v == FREEZE)  # noqa: E731
    assert frozen(bridge.bridge_labels(params, (1,))) == ["blocks/0/attn/wq", "blocks/0/norm1/scale",
                                                          "blocks/2/attn/wq", "blocks/2/norm1/scale", "head"]
    assert frozen(bridge.bridge_labels(params, ())) == ["head"]


def test_bridge_arms_parse_their_blocks_and_refuse_others():
    assert parse_arm("prose/bridge", ["prose"], 4).layers == ()
    arm = parse_arm("prose/bridge=0-1", ["prose"], 4)
    assert (arm.source, arm.mode, arm.layers, arm.dirname) == ("prose", BRIDGE, (0, 1), "prose__bridge=0-1")
    assert parse_arm("prose/bridge=0,2-3", ["prose"], 4).layers == (0, 2, 3)
    for bad, message in (("prose/bridge=3-4", "distinct block indices in"), ("prose/bridge=1,1", "distinct"),
                         ("prose/bridge=a", "a mode in")):
        with pytest.raises(TransferError, match=message):
            parse_arm(bad, ["prose"], 4)


def bridge_config(data_dir: str, blocks: tuple[int, ...]):
    cfg = base_config(model_config("nano"), specs.images("shipped:digits", res=8, tokenizer="gray:16",
                                                         data_dir=data_dir),
                      optim=optim_config(lr=1e-2, warmup_steps=1), train=train_config(steps=4, global_batch=16))
    cfg.train.update(eval_every=4, eval_sequences=32, checkpoint_every=4)
    cfg.mesh.num_devices = 1  # the bridge on 8 devices is the slow tiny experiment's
    cfg.init = transfer_init.init_config("full", DONOR)
    cfg.bridge = bridge.task_section(classes=4, blocks=blocks)
    return cfg


@pytest.fixture(scope="module")
def partial_bridge(tmp_path_factory, data_dir):
    """A bridge run from the shipped prose donor on digits, block 1 trained, block 0 frozen."""
    cfg = bridge_config(data_dir, blocks=(1,))
    out = tmp_path_factory.mktemp("bridge")
    outcome = bridge.train(cfg, str(out))
    return cfg, out, outcome


def test_the_bridge_trains_only_what_it_says(partial_bridge):
    cfg, out, outcome = partial_bridge
    assert set(outcome.eval) == {"train_examples", "validation"} and outcome.step == 4
    after = growth.flatten(restore_params(out, CPU)[0])
    donor = growth.flatten(donors.load(DONOR, CPU).params)
    with on_mesh(sharding.make_mesh(cfg.mesh), tuple(cfg.axis_rules)):
        fresh = growth.flatten(new_params(cfg, 16, 64)[1])  # the digits vocabulary: where the head starts
    unchanged = lambda k, start: np.array_equal(after[k], start[k])  # noqa: E731
    block0, block1 = ([k for k in after if k[:2] == ("blocks", i)] for i in ("0", "1"))
    assert block0 and all(unchanged(k, donor) for k in block0)  # frozen: the donor's weights, bitwise
    assert unchanged(growth.HEAD, fresh)  # the language-model head: frozen at its fresh init
    assert not any(unchanged(k, donor) for k in block1)  # every weight of the bridged block moved
    assert not unchanged(growth.EMBED, fresh) and not unchanged(growth.POS, donor)
    assert not unchanged(("final_norm", "scale", "value"), donor)
    assert {k[0] for k in after} == {"embed", "pos", "blocks", "final_norm", "head", bridge.CLASSIFIER}


def test_the_target_run_starts_from_the_bridged_model_without_its_classifier(partial_bridge):
    cfg, out, _ = partial_bridge
    bridged = donors.load(str(out), CPU)
    assert bridged.vocab == 16
    with on_mesh(sharding.make_mesh(cfg.mesh), tuple(cfg.axis_rules)):
        fresh = new_params(cfg, 16, 64)[1]
    got = growth.flatten(transfer_init.initialize(transfer_init.init_config("full", str(out)), fresh, bridged, 0))
    want = growth.flatten(bridged.params)
    assert bridge.CLASSIFIER not in {k[0] for k in got}
    assert got.keys() < want.keys() and all(np.array_equal(got[k], want[k]) for k in got)


def test_an_experiment_bridges_each_bridge_arm_once_for_all_its_seeds_and_rates(tmp_path):
    c = get_config("unused", variant="donors")
    c.lrs = (3e-3, 1e-2)
    exp = Path(tmp_path)
    bridges = bridge_runs(c, exp)
    assert sorted(bridges) == [f"{BRIDGES}/prose__bridge", f"{BRIDGES}/prose__bridge=1"]
    cfg, info = bridges[f"{BRIDGES}/prose__bridge=1"]
    assert (cfg.init.mode, cfg.init.source, tuple(cfg.bridge.blocks)) == ("full", DONOR, (1,))
    assert (cfg.train.steps, cfg.optim.lr, cfg.bridge.classes) == (c.bridge.steps, c.bridge.lr, c.bridge.classes)
    assert cfg.data.tokenizer == str(exp / "target_tokenizer") and info["role"] == "bridge"
    runs = sweep_runs(c, exp)
    bridged = [cfg for rel, (cfg, _) in runs.items() if rel.startswith("target/prose__bridge=1/")]
    assert len(bridged) == 4 and {(r.init.mode, r.init.source) for r in bridged} == {
        ("full", str(exp / BRIDGES / "prose__bridge=1"))}
    assert {r.init.source for rel, (r, _) in runs.items() if "grow_vocab" in rel} == {DONOR}
    c.arms = ("prose/shuffled_source",)
    with pytest.raises(TransferError, match="given as the donor 'shipped:prose', not as data"):
        check_sources(c)
    c.sources.prose = "shipped:poetry"
    with pytest.raises(TransferError, match="no shipped donor 'poetry'"):
        check_sources(c)


@pytest.mark.slow  # 2 bridges and 10 target runs: 3.5 minutes on the 2 cores under load 8
def test_a_tiny_experiment_with_bridge_partial_bridge_and_grow_vocab_arms_reports(tmp_path, data_dir):
    from igpt.transfer.report import write_report
    exp = run_experiment(get_config(data_dir, variant="donors"), tmp_path / "exp", log=lambda *_: None)
    for name in ("prose__bridge", "prose__bridge=1"):
        run = json.loads((exp / BRIDGES / name / "run.json").read_text())
        assert run["status"] == "finished" and run["role"] == "bridge"
    summary = write_report([exp], exp / "report", log_x=False, targets=None)
    (reported,) = summary["experiments"]
    assert reported["complete"] and set(reported["headline"]) == {"prose/full", "prose/bridge", "prose/bridge=1",
                                                                  "prose/grow_vocab"}
    assert all(np.isfinite(h["target_bits"]) for h in reported["headline"].values())
    assert (exp / "report" / "report.html").exists()


def test_a_bad_bridge_setting_is_refused_before_any_work(tmp_path):
    c = get_config("unused", variant="donors")
    c.bridge.classes, c.bridge.steps = 1, 0
    with pytest.raises(ValueError, match=r"2 settings to fix:\n  train.steps=0 must be at least 1.\n  "
                                         r"bridge.classes=1: random labels need at least 2 classes."):
        run_experiment(c, tmp_path / "exp", log=lambda *_: None)
    assert not (tmp_path / "exp").exists()
