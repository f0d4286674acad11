"""An exclusive lock, so processes that start together prepare shared files once.

Locally it is an advisory `flock` on a lock file. On object storage (gs://) there is no flock
and no O_EXCL, so the lock is an object created only if absent (the GCS precondition
ifGenerationMatch=0): whoever's create succeeds holds it, and deletes exactly that generation
when done. A holder that died leaves its object behind; a waiter that sees the same generation
for `stale_seconds` deletes it and competes again (it compares its own clock only, never
timestamps from other hosts).
"""
from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import platform
import time
import uuid
from pathlib import Path
from typing import Iterator

from igpt.data.errors import DataError
from igpt.paths import is_object_storage

STALE_SECONDS = 600.0  # longer than any work done under a lock (fitting a palette, preparing data)
POLL_SECONDS = 0.5


@contextlib.contextmanager
def file_lock(path: str | os.PathLike, *, stale_seconds: float = STALE_SECONDS,
              poll_seconds: float = POLL_SECONDS) -> Iterator[None]:
    """Holds the lock `path` (local or gs://) for the with-block.

    Callers re-check for the finished files after acquiring it: whoever waited finds the work
    done by the process that held the lock. `stale_seconds` and `poll_seconds` apply on
    object storage only (a local flock ends with its process).
    """
    if is_object_storage(path):
        with _object_lock(os.fspath(path), stale_seconds, poll_seconds):
            yield
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _filesystem(url: str):
    """etils.epath's own gcsfs instance (one per process), so credentials and settings match
    every other gs:// access of the run."""
    if not url.startswith(("gs://", "gcs://")):
        raise DataError(f"cannot lock {url}: igpt locks local paths and gs:// only; put this directory on "
                        "local disk or in a gs:// bucket.")
    from etils.epath import backend

    return backend.fsspec_backend.fs(url)


def _generation(fs, url: str) -> str | None:
    """The lock object's generation as the store sees it now; None when there is none."""
    fs.invalidate_cache(url)
    try:
        return str(fs.info(url)["generation"])
    except FileNotFoundError:
        return None


def _delete(fs, url: str, generation: str) -> None:
    """Deletes the lock object only if it is still `generation` (not a newer holder's)."""
    bucket, key, _ = fs.split_path(url)
    try:
        fs.call("DELETE", "b/{}/o/{}", bucket, key, ifGenerationMatch=generation)
    except (FileNotFoundError, FileExistsError):  # gone already, or taken over (412)
        pass
    fs.invalidate_cache(url)


@contextlib.contextmanager
def _object_lock(url: str, stale_seconds: float, poll_seconds: float) -> Iterator[None]:
    fs = _filesystem(url)
    owner = f"{platform.node()} pid {os.getpid()} {uuid.uuid4().hex[:8]}".encode()
    seen, since = None, time.monotonic()
    while True:
        try:
            created = fs.pipe_file(url, owner, mode="create")  # ifGenerationMatch=0: only if absent
            break
        except FileExistsError:
            pass
        generation = _generation(fs, url)
        if generation != seen:
            seen, since = generation, time.monotonic()
        elif generation is not None and time.monotonic() - since >= stale_seconds:
            logging.getLogger(__name__).warning(
                "lock %s unchanged for %.0f s: its holder seems gone; taking it over", url, stale_seconds)
            _delete(fs, url, generation)
            continue
        time.sleep(poll_seconds)
    mine = str(created["generation"]) if isinstance(created, dict) and "generation" in created else _generation(fs, url)
    try:
        yield
    finally:
        if mine is not None:
            _delete(fs, url, mine)
