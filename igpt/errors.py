"""One clear line instead of a traceback for the errors a user can fix."""
from __future__ import annotations

import contextlib
import sys

from igpt.data.errors import DataError
from igpt.distributed import DistributedError
from igpt.modalities import ModalityError
from igpt.sharding import MeshError
from igpt.tokenizers.base import TokenizerError
from igpt.training.checkpoint import CheckpointMismatchError
from igpt.training.loop import NonFiniteLossError, ResumeMismatchError
from igpt.training.optim import OptimizerError
from igpt.training.rundir import WorkdirError
from igpt.transfer.arms import TransferError

USER_ERRORS = (CheckpointMismatchError, DataError, DistributedError, MeshError, ModalityError, TokenizerError,
               NonFiniteLossError, ResumeMismatchError, OptimizerError, TransferError, WorkdirError, FileNotFoundError)


def parse_flags_clearly(argv: list[str]) -> list[str]:
    """absl flag parsing for app.run, with a bad override (an unknown config key, a value of
    the wrong type) reported as one line instead of a traceback."""
    from absl import flags, logging
    try:
        rest = flags.FLAGS(argv)
        if not flags.FLAGS["verbosity"].present:
            logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
        return rest
    except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as e:
        overrides = [a for a in argv[1:] if a.startswith("--config.")]
        print(f"igpt: error: bad flag or config override ({str(e).strip(chr(34))}); overrides given: "
              f"{' '.join(overrides) or 'none'}. Every --config.X must name a field the config file sets, "
              "with a value of its type.", file=sys.stderr)
        sys.exit(1)


@contextlib.contextmanager
def fail_clearly():
    """Turns a user-fixable error into `igpt: <message>` on stderr and exit status 1."""
    try:
        yield
    except USER_ERRORS as e:
        print(f"igpt: error: {e}", file=sys.stderr)
        sys.exit(1)
