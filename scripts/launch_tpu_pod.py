#!/usr/bin/env python
"""Run a command on every host of a Cloud TPU pod slice, through `gcloud ... ssh --worker=all`.

  python scripts/launch_tpu_pod.py --name my-v4-32 --zone us-central2-b --setup -- \\
      igpt-train --config configs/tiny_images.py --workdir gs://my-bucket/runs/tiny

Each host runs `cd REPO_DIR && COMMAND --config.distributed.initialize=cluster`, so the
trainer calls `jax.distributed.initialize()` with no arguments and jax learns the hosts
from the TPU metadata server. `--setup` first runs `pip install -e .` in REPO_DIR on every
host (the checkout must already be there). Every host writes checkpoints into the one
workdir, so it must be shared: a gs:// path, or pass --shared-workdir for a filesystem
mounted on every host. `--dry-run` prints the gcloud commands and exits 0.
"""
from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys
from typing import Sequence

from igpt.launch import (NO_COMMAND, LaunchError, flag_value, split_command,
                         with_cluster_init)

SETUP = "pip install -e ."


def remote_line(repo_dir: str, command: Sequence[str]) -> str:
    """What each host's shell runs: enter the checkout, then the command."""
    return f"cd {shlex.quote(repo_dir)} && {shlex.join(command)}"


def gcloud_ssh(name: str, zone: str, project: str | None, remote: str) -> list[str]:
    """The gcloud argv that runs `remote` on all hosts of TPU VM `name` at once."""
    project_args = ["--project", project] if project else []
    return ["gcloud", "compute", "tpus", "tpu-vm", "ssh", name, "--zone", zone,
            *project_args, "--worker=all", "--command", remote]


def build_commands(name: str, zone: str, project: str | None, repo_dir: str,
                   command: Sequence[str], setup: bool, shared_workdir: bool) -> list[list[str]]:
    """The gcloud commands to run in order: the optional setup, then the trainer."""
    workdir = flag_value(command, "--workdir")
    if workdir is None:
        raise LaunchError("the command has no --workdir; give one (gs://bucket/path), since "
                          "every host must write into the same directory.")
    if not workdir.startswith("gs://") and not shared_workdir:
        raise LaunchError(f"--workdir {workdir} is local to each TPU host, but all hosts must "
                          "share it: use gs://bucket/path, or pass --shared-workdir if it is "
                          "on a filesystem mounted on every host.")
    steps = [remote_line(repo_dir, shlex.split(SETUP))] if setup else []
    steps.append(remote_line(repo_dir, with_cluster_init(command)))
    return [gcloud_ssh(name, zone, project, remote) for remote in steps]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     usage="%(prog)s --name TPU --zone ZONE [options] -- COMMAND")
    parser.add_argument("--name", required=True, help="TPU VM (pod slice) name")
    parser.add_argument("--zone", required=True)
    parser.add_argument("--project", default=None, help="GCP project (default: gcloud's)")
    parser.add_argument("--repo-dir", default="igpt",
                        help="checkout on each host; relative paths start at the home dir")
    parser.add_argument("--setup", action="store_true", help=f"run `{SETUP}` there first")
    parser.add_argument("--shared-workdir", action="store_true",
                        help="accept a non-gs:// workdir that every host mounts")
    parser.add_argument("--dry-run", action="store_true")
    options, command = split_command(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(options)
    if not command:
        parser.error(NO_COMMAND)
    try:
        commands = build_commands(args.name, args.zone, args.project, args.repo_dir, command,
                                  args.setup, args.shared_workdir)
    except LaunchError as e:
        parser.error(str(e))
    if args.dry_run:
        for c in commands:
            print(shlex.join(c))
        return 0
    if shutil.which("gcloud") is None:
        parser.error("gcloud not found: install the Google Cloud SDK, or use --dry-run to see "
                     "the commands.")
    for c in commands:
        status = subprocess.run(c).returncode
        if status:
            print(f"launch_tpu_pod: {shlex.join(c[:6])} ... exited with {status}",
                  file=sys.stderr)
            return status
    return 0


if __name__ == "__main__":
    sys.exit(main())
