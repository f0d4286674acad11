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
from igpt.training.loop import NonFiniteLossError, ResumeMismatchError, TrainConfigError
from igpt.training.optim import OptimizerError
from igpt.training.rundir import WorkdirError
from igpt.transfer.arms import TransferError

USER_ERRORS = (CheckpointMismatchError, DataError, DistributedError, MeshError, ModalityError, TokenizerError,
               NonFiniteLossError, ResumeMismatchError, TrainConfigError, OptimizerError, TransferError, WorkdirError,
               FileNotFoundError)


def parse_flags_clearly(argv: list[str], flag_values=None) -> list[str]:
    """absl flag parsing (for app.run, or of `flag_values`), with a config file that does not
    load (missing, a syntax error) and a bad override (an unknown config key, a value of the
    wrong type) each reported as one line instead of a traceback."""
    from absl import flags, logging
    values = flags.FLAGS if flag_values is None else flag_values
    try:
        rest = values(argv)
        if "config" in values and values["config"].present:
            values["config"].value.to_dict  # a config file that failed to load raises here
    except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as e:
        overrides = [a for a in argv[1:] if a.startswith("--config.")]
        _exit(f"bad flag or config override ({_first_line(e).strip(chr(34))}); overrides given: "
              f"{' '.join(overrides) or 'none'}. Every --config.X must name a field the config file sets, "
              "with a value of its type.")
    except Exception as e:  # noqa: BLE001 - whatever the config file raised, said in one line
        from igpt.launch import flag_value
        cause = e.__cause__ or e
        _exit(f"config file {flag_value(argv, '--config')!r} does not load: {type(cause).__name__}: "
              f"{_last_line(cause)}")
    if "verbosity" in values and not values["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
    return rest


def _first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def _last_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[-1].strip() if str(e).strip() else type(e).__name__


def _exit(message: str) -> None:
    print(f"igpt: error: {message}", file=sys.stderr)
    sys.exit(1)


@contextlib.contextmanager
def fail_clearly():
    """Turns a user-fixable error into `igpt: <message>` on stderr and exit status 1."""
    try:
        yield
    except USER_ERRORS as e:
        print(f"igpt: error: {e}", file=sys.stderr)
        sys.exit(1)
