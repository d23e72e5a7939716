"""Sensor streams on a real broker with really trained models: the shipped recipes under
deploy/streams/ run as they are (only the agent's own keys are set: bundle, broker,
device), fed by publishers shaped like Zigbee2MQTT, Tasmota and ESPHome, and their
predictions compared with ``ServedModel`` on the same rows."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgewise.deploy.broker import LocalBroker
from edgewise.edge.app import build_agent
from edgewise.edge.core.agent import Agent
from edgewise.edge.core.config import AgentConfig
from edgewise.edge.errors import EdgewiseError
from edgewise.edge.runtime.bundle import load_bundle
from edgewise.edge.runtime.model import ServedModel
from tests.conftest import ROOT
from tests.mqtt_peer import Peer

RECIPES = ROOT / "deploy" / "streams"


def recipe_agent(recipe: str, bundle: Path, broker: LocalBroker, **keys: Any) -> Agent:
    """An agent running a shipped recipe as it is; the agent's own keys set."""
    config = AgentConfig.from_toml(RECIPES / recipe).merged(
        bundles=(str(bundle),),
        broker=broker.url,
        device=keys.pop("device", f"st-{uuid.uuid4().hex[:6]}"),
        health_interval=1.0,
        **keys,
    )
    return build_agent(config)


def rows_of(zone: str, n: int, seed: int) -> list[dict[str, Any]]:
    """Complete rooms rows (no missing value) in the recipe's zone, labels alternating."""
    from edgewise.trainer.examples import rooms

    found: dict[str, list[dict[str, Any]]] = {"alarm": [], "ok": []}
    for r in rooms(400, seed):
        if r["humidity"] is not None:
            found[str(r["status"])].append({**r, "zone": zone})
    return [found[("alarm", "ok")[i % 2]][i // 2] for i in range(n)]


def expected(model: ServedModel, row: dict[str, Any]) -> dict[str, Any]:
    pred = model.predict([{k: row[k] for k in ("temp c", "zone", "humidity", "power")}])[0]
    return {"label": pred["label"], "confidence": pred["probabilities"][pred["label"]]}


def collect(peer: Peer, n: int, timeout: float = 20.0) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        try:
            out.append(peer.expect_json("/events", timeout=deadline - time.monotonic()))
        except AssertionError:
            break
    return out


@pytest.fixture
def rooms_model(rooms_bundle: Path) -> ServedModel:
    return ServedModel.load(load_bundle(rooms_bundle))


@pytest.fixture
def started(request: pytest.FixtureRequest) -> Iterator[list[Agent]]:
    agents: list[Agent] = []
    yield agents
    for a in agents:
        a.stop(timeout=5)


def start(agent: Agent, agents: list[Agent], peer: Peer, stream: str) -> None:
    """Start, and wait for ``online`` (its subscriptions are in place by then)."""
    topics = agent.topics
    peer.subscribe(topics.status, topics.stream(stream, "events"), topics.stream(stream, "state"))
    agent.start()
    agents.append(agent)
    while peer.expect("/status", timeout=10).payload != b"online":
        pass


def test_zigbee2mqtt_recipe_publishes_each_change(
    broker: LocalBroker, rooms_bundle: Path, rooms_model: ServedModel, started: list[Agent]
) -> None:
    agent = recipe_agent("zigbee2mqtt.toml", rooms_bundle, broker)
    peer = Peer(broker.port)
    start(agent, started, peer, "office")
    rows = rows_of("north", 6, seed=3)
    full: list[dict[str, Any]] = []  # every prediction the updates make, as the model gives it
    for i, r in enumerate(rows):
        plug = {"power": r["power"], "energy": 1.25, "state": "ON"}
        peer.publish("zigbee2mqtt/office-plug", json.dumps(plug))
        if i:  # the plug's update with the room's last values
            full.append(expected(rooms_model, {**rows[i - 1], "power": r["power"]}))
        climate = {"temperature": r["temp c"], "humidity": r["humidity"], "battery": 97,
                   "linkquality": 120}  # fmt: skip
        peer.publish("zigbee2mqtt/office", json.dumps(climate))
        full.append(expected(rooms_model, r))
    # publish = "change": only a prediction whose label differs from the last published
    changes = [
        (i + 1, p) for i, p in enumerate(full) if i == 0 or p["label"] != full[i - 1]["label"]
    ]
    events = collect(peer, len(changes))
    assert [e["seq"] for e in events] == [seq for seq, _ in changes]
    for event, (_, want) in zip(events, changes):
        assert event["label"] == want["label"] and event["model"] == "rooms"
        assert event["confidence"] == pytest.approx(want["confidence"], abs=1e-5)
        assert event["anomaly"] == (want["label"] != "ok")
    with pytest.raises(AssertionError):
        peer.expect("/events", timeout=0.5)  # nothing more
    health = agent.health()["streams"]["office"]
    assert health["predictions"] == len(full) and health["published"] == len(changes)
    assert health["waiting"] == 1  # the first plug update: no climate reading yet


def test_tasmota_recipe_predicts_on_its_trigger_topic(
    broker: LocalBroker, rooms_bundle: Path, rooms_model: ServedModel, started: list[Agent]
) -> None:
    agent = recipe_agent("tasmota.toml", rooms_bundle, broker)
    peer = Peer(broker.port)
    start(agent, started, peer, "workshop")
    rows = rows_of("attic", 8, seed=4)
    for r in rows:
        peer.publish("tele/workshop-plug/SENSOR", json.dumps({"ENERGY": {"Power": r["power"]}}))
        sensor = {"Time": "2026-12-05T10:00:00", "TempUnit": "C",
                  "BME280": {"Temperature": r["temp c"], "Humidity": r["humidity"],
                             "Pressure": 1013.2}}  # fmt: skip
        peer.publish("tele/workshop/SENSOR", json.dumps(sensor))
    events = collect(peer, len(rows))
    assert [e["seq"] for e in events] == list(range(1, len(rows) + 1))
    for event, r in zip(events, rows):
        want = expected(rooms_model, r)
        assert event["label"] == want["label"]
        assert event["confidence"] == pytest.approx(want["confidence"], abs=1e-5)
    state = Peer(broker.port)  # the latest prediction is retained
    try:
        state.subscribe(agent.topics.stream("workshop", "state"))
        msg = state.expect("/state")
        assert msg.retain and json.loads(msg.payload)["seq"] == len(rows)
    finally:
        state.close()


def test_esphome_recipe_predicts_every_interval(
    broker: LocalBroker, rooms_bundle: Path, rooms_model: ServedModel, started: list[Agent]
) -> None:
    agent = recipe_agent("esphome.toml", rooms_bundle, broker)
    interval = agent.config.streams[0].interval
    assert interval is not None
    peer = Peer(broker.port)
    start(agent, started, peer, "lab")
    (row,) = rows_of("south", 1, seed=5)
    for key, sensor in (("temp c", "temperature"), ("humidity", "humidity"), ("power", "power")):
        peer.publish(f"lab-node/sensor/{sensor}/state", str(row[key]))  # plain values
    event = peer.expect_json("/events", timeout=interval + 5)
    want = expected(rooms_model, row)
    assert event["label"] == want["label"]
    assert event["confidence"] == pytest.approx(want["confidence"], abs=1e-5)


def test_bad_samples_are_counted_and_the_stream_goes_on(
    broker: LocalBroker, rooms_bundle: Path, rooms_model: ServedModel, started: list[Agent]
) -> None:
    agent = recipe_agent("zigbee2mqtt.toml", rooms_bundle, broker, max_payload=4096)
    peer = Peer(broker.port)
    start(agent, started, peer, "office")
    bad = [
        b'{"humidity": 40}',  # no temperature: missing (humidity is still taken)
        b'{"temperature": "warm", "humidity": 40}',  # not_a_number
        b'{"temperature": NaN, "humidity": 40}',  # not_finite
        b'{"temperature": 1e999, "humidity": 40}',  # not_finite (infinity)
        b"not json at all",  # plain text: no field in it (missing x2)
        b"\xff\xfe\x00",  # bad_payload
        b'{"temperature": 21, "humidity": 40, "pad": "' + b"x" * 5000 + b'"}',  # too_large
    ]
    for payload in bad:
        peer.publish("zigbee2mqtt/office", payload)
    (row,) = rows_of("north", 1, seed=6)
    peer.publish("zigbee2mqtt/office-plug", json.dumps({"power": row["power"]}))
    peer.publish("zigbee2mqtt/office", json.dumps({"temperature": row["temp c"],
                                                   "humidity": row["humidity"]}))  # fmt: skip
    events = collect(peer, 1)
    assert events and events[-1]["label"] == expected(rooms_model, row)["label"]
    assert agent.health()["streams"]["office"]["bad"] == {
        "missing": 3, "not_a_number": 1, "not_finite": 2, "bad_payload": 1, "too_large": 1,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model": "nope"}, "no model 'nope' on this device"),
        ({"features": {"temp c": {"topic": "x/y"}}}, "unbound ['zone', 'humidity', 'power']"),
        ({"features": {"t": {"topic": "edgewise/+/x"}}}, "reaches into edgewise/"),
    ],
)
def test_a_stream_that_cannot_work_is_refused_at_start(
    broker: LocalBroker, rooms_bundle: Path, change: dict[str, Any], message: str
) -> None:
    stream = {"name": "s", "model": "rooms", "features": {"temp c": {"topic": "a/b"}}} | change
    if "features" in change and "t" in change["features"]:
        stream["features"] = {**change["features"]}
        stream["features"].update({k: {"topic": "a/b"} for k in ("temp c", "zone", "humidity",
                                                                 "power")})  # fmt: skip
        del stream["features"]["t"]
        stream["features"]["temp c"] = {"topic": "edgewise/+/x"}
    config = AgentConfig(bundles=(str(rooms_bundle),), broker=broker.url, device="d",
                         streams=[stream])  # fmt: skip
    with pytest.raises(EdgewiseError) as exc:
        build_agent(config)
    assert message in str(exc.value) and "\n" not in str(exc.value)
