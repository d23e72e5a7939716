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
from collections.abc import Callable, Sequence
from typing import Protocol

from edgewise.edge.link.backoff import Backoff
from edgewise.edge.link.outbox import Outbox, OutMessage, StorageError
from edgewise.edge.link.transport import PublishRefused, Transport

log = logging.getLogger(__name__)

# Starts a named thread (the agent's Supervisor.spawn: a thread that dies stops the agent).
Spawn = Callable[[Callable[[], None], str], threading.Thread]


def _plain_thread(target: Callable[[], None], name: str) -> threading.Thread:
    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    return thread


class Delivery(Protocol):
    """Where the worker puts answers."""

    def send(self, messages: Sequence[OutMessage]) -> None: ...

    def on_published(self, mid: int) -> None: ...

    def start(self, spawn: Spawn = ...) -> None: ...

    def flush(self, timeout: float) -> bool: ...

    def close(self) -> None: ...

    @property
    def depth(self) -> int: ...

    @property
    def dropped(self) -> int: ...

    @property
    def dead_letters(self) -> int: ...


class DirectDelivery:
    """No outbox: publish at once (paho keeps unsent messages in memory only)."""

    def __init__(self, connection: Transport) -> None:
        self._connection = connection
        self._dead = 0

    def send(self, messages: Sequence[OutMessage]) -> None:
        for m in messages:
            try:
                self._connection.publish(
                    m.topic, m.payload, m.qos, m.retain, correlation_data=m.correlation_data
                )
            except PublishRefused as exc:  # the others still go out
                self._dead += 1
                log.error("answer to %r cannot be published: %s", m.topic[:200], exc)

    def on_published(self, mid: int) -> None:
        """Nothing to settle."""

    def start(self, spawn: Spawn = _plain_thread) -> None:
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

    @property
    def dead_letters(self) -> int:
        return self._dead


class OutboxDelivery:
    """The outbox and the thread that publishes it (see the module docstring)."""

    def __init__(self, outbox: Outbox, connection: Transport, window: int = 1000) -> None:
        self.outbox = outbox
        self._connection = connection
        self._window = window
        self._acks: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._in_flight: dict[int, int] = {}  # paho mid -> outbox seq
        self._unremoved: list[int] = []  # acknowledged seqs whose delete failed: retried
        self._remove_failing = False
        self._skipped: set[int] = set()  # dead letters the outbox could not move: not resent
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

    @property
    def dead_letters(self) -> int:
        return self.outbox.dead_letters + len(self._skipped)

    def send(self, messages: Sequence[OutMessage]) -> None:
        """Commit to disk (one transaction), then publish at once if nothing older waits.

        Raises ``StorageError`` when the commit fails: then nothing was stored.
        """
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

    def start(self, spawn: Spawn = _plain_thread) -> None:
        """Start the publisher thread with ``spawn``."""
        if self.outbox.depth:
            log.info("outbox holds %d answers from before; replaying", self.outbox.depth)
        self._thread = spawn(self._run, "outbox")

    def flush(self, timeout: float) -> bool:
        """Wait until everything stored is acknowledged, up to ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while self.outbox.depth > len(self._skipped) and time.monotonic() < deadline:
            self._wake.set()
            time.sleep(0.01)
        return self.outbox.depth <= len(self._skipped)

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
        done, self._unremoved = self._unremoved, []
        with self._lock:
            while True:
                try:
                    mid = self._acks.get_nowait()
                except queue.Empty:
                    break
                seq = self._in_flight.pop(mid, None)
                if seq is not None:
                    done.append(seq)
        try:
            self.outbox.remove(done)
        except StorageError as exc:
            # Published already; if the delete never lands they are sent again (at least once).
            if not self._remove_failing:
                log.warning("%s; retrying", exc)
            self._remove_failing = True
            self._unremoved = done
            return
        if self._remove_failing:
            log.info("the outbox removes published answers again")
            self._remove_failing = False

    def _feed(self) -> None:
        with self._lock:
            room = self._window - len(self._in_flight)
            after = self._last_seq
            # Everything stored is in flight or settled: no query (the thread wakes on
            # every PUBACK of the connection, answers forwarded past the outbox too).
            held = len(self._in_flight) + len(self._unremoved) + len(self._skipped)
        if room <= 0 or self.outbox.depth <= held:
            return
        pending = self.outbox.peek(after, room)
        with self._lock:
            for seq, m in pending:
                if seq > self._last_seq:  # the worker may have published it meanwhile
                    self._publish(seq, m)

    def _publish(self, seq: int, m: OutMessage) -> None:
        # Under _lock. QoS 0 entries (--qos 0) are settled when written to the socket.
        self._last_seq = seq
        try:
            info = self._connection.publish(
                m.topic, m.payload, qos=m.qos, retain=m.retain, correlation_data=m.correlation_data
            )
        except PublishRefused as exc:
            self._dead_letter(seq, m, str(exc))
            return
        self._in_flight[info.mid] = seq

    def _dead_letter(self, seq: int, m: OutMessage, reason: str) -> None:
        # An entry that can never go out must not hold back the ones behind it.
        log.error("outbox entry %d for %r cannot be published: %s", seq, m.topic[:200], reason)
        try:
            self.outbox.dead_letter(seq, reason)
        except StorageError as exc:  # not moved: skip it now, the next start moves it
            log.error("%s", exc)
            self._skipped.add(seq)


def store_until_stopped(
    delivery: Delivery,
    answers: Sequence[OutMessage],
    stopped: threading.Event,
    failing: Callable[[str | None], None],
) -> bool:
    """Commit ``answers``; while the outbox cannot, retry with back-off (0.2 s doubling to
    10 s), telling ``failing`` the error (and None once it stores again). False only when
    ``stopped`` is set before the commit succeeded."""
    backoff = Backoff(initial=0.2, cap=10.0)
    error: str | None = None
    while True:
        try:
            delivery.send(answers)
        except StorageError as exc:
            if error is None:
                log.error("%s: not acknowledging requests until it can; retrying", exc)
            error = str(exc)
            failing(error)
            if stopped.wait(backoff.next()):
                return False
            continue
        if error is not None:
            log.warning("the outbox stores answers again; serving resumes")
            failing(None)
        return True
