"""Tokenizers, the tokenizer cache and its lock, sample files, and data_dir on local disk and on
gs:// (a local GCS emulator, tests/gcs_emulator.py) through the same calls."""
from __future__ import annotations

import io
import threading
import time
import wave

import numpy as np
import pytest
from PIL import Image

from igpt.data import DataError, pipeline, specs
from igpt.data.locking import file_lock
from igpt.modalities import get
from igpt.tokenizers import ByteTokenizer, GrayscaleTokenizer, MulawTokenizer, PaletteTokenizer, from_spec, load
from igpt.tokenizers.base import TokenizerError, parse_spec
from igpt.paths import as_path, is_object_storage


@pytest.fixture(params=["local", "gs"])
def root(request, tmp_path) -> str:
    """A fresh directory, as the string a user passes on the command line."""
    if request.param == "local":
        return str(tmp_path)
    return str(request.getfixturevalue("gcs_root"))


def _names(directory) -> list[str]:
    return sorted(p.name for p in as_path(directory).iterdir())


# ---------------------------------------------------------------- tokenizers

def test_a_palette_round_trips_through_every_entry_point(root):
    rng = np.random.default_rng(0)
    palette = PaletteTokenizer.fit(rng.integers(0, 256, (16, 8, 8, 3), dtype=np.uint8), k=8)
    directory = f"{root}/tok"
    palette.save(directory)
    assert _names(directory) == ["arrays.npz", "tokenizer.json"]  # no .tmp left, nothing beside
    assert str(parse_spec(directory).directory) == directory  # gs:// kept, not collapsed to gs:/
    images = rng.integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
    for again in (PaletteTokenizer.load(directory), load(directory), from_spec(directory)):
        np.testing.assert_array_equal(again.centres, palette.centres)
        np.testing.assert_array_equal(again.encode(images), palette.encode(images))


def test_stateless_tokenizers_round_trip_and_a_missing_one_says_so(root):
    for tok in (GrayscaleTokenizer(16), MulawTokenizer(255), ByteTokenizer()):
        tok.save(f"{root}/{tok.kind}")
        again = from_spec(f"{root}/{tok.kind}")
        assert type(again) is type(tok) and again.vocab_size == tok.vocab_size
    with pytest.raises(TokenizerError, match="is not a tokenizer directory: tokenizer.json is missing"):
        load(f"{root}/none")


def test_a_tiny_vq_tokenizer_round_trips(root):
    import jax

    from igpt.tokenizers import vq

    model = vq.model_config("image", strides=(2,), channels=(4,), res_blocks=0, res_channels=4)
    quantizer = vq.quantizer_config("vq", num_codes=8, code_dim=4)
    _, params = vq.init_params(model, quantizer, seed=0)
    tok = vq.VQTokenizer(model, quantizer, params, vq.build_quantizer(quantizer).initial_state(), {"psnr": 12.5})
    tok.save(f"{root}/vq")
    assert _names(f"{root}/vq") == ["arrays.npz", "metrics.json", "tokenizer.json"]
    for again in (vq.VQTokenizer.load(f"{root}/vq"), from_spec(f"vq:{root}/vq")):
        assert again.metrics == {"psnr": 12.5} and again.vocab_size == 8 and again.downsample == 2
        jax.tree.map(np.testing.assert_array_equal, jax.tree.leaves(again.params), jax.tree.leaves(tok.params))
        for k in tok.qstate:
            np.testing.assert_array_equal(again.qstate[k], tok.qstate[k])


# ---------------------------------------------------------------- the lock and the tokenizer cache

def test_the_lock_admits_one_holder_at_a_time(root):
    inside, most, order = [0], [0], []

    def work(i: int) -> None:
        with file_lock(f"{root}/locks/.fit.lock", poll_seconds=0.02):
            inside[0] += 1
            most[0] = max(most[0], inside[0])
            time.sleep(0.1)
            order.append(i)
            inside[0] -= 1

    threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(order) == [0, 1, 2] and most[0] == 1
    if is_object_storage(root):  # the lock object is gone once released
        assert not as_path(f"{root}/locks/.fit.lock").exists()


def test_a_lock_left_by_a_dead_holder_is_taken_over(gcs_root):
    lock = gcs_root / ".fit.lock"
    lock.write_text("a process that died holding it")
    start = time.monotonic()
    with file_lock(lock, stale_seconds=0.5, poll_seconds=0.05):
        waited = time.monotonic() - start
        assert " pid " in lock.read_text()  # this process's lock object now
    assert 0.5 <= waited < 20 and not lock.exists()


def test_the_tokenizer_cache_on_gs_is_fitted_once_and_reused(data_dir, gcs_root):
    cfg = specs.images("shipped:digits", res=8, tokenizer="palette:8", data_dir=data_dir, max_examples=64)
    cache = gcs_root / "run" / "tokenizer"
    first = pipeline.build_tokenizer(cfg, cache_dir=str(cache))
    assert _names(cache) == ["arrays.npz", "tokenizer.json"]  # the lock object is gone
    saved = (cache / "arrays.npz").stat().mtime
    again = pipeline.build_tokenizer(cfg, cache_dir=str(cache))
    np.testing.assert_array_equal(first.centres, again.centres)
    assert (cache / "arrays.npz").stat().mtime == saved  # read, not fitted and written again
    cfg.tokenizer = "palette:16"
    with pytest.raises(DataError, match="vocab mismatch.*palette:16"):
        pipeline.build_tokenizer(cfg, cache_dir=str(cache))


# ---------------------------------------------------------------- data_dir

def test_shipped_data_in_a_bucket_is_one_clear_error_before_any_work():
    cfg = specs.images("shipped:digits", res=8, tokenizer="palette:8", data_dir="gs://my-bucket/tfds")
    with pytest.raises(DataError) as error:
        pipeline.build_tokenizer(cfg)  # fitting the palette is the first read of the data
    message = str(error.value)
    assert "\n" not in message and "data.data_dir=gs://my-bucket/tfds (for shipped:digits) is on object storage" in message
    assert "written to local files only" in message


def test_a_catalog_dataset_prepared_into_a_bucket_is_read_back(tmp_path, gcs_root, monkeypatch):
    from test_data import IgptTestPhotos

    local = tmp_path / "tfds"
    IgptTestPhotos(data_dir=str(local)).download_and_prepare(file_format="array_record")
    for path in sorted(local.rglob("*")):
        if path.is_file():
            (gcs_root / "tfds" / str(path.relative_to(local))).write_bytes(path.read_bytes())
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    from_bucket = specs.images("tfds:igpt_test_photos", res=16, tokenizer="palette:8", data_dir=str(gcs_root / "tfds"))
    from_disk = specs.images("tfds:igpt_test_photos", res=16, tokenizer="palette:8", data_dir=str(local))
    np.testing.assert_array_equal(pipeline.load_examples(from_bucket, "train"), pipeline.load_examples(from_disk, "train"))
    staged = sorted((tmp_path / "cache").rglob(".staged"))
    assert len(staged) == 1 and staged[0].parent.name == "1.0.0"
    for shard in staged[0].parent.glob("*.array_record*"):  # a copy cut short: empty shards, no marker
        shard.write_bytes(b"")
    staged[0].unlink()
    assert pipeline.load_examples(from_bucket, "test[:1]").shape == (1, 16, 16, 3)


# ---------------------------------------------------------------- sample files

def test_sample_writers_write_png_wav_and_text(root):
    rng = np.random.default_rng(0)
    out = f"{root}/samples"
    as_path(out).mkdir(parents=True, exist_ok=True)  # as igpt-sample does (nothing to create on gs://)
    tokens = lambda vocab, n, t: rng.integers(0, vocab, (n, t)).astype(np.int32)  # noqa: E731
    written = get("image").write_samples(out, GrayscaleTokenizer(16), 0, 8, *(tokens(16, 2, 16) for _ in range(3)))
    written += get("audio").write_samples(out, MulawTokenizer(255), 8000, 8, *(tokens(256, 2, 64) for _ in range(3)))
    written += get("text").write_samples(out, ByteTokenizer(), 0, 8, *(tokens(128, 2, 32) for _ in range(3)))
    assert sorted(p.name for p in written) == _names(out) == sorted(
        ["completions.png", "unconditional.png", "completions.txt", "unconditional.txt"]
        + [f"{kind}_{i}.wav" for kind in ("completion", "original", "unconditional") for i in range(2)])
    with Image.open(io.BytesIO(as_path(f"{out}/completions.png").read_bytes())) as png:
        assert png.format == "PNG" and png.mode == "RGB"
    with wave.open(io.BytesIO(as_path(f"{out}/original_1.wav").read_bytes())) as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getnframes()) == (8000, 1, 64)
    assert "=====" in as_path(f"{out}/completions.txt").read_text()
