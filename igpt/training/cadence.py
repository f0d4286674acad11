"""When periodic work is due: one rule for logging, evaluating and checkpointing."""
from __future__ import annotations


def due(step: int, every: int, last: int) -> bool:
    """True at each multiple of `every` and at the final step `last` (every <= 0: only there)."""
    return step == last or (every > 0 and step % every == 0)
