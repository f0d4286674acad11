"""A run's files on local disk and on gs:// (a local GCS emulator, tests/gcs_emulator.py) through
the same calls: run.json and config, metrics.jsonl, checkpoints."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from igpt.training.metrics import MetricsWriter, read_metrics
from igpt.paths import is_object_storage
from igpt.training.rundir import RunDir, WorkdirError, write_json_atomic


@pytest.fixture(params=["local", "gs"])
def root(request, tmp_path) -> str:
    """A fresh directory, as the string a user passes as --workdir."""
    if request.param == "local":
        return str(tmp_path)
    return str(request.getfixturevalue("gcs_root"))


def test_run_info_and_config_round_trip(root):
    run = RunDir.at(f"{root}/run").prepare()
    assert str(run.root) == f"{root}/run"  # gs:// is kept, not collapsed into a local gs:/ path
    assert run.read_config() is None and run.read_info() == {}
    config = {"model": {"width": 64}, "seed": 3}
    run.write_config(config)
    assert run.read_config() == config and "jax" in json.loads(run.versions.read_text())
    run.update_info(task="gpt", status="running", step=0, steps=10)
    run.update_info(status="finished", step=10)
    assert RunDir(run.root).read_info() == {"task": "gpt", "status": "finished", "finished": True,
                                            "step": 10, "steps": 10}
    write_json_atomic(run.resumed_config(4), dict(config, seed=4))
    assert json.loads(run.resumed_config(4).read_text())["seed"] == 4
    assert sorted(p.name for p in run.root.iterdir()) == ["config.json", "config.resumed-at-4.json",
                                                          "run.json", "versions.json"]  # no .tmp, no probe
    assert not Path("gs:").exists()


def test_a_missing_bucket_is_one_clear_error(gcs_bucket):
    with pytest.raises(WorkdirError, match=r"workdir: cannot write gs://no-such-igpt-bucket/run \(the bucket does not exist"):
        RunDir.at("gs://no-such-igpt-bucket/run").prepare()


def test_metrics_survive_reopening_and_count_each_step_once(root):
    run = RunDir.at(root)
    writer = MetricsWriter(run.metrics, flush_seconds=3600)
    for step in range(1, 201):
        writer.write({"step": step, "split": "train", "loss": 1.0, "wall_time": 0.0})
    # object storage shows records from the last flush on, local disk as they are written
    assert len(read_metrics(root)) == (0 if is_object_storage(root) else 200)
    writer.flush()
    assert len(read_metrics(root)) == 200
    writer.write({"step": 200, "split": "validation", "loss": 2.0, "wall_time": 0.0})
    writer.close()

    resumed = MetricsWriter(run.metrics, flush_seconds=0)  # resumed from step 150; every write flushes
    for step in range(151, 261):
        resumed.write({"step": step, "split": "train", "loss": 0.5, "wall_time": 1.0})
        if step == 151:
            assert read_metrics(root)[-1] == {"step": 200, "split": "validation", "loss": 2.0, "wall_time": 0.0}
    resumed.close()
    records = read_metrics(root)
    train = [(r["step"], r["loss"]) for r in records if r["split"] == "train"]
    assert train == [(s, 1.0) for s in range(1, 151)] + [(s, 0.5) for s in range(151, 261)]
    assert [r["step"] for r in records if r["split"] == "validation"] == [200]
    assert len(run.metrics.read_text().splitlines()) == 200 + 1 + 110  # history kept, then appended


def test_a_disabled_writer_writes_nothing(root):
    writer = MetricsWriter(RunDir.at(root).metrics, enabled=False)
    writer.write({"step": 1, "split": "train"})
    writer.close()
    assert read_metrics(root) == [] and not RunDir.at(root).metrics.exists()


def _state(step: int):
    import jax
    import jax.numpy as jnp
    import numpy as np

    mesh = jax.sharding.Mesh(np.array(jax.devices()), ("data",))
    sharded = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    w = jnp.arange(8 * 4, dtype=jnp.float32).reshape(8, 4) + step
    return {"params": {"w": jax.device_put(w, sharded), "b": jnp.full((3,), step, jnp.bfloat16)},
            "step": jnp.int32(step)}


def _abstract(tree):
    import jax

    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding), tree)


def test_checkpoints_save_restore_set_aside_and_restore_params(root):
    import jax
    import numpy as np

    from igpt.training.checkpoint import Checkpointer, restore_params

    run = RunDir.at(f"{root}/run").prepare()
    with pytest.raises(FileNotFoundError, match="has no checkpoints/"):
        restore_params(run.root, jax.sharding.SingleDeviceSharding(jax.devices()[0]))
    ckpt = Checkpointer(run.checkpoints, keep=2)
    for step in (1, 2, 3):
        ckpt.save(step, _state(step), {"step": step})
    ckpt.wait()
    assert ckpt.steps() == [3, 2]  # keep=2 deleted step 1
    state, meta = ckpt.restore(3, _abstract(_state(0)))
    assert meta == {"step": 3} and ckpt.read_meta(2) == {"step": 2}
    assert state["params"]["w"].sharding == _state(0)["params"]["w"].sharding
    jax.tree.map(np.testing.assert_array_equal, state, _state(3))

    aside = ckpt.set_aside(3)
    assert aside == run.checkpoints / "3.damaged" and (aside / "meta").is_dir()
    assert ckpt.steps() == [2] and not (run.checkpoints / "3").exists()
    ckpt.save(3, _state(3), {"step": 3})
    ckpt.wait()
    assert ckpt.set_aside(3).name == "3.damaged-2" and ckpt.steps() == [2]
    ckpt.close()

    assert Checkpointer(str(run.checkpoints)).steps() == [2]  # a fresh reader sees the same
    replicated = jax.sharding.NamedSharding(_state(0)["params"]["w"].sharding.mesh, jax.sharding.PartitionSpec())
    params, meta = restore_params(str(run.root), replicated)
    assert meta == {"step": 2} and params["w"].sharding == replicated
    jax.tree.map(np.testing.assert_array_equal, params, _state(2)["params"])
