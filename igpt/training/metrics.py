"""metrics.jsonl: the contract between training and reports (no jax import here).

One JSON object per line, each with "step" (optimizer updates done), "split" and "wall_time".
GPT runs write splits "train", "validation" (what selection reads) and "test" (what reports
show), with
    train:            "loss", "bits_per_token", "tokens_seen", "lr", "grad_norm", "step_time", "tokens_per_s"
    validation, test: "loss", "bits_per_token", "tokens_seen"
with loss in nats per token and bits_per_token = loss / ln 2; VQ fitting runs write the
fields igpt/tokenizers/vq/task.py lists. A resumed run appends; readers keep the last record
for each (split, step), so lines written after the last checkpoint and again on resume count
once.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from igpt.training.rundir import METRICS_FILE


def bits(nats: float) -> float:
    return nats / math.log(2.0)


class MetricsWriter:
    """Appends records as JSON lines, flushed per line so a reader sees a live run. A torn last
    line (a run killed mid-write) is ended first, so the next record starts on a line of its own."""

    def __init__(self, path: str | os.PathLike, enabled: bool = True):
        self.path = Path(path)
        self._file = None
        if enabled:
            torn = self.path.is_file() and self.path.stat().st_size and not self.path.read_bytes().endswith(b"\n")
            self._file = open(self.path, "a", buffering=1)
            if torn:
                self._file.write("\n")

    def write(self, record: dict[str, Any]) -> None:
        if self._file is not None:
            self._file.write(json.dumps(record, sort_keys=True) + "\n")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def read_metrics(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """All records of a run, the last one kept per (split, step), sorted by step.

    A line that is not a whole record (a run killed mid-write) is ignored."""
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
