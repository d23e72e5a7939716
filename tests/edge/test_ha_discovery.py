"""Home Assistant discovery and the state topic, against a running agent on a real broker:
every config has what its component needs, names only topics the agent publishes, and
every template renders (jinja2) against the payloads the agent really sent."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import math
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jinja2
import pytest

from edgewise.deploy.broker import LocalBroker
from tests.agents import serving
from tests.edge.test_fleet import Watcher

ROW = [5.1, 3.5, 1.4, 0.2]
REQUIRED = {
    "sensor": {"state_topic"},
    "binary_sensor": {"state_topic"},
    "update": {"state_topic", "latest_version_topic"},
}
TOPIC_KEYS = ("state_topic", "availability_topic", "json_attributes_topic",
              "latest_version_topic")  # fmt: skip
FAULT = [7.9, 2.2, 1.0, 2.5]  # far from every iris flower: the isolation forest flags it


@pytest.fixture(scope="module")
def anomaly_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from edgewise.converters.sklearn_onnx import export_sklearn
    from edgewise.trainer.datasets import load_builtin
    from edgewise.trainer.train import train

    out = tmp_path_factory.mktemp("anomaly") / "iris-odd"
    export_sklearn(train(load_builtin("iris"), "isolation-forest", "iris-odd"), out)
    return out


@pytest.fixture
def names() -> dict[str, str]:
    tag = uuid.uuid4().hex[:6]
    return {"prefix": f"t{tag}", "ha_prefix": f"ha{tag}", "device": "kitchen pi"}


@pytest.fixture
def watcher(broker: LocalBroker, names: dict[str, str]) -> Iterator[Watcher]:
    w = Watcher(broker, names["prefix"])
    w.subscribe(f"{names['ha_prefix']}/#")
    yield w
    w.close()


def _timestamp_custom(value: float, fmt: str, local: bool = True) -> str:
    """Home Assistant's ``timestamp_custom`` filter, for rendering outside it."""
    import datetime as dt

    zone = None if local else dt.timezone.utc
    return dt.datetime.fromtimestamp(value, zone).strftime(fmt)


def render(template: str, payload: Any) -> str:
    env = jinja2.Environment(undefined=jinja2.Undefined)
    env.filters["timestamp_custom"] = _timestamp_custom
    body = payload if isinstance(payload, (bytes, str)) else json.dumps(payload)
    value = body.decode() if isinstance(body, bytes) else body
    try:
        value_json = json.loads(value)
    except ValueError:
        value_json = None
    return env.from_string(template).render(value=value, value_json=value_json)


def test_device_discovery_matches_what_the_agent_publishes(
    broker: LocalBroker,
    names: dict[str, str],
    watcher: Watcher,
    iris_bundle: Path,
    anomaly_bundle: Path,
) -> None:
    prefix, ha, device = names["prefix"], names["ha_prefix"], names["device"]
    settings = {"prefix": prefix, "ha_discovery": True, "ha_prefix": ha, "health_interval": 1.0,
                "console_url": "https://console.example:8080"}  # fmt: skip
    topic = f"{ha}/device/edgewise_kitchen_pi/config"
    with serving(broker, [iris_bundle, anomaly_bundle], device, **settings) as agent:
        watcher.until(f"{prefix}/{device}/status", lambda s: s == b"online")
        for model in ("iris-rf", "iris-odd"):
            watcher.request(f"{prefix}/{device}/{model}/in", {"id": f"{model}-1",
                                                              "instances": [ROW]})  # fmt: skip
            watcher.until(f"{prefix}/{device}/{model}/state", lambda d: isinstance(d, dict))
        watcher.until(f"{prefix}/{device}/health", lambda d: d["models"]["iris-rf"]["answered"])
        doc = watcher.until(topic, lambda d: isinstance(d, dict))
        assert doc["origin"]["name"] == "edgewise" and doc["qos"] == 1
        assert doc["device"]["identifiers"] == ["edgewise_kitchen_pi"]
        assert doc["device"]["configuration_url"] == (
            "https://console.example:8080/#device=kitchen%20pi"
        )
        cmps = doc["components"]
        # device 5; iris-rf and iris-odd 8 each (+confidence / +anomaly, and drift)
        assert len(cmps) == 5 + 8 + 8, sorted(cmps)
        ids = [c["unique_id"] for c in cmps.values()]
        assert len(set(ids)) == len(ids)
        for obj, config in cmps.items():
            component = config["p"]
            assert REQUIRED[component] <= set(config), obj
            for key in TOPIC_KEYS:
                if key in config:  # every topic named is one the agent publishes
                    assert watcher.latest.get(config[key]), (obj, key, config[key])
            payload = watcher.latest[config["state_topic"]]
            out = render(config.get("value_template", "{{ value }}"), payload).strip()
            if component == "binary_sensor":
                assert out in (config["payload_on"], config["payload_off"]), (obj, out)
            elif config.get("device_class") == "enum":
                assert out in config["options"], (obj, out, config["options"])
            elif config.get("device_class") == "timestamp":
                assert abs(dt.datetime.fromisoformat(out).timestamp() - time.time()) < 120
            elif config.get("state_class") == "total_increasing":
                assert float(out) >= 0, (obj, out)
            elif "unit_of_measurement" in config or "state_class" in config:
                assert out == "None" or math.isfinite(float(out)), (obj, out)
            else:
                assert out and out != "None", (obj, out)
            if component == "update":
                latest = watcher.latest[config["latest_version_topic"]]
                assert render(config["latest_version_template"], latest) == out == "1"
            if "json_attributes_template" in config:
                attrs = json.loads(render(config["json_attributes_template"], payload))
                assert "id" not in attrs, obj  # no recorder row per answer
            if config["state_topic"].endswith("/health") and "last_boot" not in obj:
                assert config["expire_after"] == 3, obj  # 3 health intervals
        confidence = cmps["iris-rf_confidence"]
        state = watcher.latest[confidence["state_topic"]]
        shown = float(render(confidence["value_template"], state))
        assert confidence["unit_of_measurement"] == "%" and shown == round(
            state["confidence"] * 100, 2
        )

        # Every answer of the anomaly model reaches its binary sensor's topic.
        anomaly = cmps["iris-odd_anomaly"]
        mark = len(watcher.heard)
        for i, rows in enumerate(([ROW], [ROW, FAULT], [ROW])):
            watcher.request(f"{prefix}/{device}/iris-odd/in", {"id": i, "instances": rows})

        def events() -> int:
            return sum(t == anomaly["state_topic"] for _, t in list(watcher.heard)[mark:])

        assert watcher.wait(lambda: events() == 3, 10, "three events")
        time.sleep(0.3)
        assert events() == 3

        # Home Assistant restarts: the config comes again.
        mark_t = time.monotonic()
        watcher.publish(f"{ha}/status", "online")
        time.sleep(1.5)
        assert topic in [t for at, t in list(watcher.heard) if at > mark_t]

        # A removed model: its components reduced to their platform; the device's stay.
        agent.remove("iris-odd")
        gone = watcher.until(topic, lambda d: d["components"]["iris-odd_prediction"] == {
            "p": "sensor"}, 10)  # fmt: skip
        assert gone["components"]["connectivity"] == cmps["connectivity"]
    with serving(broker, [iris_bundle], device, **settings):  # stable ids over a restart
        watcher.until(f"{prefix}/{device}/status", lambda s: s == b"online")
        again = watcher.until(topic, lambda d: "iris-odd_prediction" not in d["components"], 10)
        assert {c["unique_id"] for c in again["components"].values()} == {
            i for i in ids if "iris-odd" not in i
        }


def test_state_topic_is_at_most_once_a_second_and_ends_on_the_last_answer(
    broker: LocalBroker, names: dict[str, str], watcher: Watcher, iris_bundle: Path
) -> None:
    prefix, device = names["prefix"], "statey"
    topic = f"{prefix}/{device}/iris-rf/state"
    with serving(broker, [iris_bundle], device, prefix=prefix):
        watcher.until(f"{prefix}/{device}/status", lambda s: s == b"online")
        started = time.monotonic()
        for i in range(200):
            watcher.request(f"{prefix}/{device}/iris-rf/in", {"id": i, "instances": [ROW]})
            time.sleep(0.01)
        watcher.until(topic, lambda d: isinstance(d, dict) and d["id"] == 199, 5)
        elapsed = time.monotonic() - started
    times = [at for at, t in list(watcher.heard) if t == topic]
    assert 2 <= len(times) <= elapsed + 1.5, (len(times), elapsed)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= 0.9
