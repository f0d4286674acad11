"""Data sources (shipped offline builders, TFDS catalog) and the step-indexed batch pipeline.

Importing this package is cheap: TFDS and grain load only when a dataset is opened.
"""
from igpt.data.errors import DataError

__all__ = ["DataError"]
