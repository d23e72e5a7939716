"""How answers leave the agent: through the durable outbox (default) or straight to paho.

``OutboxDelivery`` commits answers to the ``Outbox`` (the caller acks requests only after
``send`` returns), and a publisher thread hands them to the connection at QoS 1, oldest
first, at most ``window`` unacknowledged at a time; PUBACKs (handed over by the network
thread) delete them. paho resends what is in flight after a reconnect; what is left after
a crash is replayed from disk on the next start.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Sequence
from typing import Protocol

from edge.mqtt import MqttConnection
from edge.outbox import Outbox, OutMessage

log = logging.getLogger(__name__)


class Delivery(Protocol):
    """Where the worker puts answers."""

    def send(self, messages: Sequence[OutMessage]) -> None: ...

    def on_published(self, mid: int) -> None: ...

    def start(self) -> None: ...

    def flush(self, timeout: float) -> bool: ...

    def close(self) -> None: ...

    @property
    def depth(self) -> int: ...

    @property
    def dropped(self) -> int: ...


class DirectDelivery:
    """No outbox: publish at once (paho keeps unsent messages in memory only)."""

    def __init__(self, connection: MqttConnection) -> None:
        self._connection = connection

    def send(self, messages: Sequence[OutMessage]) -> None:
        for m in messages:
            self._connection.publish(
                m.topic, m.payload, m.qos, m.retain, correlation_data=m.correlation_data
            )

    def on_published(self, mid: int) -> None:
        """Nothing to settle."""

    def start(self) -> None:
        """Nothing to start."""

    def flush(self, timeout: float) -> bool:
        return True

    def close(self) -> None:
        """Nothing to close."""

    @property
    def depth(self) -> int:
        return 0

    @property
    def dropped(self) -> int:
        return 0


class OutboxDelivery:
    """The outbox and the thread that publishes it (see the module docstring)."""

    def __init__(self, outbox: Outbox, connection: MqttConnection, window: int = 1000) -> None:
        self.outbox = outbox
        self._connection = connection
        self._window = window
        self._acks: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._in_flight: dict[int, int] = {}  # paho mid -> outbox seq
        # Highest seq handed to paho by this process. Entries left from an earlier run sit
        # at or below last_seq: start before them so they are replayed first.
        self._last_seq = 0 if outbox.depth else outbox.last_seq
        self._lock = threading.Lock()  # _in_flight and _last_seq: worker and publisher
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def depth(self) -> int:
        return self.outbox.depth

    @property
    def dropped(self) -> int:
        return self.outbox.dropped

    def send(self, messages: Sequence[OutMessage]) -> None:
        """Commit to disk (one transaction), then publish at once if nothing older waits."""
        seqs = self.outbox.put(messages)
        if not seqs:
            return
        with self._lock:
            if (
                self._connection.connected
                and self._last_seq == seqs[0] - 1
                and len(self._in_flight) + len(seqs) <= self._window
            ):
                for seq, m in zip(seqs, messages, strict=True):
                    self._publish(seq, m)
                return
        self._wake.set()  # a backlog, a full window or no link: the publisher thread goes on

    def on_published(self, mid: int) -> None:
        """Network thread: a PUBACK arrived; the publisher thread settles it."""
        self._acks.put(mid)
        self._wake.set()

    def start(self) -> None:
        if self.outbox.depth:
            log.info("outbox holds %d answers from before; replaying", self.outbox.depth)
        self._thread = threading.Thread(target=self._run, name="outbox", daemon=True)
        self._thread.start()

    def flush(self, timeout: float) -> bool:
        """Wait until everything stored is acknowledged, up to ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while self.outbox.depth and time.monotonic() < deadline:
            self._wake.set()
            time.sleep(0.01)
        return self.outbox.depth == 0

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(5.0)
        self.outbox.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(0.1)
            self._wake.clear()
            try:
                self._settle()
                # paho keeps what it was handed and resends it after a reconnect; only
                # new entries (above _last_seq) wait here until the link is back.
                if self._connection.connected:
                    self._feed()
            except Exception:  # keep publishing: a bug here must not strand the outbox
                log.exception("outbox publisher error")
                self._stop.wait(1.0)

    def _settle(self) -> None:
        done: list[int] = []
        with self._lock:
            while True:
                try:
                    mid = self._acks.get_nowait()
                except queue.Empty:
                    break
                seq = self._in_flight.pop(mid, None)
                if seq is not None:
                    done.append(seq)
        self.outbox.remove(done)

    def _feed(self) -> None:
        with self._lock:
            room = self._window - len(self._in_flight)
            after = self._last_seq
        if room <= 0:
            return
        pending = self.outbox.peek(after, room)
        with self._lock:
            for seq, m in pending:
                if seq > self._last_seq:  # the worker may have published it meanwhile
                    self._publish(seq, m)

    def _publish(self, seq: int, m: OutMessage) -> None:
        # Under _lock. QoS 0 entries (--qos 0) are settled when written to the socket.
        info = self._connection.publish(
            m.topic, m.payload, qos=m.qos, retain=m.retain, correlation_data=m.correlation_data
        )
        self._in_flight[info.mid] = seq
        self._last_seq = seq
