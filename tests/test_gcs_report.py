"""igpt-report over an experiment in a bucket (the local GCS emulator), writing the report into the
bucket and locally: the same figures as from a local copy, a rewrite replaces the old report whole."""
from __future__ import annotations

import json

from test_report import arm_dir, write_run

from igpt.commands.report import main
from igpt.paths import forget_listings
from igpt.transfer.arms import SCRATCH

SEEDS = (0, 1, 2, 3, 4)


def _experiment(exp) -> None:
    """Scratch and a 1.5x prose arm at one rate, 5 seeds; `exp` local or in the bucket."""
    exp.mkdir(parents=True, exist_ok=True)
    (exp / "experiment.json").write_text(json.dumps({
        "name": "small", "target": "images16", "sources": ["prose"], "arms": [SCRATCH, "prose/full"],
        "seeds": list(SEEDS), "lrs": [1e-3], "complete": True}))
    write_run(exp / "sources" / "prose", {"name": "prose", "role": "source", "source": "prose", "finished": True},
              {"validation": 1.0, "test": 1.0})
    for arm, pace in ((SCRATCH, 1.0), ("prose/full", 1.5)):
        for seed in SEEDS:
            write_run(arm_dir(exp, arm, 1e-3, seed),
                      {"role": "target", "arm": arm, "seed": seed, "lr": 1e-3, "mode": arm.split("/")[-1],
                       "source": "prose" if arm != SCRATCH else None, "finished": True},
                      {split: pace * (1 + 0.05 * seed) for split in ("validation", "test")})


def _figures(summary: dict) -> dict:
    """The analysed numbers, without the paths they were read from."""
    return {k: v for k, v in summary["experiments"][0].items() if k not in ("dir", "sources_runs")}


def test_report_reads_a_bucket_and_writes_there_and_locally(tmp_path, gcs_root, capsys):
    local_exp, remote_exp = tmp_path / "exp", gcs_root / "exp"
    _experiment(local_exp)
    _experiment(remote_exp)
    forget_listings(gcs_root)

    assert main([str(local_exp), "--out", str(tmp_path / "from_local")]) == 0
    assert main([str(remote_exp), "--out", str(remote_exp / "report")]) == 0
    assert main([str(remote_exp), "--out", str(tmp_path / "from_bucket")]) == 0
    assert f"report: {remote_exp / 'report' / 'report.html'}" in capsys.readouterr().out

    reference = json.loads((tmp_path / "from_local" / "summary.json").read_text())
    in_bucket = json.loads((remote_exp / "report" / "summary.json").read_text())
    local_copy = json.loads((tmp_path / "from_bucket" / "summary.json").read_text())
    assert _figures(in_bucket) == _figures(reference) == _figures(local_copy)
    assert in_bucket["experiments"][0]["dir"] == str(remote_exp)
    assert sorted(p.name for p in (remote_exp / "report").iterdir()) == sorted(
        p.name for p in (tmp_path / "from_local").iterdir())

    stale = remote_exp / "report" / "old_figure.png"
    stale.write_bytes(b"left from an earlier report")
    assert main([str(remote_exp), "--out", str(remote_exp / "report")]) == 0
    forget_listings(remote_exp)
    assert not stale.exists(), "a rewritten report replaces the old one whole"
    assert (remote_exp / "report" / "summary.json").exists()
