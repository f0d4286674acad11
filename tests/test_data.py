"""The data layer on real shipped data: offline builders, the catalog reader, tokenized
sequences and step-indexed batches, and the errors bad input gets."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds
from google.protobuf import json_format
from PIL import Image
from tensorflow_datasets.core.proto import feature_pb2

from igpt.data import DataError, catalog, pipeline, shipped, specs
from igpt.data.music import synthesize_music
from igpt.modalities import audio, image, text
from igpt.tokenizers import from_spec


# ---------------------------------------------------------------- fixtures: data on disk


@pytest.fixture(scope="session")
def shipped_dir(tmp_path_factory):
    """All four shipped datasets prepared offline into a fresh data_dir (about 10 s)."""
    data_dir = tmp_path_factory.mktemp("shipped")
    for name in shipped.BUILDERS:
        shipped.prepared_builder(name, data_dir)
    return str(data_dir)


class IgptTestPhotos(tfds.core.GeneratorBasedBuilder):
    """A catalog-style dataset: PNG-encoded `Image` features of a non-square size, as cifar10 or
    mnist store them, plus a text feature."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, 3)),
            "gray": tfds.features.Image(shape=(None, None, 1)),
            "text": tfds.features.Text(),
        }))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(6), "test": self._generate_examples(2)}

    def _generate_examples(self, n):
        for i in range(n):
            rgb = np.zeros((40, 80, 3), np.uint8)
            rgb[:, 20:60] = (200, 10 * i, 50)  # the centre square's colour; the sides are black
            yield i, {"image": Image.fromarray(rgb), "gray": Image.fromarray(np.full((30, 20), 9 * i, np.uint8)),
                      "text": f"document {i}"}


class IgptTestAudio(tfds.core.GeneratorBasedBuilder):
    """int16 clips at 16 kHz; `audio_feature_like_speech_commands` turns the declared feature
    into the Audio feature speech_commands has (TFDS needs TensorFlow to write one)."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            "audio": tfds.features.Tensor(shape=(None,), dtype=np.int16)}))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(3)}

    def _generate_examples(self, n):
        t = np.arange(16000) / 16000
        for i in range(n):
            yield i, {"audio": np.round(0.5 * 32767 * np.sin(2 * np.pi * 440 * (i + 1) * t)).astype(np.int16)}


def audio_feature_like_speech_commands(version_dir):
    """Rewrites features.json the way TFDS serialises `Audio(file_format='wav', dtype=np.int16,
    sample_rate=16000)`; the records are stored the same way for both features."""
    path = version_dir / "features.json"
    features = json.loads(path.read_text())
    proto = feature_pb2.AudioFeature(shape=feature_pb2.Shape(dimensions=[-1]), dtype="int16", file_format="wav",
                                     sample_rate=16000, encoding="none")
    features["featuresDict"]["features"]["audio"] = {
        "pythonClassName": "tensorflow_datasets.core.features.audio_feature.Audio",
        "audio": json_format.MessageToDict(proto)}
    path.write_text(json.dumps(features))


@pytest.fixture(scope="session")
def catalog_dir(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("catalog")
    IgptTestPhotos(data_dir=str(data_dir)).download_and_prepare(file_format="array_record")
    IgptTestAudio(data_dir=str(data_dir)).download_and_prepare(file_format="array_record")
    audio_feature_like_speech_commands(data_dir / "igpt_test_audio" / "1.0.0")
    return data_dir


@pytest.fixture(scope="session")
def digits(shipped_dir):
    cfg = specs.images("shipped:digits", res=8, tokenizer="gray:16", data_dir=shipped_dir, seed=3)
    return cfg, pipeline.build_dataset(cfg, "train", pipeline.build_tokenizer(cfg))


# ---------------------------------------------------------------- batches


def test_same_seed_and_step_give_the_same_batch_across_builds_and_processes(shipped_dir, digits):
    cfg, ds = digits
    again = pipeline.build_dataset(cfg, "train", pipeline.build_tokenizer(cfg))
    for step in (0, 7, 1000):
        np.testing.assert_array_equal(ds.batch(step, 32), again.batch(step, 32))
    code = ("from igpt.data import pipeline, specs;"
            f"cfg = specs.images('shipped:digits', res=8, tokenizer='gray:16', data_dir={shipped_dir!r}, seed=3);"
            "ds = pipeline.build_dataset(cfg, 'train', pipeline.build_tokenizer(cfg));"
            "print(ds.batch(7, 32).tolist())")
    fresh = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    np.testing.assert_array_equal(np.array(json.loads(fresh)), ds.batch(7, 32))


def test_batch_shape_dtype_and_seed_dependence(digits):
    cfg, ds = digits
    batch = ds.batch(0, 32)
    assert batch.shape == (32, 64) and batch.dtype == np.int32
    assert ds.seq_len == 64 and ds.vocab_size == 16 and len(ds) == 1500 - 150  # 150 held out for validation
    assert not np.array_equal(ds.batch(0, 32), ds.batch(1, 32))
    other_seed = pipeline.SequenceDataset(ds.tokens, ds.tokenizer, seed=4)
    assert not np.array_equal(ds.batch(0, 32), other_seed.batch(0, 32))


@pytest.mark.parametrize("processes", [2, 4])
def test_process_slices_concatenate_to_the_one_process_batch(digits, processes):
    _, ds = digits
    for step in (0, 5, 46):  # 46 * 32 crosses the epoch boundary at 1500
        parts = [ds.batch(step, 32, process_index=p, process_count=processes) for p in range(processes)]
        assert all(part.shape == (32 // processes, 64) for part in parts)
        np.testing.assert_array_equal(np.concatenate(parts), ds.batch(step, 32))


def test_each_epoch_is_a_fresh_permutation():
    tokenizer = from_spec("bytes")
    ids = np.arange(240)[:, None]  # each sequence holds its own index
    ds = pipeline.SequenceDataset(ids, tokenizer, seed=0)
    epoch0 = np.concatenate([ds.batch(k, 24) for k in range(10)])[:, 0]
    epoch1 = np.concatenate([ds.batch(k, 24) for k in range(10, 20)])[:, 0]
    assert sorted(epoch0) == list(range(240)) and sorted(epoch1) == list(range(240))
    assert not np.array_equal(epoch0, np.arange(240)) and not np.array_equal(epoch0, epoch1)


def test_unshuffled_batches_walk_the_split_in_order_and_wrap(digits):
    _, ds = digits
    n = len(ds)
    for i in (0, 3, 46):
        rows = (np.arange(i * 32, (i + 1) * 32)) % n
        np.testing.assert_array_equal(ds.batch(i, 32, shuffle=False), ds.tokens[rows].astype(np.int32))
    halves = [ds.batch(46, 32, process_index=p, process_count=2, shuffle=False) for p in range(2)]
    np.testing.assert_array_equal(np.concatenate(halves), ds.batch(46, 32, shuffle=False))


# ---------------------------------------------------------------- modalities


def test_text_packs_documents_end_to_end_and_round_trips(shipped_dir):
    cfg = specs.text("shipped:prose", seq_len=256, data_dir=shipped_dir)
    docs = pipeline.load_examples(cfg, "test")
    ds = pipeline.build_dataset(cfg, "test", pipeline.build_tokenizer(cfg))
    stream = text.TEXT_SEPARATOR.join(docs).encode("utf-8")
    assert len(ds) == len(stream) // 256
    packed = ds.batch(0, len(ds), shuffle=False)
    assert bytes(packed.astype(np.uint8).ravel()) == stream[: len(ds) * 256]


def test_audio_is_resampled_and_cut_into_frames(shipped_dir):
    cfg = specs.audio("shipped:music", seq_len=1000, sample_rate=8000, data_dir=shipped_dir, max_examples=3)
    waves = pipeline.load_examples(cfg, "test")
    assert [w.shape for w in waves] == [(32000,)] * 3 and waves[0].dtype == np.float32
    assert 0.5 < np.abs(waves[0]).max() <= 1.0
    ds = pipeline.build_dataset(cfg, "test", pipeline.build_tokenizer(cfg))
    assert len(ds) == 3 * 32 and ds.seq_len == 1000 and ds.vocab_size == 256
    np.testing.assert_array_equal(ds.tokens[:32], ds.tokenizer.encode(audio.frames(waves[0], 1000)))


def test_frames_drop_the_tail_and_resample_keeps_pitch():
    np.testing.assert_array_equal(audio.frames(np.arange(10.0), 3), [[0, 1, 2], [3, 4, 5], [6, 7, 8]])
    tone = np.sin(2 * np.pi * 440 * np.arange(16000) / 16000).astype(np.float32) * 0.5
    down = audio.resample(tone, 16000, 8000)
    assert down.shape == (8000,)
    assert np.argmax(np.abs(np.fft.rfft(down))) == 440  # 1 s at 8 kHz: bin k is k Hz


def test_music_is_seeded_normalised_and_tonal():
    a, b = synthesize_music(2.0, 8000, seed=5), synthesize_music(2.0, 8000, seed=5)
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.float32 and np.isclose(np.abs(a).max(), 0.9)
    assert not np.allclose(a, synthesize_music(2.0, 8000, seed=6))
    spectrum = np.abs(np.fft.rfft(a))
    assert np.sort(spectrum)[-20:].sum() > 0.1 * spectrum.sum()  # energy in a few partials, not noise


def test_images_are_centre_cropped_and_gray_stays_gray(shipped_dir):
    wide = np.zeros((40, 80, 3), np.uint8)
    wide[:, 10:70] = 255
    assert (image.square(wide, 16) == 255).all()  # the black sides are cropped away
    assert image.square(wide[:, :40], 16)[:, :3].max() == 0  # a left crop would not be all white
    cfg = specs.images("shipped:digits", res=16, tokenizer="palette:8", data_dir=shipped_dir, max_examples=50)
    gray = pipeline.load_examples(cfg, "train")
    assert gray.shape == (50, 16, 16, 1)
    assert image.as_tokenizer_input("palette", gray).shape == (50, 16, 16, 3)


def test_palette_is_fitted_on_train_once_and_reused_from_the_cache(shipped_dir, tmp_path):
    cfg = specs.images("shipped:photos", res=8, tokenizer="palette:16", data_dir=shipped_dir, max_examples=64)
    first = pipeline.build_tokenizer(cfg, cache_dir=tmp_path / "tok")
    again = pipeline.build_tokenizer(cfg, cache_dir=tmp_path / "tok")
    fresh = pipeline.build_tokenizer(cfg)
    assert first.vocab_size == 16
    np.testing.assert_array_equal(first.centres, again.centres)
    np.testing.assert_array_equal(first.centres, fresh.centres)  # the fit is deterministic
    cfg.tokenizer = "palette:32"
    with pytest.raises(DataError, match="vocab mismatch.*palette:32"):
        pipeline.build_tokenizer(cfg, cache_dir=tmp_path / "tok")


# ---------------------------------------------------------------- shipped builders


def test_shipped_splits_are_disjoint(shipped_dir):
    def column(name, split, key):
        return {v.decode() if isinstance(v, bytes) else int(v)
                for v in shipped.open_split(name, split, shipped_dir, key)[0]}

    assert column("photos", "train", "photo") == set(shipped.photos.TRAIN_PHOTOS)
    assert column("photos", "test", "photo") == set(shipped.photos.TEST_PHOTOS)
    train_topics, test_topics = column("prose", "train", "topic"), column("prose", "test", "topic")
    assert not train_topics & test_topics and len(train_topics | test_topics) == len(shipped.prose.topics())
    assert not column("music", "train", "seed") & column("music", "test", "seed")
    crops, _ = shipped.open_split("photos", "test", shipped_dir, "image")
    assert len(crops) == 3 * 256 and crops[0].shape == (64, 64, 3) and crops[0].dtype == np.uint8


def test_processes_starting_together_prepare_once(tmp_path):
    # Without the lock the second process fails renaming its copy onto the first one's (checked).
    code = ("import sys; from igpt.data import shipped;"
            "b = shipped.prepared_builder('digits', sys.argv[1]); print(b.info.splits['train'].num_examples)")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    outputs = [p.communicate(timeout=120)[0].split()[-1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0] and outputs == ["1500", "1500"]
    assert [d.name for d in (tmp_path / "shipped_digits").iterdir()] == ["1.0.0"]  # no leftover incomplete dir


# ---------------------------------------------------------------- catalog reader


def test_catalog_reads_prepared_images_text_and_audio(catalog_dir):
    cfg = specs.images("tfds:igpt_test_photos", res=16, tokenizer="palette:8", data_dir=str(catalog_dir))
    rgb = pipeline.load_examples(cfg, "train")
    assert rgb.shape == (6, 16, 16, 3)
    assert sorted(map(tuple, rgb[:, 8, 8])) == [(200, 10 * i, 50) for i in range(6)]
    cfg.feature = "gray"
    assert pipeline.load_examples(cfg, "train[:50%]").shape == (3, 16, 16, 1)
    text_cfg = specs.text("tfds:igpt_test_photos:1.0.0", data_dir=str(catalog_dir))
    assert sorted(pipeline.load_examples(text_cfg, "test")) == ["document 0", "document 1"]
    audio_cfg = specs.audio("tfds:igpt_test_audio", sample_rate=8000, data_dir=str(catalog_dir))
    waves = pipeline.load_examples(audio_cfg, "train")
    assert [w.shape for w in waves] == [(8000,)] * 3
    assert sorted(np.argmax(np.abs(np.fft.rfft(w))) for w in waves) == [440, 880, 1320]


def test_catalog_finds_configs_and_asks_when_several(catalog_dir, tmp_path):
    prepared = catalog_dir / "igpt_test_photos" / "1.0.0"
    shutil.copytree(prepared, tmp_path / "igpt_test_photos" / "small" / "1.0.0")
    cfg = specs.images("tfds:igpt_test_photos", res=8, data_dir=str(tmp_path))
    assert pipeline.load_examples(cfg, "test").shape == (2, 8, 8, 3)  # the only config is used
    shutil.copytree(prepared, tmp_path / "igpt_test_photos" / "large" / "1.0.0")
    with pytest.raises(DataError, match=r"prepared configs \['large', 'small'\]; name one as tfds:igpt_test_photos/"):
        pipeline.load_examples(cfg, "test")
    cfg.source = "tfds:igpt_test_photos/large:1.0.0"
    assert pipeline.load_examples(cfg, "test").shape == (2, 8, 8, 3)


# ---------------------------------------------------------------- errors


def test_catalog_errors_name_the_dataset_and_the_fix(catalog_dir, tmp_path):
    def load(source, split="train", data_dir=catalog_dir):
        return pipeline.load_examples(specs.images(source, res=8, data_dir=str(data_dir)), split)

    with pytest.raises(DataError, match=r"data_dir .*nowhere.* does not exist.*tfds build mnist"):
        load("tfds:mnist", data_dir=tmp_path / "nowhere")
    with pytest.raises(DataError, match=r"tfds:cifar10 is not prepared in data_dir .*file_format=array_record"):
        load("tfds:cifar10")
    with pytest.raises(DataError, match=r"versions found .*\['1.0.0'\]"):
        load("tfds:igpt_test_photos:9.9.9")
    with pytest.raises(DataError, match=r"split 'validation' of tfds:igpt_test_photos .*\['train', 'test'\]"):
        load("tfds:igpt_test_photos", "validation")
    with pytest.raises(DataError, match=r"split 'train\[:0\]' of tfds:igpt_test_photos .* has no examples"):
        load("tfds:igpt_test_photos", "train[:0]")
    with pytest.raises(DataError, match=r"no feature 'label'.*data.feature"):
        catalog.open_split("igpt_test_photos", "train", catalog_dir, "label")
    with pytest.raises(DataError, match=r"'tfds:not a name' is not a TFDS name"):
        load("tfds:not a name")


def test_tfrecord_only_dataset_says_how_to_convert(catalog_dir, tmp_path):
    version = tmp_path / "igpt_test_photos" / "1.0.0"
    version.mkdir(parents=True)
    source = catalog_dir / "igpt_test_photos" / "1.0.0"
    info = json.loads((source / "dataset_info.json").read_text())
    info["fileFormat"] = "tfrecord"  # what `tfds build` writes by default, with TensorFlow
    (version / "dataset_info.json").write_text(json.dumps(info))
    (version / "features.json").write_text((source / "features.json").read_text())
    with pytest.raises(DataError, match=r"prepared as tfrecord.*pip install 'igpt\[tf\]'.*convert_format"):
        catalog.open_split("igpt_test_photos", "train", tmp_path, "image")


def test_bad_sources_and_inputs_get_a_data_error(shipped_dir, digits):
    with pytest.raises(DataError, match=r"unknown data.source 'foo:bar'.*shipped:NAME"):
        pipeline.load_examples(specs.images("foo:bar", data_dir=shipped_dir), "train")
    with pytest.raises(DataError, match=r"unknown shipped dataset 'nope'.*shipped:photos"):
        pipeline.load_examples(specs.images("shipped:nope", data_dir=shipped_dir), "train")
    with pytest.raises(DataError, match=r"shipped:digits has no split 'validation'"):
        pipeline.load_examples(specs.images("shipped:digits", data_dir=shipped_dir), "validation")
    with pytest.raises(DataError, match=r"clip 7 has 1 NaN"):
        audio.check_wave(np.array([0.0, np.nan, 0.5]), "clip 7")
    with pytest.raises(DataError, match=r"peaks at 2"):
        audio.resample(np.array([0.0, 2.0], np.float32), 16000, 8000)
    _, ds = digits
    with pytest.raises(DataError, match=r"global_batch 30 .* process_count 4"):
        ds.batch(0, 30, process_count=4)
    cfg = specs.images("shipped:digits", res=8, tokenizer="gray:256", data_dir=shipped_dir)
    with pytest.raises(DataError, match=r"vocab mismatch: .* gray:16 .* 'gray:256'"):
        pipeline.build_dataset(cfg, "train", ds.tokenizer)
    with pytest.raises(DataError, match=r"yields no 100000-token sequence"):
        pipeline.build_dataset(specs.text("shipped:prose", seq_len=100_000, data_dir=shipped_dir), "test",
                               from_spec("bytes"))


def test_validation_is_a_spread_held_out_part_of_train_that_training_never_sees(data_dir):
    cfg = specs.images("shipped:digits", res=8, tokenizer="gray:16", data_dir=data_dir)
    whole = pipeline.load_examples(cfg, "train")
    train, validation = (pipeline.split_examples(cfg, s) for s in ("train", "validation"))
    assert len(train) + len(validation) == len(whole) and len(validation) == len(whole) // 10
    rows = pipeline.validation_rows(len(whole), 0.1)
    np.testing.assert_array_equal(validation, whole[rows])
    assert rows[0] == 9 and rows[-1] >= len(whole) - 10  # every 10th, over the whole split
    seen = {x.tobytes() for x in train}
    assert not any(x.tobytes() in seen for x in validation if (whole == x).all(axis=(1, 2, 3)).sum() == 1)
    np.testing.assert_array_equal(pipeline.split_examples(cfg, "test"), pipeline.load_examples(cfg, "test"))
    cfg.validation_split = "test"  # a dataset's own validation split is used as it is
    np.testing.assert_array_equal(pipeline.split_examples(cfg, "validation"), pipeline.load_examples(cfg, "test"))
    np.testing.assert_array_equal(pipeline.split_examples(cfg, "train"), whole)
    with pytest.raises(DataError, match="validation_fraction=1.5 must lie in"):
        pipeline.validation_rows(10, 1.5)


def test_smaller_training_sets_are_prefixes_and_validation_does_not_move(data_dir):
    cfg = specs.images("shipped:digits", res=8, tokenizer="gray:16", data_dir=data_dir)
    full, validation = pipeline.split_examples(cfg, "train"), pipeline.split_examples(cfg, "validation")
    for n in (10, 300):
        cfg.train_examples = n
        np.testing.assert_array_equal(pipeline.split_examples(cfg, "train"), full[:n])
        np.testing.assert_array_equal(pipeline.split_examples(cfg, "validation"), validation)
    cfg.validation_split = "test"  # with the dataset's own validation split, a prefix of the whole train split
    np.testing.assert_array_equal(pipeline.split_examples(cfg, "train"), pipeline.load_examples(cfg, "train")[:300])
    cfg.validation_split, cfg.train_examples = "", len(full) + 1
    with pytest.raises(DataError, match=f"data.train_examples={len(full) + 1} must lie in \\[0, {len(full)}\\]"):
        pipeline.split_examples(cfg, "train")


def test_first_use_of_shipped_data_says_one_line_and_downloads_nothing(tmp_path, capfd):
    shipped.prepared_builder("digits", tmp_path)
    out, err = capfd.readouterr()
    assert out.strip() == (f"preparing shipped:digits in {tmp_path}/shipped_digits/1.0.0, once, ~2 s "
                           "(from installed packages: nothing is downloaded)")
    assert "Downloading" not in out + err and "dataset_info.json" not in err
    shipped.prepared_builder("digits", tmp_path)
    assert capfd.readouterr() == ("", ""), "prepared data is used silently"
