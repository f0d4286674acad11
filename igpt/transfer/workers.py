"""Several trainings at once on one CPU host, each in its own process.

Small models leave a multi-core CPU idle between their small ops; processes with one
intra-op thread each use the cores better than one process with many threads (figures in
benchmarks/RESULTS.md). The runs are dealt out round-robin (an experiment's runs cost about
the same); each worker trains its share in order, reading the data once. SIGTERM and SIGINT
reach every worker, which checkpoints and stops as a single run would; the first error a
worker raised is raised here, so a failed or preempted run reads as it would in one process.
"""
from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
import sys
from typing import Any, Callable, Iterator, Sequence

import jax
import ml_collections
from etils.epath import Path

from igpt import hardware
from igpt.transfer.arms import TransferError

ONE_THREAD = "--xla_cpu_multi_thread_eigen=false"

Job = tuple[ml_collections.ConfigDict, Path, dict[str, Any]]  # (config, run dir, run.json info)


def on_one_cpu_host() -> bool:
    return jax.process_count() == 1 and jax.default_backend() == "cpu"


def count(workers: int) -> int:
    """The trainings an experiment runs at once: `workers`, or for 0 one per usable core on a
    single CPU host (the fast path there: small models leave cores idle) and 1 elsewhere."""
    if workers:
        return workers
    return hardware.usable_cores() if on_one_cpu_host() else 1


def check(workers: int) -> None:
    """Parallel workers share one host's CPU cores; accelerators and multi-host runs take one run at a time."""
    if workers < 0:
        raise TransferError(f"workers={workers}: give the trainings to run at once (0: one per CPU core).")
    if workers > 1 and not on_one_cpu_host():
        raise TransferError(f"workers={workers} trains several runs at once on one host's CPU cores; on "
                            f"{jax.process_count()} process(es) with {jax.default_backend()} devices set workers=1.")


def _stop_with_parent() -> None:
    """On Linux, SIGTERM this worker when its parent dies, even by SIGKILL: it checkpoints and
    stops instead of training on beside the rerun that resumes the experiment."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _work(jobs: Sequence[Job], cache_dir: str, errors: Any) -> None:
    """One worker: its share of the runs, in order (runs in a spawned process)."""
    _stop_with_parent()
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {ONE_THREAD}".strip()  # before jax's backend starts
    from igpt.data import pipeline
    from igpt.transfer.experiment import train_once
    jax.config.update("jax_compilation_cache_dir", cache_dir)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    try:
        with pipeline.examples_cache():
            for cfg, run_dir, info in jobs:
                train_once(cfg, run_dir, info)
    except BaseException as e:  # noqa: BLE001 - handed to the parent, which raises it
        errors.put(e)
        raise SystemExit(1) from None


@contextlib.contextmanager
def _forwarding(signals: tuple[int, ...], to: Callable[[int], None]) -> Iterator[None]:
    previous = {s: signal.signal(s, lambda sig, _frame: to(sig)) for s in signals}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def train_in_parallel(jobs: Sequence[Job], workers: int, cache_dir: str, log: Callable[[str], None]) -> None:
    """Trains `jobs` over min(workers, len(jobs)) processes; returns when all are done."""
    shares = [list(jobs[i::workers]) for i in range(min(workers, len(jobs)))]
    log(f"{len(jobs)} runs over {len(shares)} worker processes")
    ctx = multiprocessing.get_context("spawn")  # a fresh interpreter: no jax state is forked
    errors = ctx.SimpleQueue()
    procs = [ctx.Process(target=_work, args=(share, cache_dir, errors)) for share in shares]
    for p in procs:
        p.start()

    def forward(sig: int) -> None:
        for p in procs:
            if p.is_alive():
                os.kill(p.pid, sig)

    with _forwarding((signal.SIGTERM, signal.SIGINT), forward):
        for p in procs:
            p.join()
    if not errors.empty():
        raise errors.get()
    failed = [p.exitcode for p in procs if p.exitcode]
    if failed:
        raise TransferError(f"{len(failed)} worker process(es) died (exit codes {failed}) before reporting an "
                            "error; rerun the same command to resume, or set workers=1 to see the failure.")
