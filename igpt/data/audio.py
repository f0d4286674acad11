"""Waveform checks, PCM scaling, resampling and framing: raw audio to model-sized pieces."""
from __future__ import annotations

from math import gcd

import numpy as np
from einops import rearrange
from scipy.signal import resample_poly

from igpt.data.errors import DataError


def check_wave(wave: np.ndarray, name: str = "waveform") -> np.ndarray:
    """Returns `wave` as float32 after checking it is 1-D, finite and within [-1, 1].

    A NaN or a clipped sample would silently turn into a wrong token, so both are errors here.
    """
    wave = np.asarray(wave)
    if wave.ndim != 1:
        raise DataError(f"{name} has shape {wave.shape}; expected a 1-D mono waveform "
                        "(average the channels first).")
    if not np.issubdtype(wave.dtype, np.floating):
        raise DataError(f"{name} has dtype {wave.dtype}; expected floats in [-1, 1] "
                        "(scale integer PCM with to_float first).")
    if not np.all(np.isfinite(wave)):
        bad = int(np.size(wave) - np.count_nonzero(np.isfinite(wave)))
        raise DataError(f"{name} has {bad} NaN/inf samples; drop or repair that clip.")
    peak = float(np.max(np.abs(wave), initial=0.0))
    if peak > 1.0:
        raise DataError(f"{name} peaks at {peak:.4g}, outside [-1, 1]; peak-normalise it "
                        "(wave / abs(wave).max()) or fix its scaling.")
    return wave.astype(np.float32, copy=False)


# Full scale of integer PCM by storage dtype. int64 is TFDS's default Audio dtype and holds
# 16-bit samples (speech_commands before it switched to int16), so it scales like int16.
_PCM_FULL_SCALE = {np.dtype(np.int16): 2.0**15, np.dtype(np.int32): 2.0**31, np.dtype(np.int64): 2.0**15}


def to_float(wave: np.ndarray, name: str = "waveform") -> np.ndarray:
    """Integer PCM scaled to float32 in [-1, 1] (int16 / 32768); float waves are only checked."""
    wave = np.asarray(wave)
    if np.issubdtype(wave.dtype, np.integer):
        if wave.dtype not in _PCM_FULL_SCALE:
            raise DataError(f"{name} has integer dtype {wave.dtype}; expected int16/int32/int64 PCM "
                            "or floats in [-1, 1]: convert the clip first.")
        wave = wave / _PCM_FULL_SCALE[wave.dtype]
    return check_wave(wave.astype(np.float32, copy=False), name)


def resample(wave: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Polyphase resampling (anti-aliased) from `from_rate` to `to_rate` Hz, clipped to [-1, 1].

    The clip removes the small overshoot a lowpass filter adds next to sharp transients.
    """
    wave = check_wave(wave)
    if from_rate <= 0 or to_rate <= 0:
        raise DataError(f"sample rates must be positive, got from_rate={from_rate}, "
                        f"to_rate={to_rate}; set data.sample_rate (e.g. 8000).")
    if from_rate == to_rate:
        return wave
    g = gcd(from_rate, to_rate)
    out = resample_poly(wave, to_rate // g, from_rate // g)
    return np.clip(out, -1.0, 1.0).astype(np.float32)


def frames(wave: np.ndarray, frame_len: int) -> np.ndarray:
    """Cuts a waveform into non-overlapping [n, frame_len] frames; the short tail is dropped."""
    if frame_len <= 0:
        raise DataError(f"frame_len must be positive, got {frame_len}; set data.seq_len.")
    n = len(wave) // frame_len
    return rearrange(np.asarray(wave)[: n * frame_len], "(n t) -> n t", t=frame_len)
