"""What the live dashboard shows, kept from the topics the agents publish (thread-safe).

The MQTT thread calls ``on_message``; the web server reads ``snapshot``. Everything from
the broker is bounded: at most ``MAX_DEVICES`` devices and their served models, payloads
over ``MAX_PAYLOAD`` bytes ignored, strings clipped, the last ``EVENTS`` answers and errors,
``HISTORY`` health points per model.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections import deque
from typing import Any

from edgewise.edge.link.message import Message
from edgewise.edge.remote.fleet_status import finite_number

MAX_DEVICES = 1000
MAX_MODELS = 64  # per device: 50,000 invented model topics under one id stay 64 entries
MAX_PAYLOAD = 256 * 1024
EVENTS = 200
HISTORY = 120  # health points per model (an hour at 30 s, 2 minutes at 1 s)
CLIP = 120


def _clip(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= CLIP else text[: CLIP - 1] + "…"


def _doc(payload: bytes) -> dict[str, Any] | None:
    try:
        doc = json.loads(payload)
    except (ValueError, RecursionError):
        return None
    return doc if isinstance(doc, dict) else None


def short(doc: dict[str, Any]) -> str:
    """One line for an answer: the first prediction's label, value, score or cluster."""
    preds = doc.get("predictions")
    if not isinstance(preds, list) or not preds or not isinstance(preds[0], dict):
        return "?"
    p = preds[0]
    for key in ("label", "value", "cluster", "score"):
        if key in p:
            more = f" (+{len(preds) - 1})" if len(preds) > 1 else ""
            flag = " ANOMALY" if p.get("is_anomaly") else ""
            return f"{key} {_clip(p[key])}{flag}{more}"
    return "?"


class FleetView:
    """Devices, models, charts' series and the live feed of one prefix."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._lock = threading.Lock()
        self._devices: dict[str, dict[str, Any]] = {}
        self._history: dict[tuple[str, str], deque[tuple[float, float, Any, Any]]] = {}
        self._events: deque[dict[str, Any]] = deque(maxlen=EVENTS)
        self._seq = 0
        self.version = 0  # changes whenever anything shown changes
        self._waiting: dict[str, tuple[threading.Event, list[dict[str, Any]]]] = {}

    def subscriptions(self) -> list[tuple[str, int]]:
        p = self.prefix
        kinds = ("out", "error", "deployment", "info")
        return [(f"{p}/+/status", 1), (f"{p}/+/health", 1)] + [(f"{p}/+/+/{k}", 0) for k in kinds]

    # -- MQTT thread --------------------------------------------------------------------

    def on_message(self, msg: Message) -> None:
        if len(msg.payload) > MAX_PAYLOAD:
            return
        parts = msg.topic.split("/")
        if parts[0] != self.prefix or len(parts) not in (3, 4) or parts[1] == "fleet":
            return
        with self._lock:
            if len(parts) == 3 and parts[2] == "status" and not msg.payload:
                self._forget(parts[1])  # `edgewise fleet forget`: its retained topics cleared
                self.version += 1
                return
            device = self._device(parts[1])
            if device is None:
                return
            if len(parts) == 3:
                self._device_topic(parts[1], device, parts[2], msg.payload)
            else:
                self._model_topic(parts[1], device, parts[2], parts[3], msg.payload)
            self.version += 1

    def _forget(self, name: str) -> None:
        self._devices.pop(name, None)
        for key in [k for k in self._history if k[0] == name]:
            del self._history[key]

    def _device(self, name: str) -> dict[str, Any] | None:
        if name not in self._devices:
            if len(self._devices) >= MAX_DEVICES:
                return None
            self._devices[name] = {"status": "?", "health": {}, "models": {}}
        return self._devices[name]

    def _device_topic(self, name: str, device: dict[str, Any], kind: str, payload: bytes) -> None:
        if kind == "status":
            device["status"] = payload.decode("utf-8", "replace")[:20] or "?"
            return
        doc = _doc(payload) if kind == "health" else None
        if doc is None:
            return
        counters = doc.get("counters") if isinstance(doc.get("counters"), dict) else {}
        device["health"] = {
            "uptime_s": finite_number(doc.get("uptime_s")),
            "cpu_temp_c": finite_number(doc.get("cpu_temp_c")),
            "rss_bytes": finite_number(doc.get("rss_bytes")),
            "outbox_depth": finite_number(counters.get("outbox_depth")),
            "groups": [_clip(g) for g in doc.get("groups") or []][:10],
            "time": finite_number(doc.get("time")),
        }
        models = doc.get("models") if isinstance(doc.get("models"), dict) else {}
        now = time.time()
        for model, m in list(models.items())[:50]:
            if not isinstance(m, dict):
                continue
            entry = _model_entry(device, model)
            if entry is None:
                continue
            entry["version"] = _clip(m.get("version", "?"))
            inference = m.get("inference_ms") if isinstance(m.get("inference_ms"), dict) else {}
            answered = finite_number(m.get("answered")) or 0.0
            points = self._history.setdefault((name, model), deque(maxlen=HISTORY))
            points.append(
                (
                    now,
                    answered,
                    finite_number(inference.get("p50_ms")),
                    finite_number(inference.get("p99_ms")),
                )
            )

    def _model_topic(
        self, name: str, device: dict[str, Any], model: str, kind: str, payload: bytes
    ) -> None:
        if not payload:
            if kind in ("info", "deployment"):
                device["models"].pop(model, None)  # undeployed: its retained topics cleared
            return
        doc = _doc(payload)
        if doc is None:
            return
        if kind in ("info", "deployment"):
            entry = _model_entry(device, model)
            if entry is None:
                return
            if kind == "info":
                entry["version"] = _clip(doc.get("version", "?"))
                entry["task"] = _clip(doc.get("task", "?"))
            else:
                entry["deployment"] = _clip(doc.get("state", "?"))
            return
        rid = doc.get("id")
        if isinstance(rid, str) and rid in self._waiting:
            event, box = self._waiting[rid]
            box.append(doc)
            event.set()
        self._seq += 1
        preds = doc.get("predictions")
        anomaly = isinstance(preds, list) and any(
            isinstance(p, dict) and p.get("is_anomaly") for p in preds
        )
        text = (
            short(doc)
            if kind == "out"
            else f"{_clip(doc.get('code'))}: {_clip(doc.get('message'))}"
        )
        self._events.append({
            "seq": self._seq, "time": time.time(), "device": name, "model": _clip(model),
            "kind": "anomaly" if anomaly else ("answer" if kind == "out" else "error"),
            "id": _clip(rid), "text": text,
        })  # fmt: skip

    # -- web thread ---------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Everything the page draws, JSON-ready."""
        with self._lock:
            devices = json.loads(json.dumps(self._devices))
            for (name, model), points in self._history.items():
                entry = devices.get(name, {}).get("models", {}).get(model)
                if entry is None:
                    continue
                pts = list(points)
                rates = [
                    [b[0], max(0.0, (b[1] - a[1]) / (b[0] - a[0]))]
                    for a, b in itertools.pairwise(pts)
                    if b[0] > a[0]
                ]
                entry["throughput"] = rates
                entry["p99_ms"] = [[p[0], p[3]] for p in pts if p[3] is not None]
            return {
                "prefix": self.prefix,
                "devices": devices,
                "events": list(self._events)[-50:],
                "version": self.version,
            }

    def expect(self, rid: str) -> tuple[threading.Event, list[dict[str, Any]]]:
        with self._lock:
            self._waiting[rid] = (threading.Event(), [])
            return self._waiting[rid]

    def forget(self, rid: str) -> None:
        with self._lock:
            self._waiting.pop(rid, None)

    def serves(self, device: str, model: str) -> bool:
        with self._lock:
            return model in self._devices.get(device, {}).get("models", {})


def _model_entry(device: dict[str, Any], model: str) -> dict[str, Any] | None:
    """The device's entry for ``model``, created while it has fewer than MAX_MODELS."""
    models: dict[str, Any] = device["models"]
    name = _clip(model)
    if name not in models and len(models) >= MAX_MODELS:
        return None
    return models.setdefault(name, {})
