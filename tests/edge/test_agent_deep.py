"""The agent serving TFLite networks over a real Mosquitto: an int8 1-D CNN on vibration
windows and a float 2-D CNN on digit images, with JSON and binary requests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgewise.deploy.broker import LocalBroker
from edgewise.edge.core.agent import Agent
from edgewise.edge.link.payload import encode_tensor_request
from tests.agents import answers_peer, new_device, serving
from tests.conftest import needs_host
from tests.mqtt_peer import Peer

pytestmark = pytest.mark.slow  # needs trained CNNs


@pytest.fixture(scope="module")
def device() -> str:
    return new_device("deep")


@pytest.fixture(scope="module")
def agent(
    broker: LocalBroker,
    vibration_int8_bundle: Path,
    digits_bundle: Path,
    device: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Agent]:
    bundles = (vibration_int8_bundle, digits_bundle)
    state = tmp_path_factory.mktemp("state")
    with serving(broker, bundles, device, state_dir=state, max_instances=64) as a:
        yield a


@pytest.fixture
def peer(broker: LocalBroker, agent: Agent, device: str) -> Iterator[Peer]:
    with answers_peer(broker, device) as p:
        yield p


def _host_case(request: pytest.FixtureRequest, model: str) -> tuple[Any, np.ndarray, list[Any]]:
    host = request.getfixturevalue("vibration_host" if model == "vibration" else "digits_host")
    X = host.X_heldout[:24]
    keras_labels = [host.labels[i] for i in host.model.predict(X, verbose=0).argmax(1)]
    return host, X, keras_labels


@needs_host
@pytest.mark.parametrize("model", ["vibration", "digits"])
@pytest.mark.parametrize("encoding", ["json", "binary"])
def test_answers_like_keras(
    request: pytest.FixtureRequest, agent: Agent, peer: Peer, device: str, model: str, encoding: str
) -> None:
    host, X, keras_labels = _host_case(request, model)
    assert agent.models[model].backend.name == "ai-edge-litert"
    topic = f"edgewise/{device}/{model}/in"
    if encoding == "json":
        peer.request(topic, {"id": "j", "instances": X.tolist()})
    else:
        # Digit pixels are small integers: send them as uint8, as a camera would.
        array = X.astype(np.uint8) if model == "digits" else X
        peer.publish(topic, encode_tensor_request(array, "b"))
    doc = peer.expect_json(f"/{model}/out")
    assert doc["id"] == ("j" if encoding == "json" else "b")
    labels = [p["label"] for p in doc["predictions"]]
    agree = np.mean([a == b for a, b in zip(labels, keras_labels)])
    # The float model agrees exactly; int8 may flip a near-tie (its gate is on accuracy).
    assert agree >= (1.0 if model == "digits" else 22 / 24), (labels, keras_labels)
    truth = [host.labels[i] for i in host.y_heldout[:24]]
    assert np.mean([a == b for a, b in zip(labels, truth)]) >= 0.85
    for p in doc["predictions"]:
        assert abs(sum(p["probabilities"].values()) - 1) < 0.02  # int8 steps are 1/256


@pytest.mark.parametrize(
    ("model", "payload", "code"),
    [
        ("vibration", {"id": "s1", "instances": [[[0.0, 0.0, 0.0]] * 10]}, "bad_shape"),
        ("vibration", {"id": "s2", "instances": [[[0.0, 0.0]] * 256]}, "bad_shape"),
        ("vibration", {"id": "s3", "instances": [[[0.0, "x", 0.0]] * 256]}, "bad_shape"),
        ("digits", encode_tensor_request(np.zeros((1, 8, 7, 1), np.uint8), "s4"), "bad_shape"),
        (
            "digits",
            encode_tensor_request(np.full((1, 8, 8, 1), np.nan, np.float32), "s5"),
            "bad_value",
        ),
        (
            "digits",
            encode_tensor_request(np.zeros((1, 8, 8, 1), np.float32), "s6")[:-4],
            "bad_shape",
        ),
        ("digits", {"id": "s7", "instances": [{"gray": 1}]}, "bad_shape"),
    ],
)
def test_bad_tensors_are_answered_and_serving_goes_on(
    peer: Peer, device: str, model: str, payload: Any, code: str
) -> None:
    topic = f"edgewise/{device}/{model}/in"
    if isinstance(payload, bytes):
        peer.publish(topic, payload)
    else:
        peer.request(topic, payload)
    err = peer.expect_json(f"/{model}/error")
    assert err["code"] == code and err["id"].startswith("s"), err
    peer.publish(topic, encode_tensor_request(np.zeros((1, *_shape(model)), np.float32), "ok"))
    assert peer.expect_json(f"/{model}/out")["id"] == "ok"


def _shape(model: str) -> tuple[int, ...]:
    return (256, 3) if model == "vibration" else (8, 8, 1)


def test_info_gives_clients_the_instance_shape(
    vibration_int8_bundle: Path, digits_bundle: Path
) -> None:
    from edgewise.edge.runtime.bundle import load_bundle
    from edgewise.edge.runtime.model import ServedModel

    vibration = ServedModel.load(load_bundle(vibration_int8_bundle)).info()
    digits = ServedModel.load(load_bundle(digits_bundle)).info()
    assert vibration["input"] == {"kind": "window", "shape": [256, 3]}
    assert digits["input"] == {"kind": "image", "shape": [8, 8, 1]}
