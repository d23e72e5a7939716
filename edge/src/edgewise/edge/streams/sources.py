"""Sources with a thread of their own: a local program's output, a serial port.

A program (``command``: for sensors on I2C/SPI/GPIO that a small script reads) is started
by the agent and read line by line; when it exits it is started again after a capped,
jittered back-off, and health says so (``source.state``, ``restarts``, ``last_exit``). A
serial port (pyserial: the ``serial`` extra) is opened and reopened the same way. Every
wait has a timeout and watches the stop event; a line longer than ``MAX_LINE`` is counted
as bad and skipped to its end.
"""

from __future__ import annotations

import logging
import os
import selectors
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

from edgewise.edge.errors import EdgewiseError
from edgewise.edge.link.backoff import Backoff
from edgewise.edge.streams.samples import MAX_LINE, Sink

log = logging.getLogger(__name__)

READ_WAIT_S = 0.2  # the longest a reader waits before it looks at the stop event
STEADY_S = 10.0  # a source that ran this long starts its back-off afresh


class Lines:
    """Splits bytes into lines, bounded: an overlong line is reported once and skipped."""

    def __init__(self, on_line: Callable[[bytes], None], on_long: Callable[[], None]) -> None:
        self._buf = bytearray()
        self._skipping = False
        self._on_line, self._on_long = on_line, on_long

    def feed(self, data: bytes) -> None:
        start = 0
        while True:
            end = data.find(b"\n", start)
            if end < 0:
                self._buf += data[start:]
                if len(self._buf) > MAX_LINE:
                    self._buf.clear()
                    if not self._skipping:
                        self._skipping = True
                        self._on_long()
                return
            if self._skipping:
                self._skipping = False
                self._buf.clear()
            else:
                line = bytes(self._buf) + data[start:end] if self._buf else data[start:end]
                self._buf.clear()
                if line.strip():
                    self._on_line(line)
            start = end + 1


def pause(seconds: float, halted: Callable[[], bool]) -> bool:
    """Sleep ``seconds`` in short steps; True as soon as ``halted()``."""
    until = time.monotonic() + seconds
    while not halted():
        left = until - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(left, READ_WAIT_S))
    return True


def _lines(stream: Sink) -> Lines:
    return Lines(
        lambda line: stream.on_line(line, time.monotonic()),
        lambda: stream.bad_sample("too_large", f"a line of more than {MAX_LINE} bytes"),
    )


class ProgramSource:
    """Runs ``command`` and feeds its standard output to a stream, restarting it."""

    def __init__(self, stream: Sink) -> None:
        self.stream = stream
        s = stream.settings
        self.command, self.cwd = list(s.command), s.cwd
        self.proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._closed = threading.Event()  # the agent stops: no restart from here on
        program = self.command[0]
        found = (
            os.path.isfile(os.path.join(self.cwd or ".", program))
            if os.sep in program
            else shutil.which(program) is not None
        )
        if not found:
            raise EdgewiseError(
                f"stream {stream.name!r}: program {program!r} not found"
                + (f" (relative to {self.cwd})" if os.sep in program and self.cwd else " on PATH")
            )
        stream.source.update(state="starting", restarts=0, last_exit=None)

    def run(self, stop: threading.Event) -> None:
        backoff = Backoff(initial=0.5, cap=30.0)
        source = self.stream.source

        def halted() -> bool:
            return stop.is_set() or self._closed.is_set()

        while not halted():
            began = time.monotonic()
            try:
                proc = subprocess.Popen(
                    self.command, cwd=self.cwd, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL
                )
            except OSError as exc:
                source.update(
                    state="failed", error=f"cannot start {self.command[0]!r}: {exc.strerror}"
                )
                log.error(
                    "stream %s: cannot start %s: %s",
                    self.stream.name,
                    self.command[0],
                    exc.strerror,
                )
            else:
                with self._lock:
                    self.proc = proc
                source.update(state="running", pid=proc.pid, error=None)
                code = self._read(proc, halted)
                source.update(state="exited", last_exit=code, pid=None)
                if halted():
                    break
                source["restarts"] += 1
                log.warning(
                    "stream %s: %s exited (%s); restarting", self.stream.name, self.command[0], code
                )
            if time.monotonic() - began > STEADY_S:
                backoff.reset()
            if pause(backoff.next(), halted):
                break
        self.close()

    def _read(self, proc: subprocess.Popen[bytes], halted: Callable[[], bool]) -> int | None:
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        lines = _lines(self.stream)
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while not halted():
                if not sel.select(READ_WAIT_S):
                    continue
                data = os.read(fd, 65536)
                if not data:
                    break
                lines.feed(data)
        if halted():
            self.close()
        try:
            return proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait(timeout=5)
        finally:
            proc.stdout.close()

    def close(self) -> None:
        """Stop the program (SIGTERM, then SIGKILL after 2 s); it is not started again."""
        self._closed.set()
        with self._lock:
            proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=2)


class SerialSource:
    """Reads lines from a serial port (pyserial), reopening it after a failure."""

    def __init__(self, stream: Sink) -> None:
        self.stream = stream
        self.port, self.baud = str(stream.settings.port), stream.settings.baud
        stream.source.update(state="starting", restarts=0, port=self.port)
        try:
            import serial  # noqa: F401
        except ImportError:
            raise EdgewiseError(
                f"stream {stream.name!r}: source = 'serial' needs pyserial "
                "(the serial extra: edgewise kit --extra serial, or pip install './edge[serial]' "
                "from the checkout; docs/devices.md)"
            ) from None

    def run(self, stop: threading.Event) -> None:
        import serial

        backoff = Backoff(initial=0.5, cap=30.0)
        source = self.stream.source
        while not stop.is_set():
            began = time.monotonic()
            try:
                with serial.Serial(self.port, self.baud, timeout=READ_WAIT_S) as port:
                    source.update(state="running", error=None)
                    lines = _lines(self.stream)
                    while not stop.is_set():
                        data = port.read(max(1, port.in_waiting))
                        if data:
                            lines.feed(data)
            except (OSError, serial.SerialException) as exc:
                source.update(state="failed", error=str(exc)[:200])
                source["restarts"] += 1
                log.warning(
                    "stream %s: serial port %s: %s; reopening", self.stream.name, self.port, exc
                )
            if time.monotonic() - began > STEADY_S:
                backoff.reset()
            if stop.wait(backoff.next()):
                break

    def close(self) -> None:
        """Nothing to do: the reader closes the port when the stop event is set."""


def source_for(stream: Sink) -> Any:
    """The threaded source of a stream (None for MQTT streams)."""
    kind = stream.settings.source
    if kind == "program":
        return ProgramSource(stream)
    if kind == "serial":
        return SerialSource(stream)
    if kind == "camera":
        from edgewise.edge.streams.camera import CameraSource

        return CameraSource(stream)
    return None
