"""metrics.jsonl: the contract between training and reports (no jax import here).

Each run directory holds
  metrics.jsonl  one JSON object per line:
      train: {"step", "split": "train", "loss", "bits_per_token", "tokens_seen", "lr",
              "grad_norm", "step_time", "tokens_per_s", "wall_time"}
      eval:  {"step", "split": "eval", "loss", "bits_per_token", "tokens_seen", "wall_time"}
    loss is nats per token; bits_per_token = loss / ln 2; step counts optimizer updates done.
  run.json       who the run is: {"name", "role": "source"|"target"|"single", "arm", "seed",
                 "lr", "mode", "source", "experiment", "finished": bool}
A resumed run appends; readers keep the last record for each (split, step), so lines
written after the last checkpoint and written again on resume count once.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Iterable

METRICS_FILE = "metrics.jsonl"
RUN_INFO_FILE = "run.json"


def bits(nats: float) -> float:
    return nats / math.log(2.0)


class MetricsWriter:
    """Appends records as JSON lines, flushed per line so a reader sees a live run."""

    def __init__(self, workdir: str | os.PathLike, enabled: bool = True):
        self.path = Path(workdir) / METRICS_FILE
        self.enabled = enabled
        self._file = open(self.path, "a", buffering=1) if enabled else None

    def write(self, record: dict[str, Any]) -> None:
        if self._file is not None:
            self._file.write(json.dumps(record, sort_keys=True) + "\n")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def read_metrics(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """All records of a run, the last one kept per (split, step), sorted by step.

    A trailing partial line (a run killed mid-write) is ignored."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return []
    latest: dict[tuple[str, int], dict[str, Any]] = {}
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        latest[(rec["split"], int(rec["step"]))] = rec
    return sorted(latest.values(), key=lambda r: (r["step"], r["split"]))


def curve(records: Iterable[dict[str, Any]], split: str, key: str = "loss") -> tuple[list[int], list[float]]:
    """(steps, values) of one split, in step order."""
    rows = [(r["step"], r[key]) for r in records if r["split"] == split and key in r]
    return [s for s, _ in rows], [v for _, v in rows]


def write_run_info(run_dir: str | os.PathLike, info: dict[str, Any]) -> None:
    path = Path(run_dir) / RUN_INFO_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(info, indent=2, sort_keys=True))
    os.replace(tmp, path)


def read_run_info(run_dir: str | os.PathLike) -> dict[str, Any]:
    path = Path(run_dir) / RUN_INFO_FILE
    return json.loads(path.read_text()) if path.is_file() else {}
