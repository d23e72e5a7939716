"""Home Assistant MQTT discovery (opt-in: ``ha_discovery = true``, ``ha_prefix``).

One Home Assistant device per edgewise device, its entities fed by the topics the agent
publishes anyway: ``status`` (connectivity, and the availability of every entity),
``health`` (outbox depth, CPU temperature, RSS, uptime; per model: requests, errors,
p50/p99 latency), each model's ``state`` (last prediction, confidence, anomaly) and
``info`` (version). Configs are retained on
``{ha_prefix}/{component}/edgewise_{device}/{object}/config``; unique ids are built from
the device id and model name only, so they are stable across restarts. The agent
publishes them again when Home Assistant announces itself on ``{ha_prefix}/status``, and
clears a model's configs when the model is removed.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from edgewise.edge.core.feature import Feature, Route

if TYPE_CHECKING:
    from edgewise.edge.core.feature import Host
    from edgewise.edge.core.stream_settings import StreamSettings
    from edgewise.edge.link.message import Message
    from edgewise.edge.link.topics import Topics
    from edgewise.edge.runtime.model import ServedModel

_UNSAFE = re.compile(r"[^a-zA-Z0-9_-]")


def object_id(*parts: str) -> str:
    """An id Home Assistant accepts in topics and entity ids (``[a-zA-Z0-9_-]``)."""
    return "_".join(_UNSAFE.sub("_", p) for p in parts)


def _device(topics: Topics, sw_version: str) -> dict[str, Any]:
    return {
        "identifiers": [object_id("edgewise", topics.device)],
        "name": f"edgewise {topics.device}",
        "manufacturer": "edgewise",
        "model": "edge agent",
        "sw_version": sw_version,
    }


def _health(expr: str) -> str:
    # None (no measurement yet) renders as "None", which Home Assistant shows as unknown.
    return "{{ value_json." + expr + " }}"


def device_configs(topics: Topics, sw_version: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(component, object id, config) for the device's own entities."""
    dev = object_id("edgewise", topics.device)
    base = {"device": _device(topics, sw_version)}
    avail = {"availability_topic": topics.status, "payload_available": "online",
             "payload_not_available": "offline"}  # fmt: skip
    configs: list[tuple[str, str, dict[str, Any]]] = [
        ("binary_sensor", "connectivity", base | {
            "name": "Connectivity", "unique_id": f"{dev}_connectivity",
            "state_topic": topics.status, "payload_on": "online", "payload_off": "offline",
            "device_class": "connectivity", "entity_category": "diagnostic"}),
    ]  # fmt: skip
    sensors = [
        ("outbox", "Outbox depth", "counters.outbox_depth", {"state_class": "measurement"}),
        ("cpu_temperature", "CPU temperature", "cpu_temp_c",
         {"device_class": "temperature", "unit_of_measurement": "°C",
          "state_class": "measurement"}),
        ("rss", "Memory (RSS)", "rss_bytes",
         {"device_class": "data_size", "unit_of_measurement": "B", "state_class": "measurement",
          "entity_category": "diagnostic"}),
        ("uptime", "Uptime", "uptime_s",
         {"device_class": "duration", "unit_of_measurement": "s", "state_class": "measurement",
          "entity_category": "diagnostic"}),
    ]  # fmt: skip
    for key, name, expr, extra in sensors:
        configs.append(("sensor", key, base | avail | extra | {
            "name": name, "unique_id": f"{dev}_{key}", "state_topic": topics.health,
            "value_template": _health(expr)}))  # fmt: skip
    return configs


def model_configs(
    topics: Topics, model: ServedModel, sw_version: str
) -> list[tuple[str, str, dict[str, Any]]]:
    """(component, object id, config) for one model's entities."""
    name, task = model.name, model.bundle.task
    dev = object_id("edgewise", topics.device)
    obj = object_id(name)
    base = {"device": _device(topics, sw_version), "availability_topic": topics.status,
            "payload_available": "online", "payload_not_available": "offline"}  # fmt: skip
    state = topics.model(name, "state")
    key = json.dumps(name)  # a JSON string is a Jinja string literal: any model name is safe
    per_model = f"models[{key}]"
    shown = {"classification": "label", "regression": "value", "anomaly": "score",
             "clustering": "cluster"}[task]  # fmt: skip
    configs: list[tuple[str, str, dict[str, Any]]] = [
        ("sensor", f"{obj}_prediction", base | {
            "name": f"{name} prediction", "unique_id": f"{dev}_{obj}_prediction",
            "state_topic": state, "value_template": "{{ value_json." + shown + " }}",
            "json_attributes_topic": state,
            "json_attributes_template": "{{ {'id': value_json.id, 'version': value_json.version,"
            " 'probabilities': value_json.probabilities | default(none)} | tojson }}"}),
        ("sensor", f"{obj}_requests", base | {
            "name": f"{name} requests", "unique_id": f"{dev}_{obj}_requests",
            "state_topic": topics.health, "state_class": "total_increasing",
            "value_template": _health(f"{per_model}.answered")}),
        ("sensor", f"{obj}_errors", base | {
            "name": f"{name} errors", "unique_id": f"{dev}_{obj}_errors",
            "state_topic": topics.health, "state_class": "total_increasing",
            "value_template": "{{ value_json." + per_model + ".errors.values() | sum }}"}),
        ("sensor", f"{obj}_version", base | {
            "name": f"{name} version", "unique_id": f"{dev}_{obj}_version",
            "state_topic": topics.model(name, "info"), "entity_category": "diagnostic",
            "value_template": "{{ value_json.version }}"}),
    ]  # fmt: skip
    for pct in ("p50", "p99"):
        configs.append(("sensor", f"{obj}_{pct}", base | {
            "name": f"{name} {pct} latency", "unique_id": f"{dev}_{obj}_{pct}",
            "state_topic": topics.health, "unit_of_measurement": "ms",
            "device_class": "duration", "state_class": "measurement",
            "value_template": _health(f"{per_model}.inference_ms.{pct}_ms")}))  # fmt: skip
    if task == "classification" and model.head.probabilities_output:  # type: ignore[union-attr]
        configs.append(("sensor", f"{obj}_confidence", base | {
            "name": f"{name} confidence", "unique_id": f"{dev}_{obj}_confidence",
            "state_topic": state, "state_class": "measurement",
            "value_template": "{{ value_json.confidence }}"}))  # fmt: skip
    if model.bundle.manifest.reference is not None:  # drift (docs/drift.md)
        drift = topics.model(name, "drift")
        configs.append(("sensor", f"{obj}_drift", base | {
            "name": f"{name} drift", "unique_id": f"{dev}_{obj}_drift",
            "state_topic": drift, "icon": "mdi:chart-bell-curve",
            "value_template": "{{ value_json.status }}", "json_attributes_topic": drift,
            "json_attributes_template": "{{ {'largest': value_json.largest, 'features': "
            "value_json.features, 'predictions': value_json.predictions, 'window': "
            "value_json.window} | tojson }}"}))  # fmt: skip
    if task == "anomaly":
        configs.append(("binary_sensor", f"{obj}_anomaly", base | {
            "name": f"{name} anomaly", "unique_id": f"{dev}_{obj}_anomaly",
            "state_topic": state, "device_class": "problem", "payload_on": "ON",
            "payload_off": "OFF",
            "value_template": "{{ 'ON' if value_json.is_anomaly else 'OFF' }}"}))  # fmt: skip
    return configs


def stream_configs(
    topics: Topics, stream: StreamSettings, model: ServedModel, sw_version: str
) -> list[tuple[str, str, dict[str, Any]]]:
    """(component, object id, config) for one stream's entities (docs/streams.md): its
    latest prediction and confidence (the retained state), an anomaly binary sensor fed
    from every prediction (the events topic, never a once-a-second sample), and counts."""
    name, task = stream.name, model.bundle.task
    dev = object_id("edgewise", topics.device)
    obj = object_id("stream", name)
    base = {"device": _device(topics, sw_version), "availability_topic": topics.status,
            "payload_available": "online", "payload_not_available": "offline"}  # fmt: skip
    state, events = topics.stream(name, "state"), topics.stream(name, "events")
    shown = {"classification": "label", "regression": "value", "anomaly": "score",
             "clustering": "cluster"}[task]  # fmt: skip
    per_stream = f"streams[{json.dumps(name)}]"
    configs: list[tuple[str, str, dict[str, Any]]] = [
        ("sensor", f"{obj}_prediction", base | {
            "name": f"{name} prediction", "unique_id": f"{dev}_{obj}_prediction",
            "state_topic": state, "value_template": "{{ value_json." + shown + " }}",
            "json_attributes_topic": state,
            "json_attributes_template": "{{ {'model': value_json.model, 'version': "
            "value_json.version, 'seq': value_json.seq} | tojson }}"}),
        ("sensor", f"{obj}_predictions", base | {
            "name": f"{name} predictions", "unique_id": f"{dev}_{obj}_predictions",
            "state_topic": topics.health, "state_class": "total_increasing",
            "entity_category": "diagnostic",
            "value_template": _health(f"{per_stream}.predictions")}),
        ("sensor", f"{obj}_bad_samples", base | {
            "name": f"{name} bad samples", "unique_id": f"{dev}_{obj}_bad_samples",
            "state_topic": topics.health, "state_class": "total_increasing",
            "entity_category": "diagnostic",
            "value_template": "{{ value_json." + per_stream + ".bad.values() | sum }}"}),
    ]  # fmt: skip
    if task == "classification" and model.head.probabilities_output:  # type: ignore[union-attr]
        configs.append(("sensor", f"{obj}_confidence", base | {
            "name": f"{name} confidence", "unique_id": f"{dev}_{obj}_confidence",
            "state_topic": state, "state_class": "measurement",
            "value_template": "{{ value_json.confidence }}"}))  # fmt: skip
    if task == "anomaly" or (task == "classification" and stream.normal):
        configs.append(("binary_sensor", f"{obj}_anomaly", base | {
            "name": f"{name} anomaly", "unique_id": f"{dev}_{obj}_anomaly",
            "state_topic": events, "device_class": "problem", "payload_on": "ON",
            "payload_off": "OFF",
            "value_template": "{{ 'ON' if value_json.anomaly else 'OFF' }}"}))  # fmt: skip
    return configs


def config_topic(ha_prefix: str, topics: Topics, component: str, obj: str) -> str:
    return f"{ha_prefix}/{component}/{object_id('edgewise', topics.device)}/{obj}/config"


def messages(
    ha_prefix: str,
    topics: Topics,
    models: dict[str, ServedModel],
    sw_version: str,
    streams: tuple[StreamSettings, ...] = (),
) -> list[tuple[str, bytes]]:
    """Every discovery config of the device, its models and streams, as (topic, payload)."""
    out = []
    configs = device_configs(topics, sw_version)
    for model in models.values():
        configs += model_configs(topics, model, sw_version)
    for stream in streams:
        if stream.model in models:
            configs += stream_configs(topics, stream, models[stream.model], sw_version)
    for component, obj, config in configs:
        out.append((config_topic(ha_prefix, topics, component, obj), json.dumps(config).encode()))
    return out


def model_topics(ha_prefix: str, topics: Topics, model: ServedModel) -> list[str]:
    """The config topics of one model (cleared when it is removed)."""
    return [
        config_topic(ha_prefix, topics, component, obj)
        for component, obj, _ in model_configs(topics, model, "")
    ]


def agent_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("edgewise")
    except PackageNotFoundError:
        return "unknown"


class Discovery(Feature):
    """The agent's discovery publisher: nothing at all unless ``ha_discovery`` is on."""

    def __init__(self, host: Host) -> None:
        self._host = host
        self.topics = host.topics
        self.prefix = host.config.ha_prefix
        self.enabled = host.config.ha_discovery
        self.status_topic = f"{self.prefix}/status"
        self.version = agent_version()
        self.announced = threading.Event()  # Home Assistant (re)started: publish again

    def routes(self) -> Sequence[Route]:
        return [Route(self.status_topic, 1, "inline")] if self.enabled else []

    def accept(self, msg: Message) -> None:
        """paho thread: only note it; the worker publishes."""
        if msg.payload == b"online":
            self.announced.set()

    def started(self) -> None:
        self.publish_all()

    def tick(self) -> None:
        if self.announced.is_set():
            self.announced.clear()
            self.publish_all()

    def swapped(self, old: ServedModel | None, new: ServedModel | None) -> None:
        if old is None and new is not None:
            self.added(new)
        elif old is not None and new is None:
            self.removed(old)

    def publish_all(self) -> None:
        if self.enabled:
            models = dict(self._host.models)
            streams = self._host.config.streams
            for topic, body in messages(self.prefix, self.topics, models, self.version, streams):
                self._host.link.publish(topic, body, qos=1, retain=True)

    def added(self, model: ServedModel) -> None:
        """A model new to the device: its configs (the device's are out already)."""
        if self.enabled:
            configs = model_configs(self.topics, model, self.version)
            for stream in self._host.config.streams:  # streams waiting for this model
                if stream.model == model.name:
                    configs += stream_configs(self.topics, stream, model, self.version)
            for component, obj, config in configs:
                topic = config_topic(self.prefix, self.topics, component, obj)
                self._host.link.publish(topic, json.dumps(config).encode(), qos=1, retain=True)

    def removed(self, model: ServedModel) -> None:
        if self.enabled:
            for topic in model_topics(self.prefix, self.topics, model):
                self._host.link.publish(topic, b"", qos=1, retain=True)
