"""Forward-then-ack: a request from the broker is acknowledged once the broker holds its
answers, not once a disk does.

A QoS 1 request in a persistent session is already durable upstream: the broker keeps it,
and delivers it again after a reconnect, until we acknowledge it. So its answers go
straight to paho at QoS 1, and the request's PUBACK follows their PUBACKs. A crash or a
lost connection before that leaves the request unacknowledged, and the broker delivers it
again (at least once, duplicates possible, as with the outbox). What has no copy upstream
(QoS 0 requests, stream predictions) still goes through the outbox.

Requests are acknowledged in the order they arrived (MQTT wants PUBACKs in the order of
the PUBLISHes), and only on the connection that delivered them: message ids are per
connection, so after a reconnect the pending ones are dropped and their redelivered copies
are answered afresh.

Locking: the worker holds ``_lock`` while it hands answers to paho, so that a PUBACK cannot
be settled before its message id is known. paho calls ``on_published`` from its network
thread while holding its own locks, so that thread never waits for ``_lock``: it queues
the id and settles only if the lock is free; whoever holds the lock settles before
letting go. PUBACKs of what others published (the outbox) are passed on: at once when
the id cannot be ours, else when settled.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from edgewise.edge.link.message import Message
from edgewise.edge.link.outbox import OutMessage
from edgewise.edge.link.transport import PublishRefused, Transport

log = logging.getLogger(__name__)


@dataclass(eq=False)
class _Pending:
    msg: Message
    left: int = 0  # its answers the broker has not acknowledged yet


class Forwarder:
    """Publishes requests' answers and acknowledges the requests after their PUBACKs."""

    def __init__(self, connection: Transport, fallback: Callable[[int], None]) -> None:
        self._connection = connection
        self._fallback = fallback  # PUBACKs of what others published (the outbox's)
        self._lock = threading.Lock()
        self._order: deque[_Pending] = deque()  # arrival order: acks go out in it
        self._by_mid: dict[int, _Pending] = {}
        self._acks: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._generation = -1
        self.forwarded = 0  # answers handed to paho this way
        self.dead_letters = 0  # answers that could never go out (their request is acked)
        self.abandoned = 0  # requests dropped with their connection: the broker resends them

    def takes(self, msg: Message) -> bool:
        """Whether ``msg`` goes this way: a QoS 1 request of the current connection."""
        return msg.qos > 0 and msg.generation == self._connection.generation

    @property
    def pending(self) -> int:
        """Requests whose answers the broker has not all acknowledged yet."""
        return len(self._order)

    def forward(self, items: Sequence[tuple[Message, Sequence[OutMessage]]]) -> None:
        """Hand each request's answers to paho now; ack each request once the broker has
        acknowledged all of them, in the order of ``items`` (a request with no answers, a
        duplicate, waits for the ones before it)."""
        with self._lock:
            generation = self._connection.generation
            if generation != self._generation:
                self._reset(generation)
            for msg, outs in items:
                if msg.generation != generation:
                    continue  # its connection is gone: the broker delivers it again
                pending = _Pending(msg)
                for out in outs:
                    try:
                        info = self._connection.publish(
                            out.topic, out.payload, out.qos, out.retain, out.correlation_data
                        )
                    except PublishRefused as exc:  # the others still go out
                        self.dead_letters += 1
                        log.error("answer to %r cannot be published: %s", out.topic[:200], exc)
                        continue
                    self.forwarded += 1
                    if out.qos > 0:
                        pending.left += 1
                        self._by_mid[info.mid] = pending
                self._order.append(pending)
            self._settle()
        self._drain()

    def on_published(self, mid: int) -> bool:
        """paho's network thread: the broker acknowledged ``mid``; whether it was one of
        ours. Never blocks."""
        # Lock first, then map: the worker registers a mid under the lock right after paho
        # took it, so an id that is ours is either in the map or its registration is under
        # way. An id that turns out not to be ours goes to ``fallback`` when settled.
        if not self._lock.locked() and mid not in self._by_mid:
            return False
        self._acks.put(mid)
        self._drain()
        return True

    def flush(self, timeout: float, final: bool = False) -> bool:
        """Wait until every forwarded request is acknowledged, up to ``timeout`` seconds;
        ``final``: say what is left (on stopping)."""
        deadline = time.monotonic() + timeout
        while self._order and time.monotonic() < deadline:
            self._drain()
            time.sleep(0.005)
        if self._order and final:
            log.warning(
                "%d requests stay unacknowledged: the broker delivers them again", self.pending
            )
        return not self._order

    def _drain(self) -> None:
        while self._lock.acquire(blocking=False):
            try:
                self._settle()
            finally:
                self._lock.release()
            if self._acks.empty():
                return
        # Held elsewhere: its holder settles before it lets go (and loops here if needed).

    def _settle(self) -> None:
        """Under ``_lock``: count the PUBACKs in, then ack the finished requests in order."""
        while True:
            try:
                mid = self._acks.get_nowait()
            except queue.Empty:
                break
            pending = self._by_mid.pop(mid, None)
            if pending is not None:
                pending.left -= 1
            else:
                self._fallback(mid)
        order = self._order
        while order and order[0].left <= 0:
            self._connection.ack(order.popleft().msg)

    def _reset(self, generation: int) -> None:
        """Under ``_lock``: a new connection. What waited on the old one is dropped."""
        self.abandoned += len(self._order)
        self._order.clear()
        self._by_mid.clear()
        self._generation = generation


def split(
    forwarder: Forwarder | None,
    batch: Sequence[Message],
    fresh: Sequence[Message],
    answers: Sequence[Sequence[OutMessage]],
) -> tuple[list[tuple[Message, Sequence[OutMessage]]], list[OutMessage]]:
    """A batch's answers: (request, its answers) to forward, and the answers to store.

    ``fresh`` are the requests of ``batch`` that were answered (``answers``, in order);
    every request the forwarder takes goes in arrival order, a duplicate (not in ``fresh``)
    too, with no answers, so that its ack keeps its place.
    """
    if forwarder is None:
        return [], [a for outs in answers for a in outs]
    by_msg = {id(m): outs for m, outs in zip(fresh, answers, strict=True)}
    forwarded = [(m, by_msg.get(id(m), ())) for m in batch if forwarder.takes(m)]
    taken = {id(m) for m, _ in forwarded}
    stored = [a for m, outs in zip(fresh, answers, strict=True) if id(m) not in taken for a in outs]
    return forwarded, stored
