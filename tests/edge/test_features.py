"""Window features (the same code on host and device) on signals with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from edgewise.edge.runtime.features import DEFAULT_BANDS, STATS, feature_names, window_features

FS = 1000.0
T = 500


def sine(freq: float, amp: float, n: int = T) -> np.ndarray:
    t = np.arange(n) / FS
    return amp * np.sin(2 * np.pi * freq * t)


def test_names_match_columns() -> None:
    X = np.zeros((2, T, 3), np.float32)
    X[:, :, 0] = sine(50, 1.0)
    out = window_features(X, FS)
    names = feature_names(["x", "y", "z"])
    assert out.shape == (2, len(names)) == (2, 3 * (len(STATS) + DEFAULT_BANDS))
    assert out.dtype == np.float32 and len(set(names)) == len(names)


@pytest.mark.parametrize(("freq", "amp"), [(50.0, 1.0), (120.0, 2.5), (310.0, 0.3)])
def test_sine_statistics(freq: float, amp: float) -> None:
    window = sine(freq, amp)[None, :, None]
    values = dict(zip(feature_names(["s"]), window_features(window, FS)[0], strict=True))
    assert values["s_rms"] == pytest.approx(amp / np.sqrt(2), rel=1e-3)
    assert values["s_peak"] == pytest.approx(amp, rel=1e-2)
    assert values["s_crest"] == pytest.approx(np.sqrt(2), rel=1e-2)
    assert values["s_kurtosis"] == pytest.approx(1.5, rel=1e-2)  # a sine's kurtosis
    assert values["s_dominant_hz"] == pytest.approx(freq, abs=FS / T)
    band = int(freq / (FS / 2) * DEFAULT_BANDS)  # the band holding the tone gets the energy
    assert values[f"s_band{band}"] > 0.95


def test_impulses_raise_kurtosis_and_crest() -> None:
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 1, (1, T, 1))
    impulsive = noise.copy()
    impulsive[0, ::50, 0] += 12.0
    quiet, spiky = window_features(np.concatenate([noise, impulsive]), FS)
    k = feature_names(["s"]).index("s_kurtosis")
    c = feature_names(["s"]).index("s_crest")
    assert spiky[k] > 3 * quiet[k] and spiky[c] > quiet[c]


def test_bad_shape_is_refused() -> None:
    with pytest.raises(ValueError, match=r"\(N, T, C\)"):
        window_features(np.zeros((4, 10)), FS)
