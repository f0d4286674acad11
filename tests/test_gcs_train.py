"""The trainer with its workdir in a bucket (the local GCS emulator): killed by SIGKILL after a
checkpoint, rerun, it resumes from the bucket and its losses are bitwise those of a local run."""
from __future__ import annotations

import signal
import subprocess
import time

from gcs_emulator import subprocess_env
from trainer_fixtures import REPO, cli_command, cli_env, committed_steps, run_cli, train_losses

from igpt.training.rundir import RunDir

STEPS = ("--config.train.steps=20",)


def test_sigkill_in_a_bucket_resumes_bitwise_from_the_bucket(tmp_path, data_dir, gcs_root):
    local = run_cli(tmp_path / "local", data_dir, *STEPS)
    assert local.returncode == 0, local.stderr[-3000:]
    workdir = str(gcs_root / "run")
    env = {**cli_env(), **subprocess_env()}
    proc = subprocess.Popen(cli_command(workdir, data_dir, *STEPS), env=env, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not committed_steps(workdir) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = max(committed_steps(workdir), default=0)
    assert 5 <= killed_at < 20, f"killed after checkpoint {killed_at}"
    again = subprocess.run(cli_command(workdir, data_dir, *STEPS), env=env, cwd=REPO, capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resumed from step {killed_at}" in again.stdout
    ref, resumed = train_losses(tmp_path / "local"), train_losses(workdir)
    assert all(resumed[s] == ref[s] for s in range(killed_at + 1, 21)), "resumed losses must be bitwise equal"
    info = RunDir.at(workdir).read_info()
    assert info["finished"] and info["step"] == 20
