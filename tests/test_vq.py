"""VQ tokenizers: the quantizers' gradient paths and EMA statistics, dead-code restarts, and
tiny VQ-VAEs fitted on the shipped photos and music, saved, loaded and used as tokenizers."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from igpt import tokenizers
from igpt.data import pipeline, specs
from igpt.tokenizers import reconstruction, vq
from igpt.tokenizers.vq import augment, quantizers
from igpt.tokenizers.vq import task as vqtask
from igpt.training import optim
from igpt.training.metrics import read_metrics
from igpt.tokenizers.base import TokenizerError

REPO = Path(__file__).resolve().parents[1]


def tiny_image_config(data_dir: str, kind: str = "vq", steps: int = 100):
    """16x16 photo crops at 4x (16 tokens each): fits in seconds and still learns."""
    quantizer = (vq.quantizer_config("vq", num_codes=32, code_dim=8, kmeans_batches=2, kmeans_iters=3)
                 if kind == "vq" else vq.quantizer_config("fsq", levels=(8, 4)))
    c = vqtask.base_config(
        model=vq.model_config("image", strides=(2, 2), channels=(16, 32), res_blocks=1, res_channels=16),
        quantizer=quantizer,
        data=specs.images("shipped:photos", res=16, tokenizer="vq", data_dir=data_dir, max_examples=256),
        optim=vqtask.optim_config(lr=5e-3, warmup_steps=5),
        train=vqtask.train_config(steps=steps, global_batch=16))
    c.train.update(log_every=10, eval_every=50, checkpoint_every=50)
    return c


def tiny_audio_config(data_dir: str, steps: int = 20):
    c = vqtask.base_config(
        model=vq.model_config("audio", strides=(4, 4), channels=(16, 32), res_blocks=1, res_channels=16,
                              in_channels=1),
        quantizer=vq.quantizer_config("vq", num_codes=32, code_dim=8, kmeans_batches=2, kmeans_iters=3),
        data=specs.audio("shipped:music", seq_len=512, tokenizer="vq", sample_rate=8000, data_dir=data_dir,
                         max_examples=8),
        optim=vqtask.optim_config(lr=3e-3, warmup_steps=5),
        train=vqtask.train_config(steps=steps, global_batch=8))
    c.train.update(log_every=10, eval_every=100, checkpoint_every=100)
    return c


@pytest.fixture(scope="module")
def image_run(data_dir, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("vq_images")
    cfg = tiny_image_config(data_dir)
    cfg.mesh.num_devices = 2  # batch sharded over two devices: the EMA sums run on the global batch
    return cfg, workdir, vqtask.fit(cfg, workdir)


@pytest.fixture(scope="module")
def held_out_images(image_run):
    cfg = image_run[0]
    return pipeline.load_examples(cfg.data, cfg.data.test_split)


# ---------------------------------------------------------------------------------------------
# Vector quantization: gradient paths


def _planted(n=24, d=3, k=6, seed=0):
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.normal(size=(n, d)), jnp.float32), quantizers.vq_state(rng.normal(size=(k, d)), np.ones(k))


def test_losses_come_before_the_straight_through():
    z, state = _planted()
    out = quantizers.vq_quantize(z, state)
    e = state["codebook"][out.codes]
    np.testing.assert_allclose(out.z_q, e, atol=1e-6)

    def grads(loss_of):
        return jax.grad(lambda z, cb: loss_of(quantizers.vq_quantize(z, dict(state, codebook=cb))),
                        argnums=(0, 1))(z, state["codebook"])

    # codebook loss: pulls codes towards latents, nothing to the encoder
    gz, gcb = grads(lambda o: o.codebook_loss)
    assert not np.any(gz)
    want = np.zeros_like(state["codebook"])
    np.add.at(want, np.asarray(out.codes), -2.0 * np.asarray(z - e) / z.size)
    np.testing.assert_allclose(gcb, want, atol=1e-6)
    # commitment loss: pulls the encoder towards its codes, nothing to the codebook
    gz, gcb = grads(lambda o: o.commitment_loss)
    np.testing.assert_allclose(gz, 2.0 * (z - e) / z.size, atol=1e-6)
    assert not np.any(gcb)
    # the straight-through output passes the decoder's gradient to the encoder only
    g = jax.random.normal(jax.random.key(1), z.shape)
    gz, gcb = grads(lambda o: jnp.sum(o.z_q * g))
    np.testing.assert_allclose(gz, g, atol=1e-6)
    assert not np.any(gcb)


def test_training_objective_gives_the_encoder_the_commitment_gradient_and_the_codebook_none(data_dir):
    model, quantizer = vq.model_config(channels=(8, 8), res_blocks=0), vq.quantizer_config(num_codes=16, code_dim=4)
    graphdef, params = vq.init_params(model, quantizer, seed=0)
    photos = pipeline.load_examples(specs.images("shipped:photos", res=16, data_dir=data_dir, max_examples=64), "train")
    x = jnp.asarray(augment.image_batch(photos, 0, 4, seed=0))
    qstate = quantizers.vq_kmeans_init(nnx.merge(graphdef, params).encode(x), 16, jax.random.key(0), 2, 64)

    @jax.jit
    def grads(params, qstate):  # d(recon), d(commitment), d(total) / d(params, codebook state)
        def term(i):
            def f(p, s):
                loss, (_, out, recon) = vqtask.objective(graphdef, quantizer, p, s, x)
                return (recon, out.commitment_loss, loss)[i]
            return jax.grad(f, argnums=(0, 1))(params, qstate)
        return [term(i) for i in range(3)]

    (recon, _), (commit, _), (total, g_qstate) = grads(params, qstate)
    assert not any(np.any(v) for v in jax.tree.leaves(g_qstate))  # the codebook moves by the EMA only
    assert all(np.any(v) for v in jax.tree.leaves(commit["encoder"]))  # every encoder weight is pulled
    assert not any(np.any(v) for v in jax.tree.leaves(commit["decoder"]))
    for t, r, c in zip(*map(jax.tree.leaves, (total, recon, commit))):  # total = recon + beta * commitment
        np.testing.assert_allclose(t, r + quantizer.beta * c, rtol=1e-4, atol=1e-7)


def test_quantizer_runs_in_fp32_whatever_the_model_dtype():
    z, state = _planted()
    out = quantizers.vq_quantize(z.astype(jnp.bfloat16), state)
    assert out.z_q.dtype == jnp.float32 and out.codes.dtype == jnp.int32
    assert quantizers.fsq_quantize(z.astype(jnp.bfloat16), (8, 8, 8)).z_q.dtype == jnp.float32
    model = nnx.merge(*vq.init_params(vq.model_config(channels=(4, 4), res_blocks=0, dtype="bfloat16"),
                                      vq.quantizer_config(), seed=0))
    assert model.encoder(jnp.zeros((1, 4, 4, 3))).dtype == jnp.bfloat16
    assert model.encode(jnp.zeros((1, 4, 4, 3))).dtype == jnp.float32


# ---------------------------------------------------------------------------------------------
# EMA statistics, k-means initialisation, dead-code restarts


def test_ema_update_follows_its_definition():
    z, state = _planted()
    codes = quantizers.vq_quantize(z, state).codes
    new, restarted = quantizers.vq_ema_update(state, z, codes, jax.random.key(0), decay=0.9, dead_threshold=0.0)
    onehot = np.eye(6)[np.asarray(codes)]
    count = 0.9 * np.ones(6) + 0.1 * onehot.sum(0)
    total = 0.9 * np.asarray(state["ema_sum"]) + 0.1 * onehot.T @ np.asarray(z)
    assert int(restarted) == 0
    np.testing.assert_allclose(new["ema_count"], count, rtol=1e-6)
    np.testing.assert_allclose(new["ema_sum"], total, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(new["codebook"], total / count[:, None], rtol=1e-4)


def test_weight_average_ramps_its_decay_then_holds_it():
    params = {"w": jnp.zeros(3)}
    average = params
    for step in range(200):  # a constant target: the average closes in at the ramped rate
        average = vqtask.weight_average(average, {"w": jnp.ones(3)}, jnp.asarray(step), decay=0.99)
        if step == 0:  # decay min(0.99, 1/10): the first weights are nearly taken as they are
            np.testing.assert_allclose(average["w"], 0.9, rtol=1e-6)
    gap = np.prod([min(0.99, (1 + t) / (10 + t)) for t in range(200)])
    np.testing.assert_allclose(average["w"], 1.0 - gap, rtol=1e-5)
    assert 0.0 < gap < 0.99**150  # past the ramp the full decay holds, and the average has not reached 1


def test_dead_code_restart_revives_unused_codes_and_resets_their_statistics():
    rng = np.random.default_rng(0)
    live = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    z = jnp.asarray(np.repeat(live, 16, axis=0) + 0.3 * rng.normal(size=(64, 2)), jnp.float32)
    far = np.full((4, 2), 50.0)  # codes no latent is near: never chosen
    state = quantizers.vq_state(np.concatenate([live, far]), np.concatenate([np.full(4, 16.0), np.zeros(4)]))
    before = quantizers.vq_quantize(z, state).codes
    assert set(np.unique(before)) == {0, 1, 2, 3}

    new, restarted = quantizers.vq_ema_update(state, z, before, jax.random.key(0), decay=0.99, dead_threshold=1.0)
    assert int(restarted) == 4
    fresh = np.asarray(new["codebook"][4:])
    assert all(np.any(np.all(np.isclose(z, row, atol=1e-4), axis=1)) for row in fresh)  # moved onto latents
    restart = quantizers.restart_count(64, 8)
    np.testing.assert_allclose(new["ema_count"][4:], restart)  # EMA count restarted, not decayed from 0
    np.testing.assert_allclose(new["ema_sum"][4:], fresh * restart, rtol=1e-3)  # sum consistent with it
    assert np.all(np.asarray(new["ema_count"][:4]) > 1.0)  # live codes keep their history
    after = quantizers.vq_quantize(z, new).codes
    assert len(set(np.unique(after)) - {0, 1, 2, 3}) >= 1  # a revived code now wins latents


def test_restart_settings_that_would_loop_are_rejected():
    with pytest.raises(TokenizerError, match="dead_threshold"):
        quantizers.check_vq_settings(num_codes=512, decay=0.99, dead_threshold=8.0, batch_vectors=4096)


def test_kmeans_init_finds_planted_clusters_with_per_batch_counts():
    rng = np.random.default_rng(0)
    means = np.array([[5.0, 0.0], [0.0, 5.0], [-5.0, 0.0], [0.0, -5.0]])
    x = jnp.asarray(np.repeat(means, 100, axis=0) + 0.1 * rng.normal(size=(400, 2)), jnp.float32)
    state = quantizers.vq_kmeans_init(x, 4, jax.random.key(0), iters=10, batch_vectors=100)
    found = np.asarray(state["codebook"])
    np.testing.assert_allclose(found[np.lexsort(found.T)], means[np.lexsort(means.T)], atol=0.05)
    np.testing.assert_allclose(state["ema_count"], 25.0)  # 400 latents over 4 batches of 100
    with pytest.raises(TokenizerError, match="kmeans_batches"):
        quantizers.vq_kmeans_init(x[:3], 4, jax.random.key(0), iters=1, batch_vectors=3)


def test_statistics_are_summed_over_the_global_batch_across_devices():
    """The batch sharded over 8 devices gives the same EMA step as on one device, through an
    all-reduce XLA inserts."""
    rng = np.random.default_rng(0)
    z = rng.normal(size=(64, 4)).astype(np.float32)
    state = quantizers.vq_state(rng.normal(size=(16, 4)), np.full(16, 4.0))
    codes = np.asarray(quantizers.vq_quantize(z, state).codes)
    update = jax.jit(lambda s, z, c: quantizers.vq_ema_update(s, z, c, jax.random.key(0), decay=0.9,
                                                              dead_threshold=0.5))
    mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    batch = NamedSharding(mesh, P("data"))
    zs, cs = jax.device_put(z, batch), jax.device_put(codes, batch)
    ss = jax.device_put(state, NamedSharding(mesh, P()))
    one = update(state, z, codes)[0]
    many = update(ss, zs, cs)[0]
    for k in one:
        np.testing.assert_allclose(many[k], one[k], rtol=1e-5, atol=1e-6)
    assert "all-reduce" in update.lower(ss, zs, cs).compile().as_text()


def test_l2_codes_live_on_the_unit_sphere():
    z, state = _planted()
    out = quantizers.vq_quantize(z, state, l2=True)
    np.testing.assert_allclose(np.linalg.norm(out.z_q, axis=-1), 1.0, rtol=1e-5)
    new, _ = quantizers.vq_ema_update(state, z, out.codes, jax.random.key(0), decay=0.9, dead_threshold=0.0, l2=True)
    np.testing.assert_allclose(np.linalg.norm(new["codebook"], axis=-1), 1.0, rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# Finite scalar quantization


def test_fsq_codes_cover_the_grid_and_look_up_exactly():
    levels = (8, 5, 3)
    z = jax.random.normal(jax.random.key(0), (20000, 3)) * 3.0
    out = quantizers.fsq_quantize(z, levels)
    assert quantizers.fsq_num_codes(levels) == 120
    assert set(np.unique(out.codes)) == set(range(120))
    np.testing.assert_array_equal(quantizers.fsq_lookup(out.codes, levels), out.z_q)
    assert float(jnp.max(jnp.abs(out.z_q))) <= 1.0
    for i, lv in enumerate(levels):
        assert len(np.unique(out.z_q[:, i])) == lv
    grad = jax.grad(lambda z: jnp.sum(quantizers.fsq_quantize(z, levels).z_q))(z[:4])
    assert np.all(np.asarray(grad) > 0)  # straight-through: the bounding's slope reaches the encoder
    two = quantizers.fsq_quantize(jnp.linspace(-10.0, 10.0, 101)[:, None], (2,))  # the even-level shift is finite
    assert set(np.unique(two.codes)) == {0, 1} and np.all(np.isfinite(two.z_q))
    with pytest.raises(TokenizerError, match="levels"):
        quantizers.fsq_num_codes((8, 1))


# ---------------------------------------------------------------------------------------------
# Metrics


def test_metrics_on_planted_answers():
    a = np.zeros((2, 4, 4, 3), np.uint8)
    assert reconstruction.psnr(a, a + 1) == pytest.approx(10 * np.log10(255.0**2))
    wave = np.sin(np.linspace(0, 200, 4096, dtype=np.float32))[None]
    assert reconstruction.snr(wave, 0.9 * wave) == pytest.approx(20.0, abs=1e-4)  # error 0.1 of amplitude
    noise = np.random.default_rng(0).normal(size=wave.shape).astype(np.float32)
    assert reconstruction.stft_distance(wave, wave) == 0.0
    assert 0 < reconstruction.stft_distance(wave, wave + 0.01 * noise) < reconstruction.stft_distance(wave, wave + 0.1 * noise)
    codes = np.arange(8).repeat(3)
    assert reconstruction.code_usage(codes, 16) == 0.5
    assert reconstruction.perplexity(codes, 16) == pytest.approx(8.0)
    assert reconstruction.perplexity(np.zeros(10, int), 16) == pytest.approx(1.0)


# ---------------------------------------------------------------------------------------------
# A fitted image tokenizer


def test_fit_writes_metrics_checkpoints_and_a_tokenizer(image_run):
    cfg, workdir, tok = image_run
    records = read_metrics(workdir)
    evals = [r for r in records if r["split"] == "eval"]
    assert [r["step"] for r in evals] == [50, 100]
    assert {"psnr", "usage", "perplexity", "loss"} <= set(evals[-1])
    train = [r for r in records if r["split"] == "train"]
    assert train[-1]["recon"] < train[0]["recon"]
    assert sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()) == [50, 100]
    saved = json.loads((workdir / "tokenizer" / vq.HELD_OUT_METRICS_FILE).read_text())
    assert saved == tok.metrics and saved["psnr"] == evals[-1]["psnr"]
    assert 0 < saved["usage"] <= 1 and 1 <= saved["perplexity"] <= 32


def test_image_tokens_have_the_right_shape_and_raster_order(image_run, held_out_images):
    _, _, tok = image_run
    images = held_out_images[:5]
    tokens = tok.encode(images)
    assert tokens.shape == (5, 16) and tokens.dtype == np.int32
    assert tokens.min() >= 0 and tokens.max() < tok.vocab_size == 32
    model = nnx.merge(nnx.graphdef(vq.VQVAE(tok.model_cfg, tok.quantizer_cfg, rngs=nnx.Rngs(0))),
                      jax.tree.map(jnp.asarray, tok.params))
    grid = tok.quantizer.quantize(tok.qstate, model.encode(vq.to_unit(images))).codes  # [5, 4, 4]
    np.testing.assert_array_equal(tokens, np.asarray(grid).reshape(5, 16))  # row by row
    decoded = tok.decode(tokens)
    assert decoded.shape == (5, 16, 16, 3) and decoded.dtype == np.uint8
    np.testing.assert_array_equal(tok.decode(tokens.reshape(5, 4, 4)), decoded)


def test_round_trip_reconstructs_held_out_photos(image_run, held_out_images):
    _, _, tok = image_run
    tokens = tok.encode(held_out_images)
    own = reconstruction.psnr(held_out_images, tok.decode(tokens))
    assert own == pytest.approx(tok.metrics["psnr"])
    # each image's tokens describe that image: another image's tokens reconstruct it far worse
    assert own > reconstruction.psnr(held_out_images, tok.decode(np.roll(tokens, 1, axis=0))) + 2.0


def test_save_load_is_exact_through_every_entry_point(image_run, held_out_images, tmp_path):
    _, workdir, tok = image_run
    tok.save(tmp_path / "copy")
    for loaded in (vq.VQTokenizer.load(tmp_path / "copy"), tokenizers.load(workdir / "tokenizer"),
                   tokenizers.from_spec(f"vq:{workdir / 'tokenizer'}")):
        assert loaded.vocab_size == tok.vocab_size and loaded.metrics == tok.metrics
        for a, b in zip(jax.tree.leaves(loaded.params), jax.tree.leaves(tok.params), strict=True):
            np.testing.assert_array_equal(a, b)
        for k in tok.qstate:
            np.testing.assert_array_equal(loaded.qstate[k], tok.qstate[k])
        tokens = loaded.encode(held_out_images[:32])
        np.testing.assert_array_equal(tokens, tok.encode(held_out_images[:32]))
        np.testing.assert_array_equal(loaded.decode(tokens), tok.decode(tokens))


def test_the_data_pipeline_reads_vq_tokens(image_run, data_dir):
    _, workdir, tok = image_run
    data = specs.images("shipped:photos", res=16, tokenizer=f"vq:{workdir / 'tokenizer'}", data_dir=data_dir,
                        max_examples=64)
    assert data.seq_len == 0  # read from the tokenizer: (16 / 4)^2 codes per image
    pipeline.resolve_seq_len(data)
    assert data.seq_len == vq.image_seq_len(16, tok.downsample) == 16
    loaded = pipeline.build_tokenizer(data)
    ds = pipeline.build_dataset(data, "test", loaded)
    assert ds.tokens.shape == (64, 16) and ds.vocab_size == 32
    np.testing.assert_array_equal(ds.tokens, tok.encode(pipeline.load_examples(data, data.test_split)))


def test_bad_inputs_name_the_fix(image_run, held_out_images, tmp_path):
    _, _, tok = image_run
    with pytest.raises(TokenizerError, match="uint8"):
        tok.encode(held_out_images.astype(np.float32))
    with pytest.raises(TokenizerError, match="multiple of 4"):
        tok.encode(held_out_images[:, :15, :15])
    with pytest.raises(TokenizerError, match=r"\[0, 32\)"):
        tok.decode(np.full((1, 16), 32))
    with pytest.raises(TokenizerError, match="square"):
        tok.decode(np.zeros((1, 15), np.int32))
    with pytest.raises(TokenizerError, match="not a tokenizer directory"):
        vq.VQTokenizer.load(tmp_path)
    with pytest.raises(TokenizerError, match="divisible by 4"):
        vq.image_seq_len(18, 4)
    with pytest.raises(TokenizerError, match=r"activation 'tanh' is unknown; use one of \['relu', 'silu'\]"):
        vq.check_model(vq.model_config(activation="tanh"))


def test_a_tokenizer_saved_before_the_activation_option_loads_as_relu(image_run, held_out_images, tmp_path):
    _, workdir, tok = image_run
    old = shutil.copytree(workdir / "tokenizer", tmp_path / "old")
    meta = json.loads((old / "tokenizer.json").read_text())
    del meta["settings"]["model"]["activation"]
    (old / "tokenizer.json").write_text(json.dumps(meta))
    loaded = vq.VQTokenizer.load(old)
    assert "activation" not in loaded.model_cfg and vq.activation(loaded.model_cfg) is nnx.relu
    tokens = tok.encode(held_out_images[:32])
    np.testing.assert_array_equal(loaded.encode(held_out_images[:32]), tokens)
    np.testing.assert_array_equal(loaded.decode(tokens), tok.decode(tokens))


def test_fsq_image_tokenizer_fits_and_round_trips(data_dir, tmp_path, held_out_images):
    cfg = tiny_image_config(data_dir, kind="fsq", steps=20)
    cfg.mesh.num_devices = 1  # the sharded path is the VQ fixture's; one device compiles faster
    cfg.model.activation = "silu"  # configs/vq_images.py's; the VQ fixture keeps the default relu
    tok = vqtask.fit(cfg, tmp_path)
    assert tok.vocab_size == 32 and tok.qstate == {} and tok.model_cfg.activation == "silu"
    tokens = tok.encode(held_out_images)
    assert tokens.shape == (len(held_out_images), 16) and tokens.max() < 32
    loaded = tokenizers.load(tmp_path / "tokenizer")
    np.testing.assert_array_equal(loaded.decode(tokens), tok.decode(tokens))
    own = reconstruction.psnr(held_out_images, tok.decode(tokens))
    assert own > reconstruction.psnr(held_out_images, tok.decode(np.roll(tokens, 1, axis=0))) + 1.0


@pytest.mark.slow
def test_resume_from_a_checkpoint_ends_bitwise_where_an_uninterrupted_run_does(data_dir, tmp_path, capsys):
    cfg = tiny_image_config(data_dir, steps=20)
    cfg.mesh.num_devices = 1
    cfg.train.update(checkpoint_every=10, eval_every=1000, ema_decay=0.9)  # the weights' average resumes too
    cfg.optim.name = "muon"  # and Muon's momentum and Adam moments
    whole = vqtask.fit(cfg, tmp_path / "whole")
    resumed_dir = tmp_path / "resumed" / "checkpoints"
    shutil.copytree(tmp_path / "whole" / "checkpoints" / "10", resumed_dir / "10")  # as if killed after step 10
    capsys.readouterr()
    resumed = vqtask.fit(cfg, tmp_path / "resumed")
    assert "resumed from step 10 of 20" in capsys.readouterr().out
    for a, b in zip(jax.tree.leaves(resumed.params), jax.tree.leaves(whole.params), strict=True):
        np.testing.assert_array_equal(a, b)
    for k in whole.qstate:  # the codebook's EMA state and restart draws continue exactly too
        np.testing.assert_array_equal(resumed.qstate[k], whole.qstate[k])


# ---------------------------------------------------------------------------------------------
# Audio


def test_audio_tokenizer_fits_on_music_and_round_trips(data_dir, tmp_path):
    cfg = tiny_audio_config(data_dir)
    cfg.mesh.num_devices = 1
    tok = vqtask.fit(cfg, tmp_path)
    assert tok.downsample == 16 and {"snr", "stft", "usage", "perplexity"} <= set(tok.metrics)
    waves = pipeline.load_examples(cfg.data, cfg.data.test_split)
    frames = np.stack([w[:2048] for w in waves[:4]])
    tokens = tok.encode(frames)
    assert tokens.shape == (4, 128) and tokens.dtype == np.int32
    recon = tok.decode(tokens)
    assert recon.shape == frames.shape and recon.dtype == np.float32 and np.abs(recon).max() <= 1.0
    loaded = tokenizers.load(tmp_path / "tokenizer")
    np.testing.assert_array_equal(loaded.encode(frames), tokens)
    with pytest.raises(TokenizerError, match="multiple of its downsampling 16"):
        tok.encode(frames[:, :2040])
    with pytest.raises(TokenizerError, match=r"\[-1, 1\]"):
        tok.encode(frames * 4)


# ---------------------------------------------------------------------------------------------
# The two documented commands: fit a VQ tokenizer, then a transfer experiment on its tokens


def _command(name: str, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", PYTHONUNBUFFERED="1")
    return subprocess.run([str(Path(sys.executable).parent / name), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_fit_then_transfer_on_vq_image_tokens_end_to_end(data_dir, tmp_path):
    """configs/vq_images.py and configs/transfer_vq_images.py as their docstrings run them,
    shrunk by overrides to a 16x16, 32-code tokenizer and a few steps."""
    fitted = _command(
        "igpt-fit-tokenizer", f"--config={REPO / 'configs' / 'vq_images.py'}", f"--workdir={tmp_path / 'vq'}",
        f"--config.data.data_dir={data_dir}", "--config.data.resolution=16", "--config.data.max_examples=256",
        "--config.model.channels=(16, 32)", "--config.model.res_channels=16", "--config.quantizer.num_codes=32",
        "--config.quantizer.code_dim=8", "--config.train.steps=20", "--config.train.global_batch=16",
        "--config.train.eval_every=10")
    assert fitted.returncode == 0, fitted.stderr[-3000:]
    tok_dir = tmp_path / "vq" / "tokenizer"
    assert "held-out" in fitted.stdout and tokenizers.load(tok_dir).vocab_size == 32

    exp = tmp_path / "exp"
    ran = _command(
        "igpt-transfer", f"--config={REPO / 'configs' / 'transfer_vq_images.py'}", f"--workdir={exp}",
        f"--config.target.data.tokenizer=vq:{tok_dir}", "--config.target.data.resolution=16",
        f"--config.target.data.data_dir={data_dir}",  # data.seq_len: 16, read from the tokenizer
        "--config.target.data.max_examples=256",
        f"--config.sources.prose.data_dir={data_dir}", "--config.sources.prose.seq_len=64",
        "--config.source.train.steps=10", "--config.source.train.global_batch=8",
        "--config.target.train.steps=10", "--config.target.train.global_batch=8",
        "--config.target.train.eval_every=5", "--config.target.train.checkpoint_every=5", "--config.seeds=(0,)",
        "--config.lr_seeds=()", "--config.heldout_seeds=()", "--config.lrs=(2e-3,)", "--config.workers=1",
        "--config.arms=('scratch','prose/full')")
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert json.loads((exp / "experiment.json").read_text())["complete"]
    for arm in ("scratch", "prose__full"):
        run = exp / "target" / arm / "lr0.002" / "seed0"
        evals = [r for r in read_metrics(run) if r["split"] == "test"]
        assert [r["step"] for r in evals] == [5, 10] and all(np.isfinite(r["loss"]) for r in evals)
        assert json.loads((run / "tokenizer" / "tokenizer.json").read_text())["kind"] == "vq"
    assert (exp / "report" / "report.html").is_file()


def test_recolouring_keeps_grey_levels_and_includes_the_channel_permutations(data_dir):
    photos = pipeline.load_examples(specs.images("shipped:photos", res=16, data_dir=data_dir, max_examples=32), "train")
    n = len(photos)
    third, zero, one = np.full(n, 2 * np.pi / 3), np.zeros(n), np.ones(n)
    no, yes = np.zeros(n, bool), np.ones(n, bool)
    # a turn by 2 pi / 3 cycles the channels (up to rounding); a mirror alone swaps red and green
    np.testing.assert_allclose(augment.recolour(photos, third, no, one), photos[..., [2, 0, 1]], atol=1)
    np.testing.assert_array_equal(augment.recolour(photos, zero, yes, one), photos[..., [1, 0, 2]])
    # saturation 0 leaves each pixel's grey level in all three channels
    grey = lambda x: x.astype(np.float64).mean(-1)
    np.testing.assert_allclose(augment.recolour(photos, zero, no, 0 * one)[..., 0], grey(photos), atol=0.5)
    # any angle and saturation keep each pixel's grey level (but for clipping); grey stays grey
    rng = np.random.default_rng(0)
    turned = augment.recolour(photos, rng.uniform(0, 2 * np.pi, n), no, rng.uniform(0.6, 1.4, n))
    inside = np.all((turned > 0) & (turned < 255), axis=-1)
    assert inside.mean() > 0.5
    np.testing.assert_allclose(grey(turned)[inside], grey(photos)[inside], atol=1)
    flat = np.repeat(photos[..., :1], 3, axis=-1)
    np.testing.assert_array_equal(augment.recolour(flat, third, no, 1.4 * one), flat)
    assert np.abs(turned.astype(int) - photos).mean() > 10  # colours did move


def test_recolouring_grey_images_is_refused(data_dir):
    cfg = tiny_image_config(data_dir, steps=1)
    for colour in ("hue", "saturation"):
        cfg.train.augment = ("flip", colour)
        with pytest.raises(TokenizerError, match=f"\\['{colour}'\\] recolour RGB images"):
            vqtask.batch_fn(cfg, np.zeros((4, 16, 16, 1), np.uint8))


def test_bad_training_settings_are_refused_before_the_workdir_is_made(data_dir, tmp_path):
    cfg = tiny_image_config(data_dir, steps=1)
    cfg.train.ema_decay = 1.0
    with pytest.raises(TokenizerError, match=r"train.ema_decay=1.0 must lie in \[0, 1\)"):
        vqtask.fit(cfg, tmp_path / "run")
    cfg = tiny_image_config(data_dir, steps=1)
    cfg.optim.name = "adamw"
    with pytest.raises(optim.OptimizerError, match=r"optim.name 'adamw' is unknown"):
        vqtask.fit(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_contrast_scales_deviations_from_each_images_mean(data_dir):
    rng = np.random.default_rng(0)
    images = rng.integers(96, 160, (2, 8, 8, 3)).astype(np.uint8)  # no factor here pushes them out of range
    out = augment.rescale_contrast(images, np.array([0.7, 1.3]))
    for image, scaled, factor in zip(images, out, (0.7, 1.3)):
        assert abs(scaled.mean() - image.mean()) < 0.5
        assert scaled.std() / image.std() == pytest.approx(factor, abs=0.01)
    clipped = augment.rescale_contrast(np.array([[[[0]], [[255]]]], np.uint8), np.array([1.3]))
    np.testing.assert_array_equal(clipped.ravel(), [0, 255])
    cfg = tiny_image_config(data_dir)
    photos = pipeline.load_examples(cfg.data, cfg.data.train_split)
    plain = augment.image_batch(photos, 3, 16, seed=0, augment=("flip",))
    contrasted = augment.image_batch(photos, 3, 16, seed=0, augment=("flip", "contrast"))
    assert plain.shape == contrasted.shape and not np.array_equal(plain, contrasted)


def test_muon_orthogonalises_kernel_updates_and_leaves_biases_to_adam():
    rng = np.random.default_rng(0)
    # A kernel gradient whose (window x in, out) matrix has singular values spread over 100x.
    u, _ = np.linalg.qr(rng.normal(size=(3 * 3 * 4, 8)))
    v, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    grads = {"kernel": jnp.asarray((u * np.logspace(0, -2, 8)) @ v.T, jnp.float32).reshape(3, 3, 4, 8),
             "bias": jnp.asarray(rng.normal(size=8), jnp.float32)}
    params = jax.tree.map(jnp.zeros_like, grads)
    o = vqtask.optim_config(name="muon")
    o.clip_norm = 1e9
    tx = optim.build(o, 1e-2, matrices=vqtask.muon_kernels)
    updates, _ = tx.update(grads, tx.init(params), params)
    singular = np.linalg.svd(np.asarray(updates["kernel"]).reshape(36, 8), compute_uv=False)
    assert singular.max() / singular.min() < 2.0  # orthogonalised: the 100x spread is gone
    adam = optax.adam(1e-2, b1=o.b1, b2=o.b2, nesterov=True)  # muon's Adam for what is not a matrix
    np.testing.assert_allclose(updates["bias"], adam.update(grads["bias"], adam.init(params["bias"]))[0], rtol=1e-6)


def test_adam_modules_are_dotted_module_paths_checked_against_the_model(data_dir):
    grads = {"kernel": jnp.ones((3, 3, 4, 8)), "bias": jnp.ones(8)}
    muon = vqtask.muon_kernels({"encoder": {"out": grads, "mid": grads}, "decoder": grads},
                                 adam_modules=("encoder.out",))
    assert not muon["encoder"]["out"]["kernel"] and not muon["decoder"]["bias"]
    assert muon["encoder"]["mid"]["kernel"] and muon["decoder"]["kernel"]
    assert vqtask.muon_kernels(grads, adam_modules=("encoder",))["kernel"]
    cfg = tiny_image_config(data_dir)
    params = nnx.state(vq.abstract_model(cfg.model, cfg.quantizer), nnx.Param)
    o = vqtask.optim_config(name="muon", adam_modules=("encoder", "decoder.inp", "encoder.out"))
    vqtask.check_optim(o, params)
    o.adam_modules = ("encoder", "head", "encoder.ou")  # "encoder.ou" is a prefix of no module
    with pytest.raises(TokenizerError, match=r"optim.adam_modules names \['encoder.ou', 'head'\], which hold no "
                                             r"weights; .* one of \[.*'encoder.out'"):
        vqtask.check_optim(o, params)
    o.name, o.adam_modules = "sgd", ()
    with pytest.raises(optim.OptimizerError, match=r"optim.name 'sgd' is unknown; use one of \('adam', 'muon'\)"):
        optim.check(o, vqtask.OPTIMIZERS)
