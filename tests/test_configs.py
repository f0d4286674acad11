"""Every shipped config loads, and every experiment config names valid arms."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from igpt.transfer.experiment import check_seeds, remaining_runs, sweep_runs

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.py"))


def _load(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_loads_and_says_how_to_run_it(path):
    config = _load(path)
    assert config is not None
    assert "--config configs/" in (path.read_text().split('"""')[1]), "the docstring shows the command"


@pytest.mark.parametrize("path", [p for p in CONFIGS if "transfer" in p.name or "sweep" in p.name], ids=lambda p: p.name)
def test_experiment_arms_are_valid(path, tmp_path):
    c = _load(path)
    check_seeds(c)
    rates = {(arm, n): c.lrs[0] for arm in c.arms for n in tuple(c.target_sizes) + tuple(c.scratch_sizes) + (0,)}
    runs = {**sweep_runs(c, tmp_path), **remaining_runs(c, tmp_path, rates)}
    deciders = len(c.lr_seeds) or len(c.seeds)
    per_size = len(c.arms) * (deciders * len(c.lrs) + len(c.seeds) - deciders) + len(c.heldout_seeds) * (
        1 if c.lr_seeds else len(c.lrs))
    scratch_only = len(c.scratch_sizes) * (deciders * len(c.lrs) + len(c.seeds) - deciders)
    assert len(runs) == per_size * max(len(c.target_sizes), 1) + scratch_only
    assert len(c.seeds) >= 5, "shipped experiments follow the protocol (issue 20)"
    assert len(c.lrs) >= 3 or "rate the demo chose" in path.read_text(), "a single rate needs a measured reason"
