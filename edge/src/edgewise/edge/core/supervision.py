"""Keeping the agent honest about being alive: thread supervision and the systemd watchdog.

A thread of the agent that dies must not leave a zombie that says ``online`` while nothing
is served. ``Supervisor`` runs each thread through a wrapper that records why it ended;
the agent's main loop sees the failure, publishes ``offline`` and exits non-zero, and the
service manager restarts it. ``Notifier`` speaks systemd's notify protocol (``READY=1``,
``WATCHDOG=1``, ``STOPPING=1``) over ``$NOTIFY_SOCKET`` with the standard library only,
so a worker that hangs without dying is restarted too (``WatchdogSec=`` in the unit).
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import socket
import threading
import time
from collections.abc import Callable, Mapping
from types import FrameType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edgewise.edge.link.message import Message

log = logging.getLogger(__name__)


def serve_inbox(
    inbox: queue.Queue[Message],
    stop: threading.Event,
    handle: Callable[[Message], None],
    ack: Callable[[Message], None],
    what: str,
    idle: Callable[[], None] | None = None,
) -> None:
    """A helper thread's loop: handle each message inside its own boundary (one bad
    message must not end the thread), then acknowledge it; every wait has a timeout.
    ``idle`` runs (inside the same boundary) after half a second without a message."""
    while not stop.is_set():
        try:
            msg = inbox.get(timeout=0.5)
        except queue.Empty:
            if idle is not None:
                try:
                    idle()
                except Exception:
                    log.exception("%s: idle work failed", what)
            continue
        try:
            handle(msg)
        except Exception:
            log.exception("%s: handling %s failed", what, msg.topic[:200])
        ack(msg)


def stop_on_signals() -> threading.Event:
    """An event set by the first SIGTERM/SIGINT; a second one exits the process at once
    (status 128 + signal: the outbox is on disk and replays on the next start)."""
    stop_requested = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if stop_requested.is_set():
            log.warning("second signal %d: exiting now", signum)
            os._exit(128 + signum)
        log.info("signal %d: finishing in-flight requests", signum)
        stop_requested.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return stop_requested


def reload_on_sighup(reload_requested: threading.Event) -> None:
    """SIGHUP (``systemctl reload``) sets ``reload_requested``; the agent's main loop
    reloads its bundles (edge.fleet.activation)."""

    def on_hup(signum: int, frame: FrameType | None) -> None:
        log.info("signal %d: reloading the bundles", signum)
        reload_requested.set()

    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, on_hup)


class Supervisor:
    """Starts threads and records the first failure (an exception, or an early return)."""

    def __init__(self, stopping: threading.Event) -> None:
        self._stopping = stopping
        self.failed = threading.Event()
        self.reason: str | None = None
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def fail(self, reason: str) -> None:
        """Record a failure (the first one wins) and wake whoever waits on ``failed``."""
        with self._lock:
            if self.reason is None:
                self.reason = reason
        self.failed.set()

    def spawn(self, target: Callable[[], None], name: str) -> threading.Thread:
        """Run ``target`` in a daemon thread; its exception or early return is a failure."""

        def run() -> None:
            try:
                target()
            except BaseException as exc:
                log.critical("thread %s died", name, exc_info=True)
                self.fail(f"{name}: {type(exc).__name__}: {exc}")
                return
            if not self._stopping.is_set():
                self.fail(f"{name}: ended while the agent was running")

        thread = threading.Thread(target=run, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()
        return thread

    def join(self, timeout: float, names: tuple[str, ...]) -> None:
        """Wait up to ``timeout`` seconds in all for the named threads to end."""
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            if thread.name in names:
                thread.join(max(0.05, deadline - time.monotonic()))

    def check(self, also_dead: list[str]) -> bool:
        """Whether the agent must stop: a failure was recorded, or a thread (one of ours,
        or one named in ``also_dead``) is no longer running."""
        dead = [t.name for t in self._threads if not t.is_alive()] + also_dead
        if dead and not self.failed.is_set():
            self.fail(f"thread(s) {', '.join(dead)} not running")
        return self.failed.is_set()


class Notifier:
    """systemd notifications; a no-op when ``$NOTIFY_SOCKET`` is not set. Never raises."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        # systemd's abstract-namespace sockets start with "@".
        self._address = "\0" + address[1:] if address.startswith("@") else address
        self.watchdog_interval = _watchdog_interval(env)
        self._last_ping = 0.0
        self._sock: socket.socket | None = None
        self._warned = False
        if self._address:
            try:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            except OSError as exc:
                log.warning("systemd notify socket unavailable: %s", exc)

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def notify(self, state: str) -> None:
        """Send one state line (``READY=1``, ``STOPPING=1``, ...)."""
        if self._sock is None:
            return
        try:
            self._sock.sendto(state.encode("utf-8"), self._address)
        except OSError as exc:
            if not self._warned:  # once: a missing listener must not flood the log
                log.warning("cannot notify systemd at %s: %s", self._address, exc)
                self._warned = True

    def ping(self) -> None:
        """``WATCHDOG=1``, at most twice per watchdog interval (systemd's advice)."""
        if self.watchdog_interval is None:
            return
        now = time.monotonic()
        if now - self._last_ping >= self.watchdog_interval / 2:
            self._last_ping = now
            self.notify("WATCHDOG=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _watchdog_interval(env: Mapping[str, str]) -> float | None:
    """Seconds from ``$WATCHDOG_USEC``, when it is meant for this process."""
    usec = env.get("WATCHDOG_USEC")
    pid = env.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        seconds = int(usec) / 1e6
    except ValueError:
        log.warning("ignoring WATCHDOG_USEC=%r: not an integer", usec)
        return None
    return seconds if seconds > 0 else None
