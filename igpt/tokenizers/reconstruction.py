"""How close a reconstruction is to its original, for any tokenizer (numpy, on the host):
PSNR for images; SNR and a multi-resolution STFT distance for audio; codebook usage and
perplexity of the codes."""
from __future__ import annotations

import numpy as np

STFT_SIZES = (128, 256, 512)  # FFT sizes of the multi-resolution STFT distance (16-64 ms at 8 kHz)


def psnr(original: np.ndarray, reconstructed: np.ndarray, axis: tuple[int, ...] | None = None) -> np.ndarray | float:
    """dB of uint8 images from the mean squared error over `axis` (default: all pixels of all
    images; axis=(1, 2, 3) gives one PSNR per image)."""
    mse = np.mean((original.astype(np.float64) - reconstructed.astype(np.float64)) ** 2, axis=axis)
    with np.errstate(divide="ignore"):
        out = 10.0 * np.log10(255.0**2 / mse)
    return float(out) if axis is None else out

def snr(original: np.ndarray, reconstructed: np.ndarray) -> float:
    """Signal-to-noise ratio in dB over all samples: signal energy / error energy."""
    signal = np.sum(np.square(original, dtype=np.float64))
    noise = np.sum(np.square(original.astype(np.float64) - reconstructed))
    return float("inf") if noise == 0 else float(10.0 * np.log10(signal / noise))

def _magnitudes(wave: np.ndarray, n_fft: int) -> np.ndarray:
    """|STFT| [N, frames, bins] with a Hann window, hop n_fft / 4."""
    windows = np.lib.stride_tricks.sliding_window_view(wave, n_fft, axis=-1)[..., :: n_fft // 4, :]
    return np.abs(np.fft.rfft(windows * np.hanning(n_fft), axis=-1))

def stft_distance(original: np.ndarray, reconstructed: np.ndarray, sizes: tuple[int, ...] = STFT_SIZES) -> float:
    """Multi-resolution STFT distance (Yamamoto et al. 2020), averaged over FFT sizes: spectral
    convergence ||S - S'||_F / ||S||_F plus mean |log S - log S'| (magnitudes floored at 1e-5).
    0 for identical audio; frames [N, T] need T >= max(sizes)."""
    total = 0.0
    for n_fft in sizes:
        s, r = _magnitudes(original, n_fft), _magnitudes(reconstructed, n_fft)
        total += np.linalg.norm(s - r) / max(np.linalg.norm(s), 1e-12)
        total += np.mean(np.abs(np.log(np.maximum(s, 1e-5)) - np.log(np.maximum(r, 1e-5))))
    return float(total / len(sizes))

def code_usage(codes: np.ndarray, num_codes: int) -> float:
    """Fraction of the codebook used at least once in `codes`."""
    return len(np.unique(codes)) / num_codes

def perplexity(codes: np.ndarray, num_codes: int) -> float:
    """exp(entropy) of the code histogram: num_codes when all are used equally, 1 for one code."""
    p = np.bincount(np.ravel(codes), minlength=num_codes) / max(np.size(codes), 1)
    p = p[p > 0]
    return float(np.exp(-np.sum(p * np.log(p))))
