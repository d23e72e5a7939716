"""Hand-made features of sensor windows, the same code on the host (training) and on the
device (serving), so a classical model on features runs from raw windows on the device.

Per channel: mean, std, RMS, peak, crest factor, kurtosis, skewness, dominant frequency,
spectral centroid, and the share of spectral energy in ``bands`` equal bands up to
Nyquist (DC removed). The manifest's ``input.window_features`` names the version, the
window shape, the sample rate and the band count; the agent checks windows against it.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

VERSION = 1
STATS = ("mean", "std", "rms", "peak", "crest", "kurtosis", "skew", "dominant_hz", "centroid_hz")
DEFAULT_BANDS = 8


def feature_names(channels: list[str], bands: int = DEFAULT_BANDS) -> list[str]:
    """Column names of ``window_features`` output, channel by channel."""
    names = []
    for ch in channels:
        names += [f"{ch}_{s}" for s in STATS]
        names += [f"{ch}_band{b}" for b in range(bands)]
    return names


@functools.lru_cache(maxsize=16)
def _spectrum_layout(t: int, sample_rate: float, bands: int) -> tuple[Any, Any]:
    """Frequencies of the rfft bins without DC, and the first bin of each band."""
    freqs = np.fft.rfftfreq(t, d=1.0 / sample_rate)[1:]
    starts = np.linspace(0, len(freqs), bands + 1).astype(int)[:-1]
    return freqs, starts


def window_features(
    windows: np.ndarray[Any, Any], sample_rate: float, bands: int = DEFAULT_BANDS
) -> np.ndarray[Any, Any]:
    """``(N, T, C)`` windows -> ``(N, C * (9 + bands))`` float32 features."""
    x = np.asarray(windows, dtype=np.float64)
    if x.ndim != 3:
        raise ValueError(f"windows must be (N, T, C), got shape {list(x.shape)}")
    n, t, c = x.shape
    freqs, starts = _spectrum_layout(t, float(sample_rate), bands)
    tiny = 1e-12
    mean = x.sum(axis=1) / t
    centered = x - mean[:, None, :]
    sq = centered * centered
    var = sq.sum(axis=1) / t
    std = np.sqrt(var)
    rms = np.sqrt(var + mean * mean)  # E[x^2] = var + mean^2
    peak = np.abs(x).max(axis=1)
    crest = peak / np.maximum(rms, tiny)
    kurt = (sq * sq).sum(axis=1) / t / np.maximum(var * var, tiny)
    skew = (sq * centered).sum(axis=1) / t / np.maximum(std**3, tiny)
    spec = np.fft.rfft(centered, axis=1)[:, 1:, :]  # no DC
    power = spec.real**2 + spec.imag**2  # (N, T//2, C)
    total = np.maximum(power.sum(axis=1), tiny)
    dominant = freqs[power.argmax(axis=1)]
    centroid = np.einsum("nfc,f->nc", power, freqs) / total
    shares = np.add.reduceat(power, starts, axis=1) / total[:, None, :]  # (N, bands, C)
    stats = np.stack([mean, std, rms, peak, crest, kurt, skew, dominant, centroid], axis=1)
    per_channel = np.concatenate([stats, shares], axis=1)  # (N, 9 + bands, C)
    return per_channel.transpose(0, 2, 1).reshape(n, c * (len(STATS) + bands)).astype(np.float32)
