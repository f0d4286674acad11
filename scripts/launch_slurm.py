#!/usr/bin/env python
"""Write an sbatch script that runs a command as one jax process per GPU, and submit it.

  python scripts/launch_slurm.py --nodes 2 --gpus-per-node 8 --time 04:00:00 \\
      --setup "source .venv/bin/activate" -- \\
      igpt-train --config configs/tiny_images.py --workdir /shared/runs/tiny

One task per GPU (--ntasks-per-node = --gpus-per-node), because that is what jax's SLURM
detection expects: `jax.distributed.initialize()` under `srun` takes the process count and
id from SLURM_NTASKS / SLURM_PROCID and gives task K of a node the GPU numbered
SLURM_LOCALID, so no task needs to be told its device. (One task per node would need the
device list passed explicitly.) GPUs are requested per node with --gres, not bound per task,
so every task sees its node's GPUs under their usual numbers. The command gets
`--config.distributed.initialize=cluster`, and `srun --kill-on-bad-exit=1` ends the job
when one task fails. The script goes to --script (default slurm/JOB_NAME.sbatch) and is
submitted from the current directory; `--dry-run` prints the script and the sbatch command.

Preemption: `--signal=TERM@GRACE` has SLURM send SIGTERM to every task GRACE seconds (--grace)
before the time limit, so each trainer saves and exits 0; `--requeue` puts a preempted job back
in the queue, and the requeued job resumes from that checkpoint (same command, same workdir).
The job's output goes to --output (default slurm/%x-%j.out: job name and id), appended to on
a requeue.
"""
from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Sequence

from igpt.launch import NO_COMMAND, split_command, with_cluster_init


DEFAULT_OUTPUT = "slurm/%x-%j.out"
DEFAULT_GRACE_S = 120  # a checkpoint of a large model to shared storage can take a minute


def sbatch_script(command: Sequence[str], nodes: int, gpus_per_node: int, job_name: str,
                  time: str, partition: str | None = None, account: str | None = None,
                  cpus_per_task: int | None = None, setup: Sequence[str] = (),
                  output: str = DEFAULT_OUTPUT, grace_s: int = DEFAULT_GRACE_S) -> str:
    """The batch script text: SBATCH header, setup lines, then the srun line."""
    header = [f"--job-name={job_name}", f"--nodes={nodes}",
              f"--ntasks-per-node={gpus_per_node}", f"--gres=gpu:{gpus_per_node}",
              f"--time={time}", f"--output={output}", "--open-mode=append",
              f"--signal=TERM@{grace_s}", "--requeue"]
    header += [f"--partition={partition}"] if partition else []
    header += [f"--account={account}"] if account else []
    header += [f"--cpus-per-task={cpus_per_task}"] if cpus_per_task else []
    # srun no longer inherits --cpus-per-task from the allocation (Slurm >= 22.05).
    cpus = [f"--cpus-per-task={cpus_per_task}"] if cpus_per_task else []
    srun = ["srun", "--kill-on-bad-exit=1", *cpus, *with_cluster_init(command)]
    # `set -e` without -u: module and conda setup scripts read unset variables.
    return "\n".join(["#!/bin/bash", *(f"#SBATCH {h}" for h in header),
                      f"# {nodes * gpus_per_node} jax processes, one per GPU "
                      "(written by scripts/launch_slurm.py)",
                      "set -eo pipefail", *setup, shlex.join(srun), ""])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     usage="%(prog)s --nodes N --gpus-per-node G [options] "
                                           "-- COMMAND")
    parser.add_argument("--nodes", type=int, required=True)
    parser.add_argument("--gpus-per-node", type=int, required=True)
    parser.add_argument("--job-name", default="igpt")
    parser.add_argument("--time", default="01:00:00", help="wall-clock limit, HH:MM:SS")
    parser.add_argument("--partition", default=None)
    parser.add_argument("--account", default=None)
    parser.add_argument("--cpus-per-task", type=int, default=None)
    parser.add_argument("--setup", action="append", default=[],
                        help="shell line run before srun (repeatable), e.g. a venv activation")
    parser.add_argument("--output", default=DEFAULT_OUTPUT,
                        help="the job's log (sbatch patterns: %%x job name, %%j job id)")
    parser.add_argument("--grace", type=int, default=DEFAULT_GRACE_S,
                        help="seconds before the time limit at which the tasks get SIGTERM to save")
    parser.add_argument("--script", default=None, help="where to write the script")
    parser.add_argument("--dry-run", action="store_true")
    options, command = split_command(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(options)
    if not command:
        parser.error(NO_COMMAND)
    if args.nodes < 1 or args.gpus_per_node < 1:
        parser.error("--nodes and --gpus-per-node must be at least 1")
    if args.grace < 1:
        parser.error("--grace must be at least 1 second")
    text = sbatch_script(command, args.nodes, args.gpus_per_node, args.job_name, args.time,
                         args.partition, args.account, args.cpus_per_task, args.setup,
                         args.output, args.grace)
    path = Path(args.script or f"slurm/{args.job_name}.sbatch")
    if args.dry_run:
        print(text, end="")
        print(shlex.join(["sbatch", str(path)]))
        return 0
    if shutil.which("sbatch") is None:
        parser.error("sbatch not found: run this on the cluster's login node, or use --dry-run "
                     "to see the script.")
    path.parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)  # sbatch does not create it
    path.write_text(text)
    return subprocess.run(["sbatch", str(path)]).returncode


if __name__ == "__main__":
    sys.exit(main())
