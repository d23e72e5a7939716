"""Health figures: latency percentiles, RSS, CPU temperature from thermal zones."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgewise.edge.core.health import LatencyWindow, cpu_temperature, rss_bytes


def test_latency_window_percentiles_over_the_last_values() -> None:
    window = LatencyWindow(size=100)
    assert window.summary() == {"p50_ms": None, "p99_ms": None, "n": 0}
    rng = np.random.default_rng(0)
    values = rng.exponential(2.0, 300)
    for v in values:
        window.add(float(v))
    last = values[-100:]
    summary = window.summary()
    assert summary["n"] == 100
    assert summary["p50_ms"] == pytest.approx(np.percentile(last, 50), abs=1e-4)
    assert summary["p99_ms"] == pytest.approx(np.percentile(last, 99), abs=1e-4)


def test_rss_is_this_process() -> None:
    before = rss_bytes()
    block = np.ones(64 << 20, dtype=np.uint8)  # 64 MiB, touched
    assert rss_bytes() - before > 48 << 20
    del block


def zone(root: Path, name: str, kind: str, millideg: str) -> None:
    (root / name).mkdir(parents=True)
    (root / name / "type").write_text(kind + "\n")
    (root / name / "temp").write_text(millideg + "\n")


@pytest.mark.parametrize(
    ("zones", "expected"),
    [
        ([], None),
        ([("thermal_zone0", "acpitz", "27800")], 27.8),
        ([("thermal_zone0", "gpu", "40000"), ("thermal_zone1", "cpu-thermal", "51234")], 51.2),
        ([("thermal_zone0", "cpu-thermal", "garbage"), ("thermal_zone1", "soc", "48000")], 48.0),
    ],
)
def test_cpu_temperature(
    tmp_path: Path, zones: list[tuple[str, str, str]], expected: float | None
) -> None:
    for name, kind, value in zones:
        zone(tmp_path, name, kind, value)
    assert cpu_temperature(tmp_path) == expected
