"""A run trained under grow_vocab (its model's vocabulary is the donor's tokens, then the data's)
is read back as it trained: run.json records its token offset, load_run builds the model with
the donor's rows too, igpt-sample draws data tokens only and the probe reads shifted tokens."""
from __future__ import annotations


import jax
import numpy as np
import pytest
from flax import nnx

from igpt import sharding
from igpt.commands.sample import main as sample_main
from igpt.data import pipeline
from igpt.model import with_bos
from igpt.representation_runs import pooled_features, probe_run, residual_streams
from igpt.sample import load_run, run_token_offset
from igpt.training.rundir import RunDir
from igpt.transfer import init as transfer_init
from igpt.transfer.arms import TransferError
from trainer_fixtures import tiny_config

DONOR = "shipped:prose"  # nano, 64 positions, 256 byte tokens: the digits model's shape
DONOR_VOCAB, GRAY = 256, 16


def one_device_mesh():
    cfg = sharding.mesh_config()
    cfg.num_devices = 1
    return sharding.make_mesh(cfg)


@pytest.fixture(scope="module")
def grow_run(tmp_path_factory, data_dir):
    """igpt-train's task for 2 steps on 8x8 digits in 16 gray levels under grow_vocab from the
    shipped prose donor: data token t is model token 256 + t."""
    from igpt.gpt import train
    cfg = tiny_config(data_dir, steps=2)
    cfg.init = transfer_init.init_config("grow_vocab", DONOR)
    cfg.mesh.num_devices = 1
    workdir = tmp_path_factory.mktemp("grow_vocab_run")
    train(cfg, str(workdir))
    return workdir, cfg


def test_a_grow_vocab_run_records_its_offset_and_loads_with_the_donors_rows(grow_run):
    workdir, _ = grow_run
    assert RunDir.at(workdir).read_info()["token_offset"] == DONOR_VOCAB
    run = load_run(workdir, one_device_mesh())
    model = nnx.merge(run.graphdef, run.params)
    assert run.token_offset == DONOR_VOCAB and run.tokenizer.vocab_size == GRAY
    assert model.vocab_size == DONOR_VOCAB + GRAY and model.bos_id == DONOR_VOCAB + GRAY


def test_runs_written_before_the_offset_was_recorded_find_it_or_say_how(grow_run, tmp_path):
    workdir, cfg = grow_run
    meta = lambda: {"vocab": DONOR_VOCAB + GRAY}  # noqa: E731 - what the checkpoint's meta holds
    old = tmp_path / "old"  # a run dir whose run.json has no token_offset
    RunDir.at(old).prepare().update_info(task="gpt", status="finished", step=2)
    assert run_token_offset(old, cfg, GRAY, meta) == DONOR_VOCAB  # the checkpoint's vocabulary less the data's
    assert run_token_offset(old, cfg, GRAY, dict) == DONOR_VOCAB  # no vocab in the meta: the donor's own
    scratch = cfg.copy_and_resolve_references()
    scratch.init = transfer_init.init_config()
    assert run_token_offset(old, scratch, GRAY, meta) == 0
    gone = cfg.copy_and_resolve_references()
    gone.init.source = str(tmp_path / "no_such_donor")
    with pytest.raises(TransferError, match=r"before runs recorded their token offset.*add \"token_offset\""):
        run_token_offset(old, gone, GRAY, dict)
    assert run_token_offset(workdir, gone, GRAY, dict) == DONOR_VOCAB  # recorded: nothing else is read


def test_igpt_sample_completes_a_grow_vocab_run_in_data_tokens(grow_run, tmp_path):
    workdir, _ = grow_run
    assert sample_main([f"--workdir={workdir}", f"--out={tmp_path}", "--num=2", "--top_k=0"]) == 0
    samples = np.load(tmp_path / "samples.npz")
    np.testing.assert_array_equal(samples["completions"][:, :32], samples["originals"][:, :32])
    for kind in ("completions", "unconditional"):
        assert samples[kind].shape == (2, 64) and samples[kind].min() >= 0 and samples[kind].max() < GRAY, kind
    assert (tmp_path / "completions.png").exists() and (tmp_path / "unconditional.png").exists()


def test_probe_features_of_a_grow_vocab_run_read_the_data_tokens_shifted(grow_run):
    workdir, cfg = grow_run
    mesh = one_device_mesh()
    run = load_run(workdir, mesh)
    tokens = pipeline.build_dataset(cfg.data, "test", run.tokenizer).tokens[:8]
    features = pooled_features(run, tokens, mesh, batch=8)
    model = nnx.merge(run.graphdef, run.params)
    streams = residual_streams(model, with_bos(jax.numpy.asarray(tokens) + DONOR_VOCAB, model.bos_id))
    np.testing.assert_allclose(features, np.stack([s.mean(axis=1) for s in streams]), rtol=1e-5, atol=1e-5)
    records = probe_run(workdir, max_examples=200, mesh=mesh, log=lambda _: None)
    assert [r["layer_name"] for r in records] == ["embeddings", "block 1", "block 2", "final norm"]
    assert all(0.0 <= r["test_accuracy"] <= 1.0 for r in records)
