"""The report over fake experiments with planted speedups (no jax, no accelerator): one in
today's layout (one eval split, 3 seeds) and one in the new (validation and test splits, held-out
scratch seeds, a learning-rate grid, a control arm, FLOPs per token)."""
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from igpt.commands.report import main
from igpt.training.metrics import MetricsWriter
from igpt.training.rundir import RunDir
from igpt.transfer.arms import SCRATCH
from igpt.transfer.intervals import Estimate
from igpt.transfer.report import write_report
from igpt.transfer.report.render import fmt_estimate

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


def write_run(path: Path, info: dict, paces: dict[str, float] | None, last_step: int = 1000,
              offsets: dict[str, float] | None = None) -> None:
    """A run dir: run.json, and per split in `paces` an eval curve at that pace (plus
    `offsets[split]` bits), with train records."""
    path.mkdir(parents=True)
    RunDir(path).update_info(**info)
    if paces is None:
        return
    writer = MetricsWriter(RunDir(path).metrics)
    for s in STEPS[STEPS <= last_step]:
        common = {"step": int(s), "tokens_seen": int(s) * TOKENS_PER_STEP, "wall_time": 0.0}
        for split, pace in paces.items():
            b = float(bits_curve(s, pace)) + (offsets or {}).get(split, 0.0)
            writer.write({**common, "split": split, "loss": b * math.log(2), "bits_per_token": b})
        b = float(bits_curve(s, next(iter(paces.values())))) + 0.1
        writer.write({**common, "split": "train", "loss": b * math.log(2), "bits_per_token": b,
                      "lr": 1e-3, "grad_norm": 1.0, "step_time": 0.1, "tokens_per_s": 1e5})
    writer.close()


def arm_dir(exp: Path, arm: str, lr: float, seed: int) -> Path:
    return exp / "target" / arm.replace("/", "__") / f"lr{lr:g}" / f"seed{seed}"


def make_experiment(root: Path) -> Path:
    """Today's layout: 3 seeds x 2 lrs x (scratch + 2 arms), one "eval" split; one run with no
    metrics, one in progress."""
    exp = root / "prose_music_to_images"
    exp.mkdir()
    (exp / "experiment.json").write_text(json.dumps({
        "name": "prose_music_to_images", "target": "images16", "sources": ["prose", "music"],
        "arms": list(ARMS), "seeds": list(SEED_PACE), "lrs": [GOOD, BAD], "complete": False}))
    for src in ("prose", "music"):
        write_run(exp / "sources" / src, {"name": src, "role": "source", "source": src,
                                          "finished": True}, {"eval": 1.0})
    for arm, (k, best) in ARMS.items():
        for lr in (GOOD, BAD):
            for seed, pace in SEED_PACE.items():
                d = arm_dir(exp, arm, lr, seed)
                info = {"name": f"{arm}-{lr:g}-{seed}", "role": "target", "arm": arm, "seed": seed,
                        "lr": lr, "mode": "full", "source": arm.split("/")[0], "finished": True}
                # The worse rate learns at 60% of the pace: higher final loss.
                p = {"eval": pace * k * (1.0 if lr == best else 0.6)}
                if arm == "music/frozen_body" and lr == BAD and seed == 1:
                    write_run(d, {**info, "finished": False}, None)          # no metrics yet
                elif arm == "music/frozen_body" and lr == BAD and seed == 2:
                    write_run(d, {**info, "finished": False}, p, last_step=400)  # in progress
                else:
                    write_run(d, info, p)
    return exp


# The new layout. Compared seeds, and scratch seeds held out for the targets (slow ones: their
# worst final loss, 2.875 bits/token, is reached by every compared scratch seed).
NEW_PACE = {0: 1.0, 1: 1.1, 2: 0.95, 3: 1.05, 4: 0.98}
HELD_OUT_PACE = {10: 0.9, 11: 0.85}
LRS = (1e-4, 3e-4, 1e-3)
FLOPS_PER_TOKEN = 6e6
# arm: (mode, source, planted speedup, per-seed jitter of that speedup, best rate)
NEW_ARMS = {
    SCRATCH: ("scratch", None, 1.0, [1.0] * 5, 3e-4),
    "prose/full": ("full", "prose", 2.0, [1.0, 1.04, 0.97, 1.02, 0.98], 3e-4),
    "prose/stats_init": ("stats_init", "prose", 1.25, [0.98, 1.0, 1.03, 0.99, 1.01], 3e-4),
    "music/full": ("full", "music", 1.0, [0.93, 1.05, 1.0, 0.97, 1.06], 3e-4),
    "music/frozen_body": ("frozen_body", "music", 0.5, [1.0] * 5, 1e-3),  # never reaches 2.875
}


def lr_paces(lr: float, best: float) -> dict[str, float]:
    """Validation picks `best`; on test the smallest rate would look best (a trap: choosing on
    test would pick it)."""
    return {"validation": 1.0 if lr == best else 0.6, "test": 1.3 if lr == LRS[0] else 1.0 if lr == best else 0.6}


def make_new_experiment(root: Path) -> Path:
    exp = root / "new_layout"
    exp.mkdir()
    (exp / "experiment.json").write_text(json.dumps({
        "name": "new_layout", "target": "images16", "sources": ["prose", "music"],
        "arms": list(NEW_ARMS), "seeds": list(NEW_PACE), "lrs": list(LRS), "complete": True}))
    for src in ("prose", "music"):
        write_run(exp / "sources" / src, {"name": src, "role": "source", "source": src, "finished": True,
                                          "flops_per_token": FLOPS_PER_TOKEN}, {"validation": 1.0, "test": 1.0})
    for arm, (mode, source, k, jitter, best) in NEW_ARMS.items():
        seeds = {**NEW_PACE, **HELD_OUT_PACE} if arm == SCRATCH else NEW_PACE
        for lr in LRS:
            for i, (seed, pace) in enumerate(seeds.items()):
                f = lr_paces(lr, best)
                j = jitter[i] if i < len(jitter) else 1.0
                write_run(arm_dir(exp, arm, lr, seed),
                          {"role": "target", "arm": arm, "seed": seed, "lr": lr, "mode": mode, "source": source,
                           "finished": True, "flops_per_token": FLOPS_PER_TOKEN},
                          {split: pace * k * j * f[split] for split in ("validation", "test")},
                          offsets={"test": 0.02})
    return exp


@pytest.fixture(scope="module")
def experiment(tmp_path_factory) -> Path:
    return make_experiment(tmp_path_factory.mktemp("exp"))


@pytest.fixture(scope="module")
def report(experiment, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "out"
    return out, write_report([experiment], out)


@pytest.fixture(scope="module")
def new_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("new_report") / "out"
    summary = write_report([make_new_experiment(tmp_path_factory.mktemp("new"))], out)
    return out, summary["experiments"][0]


def test_report_files_exist_and_html_is_self_contained(report):
    out, summary = report
    for name in ["report.html", "report.md", "summary.json"] + summary["figures"]:
        assert (out / name).is_file(), name
    assert "prose_music_to_images_eval.png" in summary["figures"]
    assert "prose_music_to_images_train.png" in summary["figures"]
    assert "prose_music_to_images_speedup_vs_target.png" in summary["figures"]
    page = (out / "report.html").read_text()
    assert page.count("src='data:image/png;base64,iVBORw0KGgo") == len(summary["figures"])
    assert json.loads((out / "summary.json").read_text()) == summary
    assert not list(out.parent.glob(".out.*"))  # no temporary directory left behind


def test_three_seeds_give_a_range_never_a_95_percent_interval(report):
    out, summary = report
    (exp,) = summary["experiments"]
    assert exp["status"] == "in progress" and exp["target"] == "images16"
    for arm, (k, _) in ARMS.items():
        if arm == SCRATCH:
            continue
        h = exp["headline"][arm]
        assert h["reached"] and h["interval"] == "range" and h["n_censored"] == 0
        assert (h["speedup"], h["lo"], h["hi"]) == pytest.approx((k, k, k), rel=1e-9)
        assert (h["n_exact"], h["n_reached"], h["n_seeds"]) == (3, 3, 3)
    md = (out / "report.md").read_text()
    assert "2.00× [2.00, 2.00] (range over 3 seeds) · 3/3 exact" in md
    assert "95%" not in " ".join(exp["terminal"]) and "95% bootstrap" not in md


def test_old_runs_say_selection_and_reporting_share_one_split(report):
    out, summary = report
    exp = summary["experiments"][0]
    assert exp["one_split"] and exp["reported_split"] == "eval"
    assert "These runs wrote one eval split" in (out / "report.md").read_text()


def test_without_fixed_or_held_out_targets_they_are_provisional_and_claim_nothing(report):
    out, summary = report
    exp = summary["experiments"][0]
    assert exp["target_source"] == "provisional" and exp["held_out_seeds"] == []
    # Not the worst scratch seed's final loss (pace 0.9): the seed-mean loss at 60% of the budget.
    assert exp["targets"][-1] != pytest.approx(float(bits_curve(1000, 0.9)))
    assert exp["targets"][-1] == pytest.approx(float(np.mean([bits_curve(600, p) for p in SEED_PACE.values()])))
    for arm in ("prose/full", "music/frozen_body"):
        claim = exp["headline"][arm]["claim"]
        assert claim["verdict"] == "no_claim"
        assert any("compared scratch seeds" in r for r in claim["reasons"])
        assert any("no control arm ran" in r for r in claim["reasons"])
    assert "descriptive, not a claim" in (out / "report.md").read_text()


def test_each_arm_is_compared_at_its_best_lr_and_a_two_rate_grid_is_all_edge(report):
    _, summary = report
    exp = summary["experiments"][0]
    assert exp["several_lrs"]
    assert {a: c["lr"] for a, c in exp["lr_selection"].items()} == {
        a: best for a, (_, best) in ARMS.items()}
    assert exp["lr_at_grid_edge"] == sorted(ARMS)


def test_table_shows_planted_speedup_and_names_problem_runs(report):
    out, summary = report
    page = (out / "report.html").read_text()
    md = (out / "report.md").read_text()
    for text in (page, md):
        assert "1.50× [1.50, 1.50] (range over 3 seeds) · 3/3 exact" in text
        assert "IN PROGRESS" in text and "best" in text
        assert "Effective data transferred" not in text
    no_metrics = "target/music__frozen_body/lr0.0003/seed1 (arm=music/frozen_body, lr=0.0003, seed=1)"
    assert summary["runs_without_metrics"] == [f"prose_music_to_images: {no_metrics}"]
    assert no_metrics in page and no_metrics in md
    assert any("seed2" in r for r in summary["runs_in_progress"])
    assert "Runs with no metrics (1)" in page
    assert "](prose_music_to_images_eval.png)" in md


def test_interval_words_say_how_far_to_trust_them():
    assert fmt_estimate(Estimate(1.93, 1.41, 2.64, "t", 5, 0.95)) == "1.93× [1.41, 2.64] (95% t-interval, 5 seeds)"
    assert fmt_estimate(Estimate(1.93, 1.41, 2.64, "range", 3, 0.95)) == "1.93× [1.41, 2.64] (range over 3 seeds)"
    assert fmt_estimate(Estimate(1.93, None, None, "none", 1, 0.95)) == "1.93× (1 seed, no interval)"
    assert fmt_estimate(Estimate(0.0097, 0.0067, 0.014, "t", 5, 0.95)) == \
        "0.0097× [0.0067, 0.014] (95% t-interval, 5 seeds)"  # not "0.01× [0.01, 0.01]"


def test_unreached_target_is_censored_and_counted(experiment, tmp_path):
    summary = write_report([experiment], tmp_path / "r", targets=[1.0])
    exp = summary["experiments"][0]
    assert exp["target_source"] == "given"
    h = exp["headline"]["prose/full"]
    assert not h["reached"] and h["speedup"] is None and h["n_reached"] == 0
    assert "no seed gives a ratio" in (tmp_path / "r" / "report.html").read_text()


def test_planted_2x_arm_gives_2x_with_a_t_interval_around_it(new_report):
    _, exp = new_report
    h = exp["headline"]["prose/full"]
    jitter = NEW_ARMS["prose/full"][3]
    assert h["interval"] == "t" and (h["n_exact"], h["n_seeds"]) == (5, 5)
    assert h["speedup"] == pytest.approx(2.0 * np.exp(np.mean(np.log(jitter))), rel=1e-9)
    assert 1.0 < h["lo"] < 2.0 < h["hi"]
    line = next(t for t in exp["terminal"] if t.startswith("  prose/full:"))
    assert f"[{h['lo']:.2f}, {h['hi']:.2f}] (95% t-interval, 5 seeds)" in line


def test_null_arm_interval_includes_one(new_report):
    _, exp = new_report
    h = exp["headline"]["music/full"]
    assert h["interval"] == "t" and h["lo"] < 1.0 < h["hi"]


def test_censored_seeds_are_shown_and_counted_not_dropped(new_report):
    out, exp = new_report
    h = exp["headline"]["music/frozen_body"]
    assert (h["n_seeds"], h["n_exact"], h["n_censored"], h["n_reached"]) == (5, 1, 4, 1)
    assert h["bound"]["side"] == "at_most" and h["bound"]["value"] < 1.0
    assert "1/5 exact, 4 arm never reached; over all seeds ≤" in (out / "report.md").read_text()
    assert any("censored" in r for r in h["claim"]["reasons"])


def test_targets_come_from_held_out_scratch_seeds(new_report):
    _, exp = new_report
    assert exp["target_source"] == "held_out" and exp["held_out_seeds"] == [10, 11]
    # The held-out seeds' mean test loss at 60% of the budget (test is 0.02 bits above validation
    # here); no compared seed took part.
    assert exp["targets"][-1] == pytest.approx(
        float(np.mean([bits_curve(600, p) for p in HELD_OUT_PACE.values()])) + 0.02)
    assert exp["comparison"]["arms"]["prose/full"]["seeds"] == list(NEW_PACE)
    assert sorted(int(s) for s in exp["comparison"]["baseline_steps"][0]["per_seed"]) == list(NEW_PACE)


def test_rates_are_chosen_on_validation_and_speedups_read_on_test(new_report):
    _, exp = new_report
    assert not exp["one_split"] and exp["reported_split"] == "test"
    assert {a: c["lr"] for a, c in exp["lr_selection"].items()} == {a: v[4] for a, v in NEW_ARMS.items()}
    assert exp["lr_at_grid_edge"] == ["music/frozen_body"]
    # Scratch seed 0 (pace 1) reaches the hardest target on test (0.02 bits above validation).
    target = exp["targets"][-1]
    steps = exp["comparison"]["baseline_steps"][-1]["per_seed"]["0"]
    assert steps == pytest.approx((5.0 + 0.02 - target) / 0.0025)


def test_flops_speedup_counts_the_source_pretraining(new_report):
    _, exp = new_report
    per_seed = exp["comparison"]["arms"]["prose/full"]["targets"][-1]["speedup"]["per_seed"]
    # Tokens are steps x 4096 for both; the source pretrained 1000 steps at the same FLOPs/token.
    expected = [s["baseline"] / (s["arm"] + 1000.0) for s in per_seed.values()]
    h = exp["headline"]["prose/full"]
    assert h["flops"]["mean"] == pytest.approx(np.exp(np.mean(np.log(expected))), rel=1e-9)
    assert h["flops"]["mean"] < 1.0 < h["speedup"]  # faster in steps, not end to end


def test_flops_speedup_counts_a_shipped_donors_training_and_a_bridge_stage(tmp_path):
    """Sources given as donors: prose's training FLOPs come from experiment.json (what donor.json
    recorded), music's are unknown (an imported model): no FLOPs speedup for it, said in a note.
    A bridge run of prose/full adds its FLOPs to that arm alone."""
    exp = make_new_experiment(tmp_path)
    shutil.rmtree(exp / "sources")
    meta = json.loads((exp / "experiment.json").read_text())
    donor = 500 * TOKENS_PER_STEP * FLOPS_PER_TOKEN
    meta.update(donors={"prose": "shipped:prose", "music": "hf:gpt2"}, donor_flops={"prose": donor, "music": None})
    (exp / "experiment.json").write_text(json.dumps(meta))
    write_run(exp / "bridges" / "prose__full", {"role": "bridge", "arm": "prose/full", "source": "prose",
                                               "finished": True, "flops_per_token": FLOPS_PER_TOKEN},
              {"validation": 1.0}, last_step=200)
    got = write_report([exp], tmp_path / "report")["experiments"][0]
    for arm, before in (("prose/full", 500 + 200), ("prose/stats_init", 500)):
        per_seed = got["comparison"]["arms"][arm]["targets"][-1]["speedup"]["per_seed"]
        expected = [s["baseline"] / (s["arm"] + before) for s in per_seed.values() if s["arm"] is not None]
        assert got["headline"][arm]["flops"]["mean"] == pytest.approx(np.exp(np.mean(np.log(expected))), rel=1e-9)
    assert got["headline"]["music/full"]["flops"] is None
    assert any(n.startswith("No FLOPs speedup for music/frozen_body, music/full:") for n in got["notes"])


def test_transfer_is_claimed_against_the_best_control(new_report):
    out, exp = new_report
    assert exp["controls"] == ["prose/stats_init"]
    h = exp["headline"]["prose/full"]
    assert h["control"] == "prose/stats_init" and h["claim"] == {"verdict": "transfer", "reasons": []}
    ratio = np.array(NEW_ARMS["prose/full"][3]) * 2.0 / (np.array(NEW_ARMS["prose/stats_init"][3]) * 1.25)
    assert h["vs_control"]["mean"] == pytest.approx(np.exp(np.mean(np.log(ratio))), rel=1e-9)
    # As fast as scratch, slower than the control: no evidence of transfer.
    assert exp["headline"]["music/full"]["claim"]["verdict"] == "no_evidence"
    assert exp["headline"]["prose/stats_init"]["claim"] is None            # a control claims nothing
    assert "Claim for prose/full" in (out / "report.md").read_text()


def test_one_shared_rate_cannot_support_a_claim(tmp_path):
    exp = tmp_path / "one_rate"
    exp.mkdir()
    (exp / "experiment.json").write_text(json.dumps({"name": "one_rate", "arms": [SCRATCH, "prose/full"],
                                                     "seeds": [0, 1], "lrs": [GOOD], "complete": True}))
    for arm, k in ((SCRATCH, 1.0), ("prose/full", 2.0)):
        for seed in (0, 1):
            write_run(arm_dir(exp, arm, GOOD, seed), {"role": "target", "arm": arm, "seed": seed, "lr": GOOD},
                      {"eval": k})
    summary = write_report([exp], tmp_path / "r")
    exp_summary = summary["experiments"][0]
    assert not exp_summary["several_lrs"] and exp_summary["lr_at_grid_edge"] == []
    reasons = exp_summary["headline"]["prose/full"]["claim"]["reasons"]
    assert any("Rothermel" in r for r in reasons)
    assert "cannot support a transfer claim" in (tmp_path / "r" / "report.md").read_text()


def test_single_run_dirs_and_rewrite_in_place(experiment, tmp_path):
    run = experiment / "sources" / "prose"
    out = tmp_path / "r"
    first = write_report([run], out, log_x=True)
    assert first["experiments"] == [] and first["single_runs"][0]["status"] == "finished"
    second = write_report([run], out)  # an existing report is replaced whole
    assert second["single_runs"] == first["single_runs"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]


def test_an_experiment_is_named_as_given_and_summary_keeps_its_full_path(experiment, tmp_path, monkeypatch):
    monkeypatch.chdir(experiment.parent)
    summary = write_report([experiment.name], tmp_path / "out")
    assert f"Experiment prose_music_to_images ({experiment.name}) is IN PROGRESS" in \
        (tmp_path / "out" / "report.md").read_text()
    assert summary["experiments"][0]["dir"] == str(experiment)


def test_refuses_to_replace_a_directory_that_is_not_a_report(experiment, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not an igpt report"):
        write_report([experiment], tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_cli_writes_report_and_prints_headline(experiment, tmp_path, capsys):
    assert main([str(experiment), "--out", str(tmp_path / "r"), "--targets", "4.0,3.0"]) == 0
    printed = capsys.readouterr().out
    assert "prose/full: 2.00x [2.00, 2.00] (range over 3 seeds) to 3.000 bits/token; 3/3 seeds reached it" in printed
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


def test_a_directory_mixing_training_transfer_and_tokenizer_runs_reports_each(tmp_path, monkeypatch):
    from igpt.transfer.report import headline
    gpt_run, vq_run = tmp_path / "runs" / "tiny", tmp_path / "runs" / "vq_audio"
    write_run(gpt_run, {"role": "single", "params": 98944}, {"test": 1.0}, last_step=50)  # one eval: a marker
    RunDir(gpt_run).write_config({"model": {"num_layers": 2, "width": 64}, "optim": {"lr": 0.01},
                                  "train": {"steps": 200}, "data": {"source": "shipped:digits", "tokenizer": "gray:16"}})
    vq_run.mkdir(parents=True)
    (vq_run / "metrics.jsonl").write_text(json.dumps({"step": 10, "split": "eval", "loss": 0.1, "snr": 9.0}) + "\n")
    make_experiment(tmp_path / "runs")
    monkeypatch.chdir(tmp_path)
    summary = write_report(["runs"], tmp_path / "report", targets=[4.9, 2.0])
    assert [r["label"] for r in summary["single_runs"]] == ["runs/tiny"]  # as the user wrote it
    assert len(summary["experiments"]) == 1 and summary["experiments"][0]["headline"]
    assert len(summary["runs_left_out"]) == 1 and "vq_audio" in summary["runs_left_out"][0]
    assert "left out" in headline(summary, tmp_path / "report")
    md = (tmp_path / "report" / "report.md").read_text()
    headings = [line for line in md.splitlines() if line.startswith("#")]
    assert len(headings) == len(set(headings)), "no heading twice"
    row = next(line for line in md.splitlines() if line.startswith("| runs/tiny "))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1:8] == ["in progress", "2 x 64", "98,944", "0.01", "50 of 200", "shipped:digits", "gray:16"]
    assert cells[-2] == "50" and cells[-1] == "not reached"  # its one eval, at step 50, is at 4.875 bits


def _two_stage_experiment(root: Path, lr_seeds: list[int]) -> Path:
    """scratch and prose/full, seeds 0-4; seeds 0 and 1 ran both rates, where GOOD is better;
    seeds 2-4 ran GOOD only and have high validation losses, which would tip an all-seed mean
    towards BAD."""
    exp = root / f"two_stage_{len(lr_seeds)}"
    exp.mkdir()
    (exp / "experiment.json").write_text(json.dumps({
        "name": "two stages", "target": "images", "sources": ["prose"], "arms": [SCRATCH, "prose/full"],
        "seeds": [0, 1, 2, 3, 4], "heldout_seeds": [], "lr_seeds": lr_seeds, "lrs": [GOOD, BAD],
        "complete": True}))
    for arm in (SCRATCH, "prose/full"):
        for seed in range(5):
            for lr in ((GOOD, BAD) if seed < 2 else (GOOD,)):
                info = {"role": "target", "arm": arm, "seed": seed, "lr": lr, "finished": True,
                        "mode": "full" if arm != SCRATCH else SCRATCH, "source": None}
                pace = 1.0 if lr == GOOD else 0.6
                write_run(arm_dir(exp, arm, lr, seed), info, {"validation": pace, "test": pace},
                          offsets={"validation": 0.0 if seed < 2 else 5.0})
    return exp


def test_rates_are_chosen_on_the_lr_seeds_alone_and_cells_left_are_named(tmp_path):
    from igpt.transfer.report.analysis import choose_rates
    from igpt.transfer.report.collect import discover, read_experiment

    def read(exp):
        owned, _ = discover([exp])
        return read_experiment(exp, owned[exp.resolve()])

    two_stage = read(_two_stage_experiment(tmp_path, lr_seeds=[0, 1]))
    choice = choose_rates(two_stage)
    assert {arm: c.lr for arm, c in choice.items()} == {SCRATCH: GOOD, "prose/full": GOOD}
    assert {s.lr: s.n_seeds for s in choice[SCRATCH].scores} == {GOOD: 2, BAD: 2}
    assert two_stage.not_started == []
    all_seeds = read(_two_stage_experiment(tmp_path, lr_seeds=[]))
    assert {c.lr for c in choose_rates(all_seeds).values()} == {BAD}, "every seed votes: the high losses tip it"
    assert "arm=scratch, lr=0.0003, seed=2" in all_seeds.not_started  # every seed should have run every rate
    shutil.rmtree(arm_dir(two_stage.dir, "prose/full", GOOD, 3))
    assert read(two_stage.dir).not_started == ["arm=prose/full, seed=3 (at its chosen rate)"]
    write_report([two_stage.dir], tmp_path / "report")
    assert "chosen on validation over seeds [0, 1]" in (tmp_path / "report" / "report.md").read_text()


def _scratch_bits(tokens: float) -> float:
    return 2.0 + 50.0 * tokens ** -0.3


PLANTED_WORTH = {SCRATCH: lambda d: d, "prose/full": lambda d: 3.0 * d, "noise/full": lambda d: 0.5 * d}


def _sweep_experiment(root: Path, flat_scratch_seed: int | None = None, name: str = "sweep",
                      params: float = 98944, worth=PLANTED_WORTH) -> Path:
    """Runs whose early-stopped test loss is planted: an arm trained on D tokens reaches scratch's
    L(worth[arm](D)); by default prose/full is worth 3 D (D_T = 2 D_F) and noise/full D / 2
    (ossified). A flat scratch seed has the same loss at every size (not data-limited)."""
    exp = root / name
    exp.mkdir()
    sizes, scratch_only, seeds = [100, 300, 1000], [3000, 10000], range(5)
    (exp / "experiment.json").write_text(json.dumps({
        "name": name, "target": "images", "sources": ["prose", "noise"], "arms": list(worth),
        "seeds": list(seeds), "lrs": [GOOD], "target_sizes": sizes, "scratch_sizes": scratch_only, "complete": True}))
    for arm, worth_of in worth.items():
        for n in sizes + (scratch_only if arm == SCRATCH else []):
            for seed in seeds:
                flat = arm == SCRATCH and seed == flat_scratch_seed
                best = _scratch_bits(worth_of(64 * (100 if flat else n))) + 0.01 * seed  # a seed's offset: all arms
                d = exp / "target" / arm.replace("/", "__") / f"n{n}" / f"lr{GOOD:g}" / f"seed{seed}"
                d.mkdir(parents=True)
                RunDir(d).update_info(role="target", arm=arm, seed=seed, lr=GOOD, mode="full", finished=True,
                                      train_examples=n, train_tokens=64 * n, non_embedding_params=params)
                writer = MetricsWriter(RunDir(d).metrics)
                for step, over in ((50, 0.6), (100, 0.1), (150, 0.0), (200, 0.3)):  # overfits after step 150
                    for split, extra in (("validation", 0.0), ("test", 0.02)):
                        b = best + over + extra
                        writer.write({"step": step, "split": split, "tokens_seen": step * 4096,
                                      "loss": b * math.log(2), "bits_per_token": b})
                writer.close()
    return exp


def test_sweeps_at_two_model_sizes_give_back_a_planted_scaling_law(tmp_path):
    k, alpha, beta = 1.0, 0.5, 0.4  # D_T = k D_F^alpha N^beta, inside scratch's range at every D_F
    law = lambda n_params: {SCRATCH: lambda d: d, "prose/full": lambda d: d + k * d ** alpha * n_params ** beta}
    small = _sweep_experiment(tmp_path, name="small", params=1e5, worth=law(1e5))
    large = _sweep_experiment(tmp_path, name="large", params=4e5, worth=law(4e5))
    one = write_report([small], tmp_path / "one")["scaling_laws"]["prose/full"]
    assert one["status"] == "too few positive points" and len(one["points"]) == 3 and one["k"] is None
    fitted = write_report([small, large], tmp_path / "both")["scaling_laws"]["prose/full"]
    assert fitted["status"] == "fit" and len(fitted["points"]) == 6
    assert fitted["k"] == pytest.approx(k, rel=0.15)
    assert fitted["alpha"] == pytest.approx(alpha, abs=0.02) and fitted["beta"] == pytest.approx(beta, abs=0.02)
    assert fitted["alpha_interval"][0] <= fitted["alpha"] <= fitted["alpha_interval"][1]
    md = (tmp_path / "both" / "report.md").read_text()
    assert "Scaling of effective data transferred across model sizes" in md and "α = 0.50" in md


def test_a_data_size_sweep_gives_back_a_planted_effective_data_multiplier(tmp_path):
    sizes = [100, 300, 1000]
    exp = _sweep_experiment(tmp_path)
    summary = write_report([exp], tmp_path / "report")
    cells = {(c["arm"], c["examples"]): c["result"] for c in summary["experiments"][0]["effective_data"]["cells"]}
    for n in sizes:
        prose, noise = cells["prose/full", n], cells["noise/full", n]
        assert prose["n_exact"] == 5 and prose["multiplier"]["mean"] == pytest.approx(3.0, rel=0.05)
        assert prose["d_t"]["mean"] == pytest.approx(2 * 64 * n, rel=0.05) and prose["d_t"]["kind"] == "t"
        if n > 100:  # at the smallest size D_E = D_F / 2 lies below scratch's range: extrapolated, counted
            assert noise["d_t"]["hi"] < 0 and noise["multiplier"]["mean"] == pytest.approx(0.5, rel=0.05)
    assert cells["noise/full", 100]["n_extrapolated"] == 5
    md = (tmp_path / "report" / "report.md").read_text()
    assert "sweep: effective data transferred (data-size sweep)" in md and "ossified" in md
    assert "too few positive points" in md  # one model size: prose/full's three D_F, noise/full ossified
    assert (tmp_path / "report" / "sweep_effective_data.png").stat().st_size > 10_000


def test_a_scratch_seed_that_is_not_data_limited_is_left_out_with_a_note(tmp_path):
    summary = write_report([_sweep_experiment(tmp_path, flat_scratch_seed=2)], tmp_path / "report")
    sweep = summary["experiments"][0]["effective_data"]
    assert any("seed 2 left out" in n for n in sweep["notes"])
    prose = {c["examples"]: c["result"] for c in sweep["cells"] if c["arm"] == "prose/full"}
    assert prose[300]["n_exact"] == 4 and prose[300]["multiplier"]["mean"] == pytest.approx(3.0, rel=0.05)


def test_a_bridge_run_is_part_of_its_arm_not_a_run_left_out(tmp_path):
    from test_gcs_report import _experiment

    exp = tmp_path / "exp"
    _experiment(exp)
    write_run(exp / "bridges" / "prose__bridge", {"role": "bridge", "source": "prose", "finished": True},
              {"validation": 1.0})
    write_run(exp / "odd", {"role": "mystery", "finished": True}, {"validation": 1.0})
    skipped = write_report([exp], tmp_path / "report")["experiments"][0]["skipped"]
    assert skipped == ["odd: run.json role 'mystery', not source, bridge or target"]
