"""``edgewise agent --workers N``: helper processes that share the device's requests.

One Python process with paho tops out near the broker round trip of a bare echo client
(docs/mqtt.md#throughput), so more throughput on one device takes more processes. The
agent process (the supervisor) serves like any agent and keeps everything that must be
single: the retained status, info and health, roll-outs, discovery, drift and capture. It
starts ``workers - 1`` helper processes (``python -m edgewise.edge.helper INDEX``). Each
helper has its own client id (``edgewise-agent-{device}-w{INDEX}``), MQTT session and
outbox, and serves requests only. All of them subscribe to the device's requests through
one MQTT 5 shared subscription, ``$share/{device}/{prefix}/{device}/+/in``, so the broker
deals each request to one process.

A helper reads its configuration as one JSON line on stdin (broker credentials appear in
neither its argv nor a file) and writes one JSON line of counters per second on stdout;
the supervisor sums them into its health. The helper stops when stdin closes, so a dead
supervisor leaves no helper behind. A helper that exits is started again after a capped,
jittered back-off; with persistent sessions the broker keeps the helper's share of
requests until it returns with the same client id. After a roll-out or a reload the
helpers are restarted one at a time, so that they serve the new versions. SIGTERM to the
agent drains the helpers with it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from edgewise.edge.core.feature import Feature
from edgewise.edge.link.backoff import Backoff

if TYPE_CHECKING:
    from edgewise.edge.core.config import AgentConfig
    from edgewise.edge.core.feature import Host
    from edgewise.edge.runtime.model import ServedModel

log = logging.getLogger(__name__)

REPORT_EVERY_S = 1.0
# A helper whose reports (one a second) stopped this long ago is frozen (SIGSTOP, a hung
# runtime, a swapping board): it holds its share of the requests, so it is killed and
# started again; the broker redelivers what it had not acknowledged to the new run.
STALL_S = 10.0
QUIET_S = 3.0  # health calls a helper stalled from here (missed reports), before the kill
START_GRACE_S = 30.0  # a new run has this long to send its first report (imports, models)
STEADY_S = 30.0  # a helper that ran this long restarts without back-off
MAXED = ("peak_queued", "largest_batch")  # counters that combine by max, not sum
RETIRE_QUIET_S = 2.0  # a retiring helper stops after this long with nothing to answer
GAUGES = (
    "queued",
    "outbox_depth",
    "forwarding",
)  # a level now: an ended run's last value is not kept


def helper_client_id(device: str, index: int) -> str:
    """The MQTT client id of helper ``index`` (its session is kept across restarts)."""
    return f"edgewise-agent-{device}-w{index}"


@dataclass
class Helper:
    """One helper process as the supervisor sees it."""

    index: int
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started_at: float = 0.0
    due: float = 0.0  # time.monotonic() of the next start while not running
    report: dict[str, Any] = field(default_factory=dict)  # the latest line it wrote
    carried: dict[str, Any] = field(default_factory=dict)  # earlier runs' last counters
    backoff: Backoff = field(default_factory=lambda: Backoff(initial=0.5, cap=10.0))
    heard_at: float = 0.0  # time.monotonic() of its latest report
    stalls: int = 0  # runs killed because their reports stopped

    def stalled(self, now: float, limit: float = QUIET_S) -> bool:
        """Running, but no report for ``limit`` seconds (or none within the start grace)."""
        if self.process is None or self.process.poll() is not None:
            return False
        if self.heard_at > self.started_at:
            return now - self.heard_at > limit
        return now - self.started_at > START_GRACE_S


class Workers(Feature):
    """The supervisor's side: starts, watches, restarts and stops the helpers."""

    def __init__(self, host: Host, fail: Callable[[str], None]) -> None:
        self._host = host
        self._config = host.config
        self._fail = fail  # stops the agent (edge.core.supervision): helpers need MQTT 5
        self.helpers = [Helper(i) for i in range(1, host.config.workers)]
        self._lock = threading.Lock()
        self.restart_requested = threading.Event()  # set by a roll-out, reload or rollback
        self._body = json.dumps(_helper_doc(host.config)).encode() + b"\n"
        self._stopping: threading.Thread | None = None
        self._stop_deadline = 0.0

    # -- the feature's points -------------------------------------------------------------

    def threads(self) -> Sequence[tuple[str, Callable[[threading.Event], None]]]:
        return [("workers", self.run)]

    def swapped(self, old: ServedModel | None, new: ServedModel | None) -> None:
        self.restart_requested.set()  # the helpers load what is active now

    def stopping(self, timeout: float) -> None:
        """They drain beside this process, within the same ``timeout``."""
        self._stopping = threading.Thread(target=self.stop, args=(timeout,), daemon=True)
        self._stopping.start()
        self._stop_deadline = time.monotonic() + timeout

    def close(self) -> None:
        if self._stopping is not None:
            self._stopping.join(max(0.1, self._stop_deadline - time.monotonic()))

    def health(self, doc: dict[str, Any]) -> None:
        """The helpers' counters and per-model outcomes added in; their summary."""
        self.add_counters(doc["counters"])
        tallies: dict[str, dict[str, int]] = {name: {} for name in doc["models"]}
        self.add_tallies(tallies)
        for name, counts in tallies.items():
            entry = doc["models"][name]
            entry["answered"] += counts.pop("answered", 0)
            for code, n in counts.items():
                entry["errors"][code] = entry["errors"].get(code, 0) + n
        doc["workers"] = self.summary()

    # -- the supervisor thread ------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """The ``workers`` thread: start the helpers once connected over MQTT 5, restart
        those that exit, and roll them after a new version is activated."""
        connection = self._host.link
        while not connection.connected:
            if stop.wait(0.2):
                return
        if connection.protocol != "5":
            self._fail(
                f"workers = {self._config.workers} needs MQTT 5 shared subscriptions; "
                f"the broker at {connection.broker} speaks MQTT {connection.protocol} only"
            )
            return
        while not stop.is_set():
            if self.restart_requested.is_set():
                self.restart_requested.clear()
                self._roll(stop)
            now = time.monotonic()
            for helper in self.helpers:
                process = helper.process
                if process is None:
                    if now >= helper.due:
                        self._start(helper)
                elif process.poll() is not None:
                    self._ended(helper, process.returncode, now)
                elif helper.stalled(now, STALL_S):
                    self._kill_stalled(helper, process, now)
            stop.wait(0.2)

    def _kill_stalled(self, helper: Helper, process: subprocess.Popen[bytes], now: float) -> None:
        quiet = now - max(helper.heard_at, helper.started_at)
        log.error(
            "worker %d (pid %d) sent no report for %.0f s: frozen; killing it and starting "
            "it again (its unacknowledged requests come back from the broker)",
            helper.index, process.pid, quiet,
        )  # fmt: skip
        process.kill()  # SIGKILL ends a stopped process too; SIGTERM would wait for SIGCONT
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(5)
        helper.stalls += 1
        self._ended(helper, process.returncode, now)

    def _start(self, helper: Helper) -> None:
        cmd = [sys.executable, "-m", "edgewise.edge.helper", str(helper.index)]
        # Its own session: a terminal's Ctrl-C reaches the supervisor, which drains it.
        process = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True
        )
        assert process.stdin is not None and process.stdout is not None
        try:
            process.stdin.write(self._body)  # kept open: its EOF tells the helper to stop
            process.stdin.flush()
        except OSError as exc:
            log.error("worker %d: could not pass its configuration: %s", helper.index, exc)
        helper.process, helper.started_at = process, time.monotonic()
        thread = threading.Thread(
            target=self._read, args=(helper, process.stdout), name=f"worker-{helper.index}-report"
        )
        thread.daemon = True
        thread.start()
        log.info("worker %d started (pid %d)", helper.index, process.pid)

    def _read(self, helper: Helper, out: IO[bytes]) -> None:
        """A helper's reports, until it exits (its stdout closes)."""
        try:
            for line in out:
                try:
                    report = json.loads(line)
                except ValueError:
                    continue  # a partial line from a helper that was killed
                if isinstance(report, dict):
                    with self._lock:
                        helper.report = report
                        helper.heard_at = time.monotonic()
        except Exception:  # the reader must not die silently; the helper is watched anyway
            log.exception("worker %d: reading its reports failed", helper.index)

    def _ended(self, helper: Helper, status: int, now: float, asked: bool = False) -> None:
        """Keep an ended run's counters; unless ``asked`` (a roll), count it and back off."""
        with self._lock:
            counters = helper.report.get("counters", {})
            ended = {k: v for k, v in counters.items() if k not in GAUGES}
            helper.carried = _combined(helper.carried, ended)
            tallies = helper.report.get("models", {})
            carried_models = helper.carried.setdefault("_models", {})
            for name, counts in tallies.items():
                carried_models[name] = _combined(carried_models.get(name, {}), counts)
            helper.report = {}
        helper.process = None
        if asked:
            helper.backoff.reset()
            return
        helper.restarts += 1
        if now - helper.started_at >= STEADY_S:
            helper.backoff.reset()
        wait = helper.backoff.next()
        helper.due = now + wait
        log.warning(
            "worker %d exited with status %s; starting it again in %.1f s",
            helper.index,
            status,
            wait,
        )

    def _roll(self, stop: threading.Event) -> None:
        """Restart the helpers one at a time (each drains, then loads the active versions)."""
        for helper in self.helpers:
            if stop.is_set():
                return
            process = helper.process
            if process is None:
                continue
            log.info("worker %d: restarting for the new versions", helper.index)
            _terminate([process], self._config.drain_timeout + 5.0)
            self._ended(helper, process.returncode, time.monotonic(), asked=True)
            self._start(helper)

    # -- stopping, health ---------------------------------------------------------------

    def stop(self, timeout: float) -> None:
        """SIGTERM every helper (each drains) and wait up to ``timeout``; then SIGKILL."""
        running = [h.process for h in self.helpers if h.process is not None]
        _terminate([p for p in running if p.poll() is None], timeout)

    def add_counters(self, counters: dict[str, Any]) -> None:
        """Add the helpers' counters (their current and earlier runs) to ``counters``."""
        with self._lock:
            for helper in self.helpers:
                for source in (helper.carried, helper.report.get("counters", {})):
                    counters.update(_combined(counters, source))

    def add_tallies(self, tallies: dict[str, dict[str, int]]) -> None:
        """Add the helpers' per-model outcomes to ``tallies`` (models served here only)."""
        with self._lock:
            for helper in self.helpers:
                for source in (helper.carried.get("_models", {}), helper.report.get("models", {})):
                    for name, counts in source.items():
                        if name in tallies:
                            tallies[name] = _combined(tallies[name], counts)

    def summary(self) -> list[dict[str, Any]]:
        """Per helper: index, pid, whether it runs (and is not stalled: its reports come)
        and is connected, seconds since its last report, restarts, stalls, answered."""
        now = time.monotonic()
        with self._lock:
            return [
                {
                    "index": h.index,
                    "pid": h.process.pid if h.process is not None else None,
                    "running": h.process is not None and h.process.poll() is None,
                    "stalled": h.stalled(now),
                    "report_age_s": round(now - h.heard_at, 1) if h.heard_at else None,
                    "connected": bool(h.report.get("connected", False)) and not h.stalled(now),
                    "restarts": h.restarts,
                    "stalls": h.stalls,
                    "answered": int(h.report.get("counters", {}).get("answered", 0))
                    + int(h.carried.get("answered", 0)),
                }
                for h in self.helpers
            ]


def _combined(into: dict[str, Any], add: dict[str, Any]) -> dict[str, Any]:
    """Counters added (``MAXED`` ones by max); non-numbers are left out."""
    out = dict(into)
    for key, value in add.items():
        if isinstance(value, bool) or not isinstance(value, int):
            continue
        old = out.get(key, 0)
        out[key] = max(old, value) if key in MAXED else old + value
    return out


def _terminate(processes: Sequence[subprocess.Popen[bytes]], timeout: float) -> None:
    for process in processes:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for process in processes:
        try:
            process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("worker pid %d did not drain in time: killing it", process.pid)
            process.kill()
            process.wait(5)


class Retirement(Feature):
    """The main process, at start: helpers of a larger ``workers`` retire (below)."""

    def __init__(self, config: AgentConfig) -> None:
        self._config = config
        self.retiring: list[subprocess.Popen[bytes]] = []

    def started(self) -> None:
        self.retiring = retire_stale_helpers(self._config)


def retire_stale_helpers(config: AgentConfig) -> list[subprocess.Popen[bytes]]:
    """After ``workers`` was lowered: start each helper that no longer runs once more, to
    leave the shared subscription and answer what the broker held for its session (with
    persistent sessions the broker keeps dealing it requests until it unsubscribes).
    Records the count in ``state_dir``; returns the retiring processes (they exit alone)."""
    if not config.durable:
        return []  # clean sessions end with the connection: nothing is held
    record = Path(config.state_dir) / f"{config.device}.workers"
    try:
        before = int(record.read_text(encoding="ascii"))
    except (OSError, ValueError):
        before = 1
    retiring = []
    for index in range(config.workers, min(before, 64)):
        log.info("worker %d no longer runs (workers %d -> %d): retiring it", index, before,
                 config.workers)  # fmt: skip
        cmd = [sys.executable, "-m", "edgewise.edge.helper", str(index), "--retire"]
        process = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
        assert process.stdin is not None
        process.stdin.write(json.dumps(_helper_doc(config)).encode() + b"\n")
        process.stdin.close()  # a retiring helper stops by itself, not on EOF
        retiring.append(process)
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(str(config.workers), encoding="ascii")
    return retiring


def _helper_doc(config: AgentConfig) -> dict[str, Any]:
    """The helpers' configuration: the agent's, with MQTT 5 fixed (shared subscriptions)."""
    doc = config.model_dump(mode="json")
    doc["protocol"] = "5"
    return doc


# -- the helper process (edge.helper) ---------------------------------------------------


class SupervisorReport(Feature):
    """A helper's ``health`` thread: one JSON line of counters per second on stdout."""

    def __init__(
        self,
        connected: Callable[[], bool],
        counters: Callable[[], dict[str, Any]],
        tallies: Callable[[], dict[str, dict[str, int]]],
    ) -> None:
        self._connected, self._counters, self._tallies = connected, counters, tallies

    def threads(self) -> Sequence[tuple[str, Callable[[threading.Event], None]]]:
        return [("health", self.run)]

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            doc = {
                "pid": os.getpid(),
                "connected": self._connected(),
                "counters": self._counters(),
                "models": self._tallies(),
            }
            # Unbuffered (no lock held at shutdown); BrokenPipeError: the supervisor is gone.
            os.write(1, json.dumps(doc).encode() + b"\n")
            stop.wait(REPORT_EVERY_S)


if __name__ == "__main__":  # what supervisors before edge.helper started: the same process
    import runpy

    runpy.run_module("edgewise.edge.helper", run_name="__main__")
