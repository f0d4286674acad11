"""SIGTERM (TPU maintenance, SLURM preemption) and SIGINT (Ctrl-C) ask the loop to save and stop.

The handler only sets a flag. With several processes they must all stop at the same step, so
the flag is agreed (an all-gather) only every `check_every` steps, the same steps everywhere,
instead of on every step.
"""
from __future__ import annotations

import signal

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
