"""igpt.distributed: the start-up decision from planted environments, and its errors."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from igpt import distributed
from igpt.distributed import DistributedError, Plan, plan

ROOT = Path(__file__).resolve().parents[1]
LOCAL = {"IGPT_COORDINATOR_ADDRESS": "127.0.0.1:4321", "IGPT_NUM_PROCESSES": "2",
         "IGPT_PROCESS_ID": "1"}
SLURM_STEP = {"SLURM_JOB_ID": "77", "SLURM_STEP_NODELIST": "gpu[01-02]", "SLURM_NTASKS": "8",
              "SLURM_PROCID": "3", "SLURM_LOCALID": "3"}


def cfg(**fields):
    c = distributed.distributed_config()
    c.update(fields)
    return c


def test_defaults_detect_and_leave_devices():
    c = distributed.distributed_config()
    assert (c.initialize, c.coordinator_address, c.num_processes, c.process_id,
            c.local_device_count) == ("auto", "", 0, -1, 0)


def test_plain_environment_is_one_process():
    assert plan(cfg(), {"HOME": "/root"}) == Plan("single", "no multi-process environment found")


def test_launcher_variables_give_explicit_start():
    p = plan(cfg(), {**LOCAL, "IGPT_LOCAL_DEVICE_COUNT": "4"})
    assert (p.mode, p.local_device_count) == ("explicit", 4)
    assert p.initialize_kwargs() == dict(coordinator_address="127.0.0.1:4321",
                                         num_processes=2, process_id=1)


def test_config_fields_win_over_environment():
    p = plan(cfg(initialize="explicit", coordinator_address="10.0.0.1:99", num_processes=4,
                 process_id=0, local_device_count=2), LOCAL)
    assert p.initialize_kwargs() == dict(coordinator_address="10.0.0.1:99", num_processes=4,
                                         process_id=0)
    assert p.local_device_count == 2


def test_explicit_names_what_is_missing():
    with pytest.raises(DistributedError, match="needs num_processes, process_id"):
        plan(cfg(), {"IGPT_COORDINATOR_ADDRESS": "127.0.0.1:4321"})
    with pytest.raises(DistributedError, match="needs coordinator_address, num_processes, pro"):
        plan(cfg(initialize="explicit"), {})


@pytest.mark.parametrize("env, message", [
    ({**LOCAL, "IGPT_PROCESS_ID": "2"}, "process_id 2 with num_processes 2"),
    ({**LOCAL, "IGPT_NUM_PROCESSES": "two"}, "IGPT_NUM_PROCESSES='two' is not an integer"),
    ({**LOCAL, "IGPT_COORDINATOR_ADDRESS": "localhost"}, "'localhost' is not host:port"),
    ({"IGPT_LOCAL_DEVICE_COUNT": "-1"}, "local_device_count -1 is negative"),
])
def test_inconsistent_environment_is_refused(env, message):
    with pytest.raises(DistributedError, match=message):
        plan(cfg(), env)


def test_unknown_mode_is_refused():
    with pytest.raises(DistributedError, match="'yes' is not one of auto, explicit"):
        plan(cfg(initialize="yes"), {})


def test_slurm_step_with_many_tasks_lets_jax_detect():
    assert plan(cfg(), SLURM_STEP).mode == "cluster"
    assert plan(cfg(), {**SLURM_STEP, "SLURM_NTASKS": "1"}).mode == "single"


def test_slurm_batch_step_without_srun_says_use_srun():
    batch = {k: v for k, v in SLURM_STEP.items() if k != "SLURM_STEP_NODELIST"}
    with pytest.raises(DistributedError, match="SLURM_STEP_NODELIST unset.*srun igpt-train"):
        plan(cfg(), batch)


@pytest.mark.parametrize("env, mode", [
    ({"TPU_WORKER_HOSTNAMES": "t1-w-0,t1-w-1,t1-w-2,t1-w-3", "TPU_WORKER_ID": "2"}, "cluster"),
    ({"TPU_WORKER_HOSTNAMES": "t1-w-0", "TPU_WORKER_ID": "0"}, "single"),
    ({"MEGASCALE_COORDINATOR_ADDRESS": "10.0.0.2", "MEGASCALE_NUM_SLICES": "2"}, "cluster"),
])
def test_tpu_hosts(env, mode):
    assert plan(cfg(), env).mode == mode


def test_modes_override_detection():
    assert plan(cfg(initialize="never"), {**SLURM_STEP, **LOCAL}).mode == "single"
    assert plan(cfg(initialize="cluster"), LOCAL).initialize_kwargs() == {}


def test_cpu_devices_then_late_initialize_error():
    """In a fresh process: the device count takes; initializing after jax started is refused."""
    program = textwrap.dedent("""
        import os, jax
        from igpt import distributed
        from igpt.distributed import DistributedError
        distributed.maybe_initialize(distributed.distributed_config())
        assert jax.device_count() == 3 and distributed.is_coordinator()
        os.environ.update(IGPT_COORDINATOR_ADDRESS="127.0.0.1:1", IGPT_NUM_PROCESSES="2",
                          IGPT_PROCESS_ID="1")
        try:
            distributed.maybe_initialize(distributed.distributed_config())
        except DistributedError as e:
            print("REFUSED", e)
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "IGPT_LOCAL_DEVICE_COUNT": "3"}
    out = subprocess.run([sys.executable, "-c", program], env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "REFUSED" in out.stdout and "maybe_initialize before any other jax call" in out.stdout
