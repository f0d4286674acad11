"""One clear line instead of a traceback for the errors a user can fix."""
from __future__ import annotations

import contextlib
import sys

from igpt.checkpoint import CheckpointMismatchError
from igpt.data.errors import DataError
from igpt.distributed import DistributedError
from igpt.sharding import MeshError
from igpt.tokenizers.base import TokenizerError
from igpt.train import NonFiniteLossError
from igpt.transfer_init import TransferError
from igpt.workdir import WorkdirError

USER_ERRORS = (CheckpointMismatchError, DataError, DistributedError, MeshError, TokenizerError,
               NonFiniteLossError, TransferError, WorkdirError, FileNotFoundError)


@contextlib.contextmanager
def fail_clearly():
    """Turns a user-fixable error into `igpt: <message>` on stderr and exit status 1."""
    try:
        yield
    except USER_ERRORS as e:
        print(f"igpt: error: {e}", file=sys.stderr)
        sys.exit(1)
