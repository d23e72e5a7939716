"""Home Assistant MQTT discovery (opt-in: ``ha_discovery = true``, ``ha_prefix``).

Device-based discovery: one retained config per edgewise device on
``{ha_prefix}/device/edgewise_{device}/config`` holds the device, the origin (edgewise and
its version) and every entity (``cmps``), fed by the topics the agent publishes anyway:
``status`` (connectivity, and the availability of every other entity), ``health`` (outbox,
CPU temperature, memory, last boot; per model: requests, errors, p50/p99 latency; these
expire after ``EXPIRE_INTERVALS`` health intervals without a report), each model's
``state`` (last prediction and confidence), ``events`` (anomaly models: every answer, so
the binary sensor sees every anomaly, never a sample), ``info`` and ``deployment`` (an
``update`` entity: the installed and the desired version), and ``drift``.

Unique ids are built from the device id and model name only, so they are stable across
restarts. The agent publishes the config again when Home Assistant announces itself on
``{ha_prefix}/status``; a model removed is announced by its components reduced to their
platform (``{"p": "sensor"}``), which is how Home Assistant removes them. At its start the
agent clears the per-entity config topics that agents before device discovery left.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from edgewise.edge.core.feature import Answered, Feature, Route
from edgewise.edge.link.topics import Topics

if TYPE_CHECKING:
    from edgewise.edge.core.config import AgentConfig
    from edgewise.edge.core.feature import Host
    from edgewise.edge.core.stream_settings import StreamSettings
    from edgewise.edge.link.message import Message
    from edgewise.edge.runtime.model import ServedModel

_UNSAFE = re.compile(r"[^a-zA-Z0-9_-]")
EXPIRE_INTERVALS = 3
DRIFT_STATES = ["collecting", "ok", "warn", "alarm"]
Components = dict[str, dict[str, Any]]


def object_id(*parts: str) -> str:
    """An id Home Assistant accepts in topics and entity ids (``[a-zA-Z0-9_-]``)."""
    return "_".join(_UNSAFE.sub("_", p) for p in parts)


def _health(expr: str) -> str:
    # None (no measurement yet) renders as "None", which Home Assistant shows as unknown.
    return "{{ value_json." + expr + " }}"


def _avail(topics: Topics) -> dict[str, Any]:
    return {"availability_topic": topics.status, "payload_available": "online",
            "payload_not_available": "offline"}  # fmt: skip


def _expire(config: AgentConfig) -> int:
    return max(1, round(EXPIRE_INTERVALS * config.health_interval))


def _confidence(name: str, uid: str, state: str) -> dict[str, Any]:
    """A classifier's confidence in %, from a state topic's ``confidence`` (0..1)."""
    return {
        "p": "sensor", "name": f"{name} confidence", "unique_id": f"{uid}_confidence",
        "state_topic": state, "state_class": "measurement", "unit_of_measurement": "%",
        "suggested_display_precision": 1,
        "value_template": "{{ (value_json.confidence * 100) | round(2) "
        "if value_json.confidence is number else none }}",
    }  # fmt: skip


def device_components(topics: Topics, config: AgentConfig) -> Components:
    """The device's own entities, by object id."""
    dev = object_id("edgewise", topics.device)
    health = _avail(topics) | {"state_topic": topics.health, "expire_after": _expire(config)}
    cmps: Components = {
        "connectivity": {
            "p": "binary_sensor", "name": "Connectivity", "unique_id": f"{dev}_connectivity",
            "state_topic": topics.status, "payload_on": "online", "payload_off": "offline",
            "device_class": "connectivity", "entity_category": "diagnostic"},
        "outbox": health | {
            "p": "sensor", "name": "Outbox depth", "unique_id": f"{dev}_outbox",
            "state_class": "measurement", "entity_category": "diagnostic",
            "value_template": _health("counters.outbox_depth")},
        "cpu_temperature": health | {
            "p": "sensor", "name": "CPU temperature", "unique_id": f"{dev}_cpu_temperature",
            "device_class": "temperature", "unit_of_measurement": "°C",
            "state_class": "measurement", "suggested_display_precision": 1,
            "value_template": _health("cpu_temp_c")},
        "rss": health | {
            "p": "sensor", "name": "Memory (RSS)", "unique_id": f"{dev}_rss",
            "device_class": "data_size", "unit_of_measurement": "MiB",
            "suggested_display_precision": 1, "state_class": "measurement",
            "entity_category": "diagnostic",
            "value_template": "{{ (value_json.rss_bytes / 1048576) | round(2) "
            "if value_json.rss_bytes is number else none }}"},
        # A timestamp, not a growing duration: one state per start, not one per report.
        "last_boot": _avail(topics) | {
            "p": "sensor", "name": "Last boot", "unique_id": f"{dev}_last_boot",
            "state_topic": topics.health, "device_class": "timestamp",
            "entity_category": "diagnostic",
            "value_template": "{{ value_json.started | timestamp_custom("
            "'%Y-%m-%dT%H:%M:%S+00:00', false) if value_json.started is number else none }}"},
    }  # fmt: skip
    return cmps


def model_components(topics: Topics, model: ServedModel, config: AgentConfig) -> Components:
    """One model's entities, by object id."""
    name, task = model.name, model.bundle.task
    dev, obj = object_id("edgewise", topics.device), object_id(name)
    avail = _avail(topics)
    health = avail | {"state_topic": topics.health, "expire_after": _expire(config)}
    state = topics.model(name, "state")
    per_model = f"models[{json.dumps(name)}]"  # a JSON string is a safe Jinja literal
    shown = {"classification": "label", "regression": "value", "anomaly": "score",
             "clustering": "cluster"}[task]  # fmt: skip
    prediction: dict[str, Any] = avail | {
        "p": "sensor", "name": f"{name} prediction", "unique_id": f"{dev}_{obj}_prediction",
        "state_topic": state, "value_template": "{{ value_json." + shown + " }}",
        # The version only: an attribute that changes with every answer (its id) would
        # be a new recorder row per answer.
        "json_attributes_topic": state,
        "json_attributes_template": "{{ {'version': value_json.version} | tojson }}"}  # fmt: skip
    if task == "classification" and model.bundle.labels:
        prediction |= {"device_class": "enum", "options": [str(x) for x in model.bundle.labels]}
    elif task in ("regression", "anomaly"):
        prediction |= {"state_class": "measurement", "suggested_display_precision": 3}
    cmps: Components = {
        f"{obj}_prediction": prediction,
        f"{obj}_requests": health | {
            "p": "sensor", "name": f"{name} requests", "unique_id": f"{dev}_{obj}_requests",
            "state_class": "total_increasing",
            "value_template": _health(f"{per_model}.answered")},
        f"{obj}_errors": health | {
            "p": "sensor", "name": f"{name} errors", "unique_id": f"{dev}_{obj}_errors",
            "state_class": "total_increasing",
            "value_template": "{{ value_json." + per_model + ".errors.values() | sum }}"},
        # Roll-outs in Home Assistant: installed (info) and desired (deployment) versions.
        f"{obj}_update": avail | {
            "p": "update", "name": f"{name} model", "unique_id": f"{dev}_{obj}_update",
            "entity_category": "diagnostic", "title": f"{name} ({task})",
            "state_topic": topics.model(name, "info"),
            "value_template": "{{ value_json.version }}",
            "latest_version_topic": topics.model(name, "deployment"),
            "latest_version_template": "{{ value_json.target_version | "
            "default(value_json.version) }}"},
    }  # fmt: skip
    for pct in ("p50", "p99"):
        cmps[f"{obj}_{pct}"] = health | {
            "p": "sensor", "name": f"{name} {pct} latency", "unique_id": f"{dev}_{obj}_{pct}",
            "unit_of_measurement": "ms", "device_class": "duration",
            "state_class": "measurement", "suggested_display_precision": 2,
            "value_template": _health(f"{per_model}.inference_ms.{pct}_ms")}  # fmt: skip
    if task == "classification" and model.head.probabilities_output:  # type: ignore[union-attr]
        cmps[f"{obj}_confidence"] = avail | _confidence(name, f"{dev}_{obj}", state)
    if model.bundle.manifest.reference is not None:  # drift (docs/drift.md)
        drift = topics.model(name, "drift")
        cmps[f"{obj}_drift"] = avail | {
            "p": "sensor", "name": f"{name} drift", "unique_id": f"{dev}_{obj}_drift",
            "state_topic": drift, "icon": "mdi:chart-bell-curve", "device_class": "enum",
            "options": DRIFT_STATES, "value_template": "{{ value_json.status }}",
            "json_attributes_topic": drift,
            "json_attributes_template": "{{ {'largest': value_json.largest, 'features': "
            "value_json.features} | tojson }}"}  # fmt: skip
    if task == "anomaly":
        cmps[f"{obj}_anomaly"] = avail | {
            "p": "binary_sensor", "name": f"{name} anomaly", "unique_id": f"{dev}_{obj}_anomaly",
            "state_topic": topics.model(name, "events"), "device_class": "problem",
            "payload_on": "ON", "payload_off": "OFF",
            "value_template": "{{ 'ON' if value_json.anomaly else 'OFF' }}"}  # fmt: skip
    return cmps


def stream_components(topics: Topics, stream: StreamSettings, model: ServedModel) -> Components:
    """One stream's entities (docs/streams.md): its latest prediction and confidence (the
    retained state), an anomaly binary sensor fed from every prediction (the events
    topic, never a once-a-second sample), and counts."""
    name, task = stream.name, model.bundle.task
    dev, obj = object_id("edgewise", topics.device), object_id("stream", name)
    avail = _avail(topics)
    state, events = topics.stream(name, "state"), topics.stream(name, "events")
    shown = {"classification": "label", "regression": "value", "anomaly": "score",
             "clustering": "cluster"}[task]  # fmt: skip
    per_stream = f"streams[{json.dumps(name)}]"
    cmps: Components = {
        f"{obj}_prediction": avail | {
            "p": "sensor", "name": f"{name} prediction", "unique_id": f"{dev}_{obj}_prediction",
            "state_topic": state, "value_template": "{{ value_json." + shown + " }}",
            "json_attributes_topic": state,
            "json_attributes_template": "{{ {'model': value_json.model, 'version': "
            "value_json.version} | tojson }}"},
        f"{obj}_predictions": avail | {
            "p": "sensor", "name": f"{name} predictions",
            "unique_id": f"{dev}_{obj}_predictions", "state_topic": topics.health,
            "state_class": "total_increasing", "entity_category": "diagnostic",
            "value_template": _health(f"{per_stream}.predictions")},
        f"{obj}_bad_samples": avail | {
            "p": "sensor", "name": f"{name} bad samples",
            "unique_id": f"{dev}_{obj}_bad_samples", "state_topic": topics.health,
            "state_class": "total_increasing", "entity_category": "diagnostic",
            "value_template": "{{ value_json." + per_stream + ".bad.values() | sum }}"},
    }  # fmt: skip
    if task == "classification" and model.head.probabilities_output:  # type: ignore[union-attr]
        cmps[f"{obj}_confidence"] = avail | _confidence(name, f"{dev}_{obj}", state)
    if task == "anomaly" or (task == "classification" and stream.normal):
        cmps[f"{obj}_anomaly"] = avail | {
            "p": "binary_sensor", "name": f"{name} anomaly", "unique_id": f"{dev}_{obj}_anomaly",
            "state_topic": events, "device_class": "problem", "payload_on": "ON",
            "payload_off": "OFF",
            "value_template": "{{ 'ON' if value_json.anomaly else 'OFF' }}"}  # fmt: skip
    return cmps


def device_config(
    topics: Topics,
    config: AgentConfig,
    models: dict[str, ServedModel],
    sw_version: str,
    removed: Sequence[ServedModel] = (),
) -> dict[str, Any]:
    """The device discovery document: device, origin and every component; ``removed``
    models' components reduced to their platform (Home Assistant removes those)."""
    dev = object_id("edgewise", topics.device)
    device: dict[str, Any] = {"identifiers": [dev], "name": f"edgewise {topics.device}",
                              "manufacturer": "edgewise", "model": "edge agent",
                              "sw_version": sw_version}  # fmt: skip
    if config.console_url:
        device["configuration_url"] = (
            f"{config.console_url.rstrip('/')}/#device={quote(topics.device, safe='')}"
        )
    cmps = device_components(topics, config)
    for model in removed:
        cmps |= {k: {"p": c["p"]} for k, c in model_components(topics, model, config).items()}
    for model in models.values():
        cmps |= model_components(topics, model, config)
    for stream in config.streams:
        if stream.model in models:
            cmps |= stream_components(topics, stream, models[stream.model])
    return {"device": device, "origin": {"name": "edgewise", "sw_version": sw_version},
            "components": cmps, "qos": 1}  # fmt: skip


def config_topic(ha_prefix: str, topics: Topics) -> str:
    return f"{ha_prefix}/device/{object_id('edgewise', topics.device)}/config"


def legacy_topics(ha_prefix: str, topics: Topics, cmps: Components) -> list[str]:
    """The per-entity config topics agents before device discovery used for these (their
    uptime sensor is the last boot now, their version sensor the update entity)."""
    dev = object_id("edgewise", topics.device)
    renamed = {"last_boot": ("sensor", "uptime")}
    renamed |= {
        k: ("sensor", k[: -len("_update")] + "_version") for k in cmps if k.endswith("_update")
    }
    pairs = [renamed.get(obj, (c["p"], obj)) for obj, c in cmps.items()]
    return [f"{ha_prefix}/{component}/{dev}/{obj}/config" for component, obj in pairs]


def agent_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("edgewise")
    except PackageNotFoundError:
        return "unknown"


class Discovery(Feature):
    """The agent's discovery publisher (attached only with ``ha_discovery`` on)."""

    def __init__(self, host: Host) -> None:
        self._host = host
        self.topics = host.topics
        self.prefix = host.config.ha_prefix
        self.status_topic = f"{self.prefix}/status"
        self.version = agent_version()
        self.announced = threading.Event()  # Home Assistant (re)started: publish again

    def routes(self) -> Sequence[Route]:
        return [Route(self.status_topic, 1, "inline")]

    def accept(self, msg: Message) -> None:
        """paho thread: only note it; the worker publishes."""
        if msg.payload == b"online":
            self.announced.set()

    def started(self) -> None:
        doc = self._document()
        for topic in legacy_topics(self.prefix, self.topics, doc["components"]):
            self._host.link.publish(topic, b"", qos=1, retain=True)
        self._publish(doc)

    def tick(self) -> None:
        if self.announced.is_set():
            self.announced.clear()
            self.publish_all()

    def swapped(self, old: ServedModel | None, new: ServedModel | None) -> None:
        if old is None and new is not None:
            self.publish_all()
        elif old is not None and new is None:
            self._publish(self._document(removed=(old,)))

    def answered(self, answer: Answered) -> None:
        """Anomaly models: every answer on ``events``, for the binary sensor."""
        if answer.model.bundle.task == "anomaly" and answer.predictions:
            flags = [bool(p.get("is_anomaly")) for p in answer.predictions]
            doc = {"anomaly": any(flags), "anomalies": sum(flags), "instances": len(flags),
                   "version": answer.model.version}  # fmt: skip
            body = json.dumps(doc)
            topic = self.topics.model(answer.model.name, "events")
            self._host.link.publish(topic, body.encode(), qos=1, retain=False)

    def publish_all(self) -> None:
        self._publish(self._document())

    def _document(self, removed: Sequence[ServedModel] = ()) -> dict[str, Any]:
        models = dict(self._host.models)
        return device_config(self.topics, self._host.config, models, self.version, removed)

    def _publish(self, doc: dict[str, Any]) -> None:
        topic = config_topic(self.prefix, self.topics)
        self._host.link.publish(topic, json.dumps(doc).encode(), qos=1, retain=True)
