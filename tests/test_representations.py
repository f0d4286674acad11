"""Representations (issue 24): the linear probe, CKA and stitching on planted answers; class
labels row for row with the pipeline's examples; igpt-probe on a run's checkpoint; the report's
section from the files runs write; and (slow) probes of a short transfer experiment on digits."""
from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds
from flax import nnx

from igpt import sharding
from igpt.commands.probe import main
from igpt.data import pipeline, specs
from igpt.data.errors import DataError
from igpt.data.labels import check_labelled, has_labels, split_labels
from igpt.model import Transformer
from igpt.representation_runs import comparison_pairs
from igpt.representations import (PROBE_FILE, SIMILARITY_FILE, cka_matrix, fit_linear_map, linear_cka,
                                  linear_probe, read_records, replace_records)
from igpt.training.checkpoint import Checkpointer
from igpt.training.rundir import RunDir
from igpt.transfer.report.collect import read_run
from igpt.transfer.report.render import render_html, render_md
from igpt.transfer.report.representations import probe_curves, representations_section
from trainer_fixtures import tiny_config


def _splits(x: np.ndarray, y: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """train / validation / test: 60% / 20% / 20%."""
    a, b = int(0.6 * len(y)), int(0.8 * len(y))
    return [(x[:a], y[:a]), (x[a:b], y[a:b]), (x[b:], y[b:])]


# ---------------------------------------------------------------- the measures, planted answers

def test_a_probe_reads_a_linearly_encoded_label_and_only_guesses_on_random_features():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, 2000)
    x = rng.normal(size=(2000, 24))
    x[:, :10] += 6.0 * np.eye(10)[y]  # the label, one-hot in ten of the dims, under unit noise
    planted = linear_probe(*_splits(x * 40.0 + 3.0, y))  # any scale: features are whitened
    assert planted.test_accuracy >= 0.99 and planted.validation_accuracy >= 0.99
    assert planted.classes == 10 and 0.05 < planted.chance < 0.15
    random = linear_probe(*_splits(rng.normal(size=(2000, 24)), y))
    assert abs(random.test_accuracy - 0.1) < 0.05  # chance, whatever C validation picked


def test_cka_is_one_under_rotation_and_isotropic_scale_and_near_zero_for_independent_features():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2000, 16))
    rotation, _ = np.linalg.qr(rng.normal(size=(16, 16)))
    assert linear_cka(x, 3.5 * x @ rotation + 7.0) == pytest.approx(1.0, abs=1e-9)
    assert linear_cka(x, rng.normal(size=(2000, 16))) < 0.02
    stretched = x * np.r_[10.0, np.ones(15)]  # one axis stretched: not a similarity transform
    assert linear_cka(x, stretched) < 0.5
    wide = rng.normal(size=(40, 300))  # more features than inputs: computed in example space
    wide_rotation, _ = np.linalg.qr(rng.normal(size=(300, 300)))
    assert linear_cka(wide, 0.1 * wide @ wide_rotation) == pytest.approx(1.0, abs=1e-9)
    matrix = cka_matrix([x, stretched], [x @ rotation, rng.normal(size=(2000, 8))])
    assert matrix.shape == (2, 2) and matrix[0, 0] == pytest.approx(1.0) and matrix[:, 1].max() < 0.02


def test_the_stitching_map_fit_recovers_a_planted_affine_map_and_is_the_identity_on_a_copy():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(500, 6))
    w, b = rng.normal(size=(6, 4)), rng.normal(size=4)
    got_w, got_b = fit_linear_map(x, x @ w + b)
    np.testing.assert_allclose(got_w, w, atol=1e-9)
    np.testing.assert_allclose(got_b, b, atol=1e-9)
    same_w, same_b = fit_linear_map(x, x)
    np.testing.assert_allclose(same_w, np.eye(6), atol=1e-9)
    np.testing.assert_allclose(same_b, 0.0, atol=1e-9)


def test_a_rerun_replaces_its_own_records_and_keeps_the_others(tmp_path):
    path = tmp_path / PROBE_FILE
    key = lambda r: [r["data"], r["step"]]
    replace_records(path, [{"data": "d", "step": 1, "acc": 0.1}, {"data": "d", "step": 2, "acc": 0.2}], key)
    replace_records(path, [{"data": "d", "step": 2, "acc": 0.3}], key)
    assert read_records(path) == [{"data": "d", "step": 1, "acc": 0.1}, {"data": "d", "step": 2, "acc": 0.3}]
    assert read_records(tmp_path / "absent.jsonl") == []


# ---------------------------------------------------------------- labels

def _sklearn_labels() -> dict[bytes, set[int]]:
    """The labels scikit-learn gives each digit image (8x8, scaled to 0-255 as shipped:digits is)."""
    from sklearn.datasets import load_digits
    digits = load_digits()
    by_image: dict[bytes, set[int]] = {}
    for image, label in zip(np.round(digits.images * (255.0 / 16.0)).astype(np.uint8), digits.target):
        by_image.setdefault(image.tobytes(), set()).add(int(label))
    return by_image


def test_digits_labels_are_scikit_learns_row_for_row_with_the_pipelines_examples(data_dir):
    cfg = specs.images("shipped:digits", res=8, tokenizer="gray:16", data_dir=data_dir)
    cfg.train_examples = 400  # a sweep's prefix: labels follow the same rows
    truth = _sklearn_labels()
    for split in pipeline.SPLITS:
        examples, labels = pipeline.split_examples(cfg, split), split_labels(cfg, split)
        assert len(labels) == len(examples) and labels.dtype == np.int64
        assert all(int(y) in truth[e[..., 0].tobytes()] for e, y in zip(examples, labels))
    assert len(split_labels(cfg, "train")) == 400 and sorted(set(split_labels(cfg, "test").tolist())) == list(range(10))


def test_data_without_class_labels_is_refused_with_the_reason(data_dir):
    photos = specs.images("shipped:photos", res=8, data_dir=data_dir)
    with pytest.raises(DataError, match="shipped:photos has no class labels.*invents none.*shipped:digits"):
        check_labelled(photos)
    with pytest.raises(DataError, match="text data; a linear probe reads one class label per image"):
        check_labelled(specs.text("shipped:prose", data_dir=data_dir))
    assert not has_labels(photos) and has_labels(specs.images("shipped:digits", res=8, data_dir=data_dir))


class IgptTestLabelled(tfds.core.GeneratorBasedBuilder):
    """A catalog dataset like tfds:mnist: small gray images and a ClassLabel "label"."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(shape=(4, 4, 1), dtype=np.uint8),
            "label": tfds.features.ClassLabel(num_classes=3)}))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(range(20)), "test": self._generate_examples(range(20, 26))}

    def _generate_examples(self, ids):
        for i in ids:
            yield i, {"image": np.full((4, 4, 1), 40 * (i % 3), np.uint8), "label": i % 3}


class IgptTestUnlabelled(IgptTestLabelled):
    """The same images with no label feature."""

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(shape=(4, 4, 1), dtype=np.uint8)}))

    def _generate_examples(self, ids):
        for i in ids:
            yield i, {"image": np.full((4, 4, 1), 40 * (i % 3), np.uint8)}


def test_a_catalog_dataset_gives_its_label_feature(tmp_path):
    for builder in (IgptTestLabelled, IgptTestUnlabelled):
        builder(data_dir=str(tmp_path)).download_and_prepare(file_format="array_record")
    cfg = specs.images("tfds:igpt_test_labelled", res=4, tokenizer="gray:16", data_dir=str(tmp_path))
    assert sorted(split_labels(cfg, "test").tolist()) == [0, 0, 1, 1, 2, 2]
    for split in pipeline.SPLITS:  # each image's gray level is 40 x its label: the pairing survives TFDS's shuffle
        np.testing.assert_array_equal(pipeline.split_examples(cfg, split)[:, 0, 0, 0] // 40, split_labels(cfg, split))
    with pytest.raises(DataError, match="tfds:igpt_test_unlabelled has no 'label' feature, so no class labels"):
        check_labelled(specs.images("tfds:igpt_test_unlabelled", res=4, data_dir=str(tmp_path)))


# ---------------------------------------------------------------- a run's checkpoint

@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, data_dir):
    """A digits run directory with a checkpoint at step 7: a nano model whose matrices are
    scaled up 4x, so that its blocks change the residual stream (at init they barely do)."""
    cfg = tiny_config(data_dir)
    workdir = tmp_path_factory.mktemp("probe_run")
    tokenizer = pipeline.build_tokenizer(cfg.data, cache_dir=str(workdir / "tokenizer"))
    mesh = sharding.make_mesh(cfg.mesh)
    with jax.set_mesh(mesh), nnx.logical_axis_rules(cfg.axis_rules):
        params = nnx.state(Transformer(cfg.model, tokenizer.vocab_size, cfg.data.seq_len, rngs=nnx.Rngs(0)), nnx.Param)
        params = jax.tree.map(lambda w: w * 4.0 if w.ndim >= 2 else w, params)
        state = {"params": params, "step": jax.device_put(jnp.array(7, jnp.int32), sharding.replicated(mesh))}
    RunDir.at(workdir).write_config(json.loads(cfg.to_json_best_effort()))
    ckpt = Checkpointer(RunDir.at(workdir).checkpoints, keep=1, async_save=False)
    ckpt.save(7, state, {"step": 7})
    ckpt.close()
    return workdir


def test_igpt_probe_writes_one_record_per_layer_and_checkpoint_and_refuses_photos(run_dir, capsys):
    assert main(["--workdir", str(run_dir), "--max_examples", "400", "--steps", "latest"]) == 0
    records = read_records(run_dir / PROBE_FILE)
    assert [(r["step"], r["layer"], r["layer_name"]) for r in records] == [
        (7, 0, "embeddings"), (7, 1, "block 1"), (7, 2, "block 2"), (7, 3, "final norm")]
    first = records[0]
    assert (first["data"], first["classes"], first["train_examples"], first["test_examples"]) == (
        "shipped:digits", 10, 360, 297)
    # Even untrained, the pooled embeddings hold each image's gray-level histogram, which a
    # linear probe reads well above the commonest class's share.
    assert first["test_accuracy"] > 2 * first["chance"]
    with pytest.raises(SystemExit) as exit_:
        main(["--workdir", str(run_dir), "--data", "shipped:photos"])
    assert exit_.value.code == 1
    assert capsys.readouterr().err.startswith("igpt: error: shipped:photos has no class labels")


def test_stitching_a_model_to_itself_at_the_same_layer_costs_nothing(run_dir):
    assert main(["--workdir", str(run_dir), "--compare", str(run_dir), "--max_examples", "300",
                 "--eval_sequences", "64"]) == 0
    cka, stitching = read_records(run_dir / SIMILARITY_FILE)
    assert cka["kind"] == "cka" and stitching["kind"] == "stitching" and cka["examples"] == 64
    np.testing.assert_allclose(np.diag(cka["matrix"]), 1.0, atol=1e-5)
    penalty = np.asarray(stitching["matrix"])
    assert penalty.shape == (3, 3) and stitching["layers_a"] == ["embeddings", "block 1", "block 2"]
    assert np.abs(np.diag(penalty)).max() < 1e-3
    assert penalty[0, 2] > 0.01  # the embeddings are no stand-in for the second block's output


def test_an_experiment_compares_each_arm_with_scratch_of_its_seed_and_scratch_with_its_next_seed():
    runs = {f"{arm}/{lr}/{seed}": {"arm": arm, "lr": lr, "seed": seed, "train_examples": 0}
            for arm in ("scratch", "prose/full") for lr in (1e-3, 3e-3) for seed in (0, 1, 2)}
    runs["scratch/0.001/9"] = {"arm": "scratch", "lr": 1e-3, "seed": 9}  # a held-out seed
    runs["prose/full/0.01/0"] = {"arm": "prose/full", "lr": 1e-2, "seed": 0}  # no scratch at its rate
    pairs = comparison_pairs(runs)
    assert ("prose/full/0.001/1", "scratch/0.001/1") in pairs and ("prose/full/0.003/2", "scratch/0.003/2") in pairs
    assert ("scratch/0.001/2", "scratch/0.001/9") in pairs and ("scratch/0.001/9", "scratch/0.001/0") in pairs
    assert ("scratch/0.003/2", "scratch/0.003/0") in pairs
    assert len(pairs) == 6 + 7 and not any(a.startswith("prose/full/0.01") for a, _ in pairs)


# ---------------------------------------------------------------- the report's section

def _labelled_run(path, arm: str, seed: int, accuracy: list[float], steps=(50, 100)) -> None:
    RunDir(path).prepare().update_info(role="target", arm=arm, seed=seed, lr=1e-3, status="finished")
    names = ["embeddings", "block 1", "block 2", "final norm"]
    replace_records(path / PROBE_FILE, [
        {"data": "shipped:digits", "step": s, "layer": k, "layer_name": n, "chance": 0.1, "classes": 10,
         "test_accuracy": accuracy[k] * s / steps[-1], "validation_accuracy": accuracy[k] - 0.01 * (k == 3)}
        for s in steps for k, n in enumerate(names)], same=lambda r: [r["data"], r["step"]])


def test_the_report_pools_probes_over_seeds_and_draws_cka_and_stitching(tmp_path):
    runs = {}
    for arm, peak in (("scratch", 0.6), ("prose/full", 0.8)):
        for seed in range(3):
            path = tmp_path / arm.replace("/", "__") / f"seed{seed}"
            _labelled_run(path, arm, seed, [0.3, peak + 0.01 * seed, peak + 0.05 + 0.01 * seed, peak])
            runs.setdefault(arm, []).append(read_run(path, str(path)))
    a = tmp_path / "prose__full" / "seed0"
    for kind, matrix in (("cka", [[1.0, 0.5], [0.4, 0.9]]), ("stitching", [[0.0, 0.2], [0.1, 0.01]])):
        replace_records(a / SIMILARITY_FILE, [{
            "kind": kind, "a_group": "prose/full", "b_group": "scratch", "data": "shipped:digits",
            "layers_a": ["embeddings", "block 1"], "layers_b": ["embeddings", "block 1"], "matrix": matrix,
            "base_bits": 2.5 if kind == "stitching" else None, "stitch_steps": 0 if kind == "stitching" else None}],
            same=lambda r: r["kind"])
    (full,) = [c for c in probe_curves(runs) if c.group == "prose/full"]
    assert full.by_layer[2].mean == pytest.approx(0.86) and full.by_layer[2].kind == "range"
    assert (full.by_layer[2].lo, full.by_layer[2].hi) == pytest.approx((0.85, 0.87))
    assert full.best_layer == "block 2" and full.steps == [50, 100]
    assert full.by_step[0].mean == pytest.approx(0.43)  # block 2 at half its final accuracy
    section = representations_section(runs, [r for group in runs.values() for r in group], "demo")
    assert [c.name for c in section.charts] == ["demo_probe_shipped_digits.png", "demo_cka.png", "demo_stitching.png"]
    assert all(c.png.startswith(b"\x89PNG") for c in section.charts)
    probe_table, stitch_table = section.tables
    assert probe_table.rows[1][:1] + probe_table.rows[1][-2:] == ["prose/full", "block 2", "0.100"]
    assert probe_table.rows[1][3].startswith("0.860 [0.850, 0.870] (range over 3 seeds)")
    assert "embeddings: +0.000; block 1: +0.010" in stitch_table.rows[0][3]
    assert "Representations" in render_md("t", [section]) and "<img" in render_html("t", [section])
    assert representations_section({"scratch": runs["scratch"][:0]}, [], "none") is None


# ---------------------------------------------------------------- a short transfer experiment

@pytest.mark.slow  # pretrains a source and trains 4 target runs (minutes)
def test_probes_of_scratch_and_a_transfer_arm_on_digits(tmp_path, data_dir):
    import tiny_experiment
    from igpt.representation_runs import probe_experiment
    from igpt.transfer.experiment import run_experiment
    from igpt.transfer.report.analysis import analyse
    from igpt.transfer.report.collect import discover, read_experiment
    from igpt.transfer.report.representations import experiment_representations

    c = tiny_experiment.get_config(data_dir)
    c.arms, c.seeds = ("scratch", "digits/full"), (0, 1)
    exp_dir = run_experiment(c, tmp_path / "exp", log=lambda _: None)
    assert probe_experiment(exp_dir, c.target.data, log=lambda _: None)
    owned, _ = discover([exp_dir])
    (runs,) = owned.values()
    targets = [r for r in runs if RunDir(r).read_info().get("role") == "target"]
    assert len(targets) == 4
    for run in targets:
        records = read_records(run / PROBE_FILE)
        assert sorted({r["step"] for r in records}) == [20, 40, 60] and len(records) == 12
        best = max((r for r in records if r["step"] == 60), key=lambda r: r["validation_accuracy"])
        assert best["test_accuracy"] > 3 * best["chance"]  # the trained body encodes the digit
    comparisons = [(r["a_group"], r["b_group"], r["kind"]) for run in targets
                   for r in read_records(run / SIMILARITY_FILE)]  # per seed: digits/full and scratch's other seed
    assert sorted(comparisons) == sorted([("digits/full", "scratch", k) for k in ("cka", "stitching")] * 2
                                         + [("scratch", "scratch", k) for k in ("cka", "stitching")] * 2)
    a = analyse(read_experiment(exp_dir, runs), None)
    section = experiment_representations(a, "tiny")
    assert [c.name for c in section.charts] == ["tiny_probe_shipped_digits.png", "tiny_cka.png", "tiny_stitching.png"]
    assert [row[0] for row in section.tables[0].rows] == ["scratch", "digits/full"]
    assert probe_experiment(exp_dir, specs.images("shipped:photos", res=8, data_dir=data_dir),
                            log=lambda _: None) is False
