"""scripts/launch_*.py: exact dry-run commands, and real local multi-process runs."""
import importlib.util
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from igpt.launch import flag_value, shell_line, split_command, with_cluster_init

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ["igpt-train", "--config", "configs/tiny.py", "--workdir", "gs://bkt/runs/a",
         "--config.model.width=256"]


def load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def launch_local(*args, **popen):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, str(ROOT / "scripts/launch_local.py"), *args],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, **popen)


def test_command_helpers():
    assert split_command(["--dry-run", "--", "a", "--", "b"]) == (["--dry-run"], ["a", "--", "b"])
    assert split_command(["--dry-run"]) == (["--dry-run"], [])
    assert flag_value(["--workdir", "a", "--workdir=b"], "--workdir") == "b"
    assert with_cluster_init(["t"]) == ["t", "--config.distributed.initialize=cluster"]
    kept = ["t", "--config.distributed.initialize", "never"]
    assert with_cluster_init(kept) == kept
    assert shell_line(["t", "a b"], {"K": "v w"}) == "K='v w' t 'a b'"


def test_local_dry_run_prints_each_process(capsys):
    assert load("launch_local").main(["--num-processes", "2", "--devices-per-process", "4",
                                      "--port", "4321", "--dry-run", "--", *TRAIN]) == 0
    expected = [f"IGPT_COORDINATOR_ADDRESS=127.0.0.1:4321 IGPT_NUM_PROCESSES=2 "
                f"IGPT_PROCESS_ID={k} IGPT_LOCAL_DEVICE_COUNT=4 PYTHONUNBUFFERED=1 "
                "igpt-train --config configs/tiny.py --workdir gs://bkt/runs/a "
                "--config.model.width=256" for k in (0, 1)]
    assert capsys.readouterr().out.splitlines() == expected


def test_local_without_command_is_refused(capsys):
    with pytest.raises(SystemExit) as exit_:
        load("launch_local").main(["--num-processes", "2"])
    assert exit_.value.code == 2
    assert "no command given: put it after `--`" in capsys.readouterr().err


def test_tpu_dry_run_prints_gcloud_commands(capsys):
    assert load("launch_tpu_pod").main(["--name", "pod-32", "--zone", "us-central2-b",
                                        "--project", "proj", "--setup", "--dry-run",
                                        "--", *TRAIN]) == 0
    ssh = "gcloud compute tpus tpu-vm ssh pod-32 --zone us-central2-b --project proj --worker=all"
    assert capsys.readouterr().out.splitlines() == [
        f"{ssh} --command 'cd igpt && pip install -e .'",
        f"{ssh} --command 'cd igpt && igpt-train --config configs/tiny.py --workdir "
        "gs://bkt/runs/a --config.model.width=256 --config.distributed.initialize=cluster'"]


@pytest.mark.parametrize("workdir, message", [
    (None, "has no --workdir"), ("runs/a", "--workdir runs/a is local to each TPU host")])
def test_tpu_needs_shared_workdir(workdir, message, capsys):
    command = ["igpt-train", "--config", "c.py"] + (["--workdir", workdir] if workdir else [])
    with pytest.raises(SystemExit):
        load("launch_tpu_pod").main(["--name", "p", "--zone", "z", "--dry-run", "--", *command])
    assert message in capsys.readouterr().err


def test_slurm_dry_run_prints_script_and_sbatch(capsys):
    assert load("launch_slurm").main(["--nodes", "2", "--gpus-per-node", "4", "--time",
                                      "02:00:00", "--partition", "gpu", "--setup",
                                      "source .venv/bin/activate", "--dry-run",
                                      "--", *TRAIN]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "#!/bin/bash",
        "#SBATCH --job-name=igpt",
        "#SBATCH --nodes=2",
        "#SBATCH --ntasks-per-node=4",
        "#SBATCH --gres=gpu:4",
        "#SBATCH --time=02:00:00",
        "#SBATCH --output=slurm/%x-%j.out",
        "#SBATCH --open-mode=append",
        "#SBATCH --signal=TERM@120",
        "#SBATCH --requeue",
        "#SBATCH --partition=gpu",
        "# 8 jax processes, one per GPU (written by scripts/launch_slurm.py)",
        "set -eo pipefail",
        "source .venv/bin/activate",
        "srun --kill-on-bad-exit=1 igpt-train --config configs/tiny.py --workdir "
        "gs://bkt/runs/a --config.model.width=256 --config.distributed.initialize=cluster",
        "sbatch slurm/igpt.sbatch"]


def test_two_local_processes_agree_on_a_global_sum():
    start = time.monotonic()
    proc = launch_local("--num-processes", "2", "--devices-per-process", "4", "--",
                        sys.executable, "tests/multiprocess_psum.py")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, out + err
    results = sorted(line for line in out.splitlines() if "RESULT" in line)
    # global array 1..8 over 8 devices in 2 processes: sum 36 everywhere
    assert results == ["[p0] RESULT process=0 coordinator=True sum=36 psum=[36]",
                       "[p1] RESULT process=1 coordinator=False sum=36 psum=[36]"]
    print(f"2-process run took {time.monotonic() - start:.1f}s")


def test_failing_process_stops_the_rest():
    child = ("import os, sys, time\n"
             "if os.environ['IGPT_PROCESS_ID'] == '1': sys.exit(3)\n"
             "time.sleep(60)")
    start = time.monotonic()
    proc = launch_local("--num-processes", "2", "--", sys.executable, "-c", child)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 3
    assert "process 1 exited with status 3; stopping the others" in err
    assert time.monotonic() - start < 30  # the sleeping process was stopped, not waited for


def test_sigterm_reaches_every_process():
    child = "import os, time; print('pid', os.getpid(), flush=True); time.sleep(60)"
    proc = launch_local("--num-processes", "2", "--", sys.executable, "-c", child)
    pids = [int(proc.stdout.readline().split()[-1]) for _ in range(2)]
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + signal.SIGTERM, err  # the copies died of it: nothing saved
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_copies_that_save_and_exit_0_on_sigterm_make_the_launcher_exit_0():
    """What a trainer does on SIGTERM (save, exit 0) is a clean stop, as the README says; SIGINT
    takes the same path (status_after_signal)."""
    child = ("import os, signal, sys, time\n"
             "signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))\n"
             "print('ready', flush=True); time.sleep(60)")
    proc = launch_local("--num-processes", "2", "--", sys.executable, "-c", child)
    assert [proc.stdout.readline().split()[-1] for _ in range(2)] == ["ready", "ready"]
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err


def test_status_after_a_forwarded_signal():
    status = load("launch_local").status_after_signal
    assert status([0, 0], signal.SIGTERM) == 0
    assert status([0, None], signal.SIGTERM) == 128 + signal.SIGTERM  # one had to be killed
    assert status([0, 3], signal.SIGINT) == 3
    assert status([-signal.SIGTERM, 0], signal.SIGTERM) == 128 + signal.SIGTERM


def readme_launcher_commands() -> list[list[str]]:
    """Every `python scripts/launch_*.py` command in the README's launcher section, as pasted
    (backslash continuations joined), split as a shell would."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Launching on many devices", 1)[1].split("\n## ", 1)[0]
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            if line.strip().startswith("python scripts/launch_"):
                commands.append(shlex.split(line))
    return commands


def test_readme_launcher_commands_run_as_pasted_with_dry_run(capsys):
    """Each launcher command the README shows, with --dry-run added before its `--`: exit 0 and
    the command each process runs, --workdir included, in what it would launch."""
    commands = readme_launcher_commands()
    assert sorted(Path(c[1]).stem for c in commands) == ["launch_local", "launch_slurm", "launch_tpu_pod"]
    for argv in commands:
        split = argv.index("--")
        assert load(Path(argv[1]).stem).main([*argv[2:split], "--dry-run", *argv[split:]]) == 0, argv
        printed = capsys.readouterr().out
        assert shlex.join(argv[split + 1:]) in printed, (argv, printed)
