"""The report over a fake experiment with planted speedups (no jax, no accelerator)."""
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from igpt.commands.report import main
from igpt.training.metrics import MetricsWriter
from igpt.training.rundir import RunDir
from igpt.transfer.arms import SCRATCH, parse_arm
from igpt.transfer.metrics import ArmResult, Interval, StepsToTarget, TargetResult
from igpt.transfer.report import write_report
from igpt.transfer.report.analysis import headline_of
from igpt.transfer.report.render import headline_text

REPO = Path(__file__).resolve().parents[1]
STEPS = np.arange(50, 1001, 50)  # like the trainer: the first eval is after eval_every steps
TOKENS_PER_STEP = 4096
SEED_PACE = {0: 1.0, 1: 1.1, 2: 0.9}
GOOD, BAD = 1e-3, 3e-4
# Each arm's speedup over scratch at its best rate (planted), and which rate is best.
ARMS = {SCRATCH: (1.0, GOOD), "prose/full": (2.0, BAD), "music/frozen_body": (1.5, GOOD)}


def bits_curve(step: np.ndarray, pace: float) -> np.ndarray:
    """Linear fall then a floor: linear interpolation is exact, so speedups are exact."""
    return np.maximum(5.0 - 0.0025 * pace * step, 2.2)


def write_run(path: Path, info: dict, pace: float | None, last_step: int = 1000) -> None:
    path.mkdir(parents=True)
    RunDir(path).update_info(**info)
    if pace is None:
        return
    writer = MetricsWriter(RunDir(path).metrics)
    for s in STEPS[STEPS <= last_step]:
        b = float(bits_curve(s, pace))
        common = {"step": int(s), "tokens_seen": int(s) * TOKENS_PER_STEP, "wall_time": 0.0}
        writer.write({**common, "split": "eval", "loss": b * math.log(2), "bits_per_token": b})
        writer.write({**common, "split": "train", "loss": (b + 0.1) * math.log(2),
                      "bits_per_token": b + 0.1, "lr": 1e-3, "grad_norm": 1.0, "step_time": 0.1,
                      "tokens_per_s": 1e5})
    writer.close()


def make_experiment(root: Path) -> Path:
    """3 seeds x 2 lrs x (scratch + 2 arms); one run with no metrics, one in progress."""
    exp = root / "prose_music_to_images"
    exp.mkdir()
    (exp / "experiment.json").write_text(json.dumps({
        "name": "prose_music_to_images", "target": "images16", "sources": ["prose", "music"],
        "arms": list(ARMS), "seeds": list(SEED_PACE), "lrs": [GOOD, BAD], "complete": False}))
    for src in ("prose", "music"):
        write_run(exp / "sources" / src, {"name": src, "role": "source", "finished": True}, 1.0)
    for arm, (k, best) in ARMS.items():
        for lr in (GOOD, BAD):
            for seed, pace in SEED_PACE.items():
                d = exp / "target" / parse_arm(arm, ["prose", "music"], 2).dirname / f"lr{lr:g}" / f"seed{seed}"
                info = {"name": f"{arm}-{lr:g}-{seed}", "role": "target", "arm": arm, "seed": seed,
                        "lr": lr, "mode": "full", "source": arm.split("/")[0], "finished": True}
                # The worse rate learns at 60% of the pace: higher final loss.
                p = pace * k * (1.0 if lr == best else 0.6)
                if arm == "music/frozen_body" and lr == BAD and seed == 1:
                    write_run(d, {**info, "finished": False}, None)          # no metrics yet
                elif arm == "music/frozen_body" and lr == BAD and seed == 2:
                    write_run(d, {**info, "finished": False}, p, last_step=400)  # in progress
                else:
                    write_run(d, info, p)
    return exp


@pytest.fixture(scope="module")
def experiment(tmp_path_factory) -> Path:
    return make_experiment(tmp_path_factory.mktemp("exp"))


@pytest.fixture(scope="module")
def report(experiment, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "out"
    return out, write_report([experiment], out)


def test_report_files_exist_and_html_is_self_contained(report):
    out, summary = report
    for name in ["report.html", "report.md", "summary.json"] + summary["figures"]:
        assert (out / name).is_file(), name
    assert "prose_music_to_images_eval.png" in summary["figures"]
    assert "prose_music_to_images_train.png" in summary["figures"]
    page = (out / "report.html").read_text()
    assert page.count("src='data:image/png;base64,iVBORw0KGgo") == len(summary["figures"])
    assert json.loads((out / "summary.json").read_text()) == summary
    assert not list(out.parent.glob(".out.*"))  # no temporary directory left behind


def test_planted_speedups_with_intervals(report):
    _, summary = report
    (exp,) = summary["experiments"]
    assert exp["status"] == "in progress" and exp["target"] == "images16"
    for arm, (k, _) in ARMS.items():
        if arm == SCRATCH:
            continue
        h = exp["headline"][arm]
        assert h["reached"] and not h["lower_bound"]
        assert (h["speedup"], h["lo"], h["hi"]) == pytest.approx((k, k, k), rel=1e-9)
        assert (h["n_reached"], h["n_seeds"]) == (3, 3)
    # Lowest default target: the worst scratch seed's final loss (pace 0.9).
    assert exp["targets"][-1] == pytest.approx(float(bits_curve(1000, 0.9)))


def test_each_arm_is_compared_at_its_best_lr(report):
    _, summary = report
    exp = summary["experiments"][0]
    assert exp["several_lrs"]
    assert {a: c["lr"] for a, c in exp["lr_selection"].items()} == {
        a: best for a, (_, best) in ARMS.items()}


def test_table_shows_planted_speedup_and_names_problem_runs(report):
    out, summary = report
    page = (out / "report.html").read_text()
    md = (out / "report.md").read_text()
    for text in (page, md):
        assert "2.00× [2.00, 2.00] · 3/3 seeds" in text
        assert "1.50× [1.50, 1.50] · 3/3 seeds" in text
        assert "IN PROGRESS" in text and "best" in text
    no_metrics = "target/music__frozen_body/lr0.0003/seed1 (arm=music/frozen_body, lr=0.0003, seed=1)"
    assert summary["runs_without_metrics"] == [f"prose_music_to_images: {no_metrics}"]
    assert no_metrics in page and no_metrics in md
    assert any("seed2" in r for r in summary["runs_in_progress"])
    assert "Runs with no metrics (1)" in page
    assert "](prose_music_to_images_eval.png)" in md


def test_unreached_target_says_so(experiment, tmp_path):
    summary = write_report([experiment], tmp_path / "r", targets=[1.0])
    h = summary["experiments"][0]["headline"]["prose/full"]
    assert not h["reached"] and h["speedup"] is None
    assert "not reached (0/3 seeds)" in (tmp_path / "r" / "report.html").read_text()


def test_headline_rests_on_the_hardest_target_every_seed_reached():
    def target(bits, mean, n_reached):
        return TargetResult(target=bits, steps=StepsToTarget(bits, {}, n_reached, None), speedups={},
                            n_seeds=3, n_reached=n_reached,
                            interval=Interval(mean, mean - 0.1, mean + 0.1, n_reached), lower_bound=False)
    arm = ArmResult(arm="prose/full", seeds=[0, 1, 2], unpaired_seeds=[],
                    targets=[target(4.9, 0.7, 3), target(4.2, 0.8, 3), target(3.9, 1.01, 1)],
                    effective_data={}, transferred=None, fraction=None, effective_lower_bound=False)
    h = headline_of(arm)
    assert (h.target_bits, h.speedup, h.n_reached) == (4.2, 0.8, 3)
    assert not h.at_hardest and (h.hardest_bits, h.hardest_n_reached) == (3.9, 1)
    text = headline_text("prose/full", h, SCRATCH, given=False)
    assert "0.80× over scratch" in text and "to reach 4.200 bits/token" in text
    assert "Only 1/3 seeds reached scratch's final loss (3.900 bits/token)" in text


def test_single_run_dirs_and_rewrite_in_place(experiment, tmp_path):
    run = experiment / "sources" / "prose"
    out = tmp_path / "r"
    first = write_report([run], out, log_x=True)
    assert first["experiments"] == [] and first["single_runs"][0]["status"] == "finished"
    second = write_report([run], out)  # an existing report is replaced whole
    assert second["single_runs"] == first["single_runs"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]


def test_refuses_to_replace_a_directory_that_is_not_a_report(experiment, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not an igpt report"):
        write_report([experiment], tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_cli_writes_report_and_prints_headline(experiment, tmp_path, capsys):
    assert main([str(experiment), "--out", str(tmp_path / "r"), "--targets", "4.0,3.0"]) == 0
    printed = capsys.readouterr().out
    assert "prose/full: 2.00x [2.00, 2.00] (3/3 seeds)" in printed
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["experiments"][0]["targets"] == [4.0, 3.0]


def test_cli_rejects_missing_input_and_empty_dirs(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main([str(tmp_path / "nope"), "--out", str(tmp_path / "r")])
    assert e.value.code == 2 and "no such directory" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty"), "--out", str(tmp_path / "r")]) == 2
    assert "no runs found" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(tmp_path / "empty"), "--out", str(tmp_path / "r"), "--targets", "3.x"])
    assert not (tmp_path / "r").exists()


def test_cli_module_runs_without_importing_jax(experiment, tmp_path):
    code = ("import sys, runpy; sys.argv = ['igpt-report', sys.argv[1], '--out', sys.argv[2]]\n"
            "try:\n    runpy.run_module('igpt.commands.report', run_name='__main__')\n"
            "except SystemExit as e:\n    assert not e.code, e.code\n"
            "assert 'jax' not in sys.modules, 'jax was imported'\n")
    done = subprocess.run([sys.executable, "-c", code, str(experiment), str(tmp_path / "r")],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "report:" in done.stdout and (tmp_path / "r" / "report.html").is_file()


@pytest.mark.slow
@pytest.mark.skipif(not Path("/usr/bin/chromium").exists(),
                    reason="chromium is not installed (apt-get install -y chromium)")
def test_html_renders_in_headless_chromium(report, tmp_path):
    out, _ = report
    shot = tmp_path / "shot.png"
    subprocess.run(["bash", str(REPO / "scripts" / "screenshot_report.sh"),
                    str(out / "report.html"), str(shot)], check=True, timeout=120,
                   capture_output=True)
    from matplotlib.image import imread
    pixels = imread(shot)[..., :3]
    assert pixels.shape[:2] == (1600, 1200)
    rgb = (pixels * 255).astype(int).reshape(-1, 3)
    assert len(np.unique(rgb, axis=0)) > 50  # text and plots, not a blank page
    # The arms' line colours (matplotlib C1 orange, C2 green) appear only if the embedded
    # PNG figures were decoded and drawn.
    for colour in ((255, 127, 14), (44, 160, 44)):
        assert (np.abs(rgb - colour).max(axis=1) < 16).sum() > 200, colour
