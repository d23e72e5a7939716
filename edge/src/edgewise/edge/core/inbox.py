"""The core's bounded inbox: the network thread appends, the worker takes a batch at a time.

``queue.Queue`` costs a lock and a condition notify per message on both sides. Here a put
is a ``deque.append`` (atomic in CPython) and the worker is woken only when it waits: one
hand-off per batch, not per message. The bound is kept by the producer: a put beyond
``size`` is refused (``put_nowait``) or waits for room (``put``, with a timeout).

Items put ``first`` (QoS 1 requests) are taken before the others (QoS 0 requests, jobs),
each kind in its own order: under a QoS 0 flood a QoS 1 request does not wait behind
thousands of requests that may be shed anyway.

One producer (paho's network thread) and one consumer (the inference worker), plus feature
threads submitting jobs; ``len`` of a deque is exact, so the bound may be overrun only by
the few producers that checked it at the same moment.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class Inbox(Generic[T]):
    """A bounded FIFO with cheap puts and batched takes."""

    def __init__(self, size: int) -> None:
        self._items: deque[T] = deque()
        self._first: deque[T] = deque()  # taken before _items
        self._size = size
        self._ready = threading.Event()  # set when items may be there (the worker wakes)
        self._room = threading.Event()  # set when a put may find room
        self._room.set()

    def __len__(self) -> int:
        return len(self._items) + len(self._first)

    def empty(self) -> bool:
        return not self._items and not self._first

    def put_nowait(self, item: T, first: bool = False) -> bool:
        """Append ``item`` (to the lane taken first, with ``first``); False when full."""
        if len(self._items) + len(self._first) >= self._size:
            return False
        (self._first if first else self._items).append(item)
        if not self._ready.is_set():  # only a waiting (or about to wait) worker needs it
            self._ready.set()
        return True

    def put(self, item: T, timeout: float, first: bool = False) -> bool:
        """Append ``item``, waiting up to ``timeout`` seconds for room; False if none came."""
        if self.put_nowait(item, first):
            return True
        self._room.clear()
        if len(self) >= self._size:  # checked again: the worker may have just taken
            self._room.wait(timeout)
        return self.put_nowait(item, first)

    def take(self, most: int, timeout: float) -> list[T]:
        """Up to ``most`` items, oldest first; waits up to ``timeout`` seconds for the first
        one when there is none ([] then)."""
        if self.empty():
            self._ready.clear()
            if self.empty():  # checked after clearing: a put in between set it again
                self._ready.wait(timeout)
        taken: list[T] = []
        for lane in (self._first, self._items):
            pop = lane.popleft
            try:
                while len(taken) < most:
                    taken.append(pop())
            except IndexError:
                pass
        if taken and not self._room.is_set():
            self._room.set()
        return taken
