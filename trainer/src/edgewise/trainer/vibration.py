"""A built-in sensor data set: accelerometer windows of a rotating machine, made from physics.

A shaft turns at a speed that differs from window to window (and drifts a little within
one); a 3-axis accelerometer on the bearing housing sees x and y radial, z axial. Each
class adds the vibration signature a maintenance engineer looks for:

- ``normal``: a small 1x (shaft speed) component, a little 2x, broadband noise;
- ``imbalance``: a strong 1x, radial, in quadrature on x/y, growing with speed squared
  (the centrifugal force of the unbalanced mass);
- ``misalignment``: a strong 2x with 1x, and a large axial (z) component;
- ``bearing_fault``: an outer-race defect: impacts at the ball-pass frequency
  BPFO = n/2 * (1 - d/D cos(phi)) * f_shaft, each ringing the housing's resonance
  (a decaying burst at a few hundred Hz), with a little slip jitter.

Machines differ (``Machine``): their speed range, the housing's resonance, and where and
how the sensor is mounted (which recorded channel sees which axis, with what gain).
``fleet`` draws many machines for a transfer-learning base; a new machine is another draw.

Everything comes from one seeded ``numpy.random.Generator``: the same seed gives the same
bytes. No file is read or downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CLASSES = ("normal", "imbalance", "misalignment", "bearing_fault")
CHANNELS = ("x", "y", "z")
SAMPLE_RATE_HZ = 2560.0
WINDOW = 256  # 0.1 s at 2,560 Hz
# A deep-groove bearing: 9 balls, ball/pitch diameter ratio 0.25, no contact angle.
N_BALLS = 9
BALL_PITCH_RATIO = 0.25
BPFO_FACTOR = N_BALLS / 2 * (1 - BALL_PITCH_RATIO)  # 3.375 x shaft speed


def _harmonic(
    t: np.ndarray, f: float, drift: float, k: int, phase: float
) -> tuple[np.ndarray, np.ndarray]:
    """cos/sin of the k-th shaft harmonic, with the speed drifting linearly over the window."""
    # Instantaneous frequency f * (1 + drift * t / T); phase is its integral.
    span = t[-1] if t[-1] > 0 else 1.0
    angle = 2 * np.pi * k * f * (t + drift * t**2 / (2 * span)) + phase
    return np.cos(angle), np.sin(angle)


@dataclass(frozen=True)
class Machine:
    """One machine and its sensor: the default is the built-in data set's."""

    shaft_hz: tuple[float, float] = (20.0, 50.0)
    resonance_hz: tuple[float, float] = (550.0, 800.0)
    axes: tuple[int, int, int] = (0, 1, 2)  # recorded channel k holds axis axes[k]
    gains: tuple[float, float, float] = (1.0, 1.0, 1.0)  # per recorded channel
    noise: float = 0.05
    severity: float = 1.0  # fault amplitudes: below 1, early faults that noise half hides


def random_machine(rng: np.random.Generator) -> Machine:
    """Another machine: slower or faster, another housing, the sensor mounted otherwise."""
    low = float(rng.uniform(12.0, 40.0))
    centre = float(rng.uniform(300.0, 1000.0))
    return Machine(
        shaft_hz=(low, low + float(rng.uniform(8.0, 20.0))),
        resonance_hz=(0.85 * centre, 1.15 * centre),
        axes=tuple(int(a) for a in rng.permutation(3)),  # type: ignore[arg-type]
        gains=tuple(float(g) for g in rng.uniform(0.5, 2.0, 3)),  # type: ignore[arg-type]
        noise=float(rng.uniform(0.05, 0.4)),
        severity=float(rng.uniform(0.25, 1.0)),
    )


def _bearing_impacts(
    t: np.ndarray,
    f_shaft: float,
    rng: np.random.Generator,
    resonance_hz: tuple[float, float] = (550.0, 800.0),
) -> np.ndarray:
    """Decaying resonance bursts at the outer-race ball-pass frequency."""
    bpfo = BPFO_FACTOR * f_shaft
    resonance = rng.uniform(*resonance_hz)
    decay = rng.uniform(120.0, 250.0)  # 1/s
    period = 1.0 / bpfo
    start = rng.uniform(0, period)
    n_impacts = int((t[-1] - start) / period) + 2
    signal = np.zeros_like(t)
    for i in range(n_impacts):
        # Rolling elements slip: impacts are not exactly periodic (1-2 % jitter).
        t0 = start + i * period * (1 + rng.normal(0, 0.015))
        dt = t - t0
        mask = dt >= 0
        signal[mask] += (
            rng.uniform(0.7, 1.0)
            * np.exp(-decay * dt[mask])
            * np.sin(2 * np.pi * resonance * dt[mask])
        )
    return signal


def _window(
    label: str,
    rng: np.random.Generator,
    window: int,
    machine: Machine,
) -> np.ndarray:
    t = np.arange(window) / SAMPLE_RATE_HZ
    f = rng.uniform(*machine.shaft_hz)  # shaft speed, by default 1,200-3,000 rpm
    drift = rng.uniform(-0.02, 0.02)
    phase = rng.uniform(0, 2 * np.pi)
    c1, s1 = _harmonic(t, f, drift, 1, phase)
    c2, s2 = _harmonic(t, f, drift, 2, 2 * phase + rng.uniform(0, 2 * np.pi))
    speed2 = (f / 35.0) ** 2
    x = rng.uniform(0.05, 0.15) * c1 + rng.uniform(0.0, 0.05) * c2
    y = rng.uniform(0.05, 0.15) * s1 + rng.uniform(0.0, 0.05) * s2
    z = rng.uniform(0.0, 0.05) * c1
    if label == "imbalance":
        a = rng.uniform(0.4, 1.0) * speed2 * machine.severity
        x, y = x + a * c1, y + a * s1
    elif label == "misalignment":
        a1, a2 = machine.severity * rng.uniform(0.2, 0.4), machine.severity * rng.uniform(0.3, 0.7)
        x, y = x + a1 * c1 + a2 * c2, y + a1 * s1 + a2 * s2
        z = z + rng.uniform(0.5, 1.0) * (a1 * c1 + a2 * c2)
    elif label == "bearing_fault":
        burst = (
            machine.severity
            * rng.uniform(0.3, 0.8)
            * _bearing_impacts(t, f, rng, machine.resonance_hz)
        )
        x, y, z = x + burst, y + 0.6 * burst, z + 0.2 * burst
    signals = np.stack([x, y, z], axis=-1)[:, list(machine.axes)] * np.asarray(machine.gains)
    # Sensor noise, and a per-window mounting gain of +-10 %.
    signals = signals * rng.uniform(0.9, 1.1) + rng.normal(0, machine.noise, size=signals.shape)
    return signals.astype(np.float32)


def generate(
    per_class: int = 200,
    window: int = WINDOW,
    noise: float = 0.05,
    seed: int = 0,
    shaft_hz: tuple[float, float] = (20.0, 50.0),
    machine: Machine | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``per_class`` windows of each class: X (N, window, 3) float32 in g, y (N,) class names.

    Rows are shuffled with the same seed, so any prefix holds all classes. ``shaft_hz``
    is the range of shaft speeds (another machine, or the same one run faster: drift);
    ``machine``, when given, replaces ``shaft_hz`` and ``noise``.
    """
    if per_class < 1 or window < 16:
        raise ValueError(f"per_class must be >= 1 and window >= 16, got {per_class}, {window}")
    machine = machine or Machine(shaft_hz=shaft_hz, noise=noise)
    rng = np.random.default_rng(seed)
    X = np.stack([_window(c, rng, window, machine) for c in CLASSES for _ in range(per_class)])
    y = np.repeat(np.asarray(CLASSES), per_class)
    order = rng.permutation(len(y))
    return X[order], y[order]


def fleet(machines: int, per_class: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Windows from ``machines`` random machines (``random_machine``), shuffled together:
    a varied base for transfer learning."""
    rng = np.random.default_rng(seed)
    parts = [
        generate(per_class, machine=random_machine(rng), seed=int(rng.integers(2**31)))
        for _ in range(machines)
    ]
    X, y = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    order = rng.permutation(len(y))
    return X[order], y[order]
