"""igpt-train --config configs/X.py --workdir DIR [--config.a.b=v ...]

Trains, or resumes when DIR holds a checkpoint. Exits 0 when finished or preempted (SIGTERM or
Ctrl-C saves and exits: rerun the same command to resume), 1 with one line naming the problem.
On a CPU host it splits the CPU into one XLA device per core and runs the blockwise attention
unless told otherwise (XLA_FLAGS, --config.distributed.local_device_count=1,
--config.model.attention=xla); the start-up banner says which path runs.
"""
from __future__ import annotations

import sys

from absl import app, flags
from ml_collections import config_flags

from igpt.commands.usage import answer_help

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file with get_config().", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory: checkpoints, metrics.jsonl, config.")
_SHOW = flags.DEFINE_bool("show_config", False, "Print every config field (overrides applied) and exit.")


def _run(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}; overrides look like --config.train.steps=100.")
    if _SHOW.value:
        print(_CONFIG.value, end="")
        return
    if not _WORKDIR.value:
        raise app.UsageError("--workdir is required: the run directory (local or gs://).")
    from igpt.errors import fail_clearly
    from igpt.gpt import train
    from igpt import distributed, hardware
    with fail_clearly():
        hardware.split_cpu_into_cores(_CONFIG.value)
        train(_CONFIG.value, _WORKDIR.value)
    distributed.shutdown()  # after success only: a failed process must not wait on its peers


def main() -> None:
    answer_help("igpt-train", __doc__, "--config.train.steps=500 --config.model.width=128")  # before jax or the config file loads: help answers at once
    from igpt.allocator import reexec_with_malloc_settings
    reexec_with_malloc_settings("igpt.commands.train")
    flags.mark_flags_as_required(["config"])
    from igpt.errors import parse_flags_clearly
    app.run(_run, argv=sys.argv, flags_parser=parse_flags_clearly)


if __name__ == "__main__":
    main()
