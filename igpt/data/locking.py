"""An exclusive file lock, so processes that start together prepare shared files once."""
from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def file_lock(path: str | os.PathLike) -> Iterator[None]:
    """Holds an advisory `flock` on `path` (created if missing) for the with-block.

    Callers re-check for the finished files after acquiring it: whoever waited finds the work
    done by the process that held the lock.
    """
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
