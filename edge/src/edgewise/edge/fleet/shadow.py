"""Shadow mode: a new version answers live requests beside the active one, silently.

Each request to a model with a shadow is run through the shadow too, after the active
version's answer is built; only the active version's answer is published. Agreement
(labels, anomaly flags or clusters equal), the mean absolute difference of probabilities,
values or scores, the shadow's failures and both latencies are summed up on a retained
``{prefix}/{device}/{model}/shadow`` document (at most once a second; the worker's idle
loop publishes the last figures) and in health.
``edgewise promote`` makes the shadow the active version.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from edgewise.edge.core.feature import Answered, Feature
from edgewise.edge.core.health import LatencyWindow
from edgewise.edge.errors import EdgewiseError

if TYPE_CHECKING:
    from edgewise.edge.core.feature import Host
    from edgewise.edge.runtime.model import ServedModel

log = logging.getLogger(__name__)
PUBLISH_EVERY_S = 1.0
_LABEL_KEYS = ("label", "is_anomaly", "cluster")
_VALUE_KEYS = ("value", "score")


@dataclass
class ShadowRun:
    """One shadow version and what it did so far."""

    model: ServedModel
    deployment: str
    compared: int = 0
    agreed: int = 0
    delta_sum: float = 0.0
    delta_n: int = 0
    errors: int = 0
    latency: LatencyWindow = field(default_factory=LatencyWindow)
    published_at: float = 0.0
    dirty: bool = False  # compared since the last publish

    def add(self, active: list[dict[str, Any]], shadow: list[dict[str, Any]]) -> None:
        for a, s in zip(active, shadow):
            self.compared += 1
            key = next((k for k in _LABEL_KEYS if k in a), None)
            if key is None or a.get(key) == s.get(key):
                self.agreed += 1
            if "probabilities" in a and "probabilities" in s:
                pa, ps = a["probabilities"], s["probabilities"]
                for label, p in pa.items():
                    self.delta_sum += abs(float(p) - float(ps.get(label, 0.0)))
                    self.delta_n += 1
            for k in _VALUE_KEYS:
                if k in a and k in s:
                    self.delta_sum += abs(float(a[k]) - float(s[k]))
                    self.delta_n += 1

    def summary(self, active_version: str | None) -> dict[str, Any]:
        return {
            "version": self.model.version,
            "active_version": active_version,
            "deployment": self.deployment,
            "compared": self.compared,
            "agreement": round(self.agreed / self.compared, 6) if self.compared else None,
            "mean_abs_delta": round(self.delta_sum / self.delta_n, 6) if self.delta_n else None,
            "errors": self.errors,
            "inference_ms": self.latency.summary(),
        }


class Shadows(Feature):
    """The shadows of one agent: the fleet thread starts and stops, the worker compares."""

    def __init__(self, host: Host) -> None:
        self._host = host
        self._runs: dict[str, ShadowRun] = {}
        self._lock = threading.Lock()

    def answered(self, answer: Answered) -> None:
        self.compare(answer.model.name, answer.instances, answer.tensor, answer.predictions)

    def tick(self) -> None:
        self.flush()  # the last figures, held back by the once-a-second limit

    def swapped(self, old: ServedModel | None, new: ServedModel | None) -> None:
        if old is not None and new is None:
            self.stop(old.name)  # removed: its shadow goes with it

    def health(self, doc: dict[str, Any]) -> None:
        doc["shadows"] = self.summaries()

    def model(self, name: str) -> ServedModel | None:
        run = self._runs.get(name)
        return run.model if run is not None else None

    def start(self, model: ServedModel, deployment: str) -> None:
        active = self._host.models.get(model.name)
        if active is None:
            raise EdgewiseError(f"a shadow needs an active version of {model.name} beside it")
        with self._lock:
            self._runs[model.name] = ShadowRun(model, deployment)
        log.info("%s v%s runs in shadow of v%s", model.name, model.version, active.version)

    def stop(self, name: str) -> None:
        with self._lock:
            run = self._runs.pop(name, None)
        if run is not None:
            topic = self._host.topics.model(name, "shadow")
            self._host.link.publish(topic, b"", qos=1, retain=True)

    def compare(
        self,
        name: str,
        instances: list[Any] | None,
        tensor: np.ndarray[Any, Any] | None,
        answers: list[dict[str, Any]],
    ) -> None:
        """Run the shadow on a request the active version answered (worker thread)."""
        run = self._runs.get(name)
        if run is None:
            return
        started = time.perf_counter()
        try:
            got = run.model.predict(instances or []) if tensor is None else (
                run.model.predict_tensor(tensor))  # fmt: skip
        except Exception as exc:  # the shadow's failures are counted, never answered
            run.errors += 1
            log.debug("shadow %s v%s failed: %s", name, run.model.version, exc)
            got = None
        if got is not None:
            run.latency.add((time.perf_counter() - started) * 1000.0)
            run.add(answers, got)
        run.dirty = True
        self.flush()

    def flush(self) -> None:
        """Publish the summaries that changed, at most once a second each (worker thread:
        after each request and in its idle loop, so the last figures are not held back)."""
        now = time.monotonic()
        for name, run in list(self._runs.items()):
            if run.dirty and now - run.published_at >= PUBLISH_EVERY_S:
                run.published_at, run.dirty = now, False
                self._publish(name, run)

    def _publish(self, name: str, run: ShadowRun) -> None:
        active = self._host.models.get(name)
        doc = run.summary(active.version if active else None)
        topic = self._host.topics.model(name, "shadow")
        self._host.link.publish(topic, json.dumps(doc).encode(), qos=1, retain=True)

    def summaries(self) -> dict[str, dict[str, Any]]:
        """Per model with a shadow: its summary (for health)."""
        out = {}
        for name, run in list(self._runs.items()):
            active = self._host.models.get(name)
            out[name] = run.summary(active.version if active else None)
        return out
