"""igpt: image-GPT-style transformers on token streams and cross-modal transfer.

Importing the package is cheap and never imports jax, so the report tools run on a laptop.
"""
__version__ = "0.1.0"
