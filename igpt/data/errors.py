"""The one error type the data layer raises for bad input."""
from __future__ import annotations


class DataError(ValueError):
    """Bad data input (source, split, data_dir, waveform, batch size): the message names the
    input and the fix, so users never have to read a TFDS traceback."""
