"""Silencing third-party chatter that says nothing a user can act on. A leaf module."""
from __future__ import annotations

import contextlib
from typing import Iterator

from absl import logging as absl_logging


@contextlib.contextmanager
def absl_errors_only() -> Iterator[None]:
    """absl (TFDS, orbax) logs only errors within the block: e.g. orbax's "directory is read only"
    when a donor's checkpoint is opened to read, TFDS's missing dataset_info.json before a
    first preparation."""
    before = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.ERROR)
    try:
        yield
    finally:
        absl_logging.set_verbosity(before)
