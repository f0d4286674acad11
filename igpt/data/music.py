"""A seeded music synthesiser: the shipped "music" data is synthetic, made here, not recorded.

No real music of any size ships with Python packages, so the offline audio corpus is generated.
It is built to have the structure a sequence model can learn and transfer from: a steady
pulse, pitches drawn from one key, repeated harmonic timbres and smooth envelopes.
"""
from __future__ import annotations

import numpy as np

from igpt.data.errors import DataError

# Scales as semitone offsets from the tonic.
SCALES = {
    "major": (0, 2, 4, 5, 7, 9, 11),
    "minor": (0, 2, 3, 5, 7, 8, 10),
    "dorian": (0, 2, 3, 5, 7, 9, 10),
    "pentatonic": (0, 2, 4, 7, 9),
}
# Chord roots as scale degrees, one chord per bar (I-V-vi-IV, I-IV-V-I, i-VI-III-VII, ...).
PROGRESSIONS = ((0, 4, 5, 3), (0, 3, 4, 0), (0, 5, 2, 6), (0, 0, 3, 4))
PEAK = 0.9


def _hz(midi: float) -> float:
    return 440.0 * 2.0 ** ((midi - 69.0) / 12.0)


def _adsr(n: int, n_held: int, sample_rate: int, attack: float, decay: float, sustain: float,
          release: float) -> np.ndarray:
    """Attack-decay-sustain over the `n_held` samples the key is down, then a release to 0."""
    t = np.arange(n) / sample_rate
    held = n_held / sample_rate
    env = np.where(t < attack, t / attack,
                   np.where(t < attack + decay, 1.0 - (1.0 - sustain) * (t - attack) / decay, sustain))
    level_at_release = env[min(n_held, n) - 1] if n_held > 0 else 0.0
    after = t >= held
    env[after] = level_at_release * np.maximum(0.0, 1.0 - (t[after] - held) / release)
    return env


def _note(rng: np.random.Generator, midi: float, held_s: float, sample_rate: int, timbre: dict) -> np.ndarray:
    """One note: harmonic partials k*f0 with amplitudes k^-rolloff, each fading faster than
    the one below (like a plucked or struck string), under an ADSR envelope."""
    n_held = int(held_s * sample_rate)
    n = n_held + int(timbre["release"] * sample_rate)
    t = np.arange(n, dtype=np.float32) / np.float32(sample_rate)
    f0 = _hz(midi)
    fade = np.exp(-timbre["damping"] * t)  # partial k fades as fade**k
    fade_k = np.ones_like(t)
    wave = np.zeros_like(t)
    for k in range(1, timbre["partials"] + 1):
        if k * f0 >= sample_rate / 2:
            break  # above Nyquist: would alias
        fade_k *= fade
        wave += np.float32(k ** -timbre["rolloff"]) * fade_k * np.sin(
            np.float32(2 * np.pi * k * f0) * t + np.float32(rng.uniform(0, 2 * np.pi)))
    return wave * _adsr(n, n_held, sample_rate, timbre["attack"], timbre["decay"], timbre["sustain"],
                        timbre["release"])


def _timbre(rng: np.random.Generator, partials: tuple[int, int], attack: tuple[float, float]) -> dict:
    return dict(partials=int(rng.integers(*partials)), rolloff=rng.uniform(0.8, 2.0),
                damping=rng.uniform(0.2, 3.0), attack=rng.uniform(*attack), decay=rng.uniform(0.05, 0.25),
                sustain=rng.uniform(0.4, 0.8), release=rng.uniform(0.05, 0.3))


def synthesize_music(seconds: float, sample_rate: int, seed: int) -> np.ndarray:
    """A mono clip of synthetic tonal music, float32 in [-1, 1], a pure function of its arguments.

    The generator, per seed:
      - tempo uniform in 70-160 BPM, 4 beats a bar; a key (tonic MIDI 45-57, A2-A3) and a scale
        (major, natural minor, dorian or major pentatonic);
      - a chord progression of four bars (e.g. I-V-vi-IV), repeated to fill the clip;
      - melody: notes of 1/2, 1, 3/2 or 2 beats (about 1 in 10 a rest); pitches a random walk
        in steps of -2..+2 scale degrees, one to two octaves above the tonic (MIDI 57-92),
        snapped to a chord tone on each bar's first beat; played 85-100% legato;
      - bass: the chord root an octave below the tonic, one note per bar, half as loud;
      - chords: a soft triad per bar (root, third, fifth of the scale) with slow attack;
      - timbres: each voice has additive harmonic partials (3-10 for the melody) with
        amplitudes k^-rolloff, per-partial exponential damping and an ADSR envelope, with
        random phases; the three voices draw their own timbres;
    then the mix is peak-normalised to 0.9.
    """
    if seconds <= 0 or sample_rate <= 0:
        raise DataError(f"synthesize_music needs positive seconds and sample_rate, got {seconds} and "
                        f"{sample_rate}.")
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sample_rate))
    beat = 60.0 / rng.uniform(70, 160)
    tonic = int(rng.integers(45, 58))
    scale = SCALES[list(SCALES)[rng.integers(len(SCALES))]]
    progression = PROGRESSIONS[rng.integers(len(PROGRESSIONS))]
    melody_timbre = _timbre(rng, (3, 11), (0.005, 0.03))
    bass_timbre = _timbre(rng, (2, 5), (0.01, 0.05))
    pad_timbre = _timbre(rng, (2, 4), (0.15, 0.4))

    def pitch(degree: int, octave: int) -> int:
        octaves, step = divmod(degree, len(scale))
        return tonic + 12 * (octave + octaves) + scale[step]

    mix = np.zeros(n + int(2.0 * sample_rate))  # room for the last release tails

    def place(wave: np.ndarray, start_s: float, gain: float) -> None:
        i = int(start_s * sample_rate)
        if i < n:
            mix[i:i + len(wave)] += gain * wave[: len(mix) - i]

    bar = 4 * beat
    for b in range(int(np.ceil(seconds / bar))):
        root = progression[b % len(progression)]
        place(_note(rng, pitch(root, -1), bar * 0.95, sample_rate, bass_timbre), b * bar, 0.5)
        for third in (0, 2, 4):
            place(_note(rng, pitch(root + third, 0), bar, sample_rate, pad_timbre), b * bar, 0.12)

    t, degree = 0.0, int(rng.integers(0, len(scale)))
    while t < seconds:
        length = beat * rng.choice([0.5, 1.0, 1.5, 2.0], p=[0.35, 0.35, 0.1, 0.2])
        on_downbeat = abs(t / bar - round(t / bar)) < 1e-6
        if on_downbeat:  # land on a tone of this bar's chord
            root = progression[int(round(t / bar)) % len(progression)]
            degree = root + int(rng.choice([0, 2, 4])) + len(scale) * (degree // len(scale))
        else:
            degree += int(rng.choice([-2, -1, 0, 1, 2], p=[0.15, 0.3, 0.1, 0.3, 0.15]))
        degree = int(np.clip(degree, 0, 2 * len(scale) - 1))
        if rng.random() > 0.1:
            place(_note(rng, pitch(degree, 1), length * rng.uniform(0.85, 1.0), sample_rate, melody_timbre), t, 1.0)
        t += length

    clip = mix[:n]
    return (PEAK * clip / max(float(np.max(np.abs(clip))), 1e-9)).astype(np.float32)
