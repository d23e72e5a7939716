"""Home Assistant discovery and the state topic, against a running agent on a real broker:
every config has what its component needs, names only topics the agent publishes, and
every template renders (jinja2) against the payloads the agent really sent."""

from __future__ import annotations

import itertools
import json
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
REQUIRED = {"sensor": {"state_topic"}, "binary_sensor": {"state_topic"}}
TOPIC_KEYS = ("state_topic", "availability_topic", "json_attributes_topic")


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


def configs(watcher: Watcher, ha_prefix: str) -> dict[str, dict[str, Any]]:
    return {
        t: d
        for t, d in watcher.latest.items()
        if t.startswith(ha_prefix + "/") and t.endswith("/config") and isinstance(d, dict)
    }


def render(template: str, payload: Any) -> str:
    env = jinja2.Environment(undefined=jinja2.Undefined)
    body = payload if isinstance(payload, (bytes, str)) else json.dumps(payload)
    value = body.decode() if isinstance(body, bytes) else body
    try:
        value_json = json.loads(value)
    except ValueError:
        value_json = None
    return env.from_string(template).render(value=value, value_json=value_json)


def test_discovery_configs_match_what_the_agent_publishes(
    broker: LocalBroker,
    names: dict[str, str],
    watcher: Watcher,
    iris_bundle: Path,
    anomaly_bundle: Path,
) -> None:
    prefix, ha, device = names["prefix"], names["ha_prefix"], names["device"]
    settings = {"prefix": prefix, "ha_discovery": True, "ha_prefix": ha, "health_interval": 1.0}
    with serving(broker, [iris_bundle, anomaly_bundle], device, **settings) as agent:
        for model in ("iris-rf", "iris-odd"):
            topic = f"{prefix}/{device}/{model}/in"
            watcher.until(f"{prefix}/{device}/status", lambda s: s == b"online")
            watcher.request(topic, {"id": f"{model}-1", "instances": [ROW]})
            watcher.until(f"{prefix}/{device}/{model}/state", lambda d: isinstance(d, dict))
        watcher.until(f"{prefix}/{device}/health", lambda d: d["models"]["iris-rf"]["answered"])
        found = configs(watcher, ha)
        # device; iris-rf (+confidence, drift); iris-odd (+anomaly, drift)
        assert len(found) == 5 + 8 + 8
        ids = [c["unique_id"] for c in found.values()]
        assert len(set(ids)) == len(ids)
        for topic, config in found.items():
            component = topic.split("/")[1]
            assert REQUIRED[component] <= set(config), topic
            assert config["device"]["identifiers"] and config["name"]
            for key in TOPIC_KEYS:
                if key in config:  # every topic named is one the agent publishes
                    assert watcher.latest.get(config[key]), (topic, key, config[key])
            payload = watcher.latest[config["state_topic"]]
            if "value_template" in config:
                out = render(config["value_template"], payload).strip()
                if component == "binary_sensor":
                    assert out in (config["payload_on"], config["payload_off"]), (topic, out)
                elif "unit_of_measurement" in config or "state_class" in config:
                    assert out == "None" or float(out) >= 0, (topic, out)
                else:
                    assert out and out != "None", (topic, out)
            if "json_attributes_template" in config:
                attrs = json.loads(render(config["json_attributes_template"], payload))
                if topic.endswith("_drift/config"):  # a new window: collecting, no scores
                    assert attrs == {"largest": None, "features": {}, "predictions": None,
                                     "window": 1}, attrs  # fmt: skip
                else:
                    assert attrs["id"] == "iris-rf-1" or attrs["id"] == "iris-odd-1"
        prediction = next(
            c for c in found.values() if c["unique_id"].endswith("iris-rf_prediction")
        )
        state = watcher.latest[prediction["state_topic"]]
        assert render(prediction["value_template"], state) == str(state["label"])
        assert 0.0 <= state["confidence"] <= 1.0 and state["version"]

        # Home Assistant restarts: the configs come again.
        mark = time.monotonic()
        watcher.publish(f"{ha}/status", "online")
        time.sleep(1.5)
        again = [t for at, t in list(watcher.heard) if at > mark and t.endswith("/config")]
        assert sorted(again) == sorted(found)

        # A removed model takes its entities with it; the device's stay.
        agent.remove("iris-odd")
        odd = [t for t, c in found.items() if "iris-odd" in c["unique_id"]]
        for t in odd:
            watcher.until(t, lambda d: d is None, 10)
        assert all(watcher.latest[t] is not None for t in found if t not in odd)
    with serving(broker, [iris_bundle], device, **settings):  # stable ids over a restart
        watcher.until(f"{prefix}/{device}/status", lambda s: s == b"online")
        time.sleep(0.5)
        again = {c["unique_id"] for c in configs(watcher, ha).values()}
        assert again == {i for i in ids if "iris-odd" not in i}


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
