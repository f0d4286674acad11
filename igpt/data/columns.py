"""Random access to one feature of a TFDS data source, shared by the shipped and catalog backends."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def check_index(index: int, length: int) -> int:
    """`index` (negative counts from the end) in [0, length), else IndexError, as iteration expects."""
    if not -length <= index < length:
        raise IndexError(f"index {index} is out of range for {length} examples")
    return index % length


class Column(Sequence):
    """Random-access view of one feature of a TFDS data source (whose items are dicts)."""

    def __init__(self, source: Sequence[dict], key: str):
        self._source, self._key = source, key

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, index: int) -> Any:
        return self._source[check_index(index, len(self))][self._key]
