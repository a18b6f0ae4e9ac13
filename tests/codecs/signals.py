"""Deterministic test audio for the codec tests: speech-like sound, tones, and the measures.

``speech`` is a source-filter imitation of four spoken syllables: a glottal harmonic series
with a gliding pitch, shaped by vowel formants that change per syllable, with noise bursts
(fricatives) between them.  Speech codecs model exactly this (pitch, spectral envelope,
noise), so a round trip that keeps it keeps speech; being a formula, it is the same on every
machine and needs no recording or TTS engine.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

_VOWELS = (  # formant frequencies (Hz) of /a/, /i/, /u/, /e/
    (730.0, 1090.0, 2440.0),
    (270.0, 2290.0, 3010.0),
    (300.0, 870.0, 2240.0),
    (530.0, 1840.0, 2480.0),
)
_FORMANT_WIDTH = (90.0, 110.0, 170.0)
_FORMANT_GAIN = (1.0, 0.6, 0.3)


def speech(rate: int, seconds: float = 1.0, top: float = 7000.0) -> npt.NDArray[np.int16]:
    """Speech-like int16 audio at ``rate``, with no harmonic above ``top`` Hz."""
    n = int(rate * seconds)
    t = np.arange(n) / rate
    f0 = 125.0 + 25.0 * np.sin(2 * np.pi * 1.3 * t) + 12.0 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    syllable = np.minimum((t / seconds * len(_VOWELS)).astype(int), len(_VOWELS) - 1)
    formants = np.array(_VOWELS)[syllable]
    voiced = np.zeros(n)
    for k in range(1, int(top / f0.min()) + 1):
        freq = k * f0
        amp = 0.15 / (1.0 + freq / 400.0)
        for j in range(3):
            distance = (freq - formants[:, j]) / _FORMANT_WIDTH[j]
            amp = amp + _FORMANT_GAIN[j] * np.exp(-(distance**2))
        voiced += np.where(freq < min(top, 0.45 * rate), amp, 0.0) * np.sin(k * phase)
    position = (t / seconds * len(_VOWELS)) % 1.0
    voiced_env = np.where(position < 0.75, np.sin(np.pi * position / 0.75) ** 2, 0.0)
    noise = np.diff(np.random.default_rng(7).normal(size=n + 1))
    noise_env = np.where(position >= 0.78, np.sin(np.pi * (position - 0.78) / 0.22) ** 2, 0.0)
    mix = voiced * voiced_env / np.abs(voiced).max() + 0.15 * noise * noise_env
    return (12000.0 * mix / np.abs(mix).max()).astype(np.int16)


def tone(rate: int, freq: float, seconds: float = 1.0, level: float = 8000.0) -> np.ndarray:
    """A sine of ``freq`` Hz at ``rate``, as int16."""
    t = np.arange(int(rate * seconds)) / rate
    return (level * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def aligned_correlation(reference: np.ndarray, decoded: np.ndarray, max_lag: int) -> float:
    """Peak normalised cross-correlation of ``decoded`` against ``reference`` delayed 0..max_lag.

    Codecs delay their output (look-ahead, filter banks); the peak over the lags is the
    similarity once that delay is taken out.  1.0 is identical up to gain.
    """
    x = reference.astype(np.float64)
    y = decoded.astype(np.float64)
    n = min(len(x), len(y))
    best = 0.0
    for lag in range(max_lag + 1):
        a, b = x[: n - lag], y[lag:n]
        denominator = np.sqrt(np.dot(a, a) * np.dot(b, b))
        if denominator:
            best = max(best, float(np.dot(a, b) / denominator))
    return best


def band_fraction(samples: np.ndarray, rate: int, low: float, high: float) -> float:
    """Share of the signal's energy between ``low`` and ``high`` Hz (0..1)."""
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64) * np.hanning(len(samples)))) ** 2
    freqs = np.fft.rfftfreq(len(samples), 1.0 / rate)
    total = spectrum.sum()
    return float(spectrum[(freqs >= low) & (freqs <= high)].sum() / total) if total else 0.0


def frames(samples: np.ndarray, size: int) -> list[np.ndarray]:
    """``samples`` cut into whole frames of ``size`` (a trailing partial frame is dropped)."""
    return [samples[i : i + size] for i in range(0, len(samples) - size + 1, size)]
