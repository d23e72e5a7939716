"""The agent's view of the field: drift per model, captured instances, and pulls of them.

The worker calls ``observe`` for every answered request and ``flush`` in its loop; paho's
thread hands capture requests (``{prefix}/{device}/{model}/capture``) to ``put``; the
"capture" thread answers them from the store (edge.observe.capture_store) on the requester's MQTT 5
response topic:

- ``{"op": "pull", "after": SEQ, "limit": N}``: the model's rows after SEQ, oldest first,
  about ``CHUNK_BYTES`` of JSON at most, with their sha256 and whether ``more`` follow;
- ``{"op": "clear", "through": SEQ}``: delete the model's rows up to SEQ (a verified pull);
- ``{"op": "stats"}``: rows held, the newest seq, rows dropped.

A request that is not one of these is answered ``{"error": ...}``; without a response
topic it is answered on the model's error topic. Nothing a requester sends can reach
another model's rows or the file system: the model is the topic's level, rows are read by
sequence number only.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgewise.edge.core.feature import Answered, Feature, Route
from edgewise.edge.core.supervision import serve_inbox
from edgewise.edge.link.capture_wire import CHUNK_BYTES, MAX_REQUEST, MAX_ROWS, rows_digest
from edgewise.edge.link.message import Message
from edgewise.edge.link.payload import MAX_DEPTH, encode, error_doc, nesting_depth
from edgewise.edge.observe.capture_store import Capture
from edgewise.edge.observe.drift import Drift

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from edgewise.edge.core.feature import Host
    from edgewise.edge.runtime.model import ServedModel

log = logging.getLogger(__name__)


def _int(doc: dict[str, Any], key: str, default: int, low: int, high: int) -> int:
    value = doc.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ValueError(f"{key} must be an integer in {low}..{high}")
    return value


class FieldData(Feature):
    """Drift monitors, the capture store and the capture thread of one agent."""

    def __init__(self, host: Host) -> None:
        self._host = host
        config = host.config
        self.drift = Drift(host)
        self.capture = (
            Capture(config.capture, Path(config.state_dir) / f"{config.device}.capture.sqlite")
            if config.capture is not None
            else None
        )
        self._inbox: queue.Queue[Message] = queue.Queue(maxsize=16)

    # -- the feature's points -------------------------------------------------------------

    def routes(self) -> Sequence[Route]:
        return [Route(self._host.topics.model("+", "capture"), 1, "drop")]

    def accept(self, msg: Message) -> None:
        self.put(msg)

    def answered(self, answer: Answered) -> None:
        self.observe(answer.model, answer.instances, answer.tensor, answer.predictions)

    def tick(self) -> None:
        self.flush()

    def swapped(self, old: ServedModel | None, new: ServedModel | None) -> None:
        if old is not None and new is None:
            self.drift.forget(old.name)

    def threads(self) -> Sequence[tuple[str, Callable[[threading.Event], None]]]:
        return [("capture", self.run)]

    def health(self, doc: dict[str, Any]) -> None:
        doc["drift"] = self.drift.summaries()
        doc["capture"] = self.capture_health() or None

    # -- worker thread -----------------------------------------------------------------

    def observe(
        self,
        model: ServedModel,
        instances: list[Any] | None,
        tensor: np.ndarray[Any, Any] | None,
        predictions: list[dict[str, Any]],
    ) -> None:
        """An answered request: into the drift window, and what is worth keeping."""
        status = self.drift.observe(model, instances, tensor, predictions)
        if self.capture is not None:
            rows = tensor if tensor is not None else (instances or [])
            drifting = status in ("warn", "alarm")
            self.capture.select(model.name, model.version, rows, predictions, drifting)

    def flush(self) -> None:
        """Write captured rows and publish due drift documents (worker loop)."""
        if self.capture is not None:
            try:
                self.capture.flush()
            except Exception:  # a full disk must not stop answers; the rows are lost
                log.exception("capture store: a batch of samples could not be written")
        self.drift.flush()

    # -- capture thread ----------------------------------------------------------------

    def put(self, msg: Message) -> None:
        """paho thread: hand a capture request over; when busy it is dropped (the puller
        retries), never waited for."""
        try:
            self._inbox.put_nowait(msg)
        except queue.Full:
            self._host.link.ack(msg)

    def run(self, stop: threading.Event) -> None:
        serve_inbox(self._inbox, stop, self._answer, self._host.link.ack, "capture")

    def _answer(self, msg: Message) -> None:
        topics = self._host.topics
        model = str(topics.model_of(msg.topic, "capture"))
        try:
            doc = self.respond(model, msg.payload)
        except ValueError as exc:
            doc = {"error": str(exc), "model": model}
        if msg.response_topic:
            self._host.link.publish(
                msg.response_topic, encode(doc), 1, correlation_data=msg.correlation_data
            )
        else:
            why = "capture requests need an MQTT 5 response topic"
            body = encode(error_doc(None, "bad_request", why, model))
            self._host.link.publish(topics.model(model, "error"), body, 1)

    def respond(self, model: str, payload: bytes) -> dict[str, Any]:
        """The answer to one capture request (ValueError: a bad request)."""
        if len(payload) > MAX_REQUEST:
            raise ValueError(f"a capture request is at most {MAX_REQUEST} bytes")
        if (depth := nesting_depth(payload)) > MAX_DEPTH:  # before the parser recurses
            raise ValueError(f"JSON nests {depth} levels deep; at most {MAX_DEPTH} are allowed")
        try:
            doc = json.loads(payload)
        except (ValueError, UnicodeDecodeError):
            raise ValueError("a capture request is a JSON object") from None
        if not isinstance(doc, dict):
            raise ValueError("a capture request is a JSON object")
        unknown = set(doc) - {"op", "after", "limit", "through"}
        if unknown:
            allowed = "op, after, limit, through"
            raise ValueError(f"unknown key(s) {sorted(unknown)[:3]}; allowed: {allowed}")
        if self.capture is None:
            raise ValueError("capture is off on this device (add a [capture] table to its config)")
        store = self.capture.store
        op = doc.get("op")
        if op == "stats":
            return {"op": "stats", "model": model, **store.stats(model)}
        if op == "clear":
            through = _int(doc, "through", -1, 0, 2**62)
            return {"op": "clear", "model": model, "cleared": store.clear(model, through)}
        if op != "pull":
            raise ValueError("op must be pull, clear or stats")
        after = _int(doc, "after", 0, 0, 2**62)
        limit = _int(doc, "limit", 1000, 1, MAX_ROWS)
        samples = store.read(model, after, limit, CHUNK_BYTES)
        rows = [s.as_dict() for s in samples]
        stats = store.stats(model)
        last = rows[-1]["seq"] if rows else after
        info = self._host.models.get(model)
        return {
            "op": "pull",
            "model": model,
            "rows": rows,
            "sha256": rows_digest(rows),
            "next": last,
            "more": stats["last"] > last,
            "stored": stats["stored"],
            "dropped": stats["dropped"],
            "features": [f.name for f in info.features] if info is not None else None,
            "kind": info.bundle.manifest.input.kind if info is not None else None,
        }

    def close(self) -> None:
        if self.capture is not None:
            try:
                self.capture.flush()
            finally:
                self.capture.store.close()

    def capture_health(self) -> dict[str, Any]:
        """Health's ``capture`` section (empty when off)."""
        if self.capture is None:
            return {}
        return {
            "captured": self.capture.captured,
            "bytes": self.capture.store.bytes,
            "dropped": self.capture.store.dropped,
        }
