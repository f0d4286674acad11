"""One process of a 2-process CPU job, run by tests/test_launchers.py through launch_local.

Checks the topology the launcher promised (2 processes x 4 CPU devices), sums a global
array built from each process's rows, psums across all 8 devices, and prints one RESULT
line so the test can compare what the processes saw.
"""
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from igpt import distributed

cfg = distributed.distributed_config()
plan = distributed.maybe_initialize(cfg)
distributed.maybe_initialize(cfg)  # a second call must be a no-op
assert plan.mode == "explicit", plan
assert jax.process_count() == 2, jax.process_count()
assert jax.device_count() == 8 and jax.local_device_count() == 4, jax.devices()

mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
rows = np.arange(1, 5, dtype=np.int32) + 4 * jax.process_index()  # process 0: 1..4, 1: 5..8
x = jax.make_array_from_process_local_data(NamedSharding(mesh, P("data")), rows, (8,))
total = jax.jit(jnp.sum, out_shardings=NamedSharding(mesh, P()))(x)
psum = jax.shard_map(lambda v: jax.lax.psum(v, "data"), mesh=mesh, in_specs=P("data"),
                     out_specs=P())(x)
print(f"RESULT process={jax.process_index()} coordinator={distributed.is_coordinator()} "
      f"sum={int(total.addressable_data(0))} psum={psum.addressable_data(0).tolist()}",
      flush=True)
distributed.shutdown()
