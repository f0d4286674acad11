"""TensorBoard event files in a bucket, written through igpt's path layer (igpt/paths.py).

Objects cannot be appended to, so each flush rewrites the run's event file as one object (the
choice metrics.jsonl makes too). tensorboardX's own gs:// writer is replaced: it goes through a
second storage client and uploads again when garbage-collected, after close, at interpreter exit.
"""
from __future__ import annotations

import io

from igpt.paths import as_path


class _EventObject:
    """One event file: buffered bytes, uploaded whole at each flush, nothing after close."""

    def __init__(self, url: str):
        self.path = as_path(url)
        self.buffer = io.BytesIO()
        self.closed = False

    def write(self, data: bytes) -> None:
        self.buffer.write(data)

    def flush(self) -> None:
        if not self.closed:
            self.path.write_bytes(self.buffer.getvalue())

    def close(self) -> None:
        self.flush()
        self.closed = True


class _EventObjects:
    """tensorboardX's writer-factory protocol."""

    def open(self, url: str) -> _EventObject:
        return _EventObject(url)

    def directory_check(self, url: str) -> None:
        """Object storage has no directories to create."""


def write_events_through_path_layer() -> None:
    """Makes tensorboardX write gs:// event files with _EventObject."""
    from tensorboardX import record_writer

    record_writer.register_writer_factory("gs", _EventObjects())
