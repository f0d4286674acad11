"""One clear line instead of a traceback for the errors a user can fix.

Every CLI runs its work under `fail_clearly()` (absl ones parse flags with `parse_flags_clearly`
too): an error that comes from the user's input (config, paths, data, checkpoints) prints one
line `igpt: error: ...` naming the problem and what to do, and exits 1; SIGTERM or Ctrl-C before
or after the training steps prints one line and exits 128 + the signal number
(igpt.training.preemption); any other error is a bug and shows its traceback. IGPT_TRACEBACK=1
shows the traceback of user errors too.
"""
from __future__ import annotations

import ast
import contextlib
import os
import sys

from igpt.data.errors import DataError
from igpt.distributed import DistributedError
from igpt.modalities import ModalityError
from igpt.sharding import MeshError
from igpt.tokenizers.base import TokenizerError
from igpt.training.checkpoint import CheckpointDamagedError, CheckpointMismatchError
from igpt.training.loop import NonFiniteLossError, TrainConfigError
from igpt.training.resume import ResumeMismatchError
from igpt.training.optim import OptimizerError
from igpt.training.preemption import exit_outside_steps
from igpt.training.rundir import WorkdirError
from igpt.transfer.arms import TransferError

# A path the user gave that cannot be used as given (a file where a directory goes, no permission).
PATH_ERRORS = (FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError, PermissionError)
USER_ERRORS = (CheckpointDamagedError, CheckpointMismatchError, DataError, DistributedError, MeshError, ModalityError,
               TokenizerError, NonFiniteLossError, ResumeMismatchError, TrainConfigError, OptimizerError, TransferError,
               WorkdirError, *PATH_ERRORS)
TRACEBACK_ENV = "IGPT_TRACEBACK"  # set to 1: user errors show their traceback too


def parse_flags_clearly(argv: list[str], flag_values=None) -> list[str]:
    """absl flag parsing (for app.run, or of `flag_values`), with a config file that does not
    load (missing, a syntax error) and a bad override (an unknown config key, a value of the
    wrong type) each reported as one line instead of a traceback."""
    from absl import flags, logging
    values = flags.FLAGS if flag_values is None else flag_values
    try:
        with exit_outside_steps():  # loading a config file imports jax: seconds in which a SIGTERM may come
            rest = values(argv)
            if "config" in values and values["config"].present:
                values["config"].value.to_dict  # a config file that failed to load raises here
    except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as e:
        overrides = [a for a in argv[1:] if a.startswith("--config.")]
        if not overrides and not isinstance(e, flags.Error):  # then it came from the config file itself
            _exit(_not_loading(argv, e))
        _exit(f"bad flag or config override ({_override_problem(e)}); overrides given: "
              f"{' '.join(overrides) or 'none'}. Every --config.X must name a field the config file sets, "
              "with a value of its type.")
    except Exception as e:  # noqa: BLE001 - whatever the config file raised, said in one line
        _exit(_not_loading(argv, e))
    if "verbosity" in values and not values["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
    return rest


def _not_loading(argv: list[str], e: BaseException) -> str:
    from igpt.launch import flag_value
    cause = e.__cause__ or e
    return f"config file {flag_value(argv, '--config')!r} does not load: {type(cause).__name__}: {_last_line(cause)}"


def _override_problem(e: BaseException) -> str:
    """What is wrong with an override, on one line. ml_collections raises a KeyError whose message
    absl then quotes (a repr, the newline before "Did you mean" a literal backslash-n): unquoted."""
    text = e.args[0] if isinstance(e, KeyError) and e.args and isinstance(e.args[0], str) else str(e)
    while len(text) > 1 and text[0] == text[-1] and text[0] in "'\"":
        try:
            text = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            break
    return " ".join(str(text).split())


def _first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def _last_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[-1].strip() if str(e).strip() else type(e).__name__


def _exit(message: str) -> None:
    print(f"igpt: error: {message}", file=sys.stderr)
    sys.exit(1)


def describe(error: BaseException) -> str:
    """The one line a user error prints: its message, or for a raw OS error on a path, the path,
    what is wrong with it and what to do."""
    if not isinstance(error, OSError) or isinstance(error, WorkdirError) or error.filename is None:
        return str(error)
    path = os.fsdecode(error.filename)
    if isinstance(error, FileExistsError):
        return f"{path} exists and is not a directory; give a directory path, or move the file away"
    if isinstance(error, NotADirectoryError):
        return f"a part of {path} is a file, not a directory; give a path below a directory"
    if isinstance(error, IsADirectoryError):
        return f"{path} is a directory where a file is needed; give a file path"
    if isinstance(error, PermissionError):
        return f"{path}: permission denied; choose a path you may write, or fix its permissions"
    return f"{path}: {error.strerror or error}; check the path"


@contextlib.contextmanager
def fail_clearly():
    """Turns a user-fixable error into `igpt: error: <message>` on stderr and exit status 1, and a
    SIGTERM or Ctrl-C outside the training steps into one line and exit status 128 + signal."""
    try:
        with exit_outside_steps():
            yield
    except USER_ERRORS as e:
        if os.environ.get(TRACEBACK_ENV):
            raise
        print(f"igpt: error: {describe(e)}", file=sys.stderr)
        sys.exit(1)
