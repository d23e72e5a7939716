"""What the agent reports on its retained ``health`` topic: latencies and process figures.

Standard library and numpy only: RSS from /proc (or getrusage), CPU temperature from the
Linux thermal zones where the device exposes them.
"""

from __future__ import annotations

import os
import resource
import sys
import threading
from collections import deque
from pathlib import Path

import numpy as np

THERMAL_ROOT = Path("/sys/class/thermal")


class LatencyWindow:
    """The last ``size`` latencies in ms; percentiles on demand (thread-safe)."""

    def __init__(self, size: int = 2048) -> None:
        self._values: deque[float] = deque(maxlen=size)
        self._lock = threading.Lock()

    def add(self, ms: float) -> None:
        with self._lock:
            self._values.append(ms)

    def summary(self) -> dict[str, float | int | None]:
        """``p50_ms``, ``p99_ms`` and ``n`` (None when nothing was measured yet)."""
        with self._lock:
            values = np.fromiter(self._values, dtype=np.float64, count=len(self._values))
        if values.size == 0:
            return {"p50_ms": None, "p99_ms": None, "n": 0}
        p50, p99 = np.percentile(values, [50, 99])
        return {"p50_ms": round(float(p50), 4), "p99_ms": round(float(p99), 4), "n": values.size}


def rss_bytes() -> int:
    """Resident set size of this process now (peak RSS where /proc is missing)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(peak if sys.platform == "darwin" else peak * 1024)


def cpu_temperature(root: Path = THERMAL_ROOT) -> float | None:
    """CPU temperature in °C from the first CPU-like thermal zone, or None."""
    zones = sorted(root.glob("thermal_zone*"))
    preferred = [z for z in zones if _zone_type(z).startswith(("cpu", "soc", "x86_pkg"))]
    for zone in preferred or zones:
        try:
            millideg = int((zone / "temp").read_text().strip())
        except (OSError, ValueError):
            continue
        return round(millideg / 1000.0, 1)
    return None


def _zone_type(zone: Path) -> str:
    try:
        return (zone / "type").read_text().strip().lower()
    except OSError:
        return ""
