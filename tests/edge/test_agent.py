"""The agent over a real Mosquitto: answers, v5 request/response, every bad input."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest

from edgewise.deploy.broker import LocalBroker
from edgewise.edge.app import build_agent
from edgewise.edge.core.agent import Agent
from edgewise.edge.core.config import AgentConfig
from tests.agents import answers_peer, new_device, serving
from tests.conftest import needs_host
from tests.mqtt_peer import Peer

IRIS_ROW = [5.1, 3.5, 1.4, 0.2]
IRIS_NAMES = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]


@pytest.fixture
def device() -> str:
    return new_device()


@pytest.fixture
def agent(
    broker: LocalBroker, iris_bundle: Path, rooms_bundle: Path, device: str
) -> Iterator[Agent]:
    bundles = (iris_bundle, rooms_bundle)
    with serving(broker, bundles, device, max_payload=4096, max_instances=50) as a:
        yield a


@pytest.fixture
def peer(broker: LocalBroker, agent: Agent, device: str) -> Iterator[Peer]:
    with answers_peer(broker, device) as p:
        yield p


def test_single_request_list_and_dict(peer: Peer, device: str) -> None:
    peer.request(f"edgewise/{device}/iris-rf/in", {"id": "r1", "instances": [IRIS_ROW]})
    doc = peer.expect_json("/iris-rf/out")
    assert doc["id"] == "r1" and doc["model"] == "iris-rf" and doc["version"] == "1"
    [pred] = doc["predictions"]
    assert pred["label"] == "setosa"
    assert set(pred["probabilities"]) == {"setosa", "versicolor", "virginica"}
    assert abs(sum(pred["probabilities"].values()) - 1) < 1e-5
    assert doc["inference_ms"] >= 0

    peer.request(
        f"edgewise/{device}/iris-rf/in", {"id": 7, "instances": [dict(zip(IRIS_NAMES, IRIS_ROW))]}
    )
    doc = peer.expect_json("/iris-rf/out")
    assert doc["id"] == 7 and doc["predictions"][0]["label"] == "setosa"


@needs_host
def test_batch_matches_host_predictions(peer: Peer, device: str) -> None:
    from sklearn.datasets import load_iris

    X = load_iris().data[::10].tolist()
    peer.request(f"edgewise/{device}/iris-rf/in", {"id": "batch", "instances": X})
    doc = peer.expect_json("/iris-rf/out")
    assert len(doc["predictions"]) == len(X)
    names = load_iris().target_names[load_iris().target[::10]].tolist()
    agree = sum(p["label"] == n for p, n in zip(doc["predictions"], names))
    assert agree >= len(X) - 1  # the forest fits iris almost perfectly


def test_mixed_columns_with_missing_values(peer: Peer, device: str) -> None:
    instances = [
        {"temp c": 30.0, "zone": "attic", "humidity": None, "power": 100.0},
        {"temp c": 15.0, "zone": None, "humidity": 40.0, "power": 45.0},
        {"temp c": 15.0, "zone": "never-seen", "humidity": 40.0, "power": 45.0},
    ]
    peer.request(f"edgewise/{device}/rooms/in", {"id": "m", "instances": instances})
    doc = peer.expect_json("/rooms/out")
    assert [p["label"] for p in doc["predictions"]] == ["alarm", "ok", "ok"]


def test_v5_request_response_with_correlation(peer: Peer, device: str) -> None:
    reply = f"replies/{uuid.uuid4().hex[:6]}"
    peer.subscribe(reply)
    peer.publish(
        f"edgewise/{device}/iris-rf/in",
        json.dumps({"id": "v5", "instances": [IRIS_ROW]}),
        response_topic=reply,
        correlation=b"\x00corr-42",
    )
    msg = peer.expect(reply)
    assert msg.properties.CorrelationData == b"\x00corr-42"
    assert json.loads(msg.payload)["predictions"][0]["label"] == "setosa"


def test_mqtt311_client_is_served(broker: LocalBroker, agent: Agent, device: str) -> None:
    p = Peer(broker.port, protocol=paho.MQTTv311)
    try:
        p.subscribe(f"edgewise/{device}/iris-rf/out")
        p.request(f"edgewise/{device}/iris-rf/in", {"id": "old", "instances": [IRIS_ROW]})
        assert p.expect_json("/out")["id"] == "old"
    finally:
        p.close()


BAD = [
    (b"\xff\xfe not utf8", "bad_encoding", None),
    (b"{not json", "bad_json", None),
    (b'{"id": "n", "instances": [[NaN, 1, 2, 3]]}', "bad_json", "n"),
    (b"[1, 2, 3]", "bad_request", None),
    (b'{"id": "a", "instances": []}', "bad_request", "a"),
    (b'{"id": "b"}', "bad_request", "b"),
    (b'{"id": "c", "instances": [[1, 2, 3]]}', "bad_shape", "c"),
    (b'{"id": "d", "instances": [[1, 2, "x", 3]]}', "bad_type", "d"),
    (b'{"id": "e", "instances": [[1, 2, true, 3]]}', "bad_type", "e"),
    (b'{"id": "f", "instances": [{"sepal length (cm)": 1}]}', "missing_feature", "f"),
    (b'{"id": "g", "instances": [{"bogus": 1}]}', "unknown_feature", "g"),
    (b'{"id": "h", "instances": [7]}', "bad_type", "h"),
    (b'{"id": "i", "instances": [[1e999, 1, 1, 1]]}', "bad_value", "i"),
    (b'{"id": "j", "instances": [[1, 2, 3, 4]], "extra": 1}', "bad_request", "j"),
    (b'{"id": "k", "instances": ' + json.dumps([IRIS_ROW] * 51).encode() + b"}", "too_large", "k"),
    (b'{"id": "l", "instances": [' + b"[1,2,3,4]," * 500 + b"[1,2,3,4]]}", "too_large", None),
    (b'{"id": true, "instances": [[1, 2, 3, 4]]}', "bad_request", None),
]


@pytest.mark.parametrize(
    ("payload", "code", "rid"), BAD, ids=[b[1] + "-" + str(i) for i, b in enumerate(BAD)]
)
def test_bad_input_is_answered_and_agent_keeps_serving(
    peer: Peer, agent: Agent, device: str, payload: bytes, code: str, rid: str | None
) -> None:
    peer.publish(f"edgewise/{device}/iris-rf/in", payload)
    err = peer.expect_json("/iris-rf/error")
    assert err["code"] == code, err
    assert err["id"] == rid
    assert err["message"]
    peer.request(f"edgewise/{device}/iris-rf/in", {"id": "after", "instances": [IRIS_ROW]})
    assert peer.expect_json("/iris-rf/out")["id"] == "after"
    assert agent.counters.errors >= 1


def test_unknown_model(peer: Peer, device: str) -> None:
    peer.request(f"edgewise/{device}/nope/in", {"id": "u", "instances": [IRIS_ROW]})
    err = peer.expect_json("/nope/error")
    assert err["code"] == "unknown_model" and "iris-rf" in err["message"]


def test_status_and_info_are_retained(broker: LocalBroker, iris_bundle: Path, device: str) -> None:
    a = build_agent(AgentConfig(bundles=(str(iris_bundle),), broker=broker.url, device=device))
    a.start()
    assert a.connection.wait_connected(10)
    watcher = Peer(broker.port)
    watcher.subscribe(f"edgewise/{device}/status")
    # Once a first subscriber saw `online`, the broker holds it: a later subscriber gets it
    # as retained (before, it might arrive live, retain=0, and say nothing about retention).
    assert watcher.expect("/status", timeout=10).payload == b"online"
    watcher.close()
    p = Peer(broker.port)
    try:
        p.subscribe(f"edgewise/{device}/status", f"edgewise/{device}/iris-rf/info")
        msgs = {m.topic: m for m in (p.expect(), p.expect())}
        status = msgs[f"edgewise/{device}/status"]
        assert status.payload == b"online" and status.retain
        info = json.loads(msgs[f"edgewise/{device}/iris-rf/info"].payload)
        assert [f["name"] for f in info["features"]] == IRIS_NAMES and info[
            "backend"
        ] == "onnxruntime"
        assert info["input"] == {"kind": "tabular", "shape": [4]}
        assert info["session"] == a.session
        a.stop(timeout=5)
        assert p.expect("/status").payload == b"offline"
    finally:
        a.stop(timeout=1)
        p.close()
