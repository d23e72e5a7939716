"""A dashboard-friendly state topic: the last answer of each model, at most once a second.

``{prefix}/{device}/{model}/state`` (retained) holds the latest answer's first prediction
in a flat form: ``label`` / ``value`` / ``score`` and ``is_anomaly`` / ``cluster``, the
``confidence`` (the label's probability) when there is one, the request ``id``, the
``version`` and the ``time``. Home Assistant, Node-RED or Grafana's MQTT data source show
the latest result from it without subscribing to every answer. The worker records; the
latest record is published when a second has passed since the model's previous one
(``flush`` runs in the worker's loop, so a last answer is never held back for long).
"""

from __future__ import annotations

import json
import threading
import time
from typing import TYPE_CHECKING, Any

from edgewise.edge.core.feature import Answered, Feature
from edgewise.edge.runtime.decode import flat

if TYPE_CHECKING:
    from edgewise.edge.core.feature import Host
    from edgewise.edge.runtime.model import ServedModel

EVERY_S = 1.0


def state_doc(
    model: str,
    version: str,
    rid: Any,
    prediction: dict[str, Any],
    count: int,
    at: float,
) -> dict[str, Any]:
    """The flat summary of one prediction (``at``: when it was answered, wall clock)."""
    doc: dict[str, Any] = {"model": model, "version": version, "id": rid, **flat(prediction)}
    probabilities = prediction.get("probabilities")
    if isinstance(probabilities, dict) and "label" in prediction:
        doc["probabilities"] = probabilities
    doc["instances"] = count
    doc["time"] = round(at, 3)
    return doc


class AnswerStates(Feature):
    """The latest answer per model, published at most once per ``EVERY_S`` per model."""

    def __init__(self, host: Host) -> None:
        self._host = host
        # The latest answer per model, as it came: its document is built only when sent.
        self._pending: dict[str, tuple[str, Any, dict[str, Any], int, float]] = {}
        self._sent_at: dict[str, float] = {}
        self._lock = threading.Lock()

    def answered(self, answer: Answered) -> None:
        model = answer.model
        self.record(model.name, model.version, answer.request_id, answer.predictions)

    def tick(self) -> None:
        self.flush()  # the last answers held back by the once-a-second limit

    def swapped(self, old: ServedModel | None, new: ServedModel | None) -> None:
        if old is not None and new is None:
            self.forget(old.name)

    def _topic_of(self, model: str) -> str:
        return self._host.topics.model(model, "state")

    def record(self, model: str, version: str, rid: Any, predictions: list[dict[str, Any]]) -> None:
        if not predictions:
            return
        # One dict assignment (atomic): every answer calls this, and most are not sent.
        self._pending[model] = (version, rid, predictions[0], len(predictions), time.time())
        if time.monotonic() - self._sent_at.get(model, -EVERY_S) >= EVERY_S:
            self.flush()

    def flush(self) -> None:
        """Publish what is due (worker thread; cheap when nothing is)."""
        if not self._pending:
            return
        now = time.monotonic()
        with self._lock:
            due = [m for m in self._pending if now - self._sent_at.get(m, -EVERY_S) >= EVERY_S]
            latest = [(m, self._pending.pop(m)) for m in due]
            for m in due:
                self._sent_at[m] = now
        for model, (version, rid, prediction, count, at) in latest:
            body = json.dumps(state_doc(model, version, rid, prediction, count, at)).encode()
            self._host.link.publish(self._topic_of(model), body, qos=1, retain=True)

    def forget(self, model: str) -> None:
        """A removed model: nothing more is published, its retained state is cleared."""
        with self._lock:
            self._pending.pop(model, None)
        self._host.link.publish(self._topic_of(model), b"", qos=1, retain=True)
