"""Field data on the device: the instances worth relabelling, kept in a bounded SQLite file.

The worker decides per answered instance (``Capture.select``): a confidence below
``low_confidence``, an anomaly, any instance while the model's drift status is not ``ok``,
or a random ``sample_rate`` share. Selected rows (model, version, reason, the instance and
the answer as JSON, confidence, time) are written in one transaction per worker batch.
The store holds at most ``max_mb`` MiB of instance and answer JSON: beyond it the oldest
rows go first and are counted (``dropped``, kept across restarts). ``edgewise capture
pull`` reads it over MQTT (edge.capture_server) and may clear what it verified.
"""

from __future__ import annotations

import contextlib
import json
import random
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgewise.edge.errors import EdgewiseError

if TYPE_CHECKING:
    from edgewise.edge.core.config import CaptureSettings


_SCHEMA = """
CREATE TABLE IF NOT EXISTS samples (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    model TEXT NOT NULL,
    version TEXT NOT NULL,
    reason TEXT NOT NULL,
    instance TEXT NOT NULL,
    prediction TEXT NOT NULL,
    confidence REAL,
    captured_at REAL NOT NULL,
    bytes INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS samples_model ON samples (model, seq);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


@dataclass(frozen=True)
class Sample:
    """One captured instance, as stored and as pulled."""

    seq: int
    model: str
    version: str
    reason: str
    instance: Any
    prediction: dict[str, Any]
    confidence: float | None
    captured_at: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "version": self.version,
            "reason": self.reason,
            "instance": self.instance,
            "prediction": self.prediction,
            "confidence": self.confidence,
            "captured_at": self.captured_at,
        }


class CaptureStore:
    """The bounded store (one connection shared by the worker and the capture thread)."""

    def __init__(self, path: str | Path, max_bytes: int) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(self.path), check_same_thread=False)
            self._db.executescript(_SCHEMA)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")  # a lost last batch is acceptable
            row = self._db.execute("SELECT COALESCE(SUM(bytes), 0) FROM samples").fetchone()
        except (OSError, sqlite3.Error) as exc:
            raise EdgewiseError(f"capture store {self.path}: {exc}") from None
        self._bytes = int(row[0])
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock, self._db:
            yield self._db

    def _meta(self, key: str) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return int(row[0]) if row else 0

    def add(self, rows: Sequence[tuple[str, str, str, str, str, float | None, float]]) -> None:
        """Store rows (model, version, reason, instance JSON, answer JSON, confidence,
        time) in one transaction; then drop the oldest beyond the bound."""
        if not rows:
            return
        with self._tx() as db:
            db.executemany(
                "INSERT INTO samples (model, version, reason, instance, prediction, "
                "confidence, captured_at, bytes) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(*r, len(r[3]) + len(r[4])) for r in rows],
            )
            self._bytes += sum(len(r[3]) + len(r[4]) for r in rows)
            dropped = 0
            while self._bytes > self.max_bytes:
                oldest = db.execute(
                    "SELECT seq, bytes FROM samples ORDER BY seq LIMIT 256"
                ).fetchall()
                if not oldest:
                    break
                gone, freed = [], 0
                for seq, size in oldest:
                    gone.append(seq)
                    freed += size
                    if self._bytes - freed <= self.max_bytes:
                        break
                db.execute(f"DELETE FROM samples WHERE seq <= {int(gone[-1])}")
                self._bytes -= freed
                dropped += len(gone)
            if dropped:
                db.execute(
                    "INSERT INTO meta (key, value) VALUES ('dropped', ?) "
                    "ON CONFLICT(key) DO UPDATE SET value = value + excluded.value",
                    (dropped,),
                )

    def read(self, model: str, after: int, limit: int, max_bytes: int) -> list[Sample]:
        """The model's rows after ``after``, oldest first, at most ``limit`` rows and
        about ``max_bytes`` of JSON (at least one row)."""
        with self._lock:
            cur = self._db.execute(
                "SELECT seq, model, version, reason, instance, prediction, confidence, "
                "captured_at, bytes FROM samples WHERE model = ? AND seq > ? ORDER BY seq "
                "LIMIT ?",
                (model, after, limit),
            )
            out: list[Sample] = []
            size = 0
            for seq, m, version, reason, inst, pred, conf, at, nbytes in cur:
                if out and size + nbytes > max_bytes:
                    break
                size += nbytes
                out.append(
                    Sample(seq, m, version, reason, json.loads(inst), json.loads(pred), conf, at)
                )
            return out

    def stats(self, model: str) -> dict[str, int]:
        """Rows held for ``model``, their newest seq, and rows dropped (all models)."""
        with self._lock:
            count, last = self._db.execute(
                "SELECT COUNT(*), COALESCE(MAX(seq), 0) FROM samples WHERE model = ?", (model,)
            ).fetchone()
            return {"stored": int(count), "last": int(last), "dropped": self._meta("dropped")}

    @property
    def dropped(self) -> int:
        """Rows dropped by the bound so far (all models, across restarts)."""
        with self._lock:
            return self._meta("dropped")

    def clear(self, model: str, through: int) -> int:
        """Delete the model's rows up to ``through`` (a verified pull); how many went."""
        with self._tx() as db:
            freed = db.execute(
                "SELECT COALESCE(SUM(bytes), 0) FROM samples WHERE model = ? AND seq <= ?",
                (model, through),
            ).fetchone()[0]
            cur = db.execute("DELETE FROM samples WHERE model = ? AND seq <= ?", (model, through))
            self._bytes -= int(freed)
            return int(cur.rowcount)

    @property
    def bytes(self) -> int:
        return self._bytes

    def close(self) -> None:
        with self._lock:
            self._db.close()


class Capture:
    """Which answered instances are kept (worker thread), and the store they go to."""

    def __init__(self, settings: CaptureSettings, path: Path, seed: int | None = None) -> None:
        self.settings = settings
        self.store = CaptureStore(path, int(settings.max_mb * (1 << 20)))
        self._random = random.Random(seed)
        self._pending: list[tuple[str, str, str, str, str, float | None, float]] = []
        self.captured = 0

    def reason(self, prediction: dict[str, Any], drifting: bool) -> str | None:
        """Why this answer's instance is kept, or None."""
        s = self.settings
        probs = prediction.get("probabilities")
        if s.low_confidence is not None and isinstance(probs, dict) and "label" in prediction:
            confidence = probs.get(str(prediction["label"]))
            if isinstance(confidence, (int, float)) and confidence < s.low_confidence:
                return "low_confidence"
        if s.anomalies and prediction.get("is_anomaly") is True:
            return "anomaly"
        if s.during_drift and drifting:
            return "drift"
        if s.sample_rate > 0 and self._random.random() < s.sample_rate:
            return "sample"
        return None

    def select(
        self,
        model: str,
        version: str,
        instances: Sequence[Any] | np.ndarray[Any, Any],
        predictions: Sequence[dict[str, Any]],
        drifting: bool,
    ) -> None:
        """Queue the instances worth keeping; ``flush`` writes them."""
        now = time.time()
        for instance, prediction in zip(instances, predictions):
            why = self.reason(prediction, drifting)
            if why is None:
                continue
            probs = prediction.get("probabilities")
            conf = probs.get(str(prediction.get("label"))) if isinstance(probs, dict) else None
            self._pending.append(
                (
                    model,
                    version,
                    why,
                    json.dumps(
                        instance.tolist() if isinstance(instance, np.ndarray) else instance,
                        separators=(",", ":"),
                    ),
                    json.dumps(prediction, separators=(",", ":")),
                    float(conf) if isinstance(conf, (int, float)) else None,
                    now,
                )
            )

    def flush(self) -> None:
        """Write what was selected since the last flush, in one transaction."""
        if self._pending:
            rows, self._pending = self._pending, []
            self.store.add(rows)
            self.captured += len(rows)
