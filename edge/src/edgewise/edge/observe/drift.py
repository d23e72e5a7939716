"""Drift on the device: each model's recent inputs and answers against its training reference.

Per model whose manifest has a ``reference`` (edge.runtime.drift_profile), the worker bins every
answered instance's profile and answer into a sliding window of the last ``window``
instances (a ring of bin indices and running counts: adding an instance subtracts the one
it evicts, so the cost does not grow with the window). Once ``min_instances`` are in, the
population stability index of each input quantity and of the answers gives a status: at
or above ``alarm`` is ``alarm``, at or above ``warn`` is ``warn``, else ``ok``.

The retained ``{prefix}/{device}/{model}/drift`` document is published at a version's
first request (status ``collecting``), when the status changes and once per health
interval (from the worker's loop, never from paho's thread).
"""

from __future__ import annotations

import json
import logging
import math
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from edgewise.edge.runtime.drift_profile import Binner, Profiler, confidences, prediction_values

if TYPE_CHECKING:
    from edgewise.edge.core.config import DriftSettings
    from edgewise.edge.core.feature import Host
    from edgewise.edge.runtime.model import ServedModel

log = logging.getLogger(__name__)

JUDGE_EVERY = 50  # instances between two judgements (a status change is seen this soon)
# Answered requests are binned in batches, not one by one (the binning's cost is per call):
# a model's buffer is binned once it holds this many instances, or from the worker's loop
# once its oldest request waited this long.
BATCH_ROWS = 128
BATCH_AGE_S = 0.1


class DriftMonitor:
    """The sliding window of one served model version."""

    def __init__(self, model: ServedModel, settings: DriftSettings) -> None:
        reference = model.bundle.manifest.reference
        if reference is None:
            raise ValueError(f"{model.name} has no reference")
        self.model = model
        self.settings = settings
        self.reference = reference
        channels = model.bundle.manifest.input.window_features
        names = list(channels.channels) if channels is not None else _channels(model)
        self.profiler = Profiler(reference, model.features, names)
        dists = [*reference.inputs, *([reference.predictions] if reference.predictions else [])]
        self.binner = Binner(dists)
        size = settings.window
        self._ring = np.zeros((size, len(dists)), np.int32)
        self._confidence = np.full(size, np.nan)
        self._counts = np.zeros(self.binner.total, np.int64)
        self._filled = self._pos = 0
        self._since_judged = 0
        self.observed = 0
        self.status: str | None = None  # None until min_instances are in
        self.since: float | None = None
        self.scores: list[float] = []

    def observe(
        self,
        instances: list[Any] | None,
        tensor: np.ndarray[Any, Any] | None,
        predictions: list[dict[str, Any]],
    ) -> bool:
        """Add one answered request; True when the status changed."""
        columns = self.profiler.columns(instances, tensor)
        if self.reference.predictions is not None:
            columns.append(prediction_values(self.model.bundle.task, predictions))
        bins = self.binner.bins(columns)
        conf = confidences(predictions)
        size, given = len(self._ring), len(bins)
        if given > size:  # more than the window at once: only the newest stay
            bins, conf = bins[-size:], conf[-size:]
        n = len(bins)
        slots = (self._pos + np.arange(n)) % size
        evicted = slots[slots < self._filled] if self._filled < size else slots
        total = self.binner.total
        if len(evicted):
            self._counts -= np.bincount(self._ring[evicted].ravel(), minlength=total)
        self._ring[slots] = bins
        self._confidence[slots] = conf
        self._counts += np.bincount(bins.ravel(), minlength=total)
        self._filled = min(size, self._filled + n)
        self._pos = (self._pos + n) % size
        self.observed += given  # every one observed counts, kept in the window or not
        self._since_judged += given
        if self._since_judged >= JUDGE_EVERY and self._filled >= self.settings.min_instances:
            return self.judge()
        return False

    def judge(self) -> bool:
        """Score the window; True when the status changed."""
        self._since_judged = 0
        self.scores = self.binner.scores(self._counts)
        worst = max(self.scores, default=0.0)
        s = self.settings
        status = "alarm" if worst >= s.alarm else "warn" if worst >= s.warn else "ok"
        changed = status != self.status
        if changed:
            self.status, self.since = status, time.time()
        return changed

    def document(self) -> dict[str, Any]:
        """The retained drift document (and health's copy)."""
        n_inputs = len(self.reference.inputs)
        features = {
            d.name: round(v, 4) for d, v in zip(self.reference.inputs, self.scores[:n_inputs])
        }
        predictions = self.scores[n_inputs] if len(self.scores) > n_inputs else None
        conf = self._confidence[: self._filled]
        present = conf[~np.isnan(conf)]
        worst = max(features, key=lambda f: features[f]) if features else None
        return {
            "model": self.model.name,
            "version": self.model.version,
            "status": self.status or "collecting",
            "window": self._filled,
            "observed": self.observed,
            "features": features,
            "largest": worst,
            "predictions": round(predictions, 4) if predictions is not None else None,
            "confidence": round(float(present.mean()), 4) if len(present) else None,
            "reference_confidence": self.reference.confidence,
            "since": self.since,
            "thresholds": {"warn": self.settings.warn, "alarm": self.settings.alarm},
        }


def _channels(model: ServedModel) -> list[str]:
    # Windows served by a network: the channel names are the manifest's feature names.
    shape = model.instance_shape or ()
    names = [f.name for f in model.features]
    if len(shape) == 2 and len(names) == shape[1]:
        return names
    return [f"c{i}" for i in range(shape[-1] if shape else 0)]


class _Pending:
    """Answered requests of one monitor, waiting to be binned together."""

    def __init__(self, monitor: DriftMonitor) -> None:
        self.monitor = monitor
        self.clear()

    def clear(self) -> None:
        self.instances: list[Any] = []
        self.instance_predictions: list[dict[str, Any]] = []
        self.tensors: list[np.ndarray[Any, Any]] = []
        self.tensor_predictions: list[dict[str, Any]] = []
        self.rows = 0
        self.since = time.monotonic()

    def add(
        self,
        instances: list[Any] | None,
        tensor: np.ndarray[Any, Any] | None,
        predictions: list[dict[str, Any]],
    ) -> None:
        if not self.rows:
            self.since = time.monotonic()
        if tensor is not None:
            self.tensors.append(tensor)
            self.tensor_predictions += predictions
            self.rows += len(tensor)
        else:
            self.instances += instances or []
            self.instance_predictions += predictions
            self.rows += len(instances or [])

    def bin(self) -> bool:
        """Into the window, in as few calls as the shapes allow; True if the status changed."""
        changed = False
        if self.instances:
            changed |= self.monitor.observe(self.instances, None, self.instance_predictions)
        if self.tensors:
            shapes = {t.shape[1:] for t in self.tensors}
            if len(shapes) == 1:
                joined = np.concatenate(self.tensors)
                changed |= self.monitor.observe(None, joined, self.tensor_predictions)
            else:  # requests of other shapes (refused ones never get here): one at a time
                start = 0
                for t in self.tensors:
                    preds = self.tensor_predictions[start : start + len(t)]
                    changed |= self.monitor.observe(None, t, preds)
                    start += len(t)
        self.clear()
        return changed


class Drift:
    """The agent's drift monitors: the worker observes and publishes; health reads."""

    def __init__(self, host: Host) -> None:
        self._host = host
        self._settings = host.config.drift
        self._monitors: dict[str, DriftMonitor] = {}
        self._pending: dict[str, _Pending] = {}
        self._published_at: dict[str, float] = {}
        self._broken: set[str] = set()

    def monitor(self, model: ServedModel) -> DriftMonitor | None:
        """The monitor of this version (a new version starts a new window)."""
        current = self._monitors.get(model.name)
        if current is not None and current.model is model:
            return current
        if not self._settings.enabled or model.bundle.manifest.reference is None:
            return None
        monitor = DriftMonitor(model, self._settings)
        self._monitors[model.name] = monitor
        self._published_at.pop(model.name, None)
        return monitor

    def observe(
        self,
        model: ServedModel,
        instances: list[Any] | None,
        tensor: np.ndarray[Any, Any] | None,
        predictions: list[dict[str, Any]],
    ) -> str | None:
        """Add an answered request (worker thread); the model's drift status (as of the
        last binned batch: a status change is seen within ``BATCH_ROWS`` instances or
        ``BATCH_AGE_S`` seconds)."""
        monitor = self.monitor(model)
        if monitor is None or model.name in self._broken:
            return None
        pending = self._pending.get(model.name)
        if pending is not None and pending.monitor is not monitor:
            self._bin(pending)  # the old version's last requests, into its own window
            pending = None
        if pending is None:
            pending = self._pending[model.name] = _Pending(monitor)
        fresh = monitor.observed == 0 and not pending.rows
        pending.add(instances, tensor, predictions)
        if fresh or pending.rows >= BATCH_ROWS:
            self._bin(pending)  # a new version's window is announced at once
        return monitor.status

    def _bin(self, pending: _Pending) -> None:
        monitor = pending.monitor
        name = monitor.model.name
        fresh = monitor.observed == 0
        try:
            changed = pending.bin()
        except Exception:  # drift bookkeeping must never cost an answer
            self._broken.add(name)
            self._pending.pop(name, None)
            log.exception("drift monitoring of %s failed; it is off until restart", name)
            return
        if changed:
            log.info("%s drift: %s", name, monitor.status)
        if changed or fresh:  # a new version's window is announced as "collecting"
            self._publish(monitor)

    def flush(self, force: bool = False) -> None:
        """Bin what waited long enough (everything with ``force``), and publish each judged
        model's document once per health interval (worker loop)."""
        now = time.monotonic()
        for pending in list(self._pending.values()):
            if pending.rows and (force or now - pending.since >= BATCH_AGE_S):
                self._bin(pending)
        every = self._host.config.health_interval
        for name, monitor in list(self._monitors.items()):
            if now - self._published_at.get(name, -math.inf) >= every and monitor.observed:
                if monitor.status is not None and monitor.judge():
                    log.info("%s drift: %s", name, monitor.status)
                self._publish(monitor)

    def _publish(self, monitor: DriftMonitor) -> None:
        self._published_at[monitor.model.name] = time.monotonic()
        topic = self._host.topics.model(monitor.model.name, "drift")
        body = json.dumps(monitor.document()).encode()
        self._host.link.publish(topic, body, qos=1, retain=True)

    def status(self, name: str) -> str | None:
        monitor = self._monitors.get(name)
        return monitor.status if monitor is not None else None

    def forget(self, name: str) -> None:
        """A removed model: its window goes, its retained document is cleared."""
        self._pending.pop(name, None)
        if self._monitors.pop(name, None) is not None:
            topic = self._host.topics.model(name, "drift")
            self._host.link.publish(topic, b"", qos=1, retain=True)

    def summaries(self) -> dict[str, dict[str, Any]]:
        """Per monitored model: status, window and the largest PSI (for health)."""
        out = {}
        for name, monitor in list(self._monitors.items()):
            doc = monitor.document()
            largest = doc["largest"]
            out[name] = {
                "status": doc["status"],
                "window": doc["window"],
                "largest": largest,
                "psi": doc["features"].get(largest) if largest else None,
                "predictions": doc["predictions"],
                "confidence": doc["confidence"],
            }
        return out
