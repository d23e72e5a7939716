"""What the agent reports on its retained ``health`` topic: latencies and process figures.

Standard library and numpy only: RSS from /proc (or getrusage), CPU temperature from the
Linux thermal zones where the device exposes them.
"""

from __future__ import annotations

import logging
import os
import resource
import sys
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from edgewise.edge.errors import EdgewiseError
from edgewise.edge.link.payload import encode

if TYPE_CHECKING:
    from collections.abc import Mapping

    from edgewise.edge.core.config import AgentConfig
    from edgewise.edge.core.feature import Features
    from edgewise.edge.link.delivery import Delivery
    from edgewise.edge.link.topics import Topics
    from edgewise.edge.link.transport import Transport
    from edgewise.edge.runtime.model import ServedModel

log = logging.getLogger(__name__)

THERMAL_ROOT = Path("/sys/class/thermal")


@dataclass
class Counters:
    """What the agent has done since it started (health reporting and tests read it)."""

    received: int = 0
    answered: int = 0
    errors: int = 0
    overloaded: int = 0
    duplicates: int = 0  # redeliveries of requests already answered, skipped
    peak_queued: int = 0  # most requests ever waiting for the worker (back-pressure check)
    internal_errors: int = 0  # requests answered "internal": a bug, logged with its traceback
    backend_calls: int = 0  # model runs; fewer than answered when requests were batched
    batched_requests: int = 0  # requests answered by a run shared with other requests
    largest_batch: int = 0  # most instances in one shared run


class ModelTally:
    """Per served model: answers, and error answers by code (thread-safe).

    Only models the agent serves are counted, so a client cannot grow it by naming
    models: the label set the exporter sees stays bounded.
    """

    def __init__(self) -> None:
        self._counts: dict[str, dict[str, int]] = {}
        self._lock = threading.Lock()

    def add(self, model: str, outcome: str) -> None:
        """One request of a served model: ``answered`` or an error code."""
        with self._lock:
            counts = self._counts.setdefault(model, {})
            counts[outcome] = counts.get(outcome, 0) + 1

    def snapshot(self, model: str) -> dict[str, int]:
        with self._lock:
            return dict(self._counts.get(model, {}))


class Reporting(Protocol):
    """What the health report reads of the serving core (``edge.core.agent.Agent``)."""

    config: AgentConfig
    topics: Topics
    session: str
    storage_error: str | None
    counters: Counters
    tally: ModelTally
    inference_ms: dict[str, LatencyWindow]
    e2e_ms: dict[str, LatencyWindow]
    features: Features

    @property
    def models(self) -> Mapping[str, ServedModel]: ...
    @property
    def connection(self) -> Transport: ...
    @property
    def delivery(self) -> Delivery: ...
    @property
    def uptime(self) -> float: ...
    @property
    def heartbeat_age(self) -> float: ...
    @property
    def queued(self) -> int: ...
    @property
    def forwarding(self) -> int: ...
    @property
    def dead_letters(self) -> int: ...
    @property
    def overwritten(self) -> int: ...


def health_document(agent: Reporting) -> dict[str, Any]:
    """The agent's retained health report (docs/mqtt.md#health-health-retained).

    The core's figures, in the document's order, with each feature's keys at their place
    (roll-outs, shadows, drift, capture, worker processes): features fill them in
    (``Feature.health``); with ``workers`` > 1 that adds the helper processes' counters
    and per-model outcomes."""
    counters = counters_document(agent)
    doc: dict[str, Any] = {
        "device": agent.config.device,
        "session": agent.session,
        "groups": list(agent.config.groups),
        "pool": agent.config.pool,
        "remote_deploy": False,
        "refused_desired": 0,
        "uptime_s": round(agent.uptime, 1),
        # The start as a wall-clock second (Home Assistant's last-boot timestamp) and the
        # interval of these reports (a monitor's staleness bound).
        "started": round(time.time() - agent.uptime),
        "health_interval_s": agent.config.health_interval,
        "connected": agent.connection.connected,
        # Durable only while answers are really being stored.
        "durable": agent.config.durable and agent.storage_error is None,
        "outbox_error": agent.storage_error,
        "worker_heartbeat_age_s": round(agent.heartbeat_age, 3),
        "counters": counters,
        "models": {
            name: {
                "version": model.version,
                "sha256": model.bundle.sha256,
                "backend": model.backend.name,
                "inference_ms": agent.inference_ms[name].summary(),
                "e2e_ms": agent.e2e_ms[name].summary(),
                **outcomes(agent.tally.snapshot(name)),
            }
            for name, model in agent.models.items()
        },
        "shadows": {},
        "drift": {},
        "capture": None,
        "workers": None,
        "rss_bytes": rss_bytes(),
        "cpu_temp_c": cpu_temperature(),
        "time": time.time(),
    }
    agent.features.health(doc)
    return doc


def outcomes(counts: dict[str, int]) -> dict[str, Any]:
    """A model's tally as health shows it: answered, and errors by code."""
    counts = dict(counts)
    answered = counts.pop("answered", 0)
    return {"answered": answered, "errors": counts}


def counters_document(agent: Reporting) -> dict[str, Any]:
    """The process's counters, with its delivery and connection figures."""
    counters = asdict(agent.counters)
    counters.update(
        dropped=agent.delivery.dropped,
        dead_letters=agent.dead_letters,
        outbox_depth=agent.delivery.depth,
        reconnects=agent.connection.reconnects,
        queued=agent.queued,
        # answered and forwarded, waiting for the broker's PUBACKs before their own
        forwarding=agent.forwarding,
        # paho callbacks and feature hooks that raised (each logged, none stopped a thread)
        callback_errors=agent.connection.callback_errors + agent.features.errors,
        overwritten=agent.overwritten,
    )
    return counters


class LatencyWindow:
    """The last ``size`` latencies in ms, percentiles on demand, and the count and sum of
    every latency added (a Prometheus summary's ``_count`` and ``_sum``; thread-safe)."""

    def __init__(self, size: int = 2048) -> None:
        self._values: deque[float] = deque(maxlen=size)
        self._lock = threading.Lock()
        self._count = 0
        self._sum = 0.0

    def add(self, ms: float) -> None:
        with self._lock:
            self._values.append(ms)
            self._count += 1
            self._sum += ms

    def summary(self) -> dict[str, float | int | None]:
        """``p50_ms``, ``p99_ms`` and ``n`` of the window (None when nothing was measured
        yet), and ``count`` and ``sum_ms`` of all."""
        with self._lock:
            values = np.fromiter(self._values, dtype=np.float64, count=len(self._values))
            count, total = self._count, self._sum
        done: dict[str, float | int | None] = {"count": count, "sum_ms": round(total, 4)}
        if values.size == 0:
            return {"p50_ms": None, "p99_ms": None, "n": 0, **done}
        p50, p99 = np.percentile(values, [50, 99])
        return {
            "p50_ms": round(float(p50), 4),
            "p99_ms": round(float(p99), 4),
            "n": values.size,
            **done,
        }


def report_health(agent: Reporting, stop: threading.Event) -> None:
    """The health thread: a report once connected (or after one interval), then one per
    ``health_interval``; ``stop`` ends any wait."""
    write_probe(agent)
    first = time.monotonic() + agent.config.health_interval
    while not agent.connection.connected and time.monotonic() < first:
        if stop.wait(0.2):
            return
    while not stop.is_set():
        if agent.connection.connected:
            publish_health(agent)
        write_probe(agent)
        stop.wait(agent.config.health_interval)


# A worker whose last heartbeat is older than this is stalled (the unit's WatchdogSec).
STALLED_S = 30.0
_probe_failed = False


def probe_path(config: AgentConfig) -> Path:
    """The file ``edgewise agent --probe`` reads: a container's health check."""
    return Path(config.state_dir) / f"{config.device}.alive.json"


def write_probe(agent: Reporting) -> None:
    """Say locally, once per health interval, that the agent lives and whether it is
    connected; never raises (a read-only state folder costs the probe, not the agent)."""
    global _probe_failed
    path = probe_path(agent.config)
    doc = {
        "time": time.time(),
        "connected": agent.connection.connected,
        "worker_heartbeat_age_s": round(agent.heartbeat_age, 3),
    }
    try:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(encode(doc))
        os.replace(tmp, path)
    except OSError as exc:
        if not _probe_failed:  # once: it would fail the same way every interval
            log.warning("cannot write %s (edgewise agent --probe reads it): %s", path, exc)
        _probe_failed = True


def probe(config: AgentConfig, now: float | None = None) -> str | None:
    """Why the agent running with ``config`` is unhealthy, or None when it is healthy:
    it wrote its probe file within three health intervals, is connected to the broker,
    and its inference worker is not stalled."""
    import json

    path = probe_path(config)
    try:
        doc = json.loads(path.read_bytes())
        written, connected = float(doc["time"]), doc["connected"] is True
        heartbeat = float(doc["worker_heartbeat_age_s"])
    except FileNotFoundError:
        return f"no agent has reported in {path} yet"
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"{path}: unreadable ({exc})"
    age = (time.time() if now is None else now) - written
    if age > 3 * config.health_interval + 5:
        interval = config.health_interval
        return f"the agent's last report is {age:.0f} s old (health_interval {interval:g} s)"
    if not connected:
        return "the agent is not connected to the broker"
    if heartbeat > STALLED_S:
        return f"the inference worker has not beaten for {heartbeat:.0f} s"
    return None


def publish_health(agent: Reporting) -> None:
    """Publish the retained report now; never raises (health must not take the agent down)."""
    try:
        body = encode(health_document(agent))
    except Exception:
        log.exception("could not build the health report")
        return
    try:
        agent.connection.publish(agent.topics.health, body, qos=1, retain=True)
    except EdgewiseError as exc:
        log.error("health report not published: %s", exc)


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
