"""What a researcher sees (issue 25): the trainer's banner, resume, progress and closing lines,
the CPU fast path by default, help that answers at once, data prepared ahead of time, labelled
sample pictures during training and after, versions.json, TensorBoard config and hparams, and
W&B logging in offline mode."""
from __future__ import annotations

import importlib.util
import json
import os
import struct
import subprocess
import sys
import time

import jax
import ml_collections
import numpy as np
import pytest
from PIL import Image

from igpt import hardware, sharding
from igpt.commands import usage
from igpt.data import shipped
from igpt.data.errors import DataError
from igpt.gpt import GPTTask, train
from igpt.modalities import get
from igpt.modalities.audio import waveform_picture
from igpt.modalities.image import GAP, HEADER_PIXELS, WHITE, image_grid
from igpt.tokenizers.grayscale import GrayscaleTokenizer
from igpt.tokenizers.mulaw import MulawTokenizer
from igpt.training import tracking
from igpt.training.progress import closing_line, duration, resume_line, start_banner, train_line
from igpt.training.rundir import RunDir

from trainer_fixtures import REPO, tiny_config


# ---------------------------------------------------------------- the trainer's lines

def test_progress_line_has_step_of_total_rate_and_eta():
    rec = {"step": 20, "split": "train", "grad_norm": 1.39, "loss": 3.24, "lr": 0.00285, "bits_per_token": 4.675,
           "step_time": 0.5, "tokens_per_s": 9040.0, "wall_time": 1.0}
    assert train_line(20, 300, rec) == ("step 20/300: loss 3.24 bits_per_token 4.675 grad_norm 1.39 lr 0.00285 | "
                                        "9,040 tokens/s, ETA 2 min 20 s")


def test_durations_read_as_a_person_says_them():
    assert [duration(s) for s in (0.4, 45, 185, 7380)] == ["0 s", "45 s", "3 min 05 s", "2 h 03 min"]


def test_resume_and_closing_lines():
    assert resume_line(None, 300, 127616, "r/checkpoints/None") == \
        "  model    127,616 parameters; starting at step 0 of 300 (the first step compiles)"
    assert resume_line(100, 300, 10, "r/checkpoints/100") == \
        "  model    10 parameters; resumed from step 100 of 300 (checkpoint r/checkpoints/100)"
    assert resume_line(300, 300, 10, "r/checkpoints/300").endswith(
        "already complete at step 300 of 300 (checkpoint r/checkpoints/300): nothing to train")
    evals = {"validation": {"loss": 3.0, "bits_per_token": 4.33}, "test": {"loss": 3.1, "bits_per_token": 4.47}}
    assert closing_line("gpt", 100, 300, 125, evals, "runs/x") == (
        "igpt: finished at step 300 (trained steps 100-300 in 2 min 05 s); final validation bits_per_token 4.33, "
        "test bits_per_token 4.47; checkpoints in runs/x/checkpoints; report: igpt-report runs/x --out runs/x/report")
    assert closing_line("vq", 300, 300, 2, {"eval": {"loss": 0.01}}, "r").startswith(
        "igpt: finished at step 300 (nothing to train); final eval loss 0.01; checkpoints in r/checkpoints")


def test_banner_names_devices_mesh_attention_data_and_where_checkpoints_go(data_dir):
    cfg = tiny_config(data_dir, steps=40, batch=8)
    mesh = sharding.make_mesh(cfg.mesh)
    lines = start_banner(GPTTask(cfg), "runs/x", mesh)
    assert lines == [
        "igpt: gpt run in runs/x",
        f"  devices  {jax.device_count()} x cpu, mesh data={jax.device_count()} fsdp=1 tensor=1, blockwise attention",
        "  data     shipped:digits (gray:16): 8 rows x 64 tokens = 512 tokens per step, 40 steps",
        "  writes   checkpoints every 5 steps to runs/x/checkpoints, metrics.jsonl, TensorBoard in runs/x/tb"]


def test_progress_prints_lines_and_writes_tensorboard_scalars_config_hparams_and_pictures(tmp_path, capsys):
    from etils import epath

    from igpt.training.progress import Progress
    progress = Progress(10, 0, enabled=True, tensorboard=epath.Path(tmp_path / "tb"),
                        pictures=epath.Path(tmp_path / "samples"), config={"train": {"steps": 10}, "seed": 0})
    progress.train(5, {"step": 5, "split": "train", "loss": 2.0, "lr": 0.01, "grad_norm": 1.0, "step_time": 2.0,
                       "tokens_per_s": 256.0})
    progress.eval(5, "test", {"step": 5, "split": "test", "loss": 2.5, "bits_per_token": 3.6})
    progress.image("samples", np.full((8, 8, 3), 200, np.uint8), 5)
    progress.close()
    assert capsys.readouterr().out.splitlines() == [
        "step 5/10: loss 2 lr 0.01 grad_norm 1 | 256 tokens/s, ETA 10 s",
        "step 5/10: test loss 2.5 bits_per_token 3.6"]
    assert (np.asarray(Image.open(tmp_path / "samples" / "samples_step_0000005.png")) == 200).all()
    events = _events(tmp_path / "tb")
    tags = {v.tag for e in events for v in e.summary.value}
    assert {"train/loss", "train/lr", "test/bits_per_token", "samples", "config/text_summary",
            "_hparams_/experiment", "_hparams_/session_start_info"} <= tags
    text = next(v.tensor.string_val[0] for e in events for v in e.summary.value if v.tag == "config/text_summary")
    assert b'"steps": 10' in text


def _events(tb_dir) -> list:
    """Every event of a TensorBoard directory (TFRecord framing: length, crc, data, crc)."""
    from tensorboardX.proto import event_pb2
    found = []
    for path in sorted(tb_dir.iterdir()):
        data = path.read_bytes()
        i = 0
        while i < len(data):
            (n,) = struct.unpack("<Q", data[i:i + 8])
            event = event_pb2.Event()
            event.ParseFromString(data[i + 12:i + 12 + n])
            found.append(event)
            i += 12 + n + 4
    return found


@pytest.mark.slow  # two trainings, sampling and a W&B run: about 35 s with a warm compilation cache
@pytest.mark.skipif(not importlib.util.find_spec("wandb"), reason="wandb not installed (pip install -e '.[wandb]')")
def test_a_run_speaks_shows_samples_records_where_it_ran_and_logs_to_wandb_offline(tmp_path, data_dir, capsys,
                                                                                   monkeypatch):
    cfg = tiny_config(data_dir, steps=4, batch=8)
    cfg.train.update(log_every=2, eval_every=4, checkpoint_every=4, sample_every=4)
    cfg.wandb.update(project="igpt-tests", mode="offline", dir=str(tmp_path / "wandb"))
    (tmp_path / "wandb").mkdir()
    workdir = tmp_path / "run"
    train(cfg, workdir)
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"igpt: gpt run in {workdir}" and out[1].endswith("blockwise attention")
    assert any(line.endswith("starting at step 0 of 4 (the first step compiles)") for line in out)
    assert any(line.startswith("first step compiled and ran in ") for line in out)
    step2 = [line for line in out if line.startswith("step 2/4: loss ")]
    assert step2 and " lr " in step2[0] and " grad_norm " in step2[0] and "tokens/s, ETA " in step2[0]
    assert out[-1].startswith("igpt: finished at step 4 (trained steps 0-4 in ") and "test bits_per_token" in out[-1]

    with Image.open(workdir / "samples" / "samples_step_0000004.png") as png:  # prompt | completion | original
        picture = np.asarray(png)
    assert picture.shape[1] == 3 * (64 + GAP) + GAP  # 8x8 digits scaled to 64 pixels, three columns
    assert (picture[:HEADER_PIXELS] < 100).any()  # header text
    assert (picture[HEADER_PIXELS:HEADER_PIXELS + GAP] == WHITE).all()  # a gap above the first row of tiles
    events = _events(workdir / "tb")
    tags = {v.tag for e in events for v in e.summary.value}
    assert {"samples", "config/text_summary", "train/loss", "test/loss"} <= tags
    assert "_hparams_/experiment" in tags and "_hparams_/session_start_info" in tags

    versions = json.loads((workdir / "versions.json").read_text())
    assert versions["xla_flags"] == os.environ["XLA_FLAGS"] and versions["device_kind"] == "cpu"
    assert versions["host"] and versions["git_commit"] and versions["jax"] == jax.__version__

    record, = (tmp_path / "wandb").glob("wandb/offline-run-*/run-*.wandb")
    logged = record.read_bytes()
    assert b"train/loss" in logged and b"test/bits_per_token" in logged and b"global_batch" in logged

    monkeypatch.setattr(GPTTask, "evaluate", lambda *a: pytest.fail("a complete run is not evaluated again"))
    train(cfg, workdir)
    out = capsys.readouterr().out.splitlines()
    assert out[4].endswith(f"already complete at step 4 of 4 (checkpoint {workdir}/checkpoints/4): nothing to train")
    assert out[-1].startswith("igpt: finished at step 4 (nothing to train); final ")


def test_wandb_settings_are_checked_before_any_work():
    cfg = ml_collections.ConfigDict({"wandb": tracking.wandb_config()})
    assert tracking.problems(cfg) == []  # off by default
    cfg.wandb.update(project="p", mode="sometimes")
    assert tracking.problems(cfg)[0] == ("wandb.mode='sometimes' is not one of ('', 'online', 'offline', "
                                         "'disabled').")
    assert tracking.run_id("runs/a") == tracking.run_id("runs/a") != tracking.run_id("runs/b")


# ---------------------------------------------------------------- the CPU fast path

def _cfg(batch=16, **mesh):
    c = ml_collections.ConfigDict(dict(train=dict(global_batch=batch), optim=dict(grad_accum=1),
                                       mesh=sharding.mesh_config(), distributed=dict(
                                           initialize="auto", coordinator_address="", num_processes=0,
                                           process_id=-1, local_device_count=0)))
    c.mesh.update(mesh)
    return c


def test_a_cpu_host_is_split_into_one_device_per_core_unless_the_user_chose():
    assert hardware.cpu_devices_per_core(_cfg(), {}, cores=2) == 2
    assert hardware.cpu_devices_per_core(_cfg(), {}, cores=8) == 8
    assert hardware.cpu_devices_per_core(_cfg(batch=12), {}, cores=8) == 6  # the most the batch divides over
    assert hardware.cpu_devices_per_core(_cfg(tensor=2), {}, cores=8) == 8  # data=4 x tensor=2
    assert hardware.cpu_devices_per_core(_cfg(), {}, cores=1) == 0
    chosen = [({"XLA_FLAGS": "--xla_force_host_platform_device_count=1"}, {}),
              ({"JAX_NUM_CPU_DEVICES": "1"}, {}), ({"IGPT_LOCAL_DEVICE_COUNT": "4"}, {}),
              ({}, {"data": 1}), ({}, {"num_devices": 1}),
              ({"IGPT_COORDINATOR_ADDRESS": "127.0.0.1:1", "IGPT_NUM_PROCESSES": "2", "IGPT_PROCESS_ID": "0"}, {})]
    for env, mesh in chosen:
        assert hardware.cpu_devices_per_core(_cfg(**mesh), env, cores=8) == 0, (env, mesh)
    local = _cfg()
    local.distributed.local_device_count = 1
    assert hardware.cpu_devices_per_core(local, {}, cores=8) == 0


# ---------------------------------------------------------------- help, data, pictures

def test_train_help_lists_shipped_configs_exits_0_fast_and_imports_no_jax():
    code = ("import sys, time; t = time.perf_counter(); sys.argv = ['igpt-train', '--help']\n"
            "import igpt.commands.train as cli\n"
            "try:\n    cli.main()\nexcept SystemExit as e:\n"
            "    print('EXIT', e.code, 'jax' in sys.modules, round(time.perf_counter() - t, 2))")
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60).stdout
    assert time.perf_counter() - start < 2.0 + 1.0  # the interpreter's own start-up aside
    last = out.splitlines()[-1].split()
    assert last[:3] == ["EXIT", "0", "False"] and float(last[3]) < 2.0, out
    assert "configs/tiny_images.py   A tiny GPT on 16x16 natural-image crops" in out
    assert "--show_config" in out and "--config.train.steps=500" in out
    assert "configs/demo_transfer.py" not in out  # an igpt-transfer config


def test_shipped_configs_are_found_by_the_command_their_docstring_shows():
    found = dict(usage.shipped_configs("igpt-transfer", REPO / "configs"))
    assert found["configs/data_sweep_catalog.py:igpt-s"].endswith("(Hernandez et al. 2021)")
    assert "configs/tiny_images.py" not in found


def test_prepare_data_ahead_of_time_then_a_second_call_has_nothing_to_do(tmp_path, capsys):
    assert shipped.main(["digits", "shipped:noise", "--data_dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"preparing shipped:digits in {tmp_path}/shipped_digits/") and "once, ~2 s" in out[0]
    assert out[-1].startswith(f"igpt-prepare-data: ready in {tmp_path}: shipped:digits (")
    assert shipped.main(["digits", "--data_dir", str(tmp_path)]) == 0
    assert "preparing" not in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        shipped.main(["cifar"])
    assert exit_.value.code == 2


def test_grids_have_headers_over_columns_and_white_gaps_between_tiles():
    tiles = np.zeros((2, 3, 8, 8), np.uint8)  # black tiles: any white between them is the gap
    grid = image_grid(tiles, headers=("prompt", "completion", "original"))
    assert grid.shape == (HEADER_PIXELS + GAP + 2 * (64 + GAP), GAP + 3 * (64 + GAP), 3)
    body = grid[HEADER_PIXELS:]
    assert (body[:GAP] == WHITE).all() and (body[:, :GAP] == WHITE).all()
    assert (body[GAP:GAP + 64, GAP + 64:2 * GAP + 64] == WHITE).all()  # between columns 0 and 1
    assert (body[GAP + 64:2 * GAP + 64, GAP:GAP + 64] == WHITE).all()  # between rows 0 and 1
    assert (body[GAP:GAP + 64, GAP:GAP + 64] == 0).all()
    header = grid[:HEADER_PIXELS]
    for k in range(3):  # dark text over each column
        assert (header[:, GAP + k * (64 + GAP):(k + 1) * (64 + GAP)] < 100).any()
    with pytest.raises(ValueError, match="2 headers for 3 columns"):
        image_grid(tiles, headers=("a", "b"))


def test_audio_pictures_draw_the_waves():
    t = np.linspace(0, 1, 200)
    picture = waveform_picture(np.stack([np.sin(20 * t), -np.sin(20 * t)])[None], ("completion", "original"))
    assert picture.dtype == np.uint8 and picture.ndim == 3 and picture.shape[2] == 3
    assert (picture < 60).any() and (picture > 200).any()  # black lines on white


def test_vq_reconstruction_picture_pairs_originals_with_reconstructions():
    originals = np.full((4, 8, 8, 3), 10, np.uint8)
    picture = get("image").reconstruction_picture(originals, originals + 200)
    tile = lambda k: picture[HEADER_PIXELS + GAP:HEADER_PIXELS + GAP + 64, GAP + k * (64 + GAP)]  # noqa: E731
    assert picture.shape[1] == GAP + 4 * (64 + GAP)  # original | reconstruction, twice
    assert (tile(0) == 10).all() and (tile(1) == 210).all() and (tile(2) == 10).all()


def test_a_wrong_seq_len_for_the_tokenizer_names_the_flag_to_set():
    data_cfg = ml_collections.ConfigDict(dict(source="shipped:digits", resolution=8, seq_len=256, tokenizer="gray:16"))
    with pytest.raises(DataError, match=r"pass --config.data.seq_len=64 \(or 0"):
        get("image").sequences(np.zeros((2, 8, 8, 1), np.uint8), GrayscaleTokenizer(16), data_cfg)


@pytest.mark.slow  # compiles the KV-cache sampler: about 10 s
def test_audio_of_a_chosen_length_slides_the_window():
    from flax import nnx

    from igpt.model import Transformer, model_config
    from igpt.sample import generate, generate_long, tokens_for_seconds
    mesh = sharding.make_mesh(ml_collections.ConfigDict(dict(sharding.mesh_config(), num_devices=1)))
    with jax.set_mesh(mesh), nnx.logical_axis_rules(sharding.DEFAULT_RULES):
        graphdef, params = nnx.split(Transformer(model_config("nano"), 32, 16, rngs=nnx.Rngs(0)), nnx.Param)
        prompt = np.arange(16, dtype=np.int32).reshape(2, 8)  # as long as every later window's: one compile
        put = lambda rows: sharding.put_batch(rows, mesh, sharding.DEFAULT_RULES)  # noqa: E731
        long = generate_long(graphdef, params, prompt, jax.random.key(0), 40, put)
        first = np.asarray(generate(graphdef, params, put(prompt), jax.random.key(0)))
    assert long.shape == (2, 40) and (long[:, :8] == prompt).all()
    np.testing.assert_array_equal(long[:, :16], first)  # the first window is generate's
    assert tokens_for_seconds(MulawTokenizer(255), 256, 8000, 2.5) == 20000  # one token per sample


def test_fit_tokenizer_usage_shows_both_of_its_modes(capsys):
    from igpt.commands.fit_tokenizer import main

    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    usage = capsys.readouterr().out.splitlines()[:2]
    assert "--data SOURCE --tokenizer palette:K|gray:L" in usage[0] and "--config configs/vq_X.py --workdir DIR" in usage[1]


def test_a_run_refused_for_its_data_source_leaves_no_directory(tmp_path, data_dir):
    from igpt.data import DataError
    from igpt.gpt import train
    from trainer_fixtures import tiny_config

    cfg = tiny_config(data_dir)
    cfg.data.source = "shipped:nope"
    with pytest.raises(DataError, match="unknown shipped dataset 'nope'"):
        train(cfg, str(tmp_path / "run"))
    assert not (tmp_path / "run").exists(), "checked before the run directory holds anything"
