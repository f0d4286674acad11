"""What the hardware offers: peak dense bf16 FLOP/s of known accelerators (for the MFU figure),
and on a CPU host the split into one XLA device per core that igpt-train makes by default."""
from __future__ import annotations

import os
from typing import Mapping

import jax
import ml_collections

from igpt import distributed, sharding

# Dense (not sparse) bf16 peak per chip, from the vendors' data sheets.
PEAK_BF16_FLOPS = {
    "H100": 989e12,   # SXM
    "H200": 989e12,
    "A100": 312e12,
    "TPU v4": 275e12,
    "TPU v5 lite": 197e12,  # v5e
    "TPU v5p": 459e12,
    "TPU v6 lite": 918e12,  # Trillium
}
DEVICE_COUNT_FLAG = "xla_force_host_platform_device_count"


def peak_flops_per_device(device: jax.Device | None = None) -> float | None:
    kind = (device or jax.devices()[0]).device_kind
    for name, flops in PEAK_BF16_FLOPS.items():
        if name.lower() in kind.lower():
            return flops
    return None


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def cpu_devices_per_core(cfg: ml_collections.ConfigDict, env: Mapping[str, str], cores: int) -> int:
    """How many XLA devices a single-process run splits the host CPU into when nobody chose: one
    per core (data parallel over the cores runs faster than one device using them all), the most
    that the mesh and the batch divide over. 0 leaves the devices alone: the user set a count
    (XLA_FLAGS, JAX_NUM_CPU_DEVICES, distributed.local_device_count or IGPT_LOCAL_DEVICE_COUNT),
    fixed the mesh (no -1 axis, mesh.num_devices, dcn_*), or the run has several processes. Only
    the CPU backend reads the count, so an accelerator host is unaffected."""
    m = cfg.mesh
    if (DEVICE_COUNT_FLAG in env.get("XLA_FLAGS", "") or env.get("JAX_NUM_CPU_DEVICES")
            or cfg.distributed.local_device_count or env.get(distributed.ENV_LOCAL_DEVICE_COUNT)
            or m.num_devices or m.dcn_data * m.dcn_fsdp * m.dcn_tensor != 1 or -1 not in (m.data, m.fsdp, m.tensor)):
        return 0
    try:
        if distributed.plan(cfg.distributed, env).mode != "single":
            return 0
    except distributed.DistributedError:
        return 0  # maybe_initialize says what is wrong
    accum = cfg.optim.get("grad_accum", 1)
    for n in range(cores, 1, -1):
        try:
            data, fsdp, _ = sharding.resolve_shape((m.data, m.fsdp, m.tensor), n)
        except sharding.MeshError:
            continue
        if cfg.train.global_batch % (accum * data * fsdp) == 0:
            return n
    return 0


def split_cpu_into_cores(cfg: ml_collections.ConfigDict) -> int:
    """Applies cpu_devices_per_core before jax's backend starts; returns the count set (0: none)."""
    n = cpu_devices_per_core(cfg, os.environ, usable_cores())
    if n:
        distributed.set_cpu_device_count(n)
    return n
