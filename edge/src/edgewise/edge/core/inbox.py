"""The core's bounded inbox: the network thread appends, the worker takes a batch at a time.

``queue.Queue`` costs a lock and a condition notify per message on both sides. Here a put
is a ``deque.append`` (atomic in CPython) and the worker is woken only when it waits: one
hand-off per batch, not per message. The bound is kept by the producer: a put beyond
``size`` is refused (``put_nowait``) or waits for room (``put``, with a timeout).

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
        self._size = size
        self._ready = threading.Event()  # set when items may be there (the worker wakes)
        self._room = threading.Event()  # set when a put may find room
        self._room.set()

    def __len__(self) -> int:
        return len(self._items)

    def empty(self) -> bool:
        return not self._items

    def put_nowait(self, item: T) -> bool:
        """Append ``item``; False when the inbox is full."""
        if len(self._items) >= self._size:
            return False
        self._items.append(item)
        if not self._ready.is_set():  # only a waiting (or about to wait) worker needs it
            self._ready.set()
        return True

    def put(self, item: T, timeout: float) -> bool:
        """Append ``item``, waiting up to ``timeout`` seconds for room; False if none came."""
        if self.put_nowait(item):
            return True
        self._room.clear()
        if len(self._items) >= self._size:  # checked again: the worker may have just taken
            self._room.wait(timeout)
        return self.put_nowait(item)

    def take(self, most: int, timeout: float) -> list[T]:
        """Up to ``most`` items, oldest first; waits up to ``timeout`` seconds for the first
        one when there is none ([] then)."""
        items = self._items
        if not items:
            self._ready.clear()
            if not items:  # checked after clearing: a put in between set it again
                self._ready.wait(timeout)
        taken: list[T] = []
        pop = items.popleft
        try:
            while len(taken) < most:
                taken.append(pop())
        except IndexError:
            pass
        if taken and not self._room.is_set():
            self._room.set()
        return taken
