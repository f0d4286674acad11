"""Early stopping on the validation loss: stop after `patience` evals without a new best.

Pure and rebuilt from metrics records on resume, so a resumed run stops where an
uninterrupted one would, and a run that already stopped is not trained further.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable


@dataclass
class EarlyStopping:
    """The best validation loss so far, its step, and the evals since (patience 0: never stops)."""
    patience: int
    best: float = math.inf
    best_step: int | None = None
    since_best: int = 0

    def update(self, step: int, loss: float) -> None:
        if loss < self.best:
            self.best, self.best_step, self.since_best = loss, step, 0
        else:
            self.since_best += 1

    @property
    def stopped(self) -> bool:
        return self.patience > 0 and self.since_best >= self.patience

    @classmethod
    def replay(cls, patience: int, records: Iterable[dict[str, Any]], until: int) -> "EarlyStopping":
        """The state after the validation records of steps <= `until` (a checkpoint's step)."""
        state = cls(patience)
        for r in records:
            if r.get("split") == "validation" and r["step"] <= until:
                state.update(r["step"], r["loss"])
        return state
