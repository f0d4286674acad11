"""Audio: waveforms checked, scaled from PCM and resampled, cut into seq_len-sample frames; a
VQ-VAE's 1-D grid of codes; WAV files of samples and pictures of waveforms."""
from __future__ import annotations

import io
import os
import wave as wavfile
from math import gcd
from typing import Callable, Sequence

import ml_collections
import numpy as np
from einops import rearrange
from etils import epath
from scipy.signal import resample_poly

from igpt.data.errors import DataError
from igpt.data.sources import RawSplit
from igpt.tokenizers.base import Tokenizer, TokenizerError
from igpt.tokenizers.reconstruction import STFT_SIZES, snr, stft_distance
from igpt.tokenizers.vq import augment
from igpt.tokenizers.vq.network import downsample


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


def write_wav(path: str | os.PathLike, wave: np.ndarray, sample_rate: int) -> None:
    """Mono 16-bit PCM from floats in [-1, 1], at `path`, local or gs:// (one object write there)."""
    pcm = np.round(np.clip(wave, -1.0, 1.0) * 32767).astype("<i2")
    buffer = io.BytesIO()
    with wavfile.open(buffer, "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(sample_rate)
        f.writeframes(pcm.tobytes())
    epath.Path(path).write_bytes(buffer.getvalue())


def waveform_picture(waves: np.ndarray, headers: Sequence[str], mark: int = 0) -> np.ndarray:
    """uint8 RGB panels of waveforms [rows, cols, T] in [-1, 1], one column per header, with a
    dashed line at sample `mark` (0: none): what a sound looks like in TensorBoard or a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    rows, cols = waves.shape[:2]
    fig = Figure(figsize=(3.2 * cols, 1.1 * rows + 0.3), dpi=80)
    axes = fig.subplots(rows, cols, squeeze=False, sharex=True, sharey=True)
    for (r, c), ax in np.ndenumerate(axes):
        ax.plot(waves[r, c], linewidth=0.6, color="black")
        if mark:
            ax.axvline(mark, color="tab:red", linestyle="--", linewidth=0.8)
        ax.set_ylim(-1.05, 1.05)
        ax.set_xticks([])
        ax.set_yticks([])
        if r == 0:
            ax.set_title(headers[c], fontsize=10)
    fig.tight_layout(pad=0.3)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


class AudioModality:
    """Examples are float32 mono waveforms in [-1, 1] at data.sample_rate, of any length."""

    name = "audio"
    default_feature = "audio"
    spatial_axes = 1

    def examples(self, raw: RawSplit, count: int, data_cfg: ml_collections.ConfigDict) -> list[np.ndarray]:
        if data_cfg.sample_rate <= 0:
            raise DataError(f"data.sample_rate is {data_cfg.sample_rate}; set it "
                            "(e.g. specs.audio(..., sample_rate=8000)).")
        if raw.sample_rate <= 0:
            raise DataError(f"{raw.where}: feature {data_cfg.feature or self.default_feature!r} declares no sample "
                            "rate; point data.feature at a tfds.features.Audio feature.")
        return [resample(to_float(raw.values[i], f"{raw.where} example {i}"), raw.sample_rate, data_cfg.sample_rate)
                for i in range(count)]

    def sequences(self, examples: list[np.ndarray], tokenizer: Tokenizer,
                  data_cfg: ml_collections.ConfigDict) -> np.ndarray:
        """seq_len-sample frames of every clip, each tokenized on its own."""
        return tokenizer.encode(np.concatenate([frames(w, data_cfg.seq_len) for w in examples]))

    def write_samples(self, out: str | os.PathLike, tokenizer: Tokenizer, sample_rate: int, prompt_tokens: int,
                      originals: np.ndarray, completions: np.ndarray, unconditional: np.ndarray) -> list[epath.Path]:
        """completion_I.wav, original_I.wav, unconditional_I.wav into `out` (an existing local directory,
        or gs://)."""
        out, written = epath.Path(out), []
        for name, tokens in (("completion", completions), ("original", originals), ("unconditional", unconditional)):
            for i, w in enumerate(tokenizer.decode(tokens)):
                write_wav(out / f"{name}_{i}.wav", w, sample_rate)
                written.append(out / f"{name}_{i}.wav")
        return written

    def picture(self, tokenizer: Tokenizer, prompt_tokens: int, originals: np.ndarray,
                completions: np.ndarray) -> np.ndarray:
        """Waveforms, columns completion | original, the prompt's end marked."""
        waves = np.stack([tokenizer.decode(completions), tokenizer.decode(originals)], axis=1)
        return waveform_picture(waves, ("completion", "original"), mark=prompt_tokens)

    def reconstruction_picture(self, examples: np.ndarray, reconstructed: np.ndarray) -> np.ndarray:
        """The first held-out frames [N, T] beside their reconstructions."""
        n = min(4, len(examples))
        return waveform_picture(np.stack([examples[:n], reconstructed[:n]], axis=1), ("original", "reconstruction"))

    def channels(self, examples: list[np.ndarray]) -> int:
        return 1

    def vq_input(self, batch: np.ndarray, channels: int) -> np.ndarray:
        """Float frames [N, T] in [-1, 1] -> [N, T, 1]."""
        wave = np.asarray(batch)
        if wave.ndim != 2 or wave.dtype.kind != "f":
            raise TokenizerError(
                f"vq audio tokenizer got an array of shape {list(wave.shape)} and dtype {wave.dtype}; it expects "
                "float frames [N, T] in [-1, 1] (add a batch axis for one frame: wave[None]).")
        if not np.isfinite(wave).all() or np.abs(wave).max(initial=0.0) > 1.0:
            raise TokenizerError("vq audio tokenizer got samples that are NaN/inf or outside [-1, 1]; "
                                 "peak-normalise the waveform first.")
        return wave.astype(np.float32)[..., None]

    def vq_grid(self, tokens: np.ndarray) -> np.ndarray:
        if tokens.ndim != 2:
            raise TokenizerError(f"vq audio tokenizer got tokens of shape {list(tokens.shape)}; decode expects [N, L].")
        return tokens

    def vq_output(self, x: np.ndarray) -> np.ndarray:
        return np.clip(x[..., 0], -1.0, 1.0)

    def check_fit(self, cfg: ml_collections.ConfigDict) -> None:
        """Training windows and eval frames are data.seq_len samples (as the data pipeline cuts
        them): that length must suit the network and the eval's STFT."""
        frame, down = cfg.data.seq_len, downsample(cfg.model)
        if frame <= 0 or frame % down or frame < max(STFT_SIZES):
            raise TokenizerError(f"data.seq_len={frame} samples must be a positive multiple of the downsampling "
                                 f"{down} and at least {max(STFT_SIZES)} (the largest STFT of the eval); e.g. 2048.")

    def fit_batches(self, cfg: ml_collections.ConfigDict, train: list[np.ndarray]) -> Callable[[int], np.ndarray]:
        """data.seq_len-sample windows at random places in random clips (augment.audio_batch)."""
        crop = cfg.data.seq_len
        if any(len(w) < crop for w in train):
            raise TokenizerError(f"data.seq_len={crop} samples is longer than the shortest training clip "
                                 f"({min(len(w) for w in train)} samples); lower it.")
        b, seed = cfg.train.global_batch, cfg.data.seed
        return lambda step: augment.audio_batch(train, step, b, seed, crop)

    def held_out(self, cfg: ml_collections.ConfigDict, examples: list[np.ndarray]) -> np.ndarray:
        """Every held-out clip cut into data.seq_len-sample frames."""
        return np.concatenate([frames(w, cfg.data.seq_len) for w in examples])

    def reconstruction(self, inputs: np.ndarray, reconstructed: np.ndarray) -> dict[str, float]:
        """MSE, SNR (dB) and the multi-resolution STFT distance over all frames."""
        return {"loss": float(np.mean(np.square(inputs - reconstructed))), "snr": snr(inputs, reconstructed),
                "stft": stft_distance(inputs, reconstructed)}


MODALITY = AudioModality()
