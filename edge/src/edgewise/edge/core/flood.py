"""Memory after a flood: give the allocator's free pages back once the backlog is gone.

A flood of requests fills the queue, paho's buffers and the answers waiting to go out;
when it is over, CPython frees those objects but glibc keeps the freed pages in its heap,
so the agent's RSS stays at the flood's peak. After a flood (any request answered
"overloaded") the worker calls ``malloc_trim(0)`` once the queue is empty again, at most
once per ``TRIM_EVERY_S``. Elsewhere than glibc this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading
import time
from typing import Any

log = logging.getLogger(__name__)

TRIM_EVERY_S = 5.0


def _libc_trim() -> Any:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return getattr(ctypes.CDLL(name), "malloc_trim", None)
    except OSError:
        return None


class FloodMemory:
    """Remembers a flood (paho's thread) and trims once the queue drained (worker)."""

    def __init__(self) -> None:
        self._flooded = False
        self._trimmed_at = -TRIM_EVERY_S
        self._trim = _libc_trim()

    def hit(self) -> None:
        self._flooded = True

    def drained(self) -> None:
        if not self._flooded or self._trim is None:
            return
        now = time.monotonic()
        if now - self._trimmed_at < TRIM_EVERY_S:
            return
        self._flooded = False
        self._trimmed_at = now
        self._trim(0)
        log.debug("after a flood: malloc_trim")


ANSWERED_PER_S = 100  # refused requests answered one by one per second; the rest summed up


class Refusals:
    """How QoS 0 requests refused "overloaded" are told (paho's thread and the worker).

    The first ``per_second`` refusals of each second are answered one by one, with their
    ids, as a lone refused request always was. Beyond that, in a flood, each one is only
    counted, per model, and the worker publishes one notice per model and second with the
    count (``refused``) on the model's error topic. Answering every request of a flood would
    double the traffic of an agent that is already behind, and paho's thread would spend
    its time on those answers instead of reading on (docs/mqtt.md#overload).
    """

    def __init__(self, per_second: int = ANSWERED_PER_S) -> None:
        self._per_second = per_second
        self._lock = threading.Lock()
        self._second = -1.0  # start of the current one-second window
        self._answered = 0  # refusals answered one by one in it
        self._counted: dict[str, int] = {}  # model -> refusals not answered yet
        self._noticed_at = -1.0

    def answer_each(self, model: str) -> bool:
        """One refusal: True when it is answered by itself, else it is counted."""
        now = time.monotonic()
        with self._lock:
            if now - self._second >= 1.0:
                self._second, self._answered = now, 0
            if self._answered < self._per_second:
                self._answered += 1
                return True
            self._counted[model] = self._counted.get(model, 0) + 1
            return False

    def due(self, final: bool = False) -> list[tuple[str, int]]:
        """(model, refusals) to publish: at most once a second, or all of them (``final``)."""
        if not self._counted:
            return []
        now = time.monotonic()
        with self._lock:
            if not final and now - self._noticed_at < 1.0:
                return []
            self._noticed_at = now
            counted, self._counted = self._counted, {}
        return sorted(counted.items())
