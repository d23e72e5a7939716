"""How samples become instances: rows of latest values, windows of samples, frames.

Pure logic, no threads and no MQTT: a stream (``edge.streams.stream``) holds one assembler
and calls it under its lock. Times are seconds on one clock (``time.monotonic()`` for
arrival times, or the sample's own timestamps for windows).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np


class Rows:
    """The latest value of each feature; an instance when all are fresh.

    ``values`` holds each feature's last value and when it came. ``assemble`` gives the
    row in feature order, or the reason there is none: ``waiting`` (a feature has not
    been heard yet) or ``stale`` (one is older than ``max_age``).
    """

    def __init__(self, names: Sequence[str], constants: dict[str, Any], max_age: float) -> None:
        self.names = list(names)
        self.max_age = max_age
        self._values: dict[str, Any] = dict(constants)
        self._at: dict[str, float] = {k: float("inf") for k in constants}  # never stale

    def update(self, name: str, value: Any, now: float) -> None:
        self._values[name] = value
        self._at[name] = now

    def assemble(self, now: float) -> tuple[list[Any] | None, str | None]:
        """(row, None), or (None, why not)."""
        row = []
        for name in self.names:
            at = self._at.get(name)
            if at is None:
                return None, "waiting"
            if at != float("inf") and now - at > self.max_age:
                return None, "stale"
            row.append(self._values[name])
        return row, None


class RowTrigger:
    """When a row is assembled: on every update, on a trigger topic, or every ``interval``
    seconds; shared by a running stream (a row is offered to the model) and ``edgewise
    record`` (a row is written). The user provides ``rows``, ``_lock``, ``counts`` (why no
    row: ``waiting``, ``stale``), ``trigger``, ``interval`` and ``emit``."""

    rows: Rows
    _lock: threading.Lock
    counts: Any
    trigger: str
    interval: float | None
    _due: float | None = None

    def emit(self, row: list[Any]) -> None:
        raise NotImplementedError

    def update(self, values: list[tuple[str, Any]], now: float) -> None:
        """New values of some features (under one sample); a row if on every update."""
        with self._lock:
            self.counts["samples"] += 1
            for name, value in values:
                self.rows.update(name, value, now)
        if self.trigger == "update":
            self.assemble(now)

    def assemble(self, now: float) -> None:
        with self._lock:
            row, why = self.rows.assemble(now)
            if row is None:
                self.counts[str(why)] += 1
                return
        self.emit(row)

    def due(self, now: float) -> None:
        """Interval rows (called a few times a second)."""
        if self.trigger == "interval" and self.interval is not None:
            due = self._due if self._due is not None else now
            if now >= due:
                self._due = max(due + self.interval, now)
                self.assemble(now)


class Windows:
    """Samples of ``channels`` values appended into windows of ``length``, every ``stride``.

    A gap longer than ``max_gap`` between two samples starts a new window (what was
    gathered is dropped: a window spans no gap). ``push`` returns the windows it
    completed (copies, shape ``(length, channels)``).
    """

    def __init__(self, length: int, channels: int, stride: int, max_gap: float) -> None:
        if length < 1 or channels < 1 or stride < 1:
            raise ValueError("length, channels and stride must be positive")
        self.length, self.channels, self.stride, self.max_gap = length, channels, stride, max_gap
        self._buf = np.zeros((length, channels), dtype=np.float32)
        self._n = 0  # samples in the buffer
        self._skip = 0  # samples to pass over (stride > length)
        self._last: float | None = None
        self.gaps = 0

    def push(self, values: Sequence[float], t: float) -> list[np.ndarray[Any, Any]]:
        """Append one sample taken at ``t``; the windows it completes."""
        if self._last is not None and (t - self._last > self.max_gap or t < self._last):
            if self._n or self._skip:
                self.gaps += 1
            self._n, self._skip = 0, 0
        self._last = t
        if self._skip:
            self._skip -= 1
            return []
        self._buf[self._n] = values
        self._n += 1
        if self._n < self.length:
            return []
        window = self._buf.copy()
        if self.stride < self.length:
            keep = self.length - self.stride
            self._buf[:keep] = self._buf[self.stride :]
            self._n = keep
        else:
            self._n, self._skip = 0, self.stride - self.length
        return [window]

    def reset(self) -> None:
        self._n, self._skip, self._last = 0, 0, None


class Frames:
    """At most ``fps`` frames per second: ``due`` says whether a frame taken now is kept."""

    def __init__(self, fps: float) -> None:
        self.period = 1.0 / fps
        self._next = 0.0

    def due(self, now: float) -> bool:
        if now < self._next:
            return False
        # From the schedule, not from now, while on time: a steady rate, not drifting late.
        on_time = now - self._next < self.period
        self._next = self._next + self.period if on_time else now + self.period
        return True


def resize(frame: np.ndarray[Any, Any], height: int, width: int) -> np.ndarray[Any, Any]:
    """Nearest-neighbour resize of an (H, W, C) frame (numpy only: no OpenCV needed)."""
    h, w = frame.shape[:2]
    if (h, w) == (height, width):
        return frame
    rows = (np.arange(height) * h // height).astype(np.intp)
    cols = (np.arange(width) * w // width).astype(np.intp)
    out: np.ndarray[Any, Any] = frame[rows][:, cols]
    return out
