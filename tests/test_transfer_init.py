"""Transfer initialisation: each mode carries and trains exactly what it says."""
from __future__ import annotations

import jax
import numpy as np
import pytest

from igpt.training import checkpoint
from igpt.gpt import train
from igpt.transfer import init as transfer_init
from igpt.treepaths import path_names
from trainer_fixtures import tiny_config


def _params(run_dir) -> dict[str, np.ndarray]:
    replicated = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    params, _ = checkpoint.restore_params(run_dir, replicated)
    return {"/".join(path_names(p)): np.asarray(v) for p, v in jax.tree_util.tree_flatten_with_path(params)[0]}


@pytest.fixture(scope="module")
def source(tmp_path_factory, data_dir):
    """A source pretrained on 8x8 digits in 16 gray levels."""
    workdir = tmp_path_factory.mktemp("source")
    train(tiny_config(data_dir, steps=5), workdir)
    return workdir


def _finetune(tmp_path, data_dir, source, mode, layers=()):
    """Fine-tune on digits in 8 gray levels (another vocabulary, same length)."""
    cfg = tiny_config(data_dir, steps=5)
    cfg.data.tokenizer = "gray:8"
    cfg.init = transfer_init.init_config(mode, str(source), layers)
    train(cfg, tmp_path / mode)
    return _params(tmp_path / mode)


def _is_body(name: str) -> bool:
    return "/attn/" in name or "/mlp/" in name


def test_frozen_body_trains_only_embeddings_norms_head(tmp_path, data_dir, source):
    before, after = _params(source), _finetune(tmp_path, data_dir, source, "frozen_body")
    body = [n for n in before if _is_body(n)]
    assert body and all(np.array_equal(before[n], after[n]) for n in body)
    norms = [n for n in before if "norm" in n]
    assert norms and all(not np.array_equal(before[n], after[n]) for n in norms)
    assert after["head/value"].shape != before["head/value"].shape  # new vocabulary: re-initialised


def test_layers_mode_trains_only_listed_blocks(tmp_path, data_dir, source):
    before, after = _params(source), _finetune(tmp_path, data_dir, source, "layers", layers=(1,))
    block0 = [n for n in before if n.startswith("blocks/0/")]
    block1 = [n for n in before if n.startswith("blocks/1/")]
    assert block0 and all(np.array_equal(before[n], after[n]) for n in block0)
    assert block1 and all(not np.array_equal(before[n], after[n]) for n in block1)
    assert not np.array_equal(before["pos/value"], after["pos/value"])


def test_full_trains_everything_from_the_source(tmp_path, data_dir, source):
    before, after = _params(source), _finetune(tmp_path, data_dir, source, "full")
    body = [n for n in before if _is_body(n)]
    assert all(not np.array_equal(before[n], after[n]) for n in body)
    # carried over, then trained 5 steps: still correlated with the source weights
    for n in body:
        assert np.corrcoef(before[n].ravel(), after[n].ravel())[0, 1] > 0.5, n


def test_width_or_depth_mismatch_is_a_clear_error(tmp_path, data_dir, source):
    cfg = tiny_config(data_dir, steps=2)
    cfg.model.num_layers = 3
    cfg.init = transfer_init.init_config("full", str(source))
    with pytest.raises(transfer_init.TransferError, match="depths differ"):
        train(cfg, tmp_path / "deeper")
    cfg = tiny_config(data_dir, steps=2)
    cfg.model.width = 32
    cfg.init = transfer_init.init_config("full", str(source))
    with pytest.raises(transfer_init.TransferError, match="widths differ"):
        train(cfg, tmp_path / "narrower")


def test_positions_interpolate_to_a_new_length():
    table = np.stack([np.linspace(0, 1, 4), np.linspace(1, 2, 4)], axis=1)
    out = np.asarray(transfer_init.interpolate_positions(table, 7))
    np.testing.assert_allclose(out[:, 0], np.linspace(0, 1, 7), atol=1e-6)
    np.testing.assert_allclose(out[:, 1], np.linspace(1, 2, 7), atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Controls: each keeps what it claims of pretraining and nothing more


def _fresh(data_dir, vocab=8):
    """The target model's fresh params on one device (digits in 8 gray levels)."""
    from igpt import sharding
    from igpt.gpt import new_params
    from igpt.training.loop import on_mesh
    cfg = tiny_config(data_dir, num_devices=1)
    with on_mesh(sharding.make_mesh(cfg.mesh), tuple(cfg.axis_rules)):
        return new_params(cfg, vocab, cfg.data.seq_len)[1]


def _named(params):
    return {"/".join(path_names(p)): np.asarray(v) for p, v in jax.tree_util.tree_flatten_with_path(params)[0]}


def test_stats_init_draws_each_tensor_from_the_source_tensors_mean_and_std(data_dir, source):
    src = _params(source)
    fresh = _fresh(data_dir)
    drawn = _named(transfer_init.stats_init(fresh, checkpoint.restore_params(source, _one_device())[0], seed=3))
    assert drawn.keys() == _named(fresh).keys()
    for name, value in drawn.items():
        assert value.shape == _named(fresh)[name].shape, name  # the target's shapes (another vocabulary too)
        assert not np.array_equal(value, src[name]) if value.shape == src[name].shape else True
        if value.size >= 4096:  # enough draws to pin the moments down
            assert abs(value.mean() - src[name].mean()) < 0.1 * src[name].std() + 1e-6, name
            assert value.std() == pytest.approx(src[name].std(), rel=0.05), name
    big = [n for n, v in drawn.items() if v.size >= 4096 and _is_body(n)]
    assert big and all(abs(np.corrcoef(drawn[n].ravel(), src[n].ravel())[0, 1]) < 0.05 for n in big)


def _one_device():
    return jax.sharding.SingleDeviceSharding(jax.devices()[0])


def test_mimetic_attention_attends_to_similar_tokens_and_subtracts_itself(data_dir):
    fresh = _named(_fresh(data_dir))
    mim = _named(transfer_init.mimetic(_fresh(data_dir), seed=0))
    for block in ("blocks/0/attn/", "blocks/1/attn/"):
        wq, wk, wv, wo = (mim[block + w + "/value"] for w in ("wq", "wk", "wv", "wo"))
        d, heads, _ = wq.shape
        for h in range(heads):
            qk, vo = wq[:, h] @ wk[:, h].T, wv[:, h] @ wo[h]
            off = ~np.eye(d, dtype=bool)
            assert np.diag(qk).mean() > 3 * np.abs(qk[off]).mean()  # ~ +I (rank head_dim): a token attends to its likes
            assert np.diag(vo).mean() < -3 * np.abs(vo[off]).mean()  # ~ -I
    untouched = [n for n in fresh if "/attn/" not in n]
    assert untouched and all(np.array_equal(fresh[n], mim[n]) for n in untouched)


def test_frozen_random_freezes_the_fresh_body_and_carries_nothing(data_dir):
    fresh = _fresh(data_dir)
    cfg = transfer_init.init_config("frozen_random")
    assert transfer_init.initialize(cfg, fresh, None, seed=0) is fresh
    labels = {"/".join(path_names(p)): v for p, v in jax.tree_util.tree_flatten_with_path(
        transfer_init.param_labels(fresh, "frozen_random"))[0]}
    assert {v for n, v in labels.items() if _is_body(n)} == {"freeze"}
    assert {v for n, v in labels.items() if not _is_body(n)} == {"train"}


def test_shuffled_tokens_keep_each_rows_tokens_and_lose_their_order():
    from igpt.gpt import shuffle_within_rows
    rows = np.random.default_rng(0).integers(0, 50, (6, 64)).astype(np.int32)
    out = shuffle_within_rows(rows, seed=1, step=7)
    np.testing.assert_array_equal(np.sort(out, axis=1), np.sort(rows, axis=1))  # unigram statistics kept
    assert (out != rows).mean() > 0.8  # order destroyed
    np.testing.assert_array_equal(out, shuffle_within_rows(rows, seed=1, step=7))  # a pure function of (seed, step)
    assert not np.array_equal(out, shuffle_within_rows(rows, seed=1, step=8))
