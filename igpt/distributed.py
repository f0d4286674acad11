"""Multi-process start-up: decide whether and how to call `jax.distributed.initialize`.

One trainer binary runs alone on a laptop, as N local processes (scripts/launch_local.py),
under `srun` on a SLURM GPU cluster (scripts/launch_slurm.py) and on every host of a TPU
pod slice (scripts/launch_tpu_pod.py). The choice between those is `plan(cfg, env)`, a
pure function of the `c.distributed` config and the environment, so it is tested with
planted environments; `maybe_initialize` carries the plan out.

`c.distributed.initialize`:
  auto      IGPT_* variables or config fields set -> explicit; SLURM job step with more
            than one task -> cluster; multi-host TPU variables -> cluster; else single.
  explicit  coordinator address, process count and id from the config, or else from
            IGPT_COORDINATOR_ADDRESS / IGPT_NUM_PROCESSES / IGPT_PROCESS_ID.
  cluster   `jax.distributed.initialize()` with no arguments: jax reads SLURM, Cloud TPU
            (metadata server), Open MPI or Kubernetes itself. The pod and SLURM launchers
            ask for this, since a TPU VM's environment need not name its peers.
  never     one process; nothing is called.
`local_device_count` (or IGPT_LOCAL_DEVICE_COUNT) > 0 splits the host CPU into that many
XLA devices, to simulate a multi-device host; 0 leaves the backend's default.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from typing import Mapping

import jax
import ml_collections

INITIALIZE_MODES = ("auto", "explicit", "cluster", "never")
ENV_COORDINATOR = "IGPT_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "IGPT_NUM_PROCESSES"
ENV_PROCESS_ID = "IGPT_PROCESS_ID"
ENV_LOCAL_DEVICE_COUNT = "IGPT_LOCAL_DEVICE_COUNT"
_SLURM_STEP_VARS = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID",
                    "SLURM_LOCALID")

log = logging.getLogger(__name__)


class DistributedError(ValueError):
    """Inconsistent multi-process settings: the message names the setting and the fix."""


@dataclasses.dataclass(frozen=True)
class Plan:
    """What `maybe_initialize` will do, and why (the reason goes to the log)."""

    mode: str  # "single" | "explicit" | "cluster"
    reason: str
    coordinator_address: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    local_device_count: int = 0

    def initialize_kwargs(self) -> dict[str, object]:
        if self.mode != "explicit":
            return {}
        return dict(coordinator_address=self.coordinator_address,
                    num_processes=self.num_processes, process_id=self.process_id)


def distributed_config() -> ml_collections.ConfigDict:
    """Defaults for `c.distributed`: detect the environment, no explicit peers."""
    c = ml_collections.ConfigDict()
    c.initialize = "auto"
    c.coordinator_address = ""  # "host:port" of process 0; "" = from IGPT_COORDINATOR_ADDRESS
    c.num_processes = 0  # 0 = from IGPT_NUM_PROCESSES
    c.process_id = -1  # -1 = from IGPT_PROCESS_ID
    c.local_device_count = 0  # CPU simulation only; 0 = from IGPT_LOCAL_DEVICE_COUNT or leave
    return c


def plan(cfg: ml_collections.ConfigDict, env: Mapping[str, str]) -> Plan:
    """Decide single / explicit / cluster start-up from `c.distributed` and an environment."""
    if cfg.initialize not in INITIALIZE_MODES:
        raise DistributedError(
            f"distributed.initialize={cfg.initialize!r} is not one of {', '.join(INITIALIZE_MODES)}; "
            "set --config.distributed.initialize=auto (the default) unless you need another.")
    devices = _local_device_count(cfg, env)
    if cfg.initialize == "never":
        return Plan("single", "distributed.initialize=never", local_device_count=devices)
    if cfg.initialize == "cluster":
        return Plan("cluster", "distributed.initialize=cluster", local_device_count=devices)
    if cfg.initialize == "explicit" or _explicit_requested(cfg, env):
        return _explicit_plan(cfg, env, devices)
    slurm_tasks = _int_env(env, "SLURM_NTASKS", default=1) if "SLURM_JOB_ID" in env else 1
    if slurm_tasks > 1:
        missing = [v for v in _SLURM_STEP_VARS if v not in env]
        if missing:
            raise DistributedError(
                f"inside SLURM job {env['SLURM_JOB_ID']} with {slurm_tasks} tasks but not in a "
                f"job step ({', '.join(missing)} unset): start the trainer with `srun igpt-train "
                "...`, or pass --config.distributed.initialize=never for one process.")
        return Plan("cluster", f"SLURM job step with {slurm_tasks} tasks",
                    local_device_count=devices)
    tpu_reason = _multihost_tpu(env)
    if tpu_reason:
        return Plan("cluster", tpu_reason, local_device_count=devices)
    return Plan("single", "no multi-process environment found", local_device_count=devices)


def maybe_initialize(cfg: ml_collections.ConfigDict,
                     env: Mapping[str, str] | None = None) -> Plan:
    """Start jax's distributed runtime if the plan asks for it; call before any device use.

    A second call (the runtime already up) does nothing, so library code may call it too.
    """
    p = plan(cfg, os.environ if env is None else env)
    if jax.distributed.is_initialized():
        log.info("jax.distributed already initialized; leaving it (%s)", p.reason)
        return p
    if p.local_device_count:
        set_cpu_device_count(p.local_device_count)
    if p.mode == "single":
        log.info("single process: %s", p.reason)
        return p
    log.info("jax.distributed.initialize(%s): %s", p.initialize_kwargs(), p.reason)
    try:
        jax.distributed.initialize(**p.initialize_kwargs())
    except (RuntimeError, ValueError) as e:
        fix = ("start every process with the same coordinator address and count "
               "(scripts/launch_local.py does)" if p.mode == "explicit" else
               "run under srun or on a Cloud TPU VM, or use initialize=explicit")
        raise DistributedError(
            f"could not start jax.distributed ({p.reason}): {str(e).rstrip('.')}. Fix: call "
            f"igpt.distributed.maybe_initialize before any other jax call; {fix}.") from e
    return p


def set_cpu_device_count(n: int) -> None:
    """Split the host CPU into `n` XLA devices, to run sharded code without accelerators.

    The CPU backend fixes its device count when it is created, at the first jax call that
    touches devices, so this must come before that. The `jax_num_cpu_devices` option does
    what `XLA_FLAGS=--xla_force_host_platform_device_count=n` does, without having to be in
    the environment before jax is imported and without rewriting the user's XLA_FLAGS.
    """
    if n < 1:
        raise DistributedError(f"CPU device count {n} must be at least 1.")
    try:
        jax.config.update("jax_num_cpu_devices", n)
    except RuntimeError as e:
        raise DistributedError(
            f"cannot set {n} CPU devices: the jax backend is already running ({e}). Call "
            "igpt.distributed.maybe_initialize first thing in main.") from e


def shutdown() -> None:
    """Leave the distributed runtime cleanly so peers do not wait for a heartbeat timeout."""
    jax.distributed.shutdown()


def is_coordinator() -> bool:
    """True on process 0, the one that writes metrics, reports and logs."""
    return jax.process_index() == 0


def _explicit_requested(cfg: ml_collections.ConfigDict, env: Mapping[str, str]) -> bool:
    return bool(cfg.coordinator_address or cfg.num_processes > 0 or cfg.process_id >= 0
                or any(env.get(v) for v in (ENV_COORDINATOR, ENV_NUM_PROCESSES, ENV_PROCESS_ID)))


def _explicit_plan(cfg: ml_collections.ConfigDict, env: Mapping[str, str],
                   devices: int) -> Plan:
    address = cfg.coordinator_address or env.get(ENV_COORDINATOR, "")
    count = cfg.num_processes if cfg.num_processes > 0 else _int_env(env, ENV_NUM_PROCESSES)
    pid = cfg.process_id if cfg.process_id >= 0 else _int_env(env, ENV_PROCESS_ID)
    missing = [name for name, value in (("coordinator_address", address or None),
                                        ("num_processes", count), ("process_id", pid))
               if value is None]
    if missing:
        raise DistributedError(
            f"explicit multi-process start needs {', '.join(missing)}: set "
            f"--config.distributed.<field> or {ENV_COORDINATOR} / {ENV_NUM_PROCESSES} / "
            f"{ENV_PROCESS_ID} (scripts/launch_local.py sets them).")
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise DistributedError(
            f"coordinator address {address!r} is not host:port; use e.g. 127.0.0.1:12345.")
    if count < 1 or not 0 <= pid < count:
        raise DistributedError(
            f"process_id {pid} with num_processes {count}: ids run from 0 to num_processes-1; "
            "give every process the same count and a distinct id.")
    return Plan("explicit", f"process {pid} of {count}, coordinator {address}", address,
                count, pid, devices)


def _local_device_count(cfg: ml_collections.ConfigDict, env: Mapping[str, str]) -> int:
    n = cfg.local_device_count or _int_env(env, ENV_LOCAL_DEVICE_COUNT, default=0)
    if n < 0:
        raise DistributedError(
            f"local_device_count {n} is negative; use 0 to leave the devices as they are.")
    return n


def _multihost_tpu(env: Mapping[str, str]) -> str:
    """Why the environment names a multi-host TPU slice, or "" when it does not."""
    hosts = env.get("TPU_PROCESS_ADDRESSES") or env.get("TPU_WORKER_HOSTNAMES") or ""
    count = len([h for h in hosts.split(",") if h.strip()])
    if count > 1:
        return f"TPU slice with {count} hosts"
    if env.get("MEGASCALE_COORDINATOR_ADDRESS") or _int_env(env, "MEGASCALE_NUM_SLICES",
                                                            default=1) > 1:
        return "multi-slice TPU (MEGASCALE variables)"
    return ""


def _int_env(env: Mapping[str, str], name: str, default: int | None = None) -> int | None:
    value = env.get(name, "")
    if value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise DistributedError(f"{name}={value!r} is not an integer; set it to a whole number "
                               "or unset it.") from None
