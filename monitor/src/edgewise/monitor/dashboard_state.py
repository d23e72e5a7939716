"""What the console shows, kept from the topics the agents publish (thread-safe).

The MQTT thread calls ``on_message``; the web server reads ``summaries``, ``device`` and
``snapshot``. Everything from the broker is bounded: at most ``MAX_DEVICES`` devices and
``MAX_MODELS`` models each, payloads over ``MAX_PAYLOAD`` bytes ignored, strings clipped,
the last ``EVENTS`` answers and errors, and the history in fixed rings
(``monitor.dashboard_history``).

A device's standing is judged when it is read, from the wall clock: ``stale`` when its
last health report is older than ``STALE_INTERVALS`` health intervals (the interval its
reports state, else ``DEFAULT_INTERVAL_S``).
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from typing import Any

from edgewise.edge.link.message import Message
from edgewise.edge.remote.fleet_status import finite_number
from edgewise.monitor.dashboard_history import RANGES_S, History

MAX_DEVICES = 1000
MAX_MODELS = 64  # per device: 50,000 invented model topics under one id stay 64 entries
MAX_PAYLOAD = 256 * 1024
EVENTS = 200
CLIP = 120
STALE_INTERVALS = 3
DEFAULT_INTERVAL_S = 30.0
FAILING_ERROR_RATE = 0.01  # of the last 15 minutes' requests
ROLLING = ("pending", "downloading", "staged", "shadow")
FAILED = ("failed", "rolled_back")
RANK = {"failing": 0, "offline": 1, "stale": 2, "drifting": 3, "rolling_out": 4}
KINDS = ("out", "error", "deployment", "info", "drift")


def _clip(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= CLIP else text[: CLIP - 1] + "…"


def _doc(payload: bytes) -> dict[str, Any] | None:
    try:
        doc = json.loads(payload)
    except (ValueError, RecursionError):
        return None
    return doc if isinstance(doc, dict) else None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def short(doc: dict[str, Any]) -> str:
    """One line for an answer: the first prediction's label, value, score or cluster."""
    preds = doc.get("predictions")
    if not isinstance(preds, list) or not preds or not isinstance(preds[0], dict):
        return "?"
    p = preds[0]
    for key in ("label", "value", "cluster", "score"):
        if key in p:
            value = p[key]
            shown = f"{value:.4g}" if isinstance(value, float) else _clip(value)
            more = f" (+{len(preds) - 1})" if len(preds) > 1 else ""
            flag = " ANOMALY" if p.get("is_anomaly") else ""
            return f"{key} {shown}{flag}{more}"
    return "?"


def _numbers(doc: dict[str, Any], *keys: str) -> dict[str, float | None]:
    return {k: finite_number(doc.get(k)) for k in keys}


class FleetView:
    """Devices, models, history and the live feed of one prefix."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._lock = threading.Lock()
        self._devices: dict[str, dict[str, Any]] = {}
        self._history: dict[tuple[str, str], History] = {}
        self._events: deque[dict[str, Any]] = deque(maxlen=EVENTS)
        self._seq = 0
        self.version = 0  # changes whenever anything shown changes
        self._waiting: dict[str, tuple[threading.Event, list[dict[str, Any]]]] = {}

    def subscriptions(self) -> list[tuple[str, int]]:
        p = self.prefix
        return [(f"{p}/+/status", 1), (f"{p}/+/health", 1)] + [(f"{p}/+/+/{k}", 0) for k in KINDS]

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
                self._device_topic(parts[1], device, parts[2], msg.payload, msg.retain)
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
            self._devices[name] = {"status": "?", "seen": time.time(), "health": {},
                                   "models": {}, "shadows": {}}  # fmt: skip
        return self._devices[name]

    def _device_topic(
        self, name: str, device: dict[str, Any], kind: str, payload: bytes, retained: bool
    ) -> None:
        if kind == "status":
            device["status"] = payload.decode("utf-8", "replace")[:20] or "?"
            device["status_at"] = time.time()
            return
        doc = _doc(payload) if kind == "health" else None
        if doc is None:
            return
        now = time.time()
        counters = _dict(doc.get("counters"))
        # A retained report is as old as it says (a device silent for an hour is stale
        # when the console starts); a live one is as old as its arrival (clock skew).
        stated = finite_number(doc.get("time"))
        device["seen"] = min(now, stated) if retained and stated is not None else now
        device["health"] = {
            **_numbers(doc, "uptime_s", "cpu_temp_c", "rss_bytes", "time",
                       "health_interval_s", "started", "worker_heartbeat_age_s"),
            **_numbers(counters, "outbox_depth", "received", "errors", "internal_errors",
                       "dead_letters", "dropped", "reconnects", "overloaded",
                       "callback_errors", "queued"),
            "groups": [_clip(g) for g in doc.get("groups") or []][:10],
            "durable": doc.get("durable") if isinstance(doc.get("durable"), bool) else None,
            "outbox_error": _clip(doc["outbox_error"]) if doc.get("outbox_error") else None,
        }  # fmt: skip
        device["shadows"] = {
            _clip(m): {"version": _clip(s.get("version", "?")),
                       **_numbers(s, "agreement", "compared", "mean_abs_delta")}
            for m, s in list(_dict(doc.get("shadows")).items())[:MAX_MODELS]
            if isinstance(s, dict)
        }  # fmt: skip
        drift = _dict(doc.get("drift"))
        for model, m in list(_dict(doc.get("models")).items())[:MAX_MODELS]:
            entry = _model_entry(device, model) if isinstance(m, dict) else None
            if entry is None:
                continue
            entry["version"] = _clip(m.get("version", "?"))
            codes = {_clip(c): n for c, v in list(_dict(m.get("errors")).items())[:50]
                     if (n := finite_number(v)) is not None}  # fmt: skip
            answered = finite_number(m.get("answered")) or 0.0
            inference, e2e = _dict(m.get("inference_ms")), _dict(m.get("e2e_ms"))
            entry.update(answered=answered, errors=codes,
                         **_numbers(inference, "p50_ms", "p99_ms"),
                         e2e_p99_ms=finite_number(e2e.get("p99_ms")))  # fmt: skip
            d = drift.get(model)
            if isinstance(d, dict) and "status" in d:
                entry.setdefault("drift", {}).update(
                    status=_clip(d.get("status")), largest=_clip(d.get("largest")),
                    psi=finite_number(d.get("psi")))  # fmt: skip
            history = self._history.setdefault((name, _clip(model)), History())
            t = finite_number(doc.get("time")) or now
            history.report(t, answered, sum(codes.values()), entry.get("p99_ms"))

    def _model_topic(
        self, name: str, device: dict[str, Any], model: str, kind: str, payload: bytes
    ) -> None:
        if not payload:
            if kind in ("info", "deployment"):
                device["models"].pop(model, None)  # undeployed: its retained topics cleared
                self._history.pop((name, model), None)
            return
        doc = _doc(payload)
        if doc is None:
            return
        if kind in ("info", "deployment", "drift"):
            entry = _model_entry(device, model)
            if entry is not None:
                _retained(entry, kind, doc)
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
        """Every device's record, JSON-ready (``/api/state``)."""
        with self._lock:
            devices = json.loads(json.dumps(self._devices))
            return {"prefix": self.prefix, "devices": devices,
                    "events": list(self._events)[-50:], "version": self.version}  # fmt: skip

    def summaries(self, now: float | None = None) -> dict[str, dict[str, Any]]:
        """Per device: its standing, problems and the figures of the fleet list."""
        now = time.time() if now is None else now
        with self._lock:
            return {name: self._summary(name, d, now) for name, d in self._devices.items()}

    def _summary(self, name: str, d: dict[str, Any], now: float) -> dict[str, Any]:
        h = d["health"]
        interval = h.get("health_interval_s") or DEFAULT_INTERVAL_S
        age = now - d["seen"]
        if d["status"] == "offline":
            state = "offline"
        elif age > STALE_INTERVALS * interval:
            state = "stale"
        else:
            state = "online" if d["status"] == "online" else "unknown"
        answered = errors = 0.0
        rate = 0.0
        problems: list[dict[str, str]] = []
        models = {}
        for model, m in d["models"].items():
            history = self._history.get((name, model))
            if history is not None:
                r = history.recent_rate(now)
                rate += r or 0.0
                a, e, _ = history.fine.totals(now - 15 * 60, now)
                answered, errors = answered + a, errors + e
            dep = m.get("deployment") or {}
            drift = (m.get("drift") or {}).get("status")
            models[model] = {"version": m.get("version"), "deployment": dep.get("state"),
                             "drift": drift}  # fmt: skip
            if dep.get("state") in FAILED:
                problems.append({"kind": "failing", "text": f"{model}: {dep['state']}"})
            elif dep.get("state") in ROLLING:
                problems.append({"kind": "rolling_out", "text": f"{model}: {dep['state']}"})
            if drift in ("warn", "alarm"):
                problems.append({"kind": "drifting", "text": f"{model}: drift {drift}"})
        error_rate = errors / (answered + errors) if answered + errors > 0 else None
        if error_rate is not None and error_rate >= FAILING_ERROR_RATE:
            problems.append({"kind": "failing", "text": f"{error_rate:.1%} errors"})
        if h.get("durable") is False and h.get("outbox_error"):
            problems.append({"kind": "failing", "text": "outbox failing"})
        if state in ("offline", "stale"):
            problems.append({"kind": state, "text": state})
        problems.sort(key=lambda p: RANK[p["kind"]])
        return {
            "name": name, "state": state, "seen": d["seen"], "age_s": round(age, 1),
            "interval_s": interval, "problems": problems,
            "rank": problems[0]["kind"] if problems else "ok",
            "error_rate": error_rate, "rate": round(rate, 3),
            "groups": h.get("groups", []), "uptime_s": h.get("uptime_s"),
            "rss_bytes": h.get("rss_bytes"), "cpu_temp_c": h.get("cpu_temp_c"),
            "outbox_depth": h.get("outbox_depth"), "models": models,
        }  # fmt: skip

    def device(self, name: str, span: str, now: float | None = None) -> dict[str, Any] | None:
        """One device's page: its record, summary and every model's series over ``span``."""
        if span not in RANGES_S:
            raise ValueError(f"range: one of {', '.join(RANGES_S)}")
        now = time.time() if now is None else now
        with self._lock:
            d = self._devices.get(name)
            if d is None:
                return None
            doc: dict[str, Any] = json.loads(json.dumps(d))
            doc["summary"] = self._summary(name, d, now)
            for model, m in doc["models"].items():
                history = self._history.get((name, model))
                points = history.series(span, now) if history is not None else []
                m["series"] = [list(p) for p in points]
                m["error_rate"] = history.recent_error_rate(now) if history else None
            doc |= {"name": name, "range": [now - RANGES_S[span], now]}
            doc["events"] = [e for e in self._events if e["device"] == name][-20:]
            return doc

    def events_since(self, seq: int) -> list[dict[str, Any]]:
        with self._lock:
            return [e for e in self._events if e["seq"] > seq][-50:]

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


def _retained(entry: dict[str, Any], kind: str, doc: dict[str, Any]) -> None:
    """A model's retained info, deployment or drift document, clipped into its entry."""
    if kind == "info":
        entry["version"] = _clip(doc.get("version", "?"))
        entry["task"] = _clip(doc.get("task", "?"))
        given = _dict(doc.get("input"))
        shape = given.get("shape")
        entry["input"] = {
            "kind": _clip(given.get("kind", "tabular")),
            "shape": [s if isinstance(s, int) else None for s in shape[:4]]
            if isinstance(shape, list) else None,
        }  # fmt: skip
        features, labels = _list(doc.get("features")), _list(doc.get("labels"))
        entry["features"] = [_clip(f.get("name")) for f in features[:64] if isinstance(f, dict)]
        entry["labels"] = [_clip(x) for x in labels[:64]]
    elif kind == "deployment":
        entry["deployment"] = {
            k: _clip(doc[k]) for k in ("state", "version", "reason", "at", "refused_version")
            if doc.get(k) is not None
        }  # fmt: skip
    else:
        psi = {_clip(f): v for f, x in list(_dict(doc.get("features")).items())[:64]
               if (v := finite_number(x)) is not None}  # fmt: skip
        entry["drift"] = {
            "status": _clip(doc.get("status", "?")), "largest": _clip(doc.get("largest")),
            "psi": psi.get(str(doc.get("largest"))), "features": psi,
            "thresholds": {k: finite_number(v) for k, v in
                           list(_dict(doc.get("thresholds")).items())[:2]},
        }  # fmt: skip


def _model_entry(device: dict[str, Any], model: str) -> dict[str, Any] | None:
    """The device's entry for ``model``, created while it has fewer than MAX_MODELS."""
    models: dict[str, Any] = device["models"]
    name = _clip(model)
    if name not in models and len(models) >= MAX_MODELS:
        return None
    entry: dict[str, Any] = models.setdefault(name, {})
    return entry
