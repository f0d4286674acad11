"""KV-cache sampling: the cached decoder reproduces the full forward pass, completions keep
their prompt, and igpt-sample turns a checkpoint written on an 8-device mesh into pictures."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import wave

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from PIL import Image

from igpt import sharding
from igpt.commands.sample import main as sample_main, save_outputs
from igpt.data import pipeline, specs
from igpt.gpt import base_config
from igpt.modalities.image import grey_after, image_grid
from igpt.model import Transformer, model_config, with_bos
from igpt.sample import generate, generate_uncached, load_run
from igpt.tokenizers import MulawTokenizer
from igpt.training.checkpoint import Checkpointer
from igpt.training.rundir import RunDir
from trainer_fixtures import REPO, tiny_config

VOCAB, SEQ = 16, 64


def one_device_mesh():
    cfg = sharding.mesh_config()
    cfg.num_devices = 1
    return sharding.make_mesh(cfg)


def build(positions: str = "learned", seed: int = 0):
    """A nano model whose weights are scaled up so its logits are far from uniform."""
    make = lambda: Transformer(model_config("nano", positions=positions), VOCAB, SEQ, rngs=nnx.Rngs(seed))
    with jax.set_mesh(one_device_mesh()), nnx.logical_axis_rules(sharding.DEFAULT_RULES):
        graphdef, _ = nnx.split(nnx.eval_shape(make), nnx.Param)
        params = jax.jit(lambda: nnx.state(make(), nnx.Param))()  # one compile, not one per weight
    return graphdef, jax.tree.map(lambda w: w * 8.0 if w.ndim >= 2 else w, params)


def prompt(batch: int, length: int, seed: int = 1) -> jax.Array:
    return jax.random.randint(jax.random.key(seed), (batch, length), 0, VOCAB)


@pytest.mark.parametrize("positions", ["learned", pytest.param("rotary", marks=pytest.mark.slow)])  # rotary: cached greedy test
def test_decode_in_chunks_reproduces_the_full_forward_logits(positions):
    graphdef, params = build(positions)
    model = nnx.merge(graphdef, params)
    decode = jax.jit(lambda params, tokens, cache, start: nnx.merge(graphdef, params).decode(tokens, cache, start))
    inputs = with_bos(prompt(2, SEQ), model.bos_id)
    full = jax.jit(lambda params, x: nnx.merge(graphdef, params)(x))(params, inputs)
    logits, cache = decode(params, inputs[:, :10], model.init_cache(2), 0)
    pieces = [logits]
    for i in range(10, SEQ):
        logits, cache = decode(params, inputs[:, i:i + 1], cache, i)
        pieces.append(logits)
    np.testing.assert_allclose(jnp.concatenate(pieces, axis=1), full, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("positions,prompt_len", [("learned", 0), ("rotary", 24)])
def test_cached_greedy_decoding_gives_the_tokens_of_full_recompute(positions, prompt_len):
    graphdef, params = build(positions)
    p = prompt(4, prompt_len)
    cached = generate(graphdef, params, p, jax.random.key(0), 0.0, 0)
    naive = generate_uncached(graphdef, params, p, jax.random.key(0), 0.0, 0)
    np.testing.assert_array_equal(cached, naive)
    assert len(np.unique(np.asarray(cached[:, prompt_len:]))) > 1  # not one token repeated


def test_cached_sampling_draws_the_same_tokens_as_full_recompute_for_a_seed():
    graphdef, params = build()
    p = prompt(4, 8)
    cached = generate(graphdef, params, p, jax.random.key(3), 1.0, 5)
    naive = generate_uncached(graphdef, params, p, jax.random.key(3), 1.0, 5)
    np.testing.assert_array_equal(cached, naive)


def test_completion_keeps_the_prompt_and_fills_the_rest():
    graphdef, params = build()
    p = prompt(4, SEQ // 2)
    out = np.asarray(generate(graphdef, params, p, jax.random.key(0), 1.0, 0))
    assert out.shape == (4, SEQ)
    np.testing.assert_array_equal(out[:, : SEQ // 2], p)
    assert out.min() >= 0 and out.max() < VOCAB
    assert not np.array_equal(out[0, SEQ // 2:], out[1, SEQ // 2:])  # rows draw independently


def test_top_k_keeps_draws_among_the_k_likeliest_and_seeds_decide_the_draw():
    graphdef, params = build()
    p = prompt(4, 24)
    out = generate(graphdef, params, p, jax.random.key(0), 1.0, 3)
    logits = jax.jit(lambda params, x: nnx.merge(graphdef, params)(with_bos(x, VOCAB)))(params, out)[:, 24:]
    rank = jnp.sum(logits > jnp.take_along_axis(logits, out[:, 24:, None], axis=-1), axis=-1)
    assert int(rank.max()) < 3 and int(rank.max()) > 0
    np.testing.assert_array_equal(out, generate(graphdef, params, p, jax.random.key(0), 1.0, 3))
    assert not np.array_equal(out, generate(graphdef, params, p, jax.random.key(1), 1.0, 3))
    np.testing.assert_array_equal(generate(graphdef, params, p, jax.random.key(0), 1.0, 1),
                                  generate(graphdef, params, p, jax.random.key(5), 0.0, 0))


def test_a_prompt_as_long_as_the_sequence_is_refused():
    graphdef, params = build()
    with pytest.raises(ValueError, match="prompt of 64 tokens"):
        generate(graphdef, params, prompt(1, SEQ), jax.random.key(0), 1.0, 0)


def test_grey_after_hides_everything_past_the_prompt():
    images = np.full((2, 8, 8, 3), 7, np.uint8)
    shown = grey_after(images, prompt_tokens=9, token_rows=4, token_cols=4)  # VQ-like: 2x2 pixels a token
    assert (shown[:, :4] == 7).all()  # token rows 0-1
    assert (shown[:, 4:6, :2] == 7).all() and (shown[:, 4:6, 2:] == 128).all()  # token 8 only of row 2
    assert (shown[:, 6:] == 128).all()


def test_image_grid_tiles_rows_and_columns_with_gaps():
    grid = image_grid(np.zeros((3, 2, 8, 8), np.uint8))
    assert grid.shape == (6 + 3 * 70, 6 + 2 * 70, 3)  # 8 px scaled x8 to 64, a 6-pixel white gap around each
    assert (grid[:6] == 255).all() and (grid[6, 6:70] == 0).all() and (grid[6, 70:76] == 255).all()


def test_audio_outputs_are_wav_files_of_the_decoded_waves(tmp_path):
    tok = MulawTokenizer(255)
    tokens = np.random.default_rng(0).integers(0, 256, (2, 100))
    written = save_outputs(tmp_path, "audio", tok, 8000, 50, tokens, tokens, tokens)
    assert len(written) == 6
    with wave.open(str(tmp_path / "completion_1.wav")) as f:
        assert (f.getframerate(), f.getnchannels(), f.getnframes()) == (8000, 1, 100)
        pcm = np.frombuffer(f.readframes(100), "<i2")
    np.testing.assert_allclose(pcm / 32767, tok.decode(tokens[1]), atol=1 / 32767)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, data_dir):
    """A run directory as igpt-train leaves it, its params sharded over an 8-device mesh
    (data 2 x fsdp 2 x tensor 2) when saved."""
    cfg = tiny_config(data_dir, data=2, fsdp=2, tensor=2)
    workdir = tmp_path_factory.mktemp("run")
    tokenizer = pipeline.build_tokenizer(cfg.data, cache_dir=str(workdir / "tokenizer"))
    mesh = sharding.make_mesh(cfg.mesh)
    with jax.set_mesh(mesh), nnx.logical_axis_rules(cfg.axis_rules):
        model = Transformer(cfg.model, tokenizer.vocab_size, cfg.data.seq_len, rngs=nnx.Rngs(0))
        params = nnx.state(model, nnx.Param)
        state = {"params": params, "step": jax.device_put(jnp.array(7, jnp.int32), sharding.replicated(mesh))}
    assert len(params["head"][...].sharding.device_set) == 8
    RunDir.at(workdir).write_config(json.loads(cfg.to_json_best_effort()))
    ckpt = Checkpointer(RunDir.at(workdir).checkpoints, keep=1, async_save=False)
    ckpt.save(7, state, {"step": 7})
    ckpt.close()
    return workdir, jax.tree.map(np.asarray, params)


def test_load_run_restores_the_sharded_checkpoint_onto_another_mesh(run_dir):
    workdir, saved = run_dir
    mesh_cfg = sharding.mesh_config(data=1, fsdp=4, tensor=1)
    mesh_cfg.num_devices = 4
    run = load_run(workdir, sharding.make_mesh(mesh_cfg))
    assert run.step == 7 and run.tokenizer.vocab_size == 16
    assert run.params["head"][...].sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor")
    assert len(run.params["head"][...].sharding.device_set) == 4
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, run.params), saved)


def test_cli_samples_png_grids_from_the_8_device_checkpoint_on_one_device(run_dir, tmp_path):
    workdir, _ = run_dir
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")
    out = subprocess.run([sys.executable, "-m", "igpt.commands.sample", f"--workdir={workdir}",
                          f"--out={tmp_path}", "--num=3", "--top_k=4"],
                         env=env, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "step 7" in out.stdout
    samples = np.load(tmp_path / "samples.npz")
    assert int(samples["prompt_tokens"]) == 32
    np.testing.assert_array_equal(samples["completions"][:, :32], samples["originals"][:, :32])
    # 8x8 tiles scaled to 64 with 6-pixel gaps; prompt | completion | original under a 20-pixel header row
    assert Image.open(tmp_path / "completions.png").size == (6 + 3 * 70, 20 + 6 + 3 * 70)
    assert Image.open(tmp_path / "unconditional.png").size == (6 + 3 * 70, 6 + 70)  # one row of three


# ---------------------------------------------------------------- audio of a chosen length

def write_run(workdir, cfg, step: int = 3) -> None:
    """A run directory as igpt-train leaves it (config, tokenizer, a checkpoint of fresh params
    on one device), without the training."""
    tokenizer = pipeline.build_tokenizer(cfg.data, cache_dir=str(RunDir.at(workdir).tokenizer))
    mesh = one_device_mesh()
    with jax.set_mesh(mesh), nnx.logical_axis_rules(cfg.axis_rules):
        params = nnx.state(Transformer(cfg.model, tokenizer.vocab_size, cfg.data.seq_len, rngs=nnx.Rngs(0)), nnx.Param)
        state = {"params": params, "step": jax.device_put(jnp.array(step, jnp.int32), sharding.replicated(mesh))}
    RunDir.at(workdir).write_config(json.loads(cfg.to_json_best_effort()))
    ckpt = Checkpointer(RunDir.at(workdir).checkpoints, keep=1, async_save=False)
    ckpt.save(step, state, {"step": step})
    ckpt.close()


@pytest.fixture(scope="module")
def audio_run_dir(tmp_path_factory, data_dir):
    """A nano mu-law run on shipped music at 8 kHz, 64 samples a sequence."""
    cfg = base_config(model=model_config("nano"), data=specs.audio("shipped:music", seq_len=SEQ, tokenizer="mulaw:256",
                                                                   sample_rate=8000, data_dir=data_dir, max_examples=4))
    workdir = tmp_path_factory.mktemp("audio_run")
    write_run(workdir, cfg)
    return workdir


def wav_frames(path) -> int:
    with wave.open(str(path)) as f:
        assert (f.getframerate(), f.getnchannels()) == (8000, 1)
        return f.getnframes()


@pytest.mark.parametrize("seconds,samples", [(0.02, 160), (0.005, 40)])  # 2.5 windows of 64 samples; under one
def test_igpt_sample_seconds_writes_audio_of_that_length(audio_run_dir, tmp_path, seconds, samples):
    assert sample_main([f"--workdir={audio_run_dir}", f"--out={tmp_path}", "--num=2", f"--seconds={seconds}"]) == 0
    tokens = np.load(tmp_path / "samples.npz")
    assert tokens["completions"].shape == tokens["unconditional"].shape == (2, samples)
    np.testing.assert_array_equal(tokens["completions"][:, :32], tokens["originals"][:, :32])
    for i in range(2):
        for kind in ("completion", "unconditional"):
            assert wav_frames(tmp_path / f"{kind}_{i}.wav") == samples
        assert wav_frames(tmp_path / f"original_{i}.wav") == SEQ  # the real audio stays one sequence


def test_seconds_is_refused_on_an_image_run_in_one_line(run_dir, tmp_path, capsys):
    workdir, _ = run_dir
    with pytest.raises(SystemExit) as done:
        sample_main([f"--workdir={workdir}", f"--out={tmp_path / 'out'}", "--seconds=1"])
    assert done.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("igpt: error: --seconds is for audio runs;") and "image" in err[0]
    assert not (tmp_path / "out").exists()
    with pytest.raises(SystemExit) as done:
        sample_main([f"--workdir={workdir}", f"--out={tmp_path}", "--seconds=0"])
    assert done.value.code == 2 and "--seconds 0: give a positive length" in capsys.readouterr().err
    with pytest.raises(SystemExit) as done:
        sample_main(["--help"])
    assert done.value.code == 0 and "--seconds SECONDS" in capsys.readouterr().out
