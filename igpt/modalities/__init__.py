"""What differs per modality (image, text, audio), one module each; base.py holds the
protocols and the registry by name."""
from igpt.modalities.base import Examples, Modality, ModalityError, Signal, get, names, signal

__all__ = ["Examples", "Modality", "ModalityError", "Signal", "get", "names", "signal"]
