"""edge.link.mqtt: back-off (pure logic), protocol fallback on a 3.1.1-only broker, reconnect."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from edgewise.deploy.broker import start_amqtt, start_mosquitto
from edgewise.edge.app import build_agent
from edgewise.edge.core.config import AgentConfig
from edgewise.edge.errors import EdgewiseError
from edgewise.edge.link.backoff import Backoff
from edgewise.edge.link.endpoint import Endpoint
from tests.conftest import require_mosquitto
from tests.mqtt_peer import Peer

ROW = [5.1, 3.5, 1.4, 0.2]


def assert_served(port: int, device: str, protocol: int = 5) -> None:
    """A request to the device's iris-rf model is answered with its id."""
    peer = Peer(port, protocol=protocol)
    try:
        peer.subscribe(f"edgewise/{device}/iris-rf/out")
        peer.request(f"edgewise/{device}/iris-rf/in", {"id": device, "instances": [ROW]})
        assert peer.expect_json("/out")["id"] == device
    finally:
        peer.close()


def test_backoff_is_capped_and_jittered() -> None:
    b = Backoff(initial=0.5, cap=8.0, _rng=random.Random(0))
    delays = [b.next() for _ in range(12)]
    assert all(0.25 <= d <= 8.0 for d in delays)
    assert max(delays[6:]) <= 8.0 and min(delays[6:]) >= 4.0  # capped: between cap/2 and cap
    assert len({round(d, 6) for d in delays[6:]}) > 1  # jittered, not a fixed ladder
    b.reset()
    assert b.next() <= 0.5


@pytest.mark.parametrize(
    ("url", "expected"),
    [("mqtt://u:p@h:1884", Endpoint("h", 1884, "u", "p")), ("h", Endpoint("h", 1883))],
)
def test_broker_url(url: str, expected: Endpoint) -> None:
    assert Endpoint.parse(url) == expected


@pytest.mark.parametrize("url", ["http://h", "mqtt://", "mqtt://h:99999"])
def test_bad_broker_url(url: str) -> None:
    with pytest.raises(EdgewiseError):
        Endpoint.parse(url)


def test_falls_back_to_311_on_amqtt(tmp_path: Path, iris_bundle: Path) -> None:
    pytest.importorskip("amqtt")
    b = start_amqtt(tmp_path)
    agent = build_agent(AgentConfig(bundles=(str(iris_bundle),), broker=b.url, device="old"))
    try:
        agent.start()
        assert agent.connection.wait_connected(20)
        assert agent.connection.protocol == "3.1.1"
        import paho.mqtt.client as paho

        assert_served(b.port, "old", paho.MQTTv311)
    finally:
        agent.stop(timeout=2)
        b.stop()


def test_agent_reconnects_after_broker_restart(tmp_path: Path, iris_bundle: Path) -> None:
    require_mosquitto()
    b = start_mosquitto(tmp_path)
    agent = build_agent(AgentConfig(bundles=(str(iris_bundle),), broker=b.url, device="rb"))
    try:
        agent.start()
        assert agent.connection.wait_connected(10)
        b.stop()
        deadline = time.monotonic() + 10
        while agent.connection.connected and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not agent.connection.connected
        b.restart()
        assert agent.connection.wait_connected(40)
        assert agent.connection.reconnects >= 1
        assert_served(b.port, "rb")
    finally:
        agent.stop(timeout=2)
        b.stop()
