"""SIGTERM (TPU maintenance, SLURM preemption) and SIGINT (Ctrl-C) ask the loop to save and stop.

The handler only sets a flag. With several processes they must all stop at the same step, so
the flag is agreed (an all-gather) only every `check_every` steps, the same steps everywhere,
instead of on every step.

Outside the steps (start-up: config, data, tokenizer, compile, restore; wrap-up) nothing is
unsaved, so a CLI under `exit_outside_steps()` ends there at once, in one line, instead of
dying silently (SIGTERM) or with a traceback (Ctrl-C).
"""
from __future__ import annotations

import contextlib
import signal
import sys
import threading
from typing import Iterator

import numpy as np

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class PreemptionFlag:
    def __init__(self, check_every: int = 10):
        self.check_every = max(1, check_every)
        self.received: str | None = None
        self._previous = {s: signal.signal(s, self._handle) for s in SIGNALS}

    def _handle(self, signum, frame) -> None:
        self.received = signal.Signals(signum).name

    def should_stop(self, step: int) -> bool:
        """True on every process once any process got a signal, at a step all of them check."""
        import jax
        if jax.process_count() == 1:
            return self.received is not None
        if step % self.check_every:
            return False
        from jax.experimental import multihost_utils
        return bool(np.any(multihost_utils.process_allgather(np.array(self.received is not None))))

    def restore(self) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)


def _exit_now(signum, frame) -> None:
    name = signal.Signals(signum).name
    print(f"igpt: stopped by {name} outside the training steps (start-up or wrap-up); every checkpoint written "
          "stands: rerun the same command to continue.", file=sys.stderr, flush=True)
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def exit_outside_steps() -> Iterator[None]:
    """Within it, SIGTERM or SIGINT ends the command with one line and exit status 128 + the signal
    (SystemExit: finally blocks run), except while a PreemptionFlag holds the signals. Only the
    main thread may set handlers: elsewhere it changes nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _exit_now) for s in SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
