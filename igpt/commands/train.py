"""igpt-train --config configs/X.py --workdir DIR [--config.a.b=v ...]

Trains, or resumes when DIR holds a checkpoint. Exits 0 when finished or preempted (SIGTERM
saves and exits: rerun the same command to resume), 1 with one line naming the problem.
"""
from __future__ import annotations

import sys

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file with get_config().", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory: checkpoints, metrics.jsonl, config.")


def _run(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}; overrides look like --config.train.steps=100.")
    from igpt.errors import fail_clearly
    from igpt.gpt import train
    from igpt import distributed
    with fail_clearly():
        train(_CONFIG.value, _WORKDIR.value)
    distributed.shutdown()  # after success only: a failed process must not wait on its peers


def main() -> None:
    from igpt.allocator import reexec_with_malloc_settings
    reexec_with_malloc_settings("igpt.commands.train")
    flags.mark_flags_as_required(["config", "workdir"])
    from igpt.errors import parse_flags_clearly
    app.run(_run, argv=sys.argv, flags_parser=parse_flags_clearly)


if __name__ == "__main__":
    main()
