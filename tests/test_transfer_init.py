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
