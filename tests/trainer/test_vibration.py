"""The generated vibration set: reproducible, and each class carries its physical signature."""

from __future__ import annotations

import numpy as np
import pytest

from edgewise.trainer.vibration import BPFO_FACTOR, CLASSES, SAMPLE_RATE_HZ, WINDOW, generate


def test_same_seed_same_bytes_other_seed_differs() -> None:
    a_X, a_y = generate(per_class=20, seed=3)
    b_X, b_y = generate(per_class=20, seed=3)
    c_X, _ = generate(per_class=20, seed=4)
    assert a_X.tobytes() == b_X.tobytes() and (a_y == b_y).all()
    assert a_X.tobytes() != c_X.tobytes()


def test_shape_dtype_balance_and_shuffle() -> None:
    X, y = generate(per_class=30, seed=0)
    assert X.shape == (120, WINDOW, 3) and X.dtype == np.float32
    labels, counts = np.unique(y, return_counts=True)
    assert set(labels) == set(CLASSES) and set(counts) == {30}
    assert len(set(y[:12])) > 1  # shuffled: a prefix is not one class


def _band_energy(X: np.ndarray, lo: float, hi: float, axis: int) -> np.ndarray:
    spectrum = np.abs(np.fft.rfft(X[:, :, axis], axis=1)) ** 2
    freqs = np.fft.rfftfreq(X.shape[1], 1 / SAMPLE_RATE_HZ)
    return np.asarray(spectrum[:, (freqs >= lo) & (freqs < hi)].sum(axis=1))


@pytest.mark.parametrize(
    ("fault", "band", "axis", "factor"),
    [
        ("imbalance", (15, 60), 0, 4.0),  # 1x shaft speed (20-50 Hz), radial
        ("misalignment", (15, 110), 2, 4.0),  # 1x and 2x, axial
        ("bearing_fault", (450, 1000), 0, 4.0),  # the ringing resonance excited by impacts
    ],
)
@pytest.mark.parametrize("seed", [0, 1])
def test_fault_signature_stands_out_from_normal(
    fault: str, band: tuple[float, float], axis: int, factor: float, seed: int
) -> None:
    X, y = generate(per_class=40, seed=seed)
    normal = np.median(_band_energy(X[y == "normal"], *band, axis))
    faulty = np.median(_band_energy(X[y == fault], *band, axis))
    assert faulty > factor * normal, (fault, faulty, normal)


def test_bearing_impacts_repeat_at_the_ball_pass_frequency() -> None:
    """The envelope of a bearing-fault window peaks near BPFO = 3.375 x shaft speed."""
    from edgewise.trainer.vibration import _bearing_impacts

    rng = np.random.default_rng(0)
    t = np.arange(4 * WINDOW) / SAMPLE_RATE_HZ
    f_shaft = 30.0
    envelope = np.abs(_bearing_impacts(t, f_shaft, rng))
    spectrum = np.abs(np.fft.rfft(envelope - envelope.mean()))
    freqs = np.fft.rfftfreq(len(t), 1 / SAMPLE_RATE_HZ)
    low = (freqs > 20) & (freqs < 400)  # the envelope's rate, not the 2x resonance ringing
    peak = freqs[low][np.argmax(spectrum[low])]
    assert abs(peak - BPFO_FACTOR * f_shaft) < 6  # frequency resolution is 2.5 Hz
