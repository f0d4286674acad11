#!/usr/bin/env python
"""Run N copies of a command on this machine as one multi-process jax job.

  python scripts/launch_local.py --num-processes 2 --devices-per-process 4 -- \\
      igpt-train --config configs/tiny_images.py --workdir runs/mp

Copy K gets IGPT_COORDINATOR_ADDRESS=127.0.0.1:<free port>, IGPT_NUM_PROCESSES=N,
IGPT_PROCESS_ID=K and IGPT_LOCAL_DEVICE_COUNT=<devices>, which
igpt.distributed.maybe_initialize reads (c.distributed.initialize=auto). Its output lines
come out prefixed `[pK] `. SIGINT and SIGTERM go to every copy, which get SAVE_GRACE_S to save
and exit (a second signal stops the wait); the launcher then exits 0 when every copy exited 0
(a trainer saves and exits 0), else with the first failed copy's status, or 128 + the signal
when copies had to be killed. When one copy fails the others are stopped and the launcher
exits with the failed copy's status.
`--dry-run` prints the exact commands with their environment and exits 0.
Meant for CPU runs and tests of multi-host code: on a GPU machine every copy would see
every GPU, so use one process there (or SLURM).
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import IO, Sequence

from igpt import distributed
from igpt.launch import NO_COMMAND, shell_line, split_command

GRACE_S = 10.0  # how long stopped copies get to exit before SIGKILL
SAVE_GRACE_S = 300.0  # how long copies get to checkpoint and exit after a forwarded SIGINT / SIGTERM


def free_port() -> int:
    """A localhost port free right now (the coordinator binds it a moment later)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_envs(num_processes: int, devices_per_process: int,
                 coordinator: str) -> list[dict[str, str]]:
    """The variables each copy gets on top of this process's environment."""
    envs = []
    for k in range(num_processes):
        env = {distributed.ENV_COORDINATOR: coordinator,
               distributed.ENV_NUM_PROCESSES: str(num_processes),
               distributed.ENV_PROCESS_ID: str(k)}
        if devices_per_process:
            env[distributed.ENV_LOCAL_DEVICE_COUNT] = str(devices_per_process)
        env["PYTHONUNBUFFERED"] = "1"  # lines reach the prefixer as they are printed
        envs.append(env)
    return envs


def exit_status(returncode: int) -> int:
    """A child's return code as a shell exit status (killed by signal S -> 128 + S)."""
    return 128 - returncode if returncode < 0 else returncode


def run(command: Sequence[str], envs: Sequence[dict[str, str]]) -> int:
    """Start one copy per env, prefix their output, stop all when one fails or on a signal."""
    procs: list[subprocess.Popen] = []
    received: list[int] = []

    def forward(signum: int, _frame: object) -> None:
        received.append(signum)
        _signal_all(procs, signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    lock = threading.Lock()
    pumps = []
    try:
        for k, env in enumerate(envs):
            # Own session: a terminal's Ctrl-C reaches a copy once, through `forward`.
            procs.append(subprocess.Popen(command, env={**os.environ, **env},
                                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                          start_new_session=True))
            pumps.append(threading.Thread(target=_prefix_lines,
                                          args=(procs[-1].stdout, k, lock), daemon=True))
            pumps[-1].start()
        status = _supervise(procs, received)
    finally:
        _stop(procs)
        for s, handler in previous.items():
            signal.signal(s, handler)
    for pump in pumps:
        pump.join(timeout=GRACE_S)
    return status


def status_after_signal(returncodes: Sequence[int | None], signum: int) -> int:
    """The launcher's exit status once `signum` was forwarded: 0 when every copy exited 0 (they
    saved and stopped), the first failed copy's status, or 128 + signum when some still ran."""
    failed = [exit_status(code) for code in returncodes if code not in (None, 0)]
    if failed:
        return failed[0]
    return 128 + signum if None in returncodes else 0


def _supervise(procs: list[subprocess.Popen], received: list[int]) -> int:
    while True:
        if received:  # already forwarded: the copies save and exit; a second signal stops waiting
            deadline = time.monotonic() + SAVE_GRACE_S
            while (any(p.poll() is None for p in procs) and len(received) == 1
                   and time.monotonic() < deadline):
                time.sleep(0.05)
            return status_after_signal([p.poll() for p in procs], received[0])
        codes = [p.poll() for p in procs]
        for k, code in enumerate(codes):
            if code not in (None, 0):
                print(f"[launch_local] process {k} exited with status {exit_status(code)}; "
                      "stopping the others", file=sys.stderr, flush=True)
                return exit_status(code)
        if all(code == 0 for code in codes):
            return 0
        time.sleep(0.05)


def _stop(procs: list[subprocess.Popen]) -> None:
    """SIGTERM the copies still running, then SIGKILL those left after the grace period."""
    _signal_all(procs, signal.SIGTERM)
    _wait_all(procs, GRACE_S)
    _signal_all(procs, signal.SIGKILL)
    for p in procs:
        p.wait()


def _wait_all(procs: list[subprocess.Popen], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    for p in procs:
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass


def _signal_all(procs: list[subprocess.Popen], signum: int) -> None:
    for p in procs:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signum)  # the copy and anything it started
            except ProcessLookupError:
                pass


def _prefix_lines(stream: IO[bytes], k: int, lock: threading.Lock) -> None:
    prefix = f"[p{k}] ".encode()
    for line in iter(stream.readline, b""):
        with lock:
            sys.stdout.buffer.write(prefix + line if line.endswith(b"\n") else
                                    prefix + line + b"\n")
            sys.stdout.buffer.flush()


def main(argv: Sequence[str] | None = None) -> int:
    options, command = split_command(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     usage="%(prog)s [options] -- COMMAND ...")
    parser.add_argument("--num-processes", type=int, default=2)
    parser.add_argument("--devices-per-process", type=int, default=0,
                        help="CPU devices per process (0: leave jax's default)")
    parser.add_argument("--port", type=int, default=0, help="coordinator port (0: a free one)")
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args(options)
    if not command:
        parser.error(NO_COMMAND)
    if args.num_processes < 1 or args.devices_per_process < 0:
        parser.error("--num-processes must be >= 1 and --devices-per-process >= 0")
    if not args.dry_run and shutil.which(command[0]) is None:
        parser.error(f"command not found: {command[0]} (is igpt installed? `pip install -e .`)")
    envs = process_envs(args.num_processes, args.devices_per_process,
                        f"127.0.0.1:{args.port or free_port()}")
    if args.dry_run:
        for env in envs:
            print(shell_line(command, env))
        return 0
    return run(command, envs)


if __name__ == "__main__":
    sys.exit(main())
