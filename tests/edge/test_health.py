"""Health figures: latency percentiles, RSS, CPU temperature from thermal zones."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edgewise.deploy.broker import LocalBroker
from edgewise.edge.core.config import AgentConfig
from edgewise.edge.core.health import (
    LatencyWindow,
    cpu_temperature,
    probe,
    probe_path,
    rss_bytes,
)
from tests.agents import new_device, serving


def test_latency_window_percentiles_over_the_last_values() -> None:
    window = LatencyWindow(size=100)
    assert window.summary() == {"p50_ms": None, "p99_ms": None, "n": 0, "count": 0, "sum_ms": 0}
    rng = np.random.default_rng(0)
    values = rng.exponential(2.0, 300)
    for v in values:
        window.add(float(v))
    last = values[-100:]
    summary = window.summary()
    assert summary["n"] == 100
    assert summary["p50_ms"] == pytest.approx(np.percentile(last, 50), abs=1e-4)
    assert summary["p99_ms"] == pytest.approx(np.percentile(last, 99), abs=1e-4)
    # Count and sum are of every latency (a Prometheus summary's _count and _sum).
    assert summary["count"] == 300
    assert summary["sum_ms"] == pytest.approx(values.sum(), abs=1e-3)


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


# -- the local probe (edgewise agent --probe: a container's health check) -----------------


def test_probe_follows_the_running_agent(
    broker: LocalBroker, iris_bundle: Path, tmp_path: Path
) -> None:
    device = new_device("probe")
    with serving(broker, [iris_bundle], device, state_dir=tmp_path, health_interval=1.0) as agent:
        deadline = time.monotonic() + 10
        while probe(agent.config) is not None:
            assert time.monotonic() < deadline, probe(agent.config)
            time.sleep(0.1)
        config = agent.config
        command = [sys.executable, "-m", "edgewise", "agent", "--bundle", str(iris_bundle)]
        command += ["--device", device, "--state-dir", str(tmp_path), "--health-interval", "1"]
        healthy = subprocess.run([*command, "--probe"], capture_output=True, text=True)
        assert healthy.returncode == 0 and healthy.stdout.strip() == f"healthy: {device}"
    # Stopped: the last report ages out.
    assert "s old" in (probe(config, now=time.time() + 60) or "")
    stale = subprocess.run([*command, "--probe"], capture_output=True, text=True)
    assert stale.returncode == 0  # still within three intervals right after the stop
    doc = json.loads(probe_path(config).read_text())
    assert doc["connected"] is True


def test_probe_says_why(tmp_path: Path, iris_bundle: Path) -> None:
    config = AgentConfig(bundles=(str(iris_bundle),), device="p-1", state_dir=str(tmp_path))
    assert probe(config) == f"no agent has reported in {probe_path(config)} yet"
    probe_path(config).write_text("{")
    assert "unreadable" in (probe(config) or "")
    now = time.time()
    for doc, why in [
        ({"time": now, "connected": False, "worker_heartbeat_age_s": 0.1}, "not connected"),
        (
            {"time": now, "connected": True, "worker_heartbeat_age_s": 31.0},
            "has not beaten for 31 s",
        ),
        ({"time": now, "connected": True, "worker_heartbeat_age_s": 0.1}, None),
    ]:
        probe_path(config).write_text(json.dumps(doc))
        assert probe(config) == why or why in (probe(config) or "")
