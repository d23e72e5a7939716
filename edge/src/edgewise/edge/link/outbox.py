"""The durable outbox: answers wait here, on disk, until the broker has acknowledged them.

A request is acknowledged to the broker only after its answer is committed here, and an
entry is deleted only on the broker's PUBACK, so a broker outage or an agent crash loses
nothing: the next start replays what is left, in order. It is bounded by count and bytes;
when full, the oldest entries go and are counted (``dropped``, kept across restarts).

SQLite in WAL mode from the standard library: one file, crash-safe, no server. One
connection is shared by the worker (``put``) and the publisher (``peek``/``remove``)
under a lock; every write is one transaction, so a batch of answers costs one commit.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from edgewise.edge.errors import EdgewiseError

SYNC_MODES = ("full", "normal")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL,
    retain INTEGER NOT NULL,
    correlation BLOB
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS dead_letter (
    seq INTEGER PRIMARY KEY,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL,
    retain INTEGER NOT NULL,
    correlation BLOB,
    reason TEXT NOT NULL,
    time REAL NOT NULL
);
"""
WAL_CHECKPOINT_PAGES = 256
WAL_SIZE_LIMIT = 1 << 20
DEAD_LETTERS_KEPT = 1000  # the newest dead letters are kept for inspection; all are counted


class StorageError(EdgewiseError):
    """The outbox could not write (disk full, read-only, I/O error): nothing was stored."""


@dataclass(frozen=True)
class OutMessage:
    """One message to publish: where, what, and the MQTT 5 correlation data if any."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False
    correlation_data: bytes | None = None


class Outbox:
    """A bounded, durable FIFO of ``OutMessage`` (see the module docstring).

    ``sync="full"`` makes every commit survive power loss (an fsync per batch);
    ``"normal"`` survives a process crash but may lose the last commits on power loss.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        max_count: int = 100_000,
        max_bytes: int = 64 << 20,
        sync: str = "full",
    ) -> None:
        if sync not in SYNC_MODES:
            raise EdgewiseError(f"outbox sync {sync!r}: use one of {list(SYNC_MODES)}")
        if max_count < 1 or max_bytes < 1:
            raise EdgewiseError("outbox max_count and max_bytes must be positive")
        self.path = Path(path)
        self.max_count = max_count
        self.max_bytes = max_bytes
        self._sync = sync
        self._lock = threading.Lock()
        self._lockfile = _lock_exclusively(self.path.with_name(self.path.name + ".lock"))
        self._db: sqlite3.Connection | None = None
        try:
            self._db = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=5.0
            )
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute(f"PRAGMA synchronous={sync.upper()}")
            # A small device disk: checkpoint the WAL at ~1 MiB (not 4) and truncate it
            # back to that size, so the log does not eat the space the answers need.
            self._conn.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_PAGES}")
            self._conn.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
            self._conn.executescript(_SCHEMA)
            count, size = self._conn.execute(
                "SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM outbox"
            ).fetchone()
            meta = dict(self._conn.execute("SELECT key, value FROM meta").fetchall())
        except (sqlite3.Error, OSError) as exc:
            with contextlib.suppress(sqlite3.Error, OSError):
                if self._db is not None:
                    self._db.close()
                self._lockfile.close()
            raise StorageError(f"outbox {self.path}: cannot open ({exc})") from None
        self._count = int(count)
        self._bytes = int(size)
        self._dropped = int(meta.get("dropped", 0))
        self._dead = int(meta.get("dead_letters", 0))

    @property
    def _conn(self) -> sqlite3.Connection:
        assert self._db is not None
        return self._db

    @property
    def depth(self) -> int:
        """Entries waiting for a PUBACK."""
        return self._count

    @property
    def size_bytes(self) -> int:
        return self._bytes

    @property
    def dropped(self) -> int:
        """Entries removed unsent because the outbox was full (since it was created)."""
        return self._dropped

    @property
    def dead_letters(self) -> int:
        """Entries moved aside because they can never be published (since it was created)."""
        return self._dead

    @property
    def last_seq(self) -> int:
        """The highest sequence number ever given (0 for a new outbox)."""
        with self._lock:
            row = self._conn.execute(
                "SELECT seq FROM sqlite_sequence WHERE name = 'outbox'"
            ).fetchone()
        return int(row[0]) if row else 0

    def put(self, messages: Sequence[OutMessage]) -> list[int]:
        """Store messages in one transaction; drop the oldest beyond the bounds.

        Returns their sequence numbers (increasing: the publishing order).
        """
        if not messages:
            return []
        seqs: list[int] = []
        with self._lock, _storage(self.path, "store answers", self._reclaim):
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                for m in messages:
                    cursor = self._conn.execute(
                        "INSERT INTO outbox (topic, payload, qos, retain, correlation) "
                        "VALUES (?, ?, ?, ?, ?)",
                        (m.topic, m.payload, m.qos, int(m.retain), m.correlation_data),
                    )
                    seqs.append(int(cursor.lastrowid or 0))
                count = self._count + len(messages)
                size = self._bytes + sum(len(m.payload) for m in messages)
                dropped = 0
                if count > self.max_count or size > self.max_bytes:
                    dropped, count, size = self._drop_oldest(count, size)
                self._conn.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise
            self._count, self._bytes, self._dropped = count, size, self._dropped + dropped
        return seqs

    def _drop_oldest(self, count: int, size: int) -> tuple[int, int, int]:
        # Inside put()'s transaction: walk from the oldest until both bounds hold.
        victims: list[int] = []
        cursor = self._conn.execute("SELECT seq, LENGTH(payload) FROM outbox ORDER BY seq")
        for seq, length in cursor:
            if count <= self.max_count and size <= self.max_bytes:
                break
            victims.append(seq)
            count -= 1
            size -= length
        cursor.close()
        self._conn.executemany("DELETE FROM outbox WHERE seq = ?", [(s,) for s in victims])
        total = self._dropped + len(victims)
        self._conn.execute(
            "INSERT INTO meta (key, value) VALUES ('dropped', ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (total,),
        )
        return len(victims), count, size

    def peek(self, after: int = 0, limit: int = 100) -> list[tuple[int, OutMessage]]:
        """Up to ``limit`` entries with a sequence number above ``after``, oldest first."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT seq, topic, payload, qos, retain, correlation FROM outbox "
                "WHERE seq > ? ORDER BY seq LIMIT ?",
                (after, limit),
            ).fetchall()
        return [
            (seq, OutMessage(topic, bytes(payload), qos, bool(retain), correlation))
            for seq, topic, payload, qos, retain, correlation in rows
        ]

    def remove(self, seqs: Sequence[int]) -> None:
        """Delete acknowledged entries (unknown ones, e.g. already dropped, are ignored).

        Not fsynced even with ``sync="full"``: a delete lost to power loss only means the
        answer is published again (at least once), and it saves an fsync per PUBACK batch.
        """
        if not seqs:
            return
        with self._lock, _storage(self.path, "remove published answers", self._reclaim):
            if self._sync == "full":
                self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                removed = removed_bytes = 0
                for start in range(0, len(seqs), 500):
                    chunk = seqs[start : start + 500]
                    marks = ",".join("?" * len(chunk))
                    rows = self._conn.execute(
                        f"DELETE FROM outbox WHERE seq IN ({marks}) RETURNING LENGTH(payload)",
                        chunk,
                    ).fetchall()
                    removed += len(rows)
                    removed_bytes += sum(int(r[0]) for r in rows)
                self._conn.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise
            finally:
                if self._sync == "full":
                    self._conn.execute("PRAGMA synchronous=FULL")
            self._count -= removed
            self._bytes -= removed_bytes

    def dead_letter(self, seq: int, reason: str) -> None:
        """Move an entry that can never be published to the dead-letter table, with why.

        The newest ``DEAD_LETTERS_KEPT`` are kept; every one is counted.
        """
        with self._lock, _storage(self.path, "move a dead letter", self._reclaim):
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                moved = self._conn.execute(
                    "INSERT OR REPLACE INTO dead_letter "
                    "SELECT seq, topic, payload, qos, retain, correlation, ?, ? "
                    "FROM outbox WHERE seq = ?",
                    (reason, time.time(), seq),
                ).rowcount
                rows = self._conn.execute(
                    "DELETE FROM outbox WHERE seq = ? RETURNING LENGTH(payload)", (seq,)
                ).fetchall()
                self._conn.execute(
                    "DELETE FROM dead_letter WHERE seq NOT IN "
                    "(SELECT seq FROM dead_letter ORDER BY seq DESC LIMIT ?)",
                    (DEAD_LETTERS_KEPT,),
                )
                self._conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('dead_letters', ?) "
                    "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    (self._dead + moved,),
                )
                self._conn.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise
            self._dead += moved
            self._count -= len(rows)
            self._bytes -= sum(int(r[0]) for r in rows)

    def dead_letter_entries(self) -> list[tuple[int, str, str]]:
        """The kept dead letters as (seq, topic, reason), oldest first."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT seq, topic, reason FROM dead_letter ORDER BY seq"
            ).fetchall()
        return [(int(seq), str(topic), str(reason)) for seq, topic, reason in rows]

    def _reclaim(self) -> None:
        # Under _lock, after a failed write. On a full disk the WAL is often what took the
        # space: a truncating checkpoint moves its pages into the database and empties it
        # (deletes then free pages for new answers). It may fail too; the caller retries.
        with contextlib.suppress(sqlite3.Error):
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def _rollback(self) -> None:
        # A failed ROLLBACK (the transaction may already be gone) must not hide the cause.
        with contextlib.suppress(sqlite3.Error):
            self._conn.execute("ROLLBACK")

    def close(self) -> None:
        with self._lock:
            self._conn.close()
        self._lockfile.close()


@contextlib.contextmanager
def _storage(path: Path, action: str, reclaim: Callable[[], None]) -> Iterator[None]:
    """SQLite and OS errors of a write as ``StorageError``: one line naming the cause.

    Before raising, ``reclaim`` gives back what space it can, so that a retry may succeed.
    """
    try:
        yield
    except (sqlite3.Error, OSError) as exc:
        reclaim()
        raise StorageError(f"outbox {path}: cannot {action} ({exc})") from exc


def _lock_exclusively(path: Path) -> IO[str]:
    """Hold an exclusive lock for this process's life: one agent per outbox."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = path.open("a+")
    except OSError as exc:
        raise EdgewiseError(f"outbox directory {path.parent}: {exc.strerror or exc}") from None
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise EdgewiseError(
            f"outbox {path.with_suffix('')} is in use by another agent "
            "(one agent per device and state directory)"
        ) from None
    try:  # unbuffered: a failed write must not resurface when the handle is closed
        os.ftruncate(handle.fileno(), 0)
        os.pwrite(handle.fileno(), str(os.getpid()).encode(), 0)
    except OSError as exc:  # e.g. a full disk: the lock holds, the pid note is optional
        if exc.errno != errno.ENOSPC:
            handle.close()
            raise StorageError(f"outbox lock {path}: {exc.strerror or exc}") from None
    return handle
