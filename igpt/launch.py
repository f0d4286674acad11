"""Command-line pieces the launch scripts share (scripts/launch_*.py); no jax import here.

Every launcher takes its own options, then `--`, then the command to run on each process,
e.g. `-- igpt-train --config configs/x.py --workdir runs/x --config.model.width=256`.
"""
from __future__ import annotations

import shlex
from typing import Mapping, Sequence

CLUSTER_INIT_FLAG = "--config.distributed.initialize"
NO_COMMAND = ("no command given: put it after `--`, e.g. "
              "`-- igpt-train --config configs/x.py --workdir runs/x`")


class LaunchError(ValueError):
    """Bad launcher arguments: the message names the argument and the fix."""


def split_command(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """(launcher options, command) split at the first `--`; no `--` gives no command."""
    argv = list(argv)
    if "--" not in argv:
        return argv, []
    i = argv.index("--")
    return argv[:i], argv[i + 1:]


def flag_value(command: Sequence[str], flag: str) -> str | None:
    """The value of `flag` in `command` (`--flag v` or `--flag=v`; the last one wins)."""
    value = None
    for i, arg in enumerate(command):
        if arg == flag and i + 1 < len(command):
            value = command[i + 1]
        elif arg.startswith(flag + "="):
            value = arg[len(flag) + 1:]
    return value


def with_cluster_init(command: Sequence[str]) -> list[str]:
    """`command` told to let jax read the cluster itself, unless it already chose a mode.

    A TPU VM's environment need not name its peers (jax asks the metadata server), so
    launchers that know they start a cluster say so instead of relying on detection.
    """
    if flag_value(command, CLUSTER_INIT_FLAG) is not None:
        return list(command)
    return [*command, f"{CLUSTER_INIT_FLAG}=cluster"]


def shell_line(command: Sequence[str], env: Mapping[str, str] | None = None) -> str:
    """`K=V ... cmd args` quoted for a POSIX shell: what a dry run prints."""
    assignments = [f"{k}={shlex.quote(v)}" for k, v in (env or {}).items()]
    return " ".join([*assignments, shlex.join(command)])
