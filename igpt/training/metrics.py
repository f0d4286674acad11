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

Where it lives decides how it is written, never what it holds (one file, so a copied run is a
copied file):
  local disk       appended to, one line at a time (a reader sees a live run at once), synced
                   to disk on flush(); a torn last line (a run killed mid-write) is ended before
                   the next record, so the tear never swallows it;
  object storage   (gs://) an object cannot be appended to (gcsfs's "a" silently overwrites),
                   so the writer keeps the whole file, read once when it opens (a resumed run
                   keeps its history), and rewrites the object on each flush: at most every
                   `flush_seconds`, and on flush() and close(). One object write is atomic:
                   a reader sees the file as of the last flush, never a torn line. Each flush
                   uploads the whole file (some 200 bytes a record: 10,000 records are 2 MB).
                   A run killed between flushes loses the records since the last one: flush()
                   with each checkpoint, so that only records after it can be lost (a resumed
                   run writes those again).
"""
from __future__ import annotations

import json
import math
import os
import time
from typing import Any

from igpt.paths import as_path, is_object_storage
from igpt.training.rundir import METRICS_FILE, read_text_or_none


def bits(nats: float) -> float:
    return nats / math.log(2.0)


def _ends_torn(path: str | os.PathLike) -> bool:
    """A local file whose last line has no newline (a run killed mid-write)."""
    try:
        with open(path, "rb") as f:
            if f.seek(0, os.SEEK_END) == 0:
                return False
            f.seek(-1, os.SEEK_END)
            return f.read(1) != b"\n"
    except FileNotFoundError:
        return False


class MetricsWriter:
    """Writes records as JSON lines to `path`, local or on object storage (see the module
    docstring). Locally each line is flushed as written; a torn last line is ended first, so
    the next record starts on a line of its own."""

    def __init__(self, path: str | os.PathLike, enabled: bool = True, flush_seconds: float = 30.0):
        self.path = as_path(path)
        self.flush_seconds = flush_seconds
        self._file = None  # local: the file, open for appending
        self._text: list[str] | None = None  # object storage: the whole file, in pieces
        self._unflushed = 0
        self._flushed_at = time.monotonic()
        if not enabled:
            return
        if is_object_storage(self.path):
            old = read_text_or_none(self.path) or ""
            self._text = [old + "\n" if old and not old.endswith("\n") else old]
        else:
            torn = _ends_torn(self.path)
            self._file = open(self.path, "a", buffering=1)
            if torn:
                self._file.write("\n")

    def write(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, sort_keys=True) + "\n"
        if self._file is not None:
            self._file.write(line)
        elif self._text is not None:
            self._text.append(line)
            self._unflushed += 1
            if time.monotonic() - self._flushed_at >= self.flush_seconds:
                self.flush()

    def flush(self) -> None:
        """Makes every record written so far visible to readers, and durable: the loop flushes with
        each checkpoint, so a crash (power, kernel) cannot keep a checkpoint and lose its records."""
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())
        elif self._text is not None and self._unflushed:
            self._text = ["".join(self._text)]
            self.path.write_text(self._text[0])
            self._unflushed, self._flushed_at = 0, time.monotonic()

    def close(self) -> None:
        self.flush()
        if self._file is not None:
            self._file.close()
        self._file = self._text = None


def read_metrics(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """All records of a run (local or gs://), the last one kept per (split, step), sorted by step.

    A line that is not a whole record (a run killed mid-write) is ignored."""
    text = read_text_or_none(as_path(run_dir) / METRICS_FILE)
    if text is None:
        return []
    latest: dict[tuple[str, int], dict[str, Any]] = {}
    for line in text.splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        latest[(rec["split"], int(rec["step"]))] = rec
    return sorted(latest.values(), key=lambda r: (r["step"], r["split"]))
