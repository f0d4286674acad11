"""Parameter paths as plain string tuples, so a live nnx.State (attribute and integer keys)
and orbax's restored or metadata trees (string dict keys) of the same params compare equal."""
from __future__ import annotations

from typing import Any


def path_names(path: tuple[Any, ...]) -> tuple[str, ...]:
    def name(k) -> str:
        for attr in ("key", "idx", "name"):
            if hasattr(k, attr):
                return str(getattr(k, attr))
        return str(k)
    return tuple(name(k) for k in path)
