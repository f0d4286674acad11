"""igpt-transfer --config configs/X.py --workdir EXP [--config.a.b=v ...]

Pretrains each source, runs every arm on the target, writes EXP/report, and prints the
headline speedups. Rerun the same command after a kill or preemption to continue.
"""
from __future__ import annotations

import sys

from absl import app, flags
from ml_collections import config_flags

from igpt.commands.usage import answer_help

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config with get_config().", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Experiment directory (created; resumed if it exists).")
_SHOW = flags.DEFINE_bool("show_config", False, "Print every config field (overrides applied) and exit.")


def _run(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}; overrides look like --config.seeds='(0,1)'.")
    if _SHOW.value:
        print(_CONFIG.value, end="")
        return
    if not _WORKDIR.value:
        raise app.UsageError("--workdir is required: the experiment directory (local or gs://).")
    from igpt.errors import fail_clearly
    from igpt.transfer.experiment import run_experiment
    from igpt.transfer.report import headline, write_report
    with fail_clearly():
        exp_dir = run_experiment(_CONFIG.value, _WORKDIR.value)
        import jax
        if jax.process_index() == 0:
            summary = write_report([exp_dir], exp_dir / "report", log_x=_CONFIG.value.report.log_x,
                                   targets=list(_CONFIG.value.report.targets) or None)
            print(headline(summary, exp_dir / "report"))


def main() -> None:
    answer_help("igpt-transfer", __doc__, "--config.seeds='(0,1)' --config.workers=2")  # before jax or the config file loads: help answers at once
    from igpt.allocator import reexec_with_malloc_settings
    reexec_with_malloc_settings("igpt.commands.transfer")
    flags.mark_flags_as_required(["config"])
    from igpt.errors import parse_flags_clearly
    app.run(_run, argv=sys.argv, flags_parser=parse_flags_clearly)


if __name__ == "__main__":
    main()
