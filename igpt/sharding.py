"""The device mesh and the logical-axis rules: sharding said once, as data.

The model names axes logically (batch, length, embed, heads, kv, mlp, vocab); the rules in
the config map them onto the mesh axes data / fsdp / tensor. Every logical name needs a rule (None = replicated):
`check_rules` says which is missing rather than letting a name reach the mesh.
"""
from __future__ import annotations

import math
from typing import Sequence

import jax
import ml_collections
import numpy as np
from flax.core import spmd
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")
DEFAULT_RULES = (
    ("batch", ("data", "fsdp")),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("vocab", "tensor"),
    ("length", None),
    ("kv", None),
)
LOGICAL_AXES = ("batch", "length", "embed", "heads", "kv", "mlp", "vocab")


class MeshError(ValueError):
    """A mesh that does not fit the devices or the batch."""


def mesh_config(data: int = -1, fsdp: int = 1, tensor: int = 1) -> ml_collections.ConfigDict:
    """Mesh sizes per axis within a slice (ICI; -1 = all remaining devices) and across slices
    (DCN, multi-slice TPU: the product of dcn_* must equal the number of slices).
    num_devices > 0 uses only the first that many devices (tests, single-device baselines)."""
    return ml_collections.ConfigDict(dict(
        data=data, fsdp=fsdp, tensor=tensor, dcn_data=1, dcn_fsdp=1, dcn_tensor=1, num_devices=0))


def resolve_shape(sizes: Sequence[int], num_devices: int) -> tuple[int, ...]:
    """Replaces one -1 with whatever makes the product equal num_devices."""
    sizes = tuple(int(s) for s in sizes)
    if sizes.count(-1) > 1:
        raise MeshError(f"mesh {sizes}: at most one axis may be -1 (the rest of the devices).")
    known = math.prod(s for s in sizes if s != -1)
    if known <= 0 or num_devices % known:
        raise MeshError(
            f"mesh {dict(zip(MESH_AXES, sizes))} does not divide the {num_devices} devices; "
            f"choose sizes whose product divides {num_devices} (e.g. --config.mesh.data=-1).")
    shape = tuple(num_devices // known if s == -1 else s for s in sizes)
    if math.prod(shape) != num_devices:
        raise MeshError(
            f"mesh {dict(zip(MESH_AXES, shape))} uses {math.prod(shape)} devices but "
            f"{num_devices} are present; set one axis to -1 or make the product {num_devices}.")
    return shape


def make_mesh(cfg: ml_collections.ConfigDict, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A mesh over all devices with Auto axis types (Explicit breaks the embedding gather)."""
    devices = list(devices if devices is not None else jax.devices())
    if cfg.num_devices:
        if cfg.num_devices > len(devices):
            raise MeshError(f"mesh.num_devices={cfg.num_devices} but only {len(devices)} devices exist.")
        devices = devices[: cfg.num_devices]
    dcn = (cfg.dcn_data, cfg.dcn_fsdp, cfg.dcn_tensor)
    num_slices = math.prod(dcn)
    if num_slices > 1:
        from jax.experimental import mesh_utils
        ici = resolve_shape((cfg.data, cfg.fsdp, cfg.tensor), len(devices) // num_slices)
        grid = mesh_utils.create_hybrid_device_mesh(ici, dcn, devices)
    else:
        shape = resolve_shape((cfg.data, cfg.fsdp, cfg.tensor), len(devices))
        grid = np.asarray(devices).reshape(shape)
    return Mesh(grid, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))


def check_rules(rules) -> None:
    named = {name for name, _ in rules}
    missing = [a for a in LOGICAL_AXES if a not in named]
    if missing:
        raise MeshError(f"axis_rules has no rule for {missing}; add e.g. ({missing[0]!r}, None) "
                        "to replicate it.")
    for name, target in rules:
        for axis in (target,) if isinstance(target, str) else (target or ()):
            if axis not in MESH_AXES:
                raise MeshError(f"axis rule {name!r} -> {target!r}: {axis!r} is not a mesh axis "
                                f"{MESH_AXES}.")


def logical_spec(axes: Sequence[str | None], rules=None) -> P:
    """PartitionSpec for logical axis names under `rules` (default: the active rules)."""
    rules = spmd.get_logical_axis_rules() if rules is None else rules
    return P(*spmd.from_sharding_rules(tuple(axes), rules))


def constrain(x: jax.Array, axes: Sequence[str | None]) -> jax.Array:
    """Sharding constraint on an activation by logical names; a no-op with no mesh set."""
    if jax.sharding.get_abstract_mesh().empty:
        return x
    return jax.lax.with_sharding_constraint(x, logical_spec(axes))


def batch_sharding(mesh: Mesh, rules) -> NamedSharding:
    return NamedSharding(mesh, logical_spec(("batch", None), rules))


def batch_shards(mesh: Mesh, rules) -> int:
    """How many ways the batch dimension is split on this mesh."""
    spec = logical_spec(("batch",), rules)[0]
    names = (spec,) if isinstance(spec, str) else tuple(spec or ())
    return math.prod(mesh.shape[n] for n in names)


def check_batch(global_batch: int, mesh: Mesh, rules) -> None:
    shards = batch_shards(mesh, rules)
    if global_batch % shards or global_batch % jax.process_count():
        raise MeshError(
            f"global batch {global_batch} does not divide over the {shards} batch shards of mesh "
            f"{dict(mesh.shape)} and {jax.process_count()} processes; use a batch that is a "
            f"multiple of {math.lcm(shards, jax.process_count())}.")


def put_batch(local_rows: np.ndarray, mesh: Mesh, rules) -> jax.Array:
    """This process's rows of the global batch, laid on the mesh as one global array."""
    global_shape = (local_rows.shape[0] * jax.process_count(),) + local_rows.shape[1:]
    return jax.make_array_from_process_local_data(batch_sharding(mesh, rules), local_rows, global_shape)


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())
