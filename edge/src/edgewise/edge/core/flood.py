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
