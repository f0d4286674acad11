"""gs:// against a local GCS emulator (tests/gcs_emulator.py): what igpt's run data needs from
etils.epath (gcsfs) and from orbax (tensorstore's gcs driver)."""
from __future__ import annotations

import json
import time

import pytest


def test_epath_round_trip(gcs_root):
    run = gcs_root / "run"
    run.mkdir(parents=True, exist_ok=True)
    (run / "config.json").write_text(json.dumps({"seed": 1}))
    (run / "tokenizer").mkdir(exist_ok=True)
    (run / "tokenizer" / "arrays.npz").write_bytes(b"\x00\x01")
    assert json.loads((run / "config.json").read_text()) == {"seed": 1}
    assert (run / "config.json").exists() and (run / "tokenizer").is_dir()
    assert not (run / "missing.json").exists()
    assert sorted(p.name for p in run.iterdir()) == ["config.json", "tokenizer"]
    assert [p.name for p in run.glob("*/*.npz")] == ["arrays.npz"]
    with pytest.raises(NotImplementedError):  # etils refuses `**` on gs:// (one list call per dir)
        list(run.rglob("*.npz"))

    # write-then-rename, igpt's atomic-update idiom: on GCS a copy and a delete, not atomic
    (run / "run.json.tmp").write_text('{"status": "running"}')
    (run / "run.json.tmp").replace(run / "run.json")
    assert not (run / "run.json.tmp").exists()
    assert json.loads((run / "run.json").read_text()) == {"status": "running"}

    # "a" is not append on object storage: gcsfs warns and overwrites
    (run / "metrics.jsonl").write_text('{"step": 1}\n')
    with pytest.warns(UserWarning, match="Append mode"):
        with (run / "metrics.jsonl").open("a") as f:
            f.write('{"step": 2}\n')
    assert (run / "metrics.jsonl").read_text() == '{"step": 2}\n'

    run.rmtree()
    assert not run.exists()


def test_orbax_checkpoint_round_trip(gcs_root):
    import jax
    import jax.numpy as jnp
    import numpy as np
    import orbax.checkpoint as ocp

    mesh = jax.sharding.Mesh(np.array(jax.devices()), ("data",))
    sharded = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    state = {"params": {"w": jax.device_put(jnp.arange(8 * len(jax.devices()), dtype=jnp.float32)
                                            .reshape(-1, 8), sharded),
                        "b": jnp.ones((3,), jnp.bfloat16)},
             "step": jnp.int32(7)}
    directory = gcs_root / "checkpoints"
    handlers = {"state": ocp.PyTreeCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()}
    manager = ocp.CheckpointManager(directory, item_handlers=handlers, options=ocp.CheckpointManagerOptions(
        max_to_keep=2, enable_async_checkpointing=True, create=True))
    started = time.perf_counter()
    for step in (1, 2, 3):
        manager.save(step, args=ocp.args.Composite(state=ocp.args.PyTreeSave(state),
                                                   meta=ocp.args.JsonSave({"step": step})), force=True)
        manager.wait_until_finished()
    seconds = time.perf_counter() - started
    assert manager.all_steps() == [2, 3]  # max_to_keep deleted step 1 on the bucket
    abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding), state)
    out = manager.restore(3, args=ocp.args.Composite(
        state=ocp.args.PyTreeRestore(item=abstract,
                                     restore_args=ocp.checkpoint_utils.construct_restore_args(abstract)),
        meta=ocp.args.JsonRestore()))
    manager.close()
    assert out.meta == {"step": 3}
    assert out.state["params"]["w"].sharding == sharded
    jax.tree.map(np.testing.assert_array_equal, out.state, state)
    # on gs:// orbax commits with a marker file, not a directory rename
    assert (directory / "3" / "commit_success.txt").exists()
    assert seconds < 30, f"three tiny saves took {seconds:.1f} s on the emulator"

    reader = ocp.CheckpointManager(directory, item_handlers={"state": ocp.PyTreeCheckpointHandler(),
                                                             "meta": ocp.JsonCheckpointHandler()},
                                   options=ocp.CheckpointManagerOptions(read_only=True, create=False))
    assert reader.latest_step() == 3
    reader.close()


def test_tensorstore_sees_what_epath_wrote(gcs_root):
    """Both clients hit the same emulator; gcsfs's listing cache is per process and goes stale
    when another writer (tensorstore, another host) adds objects under a listed prefix."""
    import tensorstore as ts
    from etils.epath import backend

    (gcs_root / "a").write_text("from epath")
    assert [p.name for p in gcs_root.iterdir()] == ["a"]  # now cached by gcsfs
    bucket, prefix = str(gcs_root)[len("gs://"):].split("/", 1)
    store = ts.KvStore.open({"driver": "gcs", "bucket": bucket, "path": prefix + "/"}).result()
    assert store.read("a").result().value == b"from epath"
    store.write("b", b"from tensorstore").result()
    assert [p.name for p in gcs_root.iterdir()] == ["a"]  # stale listing
    backend.fsspec_backend.fs(str(gcs_root)).invalidate_cache()
    assert sorted(p.name for p in gcs_root.iterdir()) == ["a", "b"]
    assert (gcs_root / "b").read_text() == "from tensorstore"
