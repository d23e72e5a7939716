"""The fleet's health as Prometheus metrics: a bridge from MQTT to ``/metrics``.

It subscribes to every device's retained ``status``, ``health`` and per-model
``deployment`` topics and keeps the latest of each; a scrape turns that state into metric
families (names per Prometheus conventions: base units, ``_total`` counters). Nothing is
computed on the devices for it, and a device that stops reporting keeps its last values
with ``edgewise_up 0`` and an old ``edgewise_last_health_timestamp_seconds``.

Everything in a document comes from a client of the broker: values that are not finite
numbers are skipped, label values are cut at 200 characters, and at most ``MAX_DEVICES``
devices are tracked, so a hostile client cannot crash the exporter or grow it without end.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from edgewise.edge.link.message import Message
from edgewise.edge.remote.fleet_status import finite_number

log = logging.getLogger(__name__)
MAX_DEVICES = 10_000
MAX_MODELS = 64  # deployment documents kept per device
MAX_HEALTH_BYTES = 256 * 1024  # a health document is a few KiB; a 1 MB one is refused
MAX_LABEL = 200
# Every value of a state set gets a series (0 or 1), so `== 1` alerts and absent() work.
DEPLOY_STATES = ("pending", "downloading", "staged", "shadow", "active", "failed", "rolled_back")
DRIFT_STATES = ("collecting", "ok", "warn", "alarm")
DEVICE_COUNTERS = {  # health counter -> metric (device-level, _total added)
    "received": ("edgewise_requests_received", "Requests received"),
    "overloaded": ("edgewise_overloaded", "Requests answered overloaded"),
    "internal_errors": ("edgewise_internal_errors", "Requests answered internal (agent bugs)"),
    "dead_letters": ("edgewise_dead_letters", "Answers that could never be published"),
    "reconnects": ("edgewise_reconnects", "Broker reconnections"),
    "duplicates": ("edgewise_duplicates", "Redelivered requests skipped"),
    # Every request answered with an error, those naming a model it does not serve too.
    "errors": ("edgewise_request_errors", "Requests answered with an error (any model)"),
    "dropped": ("edgewise_outbox_dropped", "Answers dropped unsent from a full outbox"),
    "callback_errors": ("edgewise_callback_errors", "Exceptions caught in the agent's hooks"),
}
DEVICE_GAUGES = {  # health counter -> gauge
    "outbox_depth": ("edgewise_outbox_depth", "Answers waiting in the outbox"),
    "queued": ("edgewise_queued_requests", "Requests waiting for the worker"),
    "forwarding": (
        "edgewise_forwarding_requests",
        "Requests answered, waiting for the broker's PUBACKs of their answers",
    ),
}


def _label(value: Any) -> str:
    return str(value)[:MAX_LABEL]


class FleetState:
    """The latest status, health and deployment documents of every device (thread-safe)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._lock = threading.Lock()
        self._devices: set[str] = set()  # every device seen, for the MAX_DEVICES bound
        self.status: dict[str, str] = {}
        self.health: dict[str, dict[str, Any]] = {}
        self.deployments: dict[tuple[str, str], dict[str, Any]] = {}
        self._models: dict[str, int] = {}  # deployment documents kept per device

    def subscriptions(self) -> list[tuple[str, int]]:
        p = self.prefix
        return [(f"{p}/+/status", 1), (f"{p}/+/health", 1), (f"{p}/+/+/deployment", 1)]

    def on_message(self, msg: Message) -> None:
        """paho's thread: parse and store; never raises."""
        try:
            self._store(msg)
        except Exception:  # a hostile document must not stop the bridge
            log.exception("ignored a message on %s", msg.topic[:200])

    def _store(self, msg: Message) -> None:
        parts = msg.topic.split("/")
        head = self.prefix.split("/")
        if parts[: len(head)] != head:
            return
        rest = parts[len(head) :]
        with self._lock:
            if rest and rest[0] not in self._devices:
                if len(self._devices) >= MAX_DEVICES:
                    return
                self._devices.add(rest[0])
            if len(rest) == 2 and rest[1] == "status" and not msg.payload:
                self._forget(rest[0])  # `edgewise fleet forget`: its retained topics cleared
            elif len(rest) == 2 and rest[1] == "status":
                self.status[rest[0]] = msg.payload.decode("utf-8", "replace")[:20]
            elif len(rest) == 2 and rest[1] == "health" and not msg.payload:
                self.health.pop(rest[0], None)
            elif len(rest) == 2 and rest[1] == "health" and len(msg.payload) <= MAX_HEALTH_BYTES:
                doc = _json(msg.payload)
                if doc is not None:
                    self.health[rest[0]] = doc
            elif len(rest) == 3 and rest[2] == "deployment" and not msg.payload:
                if self.deployments.pop((rest[0], rest[1]), None) is not None:  # undeployed
                    self._models[rest[0]] -= 1
            elif len(rest) == 3 and rest[2] == "deployment":
                doc = _json(msg.payload)
                key = (rest[0], rest[1])
                if doc is None or (
                    key not in self.deployments and self._models.get(rest[0], 0) >= MAX_MODELS
                ):
                    return
                if key not in self.deployments:
                    self._models[rest[0]] = self._models.get(rest[0], 0) + 1
                self.deployments[key] = doc

    def _forget(self, device: str) -> None:
        self._devices.discard(device)
        self.status.pop(device, None)
        self.health.pop(device, None)
        for key in [k for k in self.deployments if k[0] == device]:
            del self.deployments[key]
        self._models.pop(device, None)

    def snapshot(
        self,
    ) -> tuple[dict[str, str], dict[str, dict[str, Any]], dict[tuple[str, str], dict[str, Any]]]:
        with self._lock:
            return dict(self.status), dict(self.health), dict(self.deployments)


def _json(payload: bytes) -> dict[str, Any] | None:
    if len(payload) > 1 << 20:
        return None
    try:
        doc = json.loads(payload)
    except (ValueError, RecursionError):
        return None
    return doc if isinstance(doc, dict) else None


class FleetCollector(Collector):
    """Builds the metric families from the fleet state at every scrape; ``broker_up`` says
    whether the exporter's own link to the broker is up."""

    def __init__(self, state: FleetState, broker_up: Callable[[], bool] = lambda: True) -> None:
        self.state = state
        self.broker_up = broker_up

    def collect(self) -> Iterator[Metric]:
        status, health, deployments = self.state.snapshot()
        yield GaugeMetricFamily(
            "edgewise_broker_up",
            "1 while the exporter is connected to the broker (0: every other value is stale)",
            value=1.0 if self.broker_up() else 0.0,
        )
        yield GaugeMetricFamily(
            "edgewise_exporter_devices", "Devices the exporter has seen", value=len(status)
        )
        up = GaugeMetricFamily(
            "edgewise_up", "1 while the device's agent is online", labels=["device"]
        )
        for device in sorted({*status, *health}):
            up.add_metric([_label(device)], 1.0 if status.get(device) == "online" else 0.0)
        yield up
        yield from _device_metrics(health)
        yield from _model_metrics(health)
        yield from _stream_metrics(health)
        state = GaugeMetricFamily(
            "edgewise_deploy_state",
            "1 for the deployment state each model is in, 0 for the others",
            labels=["device", "model", "state"],
        )
        version = GaugeMetricFamily(
            "edgewise_deployment_info",
            "The version a model's deployment is about (desired or reached)",
            labels=["device", "model", "version"],
        )
        for (device, model), doc in sorted(deployments.items()):
            now = str(doc.get("state", "unknown"))
            for s in (*DEPLOY_STATES, *(() if now in DEPLOY_STATES else (now,))):
                state.add_metric([_label(device), _label(model), _label(s)], float(s == now))
            version.add_metric([_label(device), _label(model), _label(doc.get("version", ""))], 1)
        yield state
        yield version


def _device_metrics(health: dict[str, dict[str, Any]]) -> Iterator[Metric]:
    counters = {
        key: CounterMetricFamily(name, text, labels=["device"])
        for key, (name, text) in DEVICE_COUNTERS.items()
    }
    gauges = {
        key: GaugeMetricFamily(name, text, labels=["device"])
        for key, (name, text) in DEVICE_GAUGES.items()
    }
    by_device = ["device"]
    simple = {
        "uptime_s": GaugeMetricFamily("edgewise_uptime_seconds", "Agent uptime", labels=by_device),
        "rss_bytes": GaugeMetricFamily("edgewise_rss_bytes", "Agent RSS", labels=by_device),
        "cpu_temp_c": GaugeMetricFamily(
            "edgewise_cpu_temperature_celsius", "Device CPU temperature", labels=["device"]
        ),
        "time": GaugeMetricFamily(
            "edgewise_last_health_timestamp_seconds", "When the last health report was made",
            labels=["device"],
        ),
        "worker_heartbeat_age_s": GaugeMetricFamily(
            "edgewise_worker_heartbeat_age_seconds",
            "Since the inference worker last went round its loop (grows only when stuck)",
            labels=["device"],
        ),
    }  # fmt: skip
    flags = {  # booleans of health, as 1 or 0
        "durable": GaugeMetricFamily(
            "edgewise_durable", "1 while answers are stored durably (0: the outbox fails)",
            labels=["device"],
        ),
        "connected": GaugeMetricFamily(
            "edgewise_connected", "1 when the agent's last report said it was connected",
            labels=["device"],
        ),
    }  # fmt: skip
    for device, doc in sorted(health.items()):
        label = [_label(device)]
        raw = doc.get("counters")
        device_counts: dict[str, Any] = raw if isinstance(raw, dict) else {}
        for key, family in counters.items():
            if (value := finite_number(device_counts.get(key))) is not None:
                family.add_metric(label, value)
        for key, family in gauges.items():
            if (value := finite_number(device_counts.get(key))) is not None:
                family.add_metric(label, value)
        for key, family in simple.items():
            if (value := finite_number(doc.get(key))) is not None:
                family.add_metric(label, value)
        for key, family in flags.items():
            if isinstance(doc.get(key), bool):
                family.add_metric(label, float(doc[key]))
    yield from counters.values()
    yield from gauges.values()
    yield from simple.values()
    yield from flags.values()


STREAM_COUNTERS = {
    "samples": ("edgewise_stream_samples", "Samples a sensor stream took in"),
    "predictions": ("edgewise_stream_predictions", "Predictions a sensor stream made"),
    "stale": ("edgewise_stream_stale", "Rows not predicted: a feature older than max_age"),
    "dropped": ("edgewise_stream_dropped", "Instances dropped: the stream's queue was full"),
}


def _stream_metrics(health: dict[str, dict[str, Any]]) -> Iterator[Metric]:
    """Per device and stream: the counters of ``health.streams`` (docs/streams.md)."""
    labels = ["device", "stream", "model"]
    counters = {
        k: CounterMetricFamily(n, t, labels=labels) for k, (n, t) in STREAM_COUNTERS.items()
    }
    bad = CounterMetricFamily(
        "edgewise_stream_bad_samples", "Samples a stream could not use, by reason",
        labels=[*labels, "reason"],
    )  # fmt: skip
    restarts = CounterMetricFamily(
        "edgewise_stream_source_restarts", "Times a stream's program, port or camera was "
        "started again", labels=labels,
    )  # fmt: skip
    for device, doc in sorted(health.items()):
        streams = doc.get("streams")
        for name, st in sorted(streams.items()) if isinstance(streams, dict) else []:
            if not isinstance(st, dict):
                continue
            these = [_label(device), _label(name), _label(st.get("model", ""))]
            for key, family in counters.items():
                if (value := finite_number(st.get(key))) is not None:
                    family.add_metric(these, value)
            reasons = st.get("bad")
            for reason, n in sorted(reasons.items()) if isinstance(reasons, dict) else []:
                if (value := finite_number(n)) is not None:
                    bad.add_metric([*these, _label(reason)], value)
            source = st.get("source")
            if (
                isinstance(source, dict)
                and (n := finite_number(source.get("restarts"))) is not None
            ):
                restarts.add_metric(these, n)
    yield from counters.values()
    yield bad
    yield restarts


def _model_metrics(health: dict[str, dict[str, Any]]) -> Iterator[Metric]:
    answers = CounterMetricFamily(
        "edgewise_answers", "Requests answered with a prediction", labels=["device", "model"]
    )
    errors = CounterMetricFamily(
        "edgewise_errors", "Requests answered with an error", labels=["device", "model", "code"]
    )
    latency = {
        "inference_ms": SummaryMetricFamily(
            "edgewise_inference_latency_seconds",
            "Inference latency (quantiles over the last 2,048 requests of the version serving)",
            labels=["device", "model"],
        ),
        "e2e_ms": SummaryMetricFamily(
            "edgewise_e2e_latency_seconds",
            "Receipt to answer handed on (quantiles over the last 2,048 requests)",
            labels=["device", "model"],
        ),
    }
    info = GaugeMetricFamily(
        "edgewise_model_info", "The model version each device serves",
        labels=["device", "model", "version", "backend", "sha256"],
    )  # fmt: skip
    drift_psi = GaugeMetricFamily(
        "edgewise_drift_psi", "The largest population stability index of a model's inputs",
        labels=["device", "model", "feature"],
    )  # fmt: skip
    drift_status = GaugeMetricFamily(
        "edgewise_drift_status", "1 for the model's drift status (ok, warn, alarm, collecting)",
        labels=["device", "model", "status"],
    )  # fmt: skip
    for device, doc in sorted(health.items()):
        drift = doc.get("drift")
        for model, d in sorted(drift.items()) if isinstance(drift, dict) else []:
            if not isinstance(d, dict):
                continue
            labels = [_label(device), _label(model)]
            now = str(d.get("status", ""))
            for s in (*DRIFT_STATES, *(() if now in DRIFT_STATES else (now,))):
                drift_status.add_metric([*labels, _label(s)], float(s == now))
            if (value := finite_number(d.get("psi"))) is not None:
                drift_psi.add_metric([*labels, _label(d.get("largest", ""))], value)
        models = doc.get("models")
        if not isinstance(models, dict):
            continue
        for model, m in sorted(models.items()):
            if not isinstance(m, dict):
                continue
            labels = [_label(device), _label(model)]
            if (value := finite_number(m.get("answered"))) is not None:
                answers.add_metric(labels, value)
            codes = m.get("errors")
            for code, n in sorted(codes.items()) if isinstance(codes, dict) else []:
                if (value := finite_number(n)) is not None:
                    errors.add_metric([*labels, _label(code)], value)
            for key, family in latency.items():
                summary = m.get(key)
                if isinstance(summary, dict):
                    _add_summary(family, labels, summary)
            info.add_metric(
                [*labels, *(_label(m.get(k, "")) for k in ("version", "backend", "sha256"))], 1.0
            )
    yield answers
    yield errors
    yield from latency.values()
    yield info
    yield drift_psi
    yield drift_status


def _add_summary(family: SummaryMetricFamily, labels: list[str], summary: dict[str, Any]) -> None:
    """A latency summary of health (ms) as a Prometheus summary (seconds): _count and _sum
    of every request, quantiles over the recent window. Agents from before count and sum
    were reported give quantiles only under the summary's name."""
    count, total = finite_number(summary.get("count")), finite_number(summary.get("sum_ms"))
    if count is not None and total is not None:
        family.add_metric(labels, count, total / 1000.0)
    names = dict(zip(family._labelnames, labels, strict=True))
    for quantile, field in (("0.5", "p50_ms"), ("0.99", "p99_ms")):
        if (value := finite_number(summary.get(field))) is not None:
            sample = Sample(family.name, {**names, "quantile": quantile}, value / 1000.0)
            family.samples.append(sample)
