"""The agent restores its retained status and info when another client overwrites them
(a broker without ACLs lets anyone write there), and `send` is not fooled meanwhile."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

from edgewise.deploy.broker import LocalBroker
from edgewise.edge.app import build_agent
from edgewise.edge.core.config import AgentConfig
from edgewise.edge.errors import EdgewiseError
from edgewise.edge.remote.client import connect, wait_ready
from tests.mqtt_peer import Peer


def retained(broker: LocalBroker, topic: str) -> bytes:
    """What a new subscriber gets for ``topic`` now."""
    peer = Peer(broker.port)
    try:
        peer.subscribe(topic)
        return bytes(peer.expect(topic, timeout=2).payload)
    finally:
        peer.close()


def test_spoofed_status_and_info_are_restored_within_a_second(
    broker: LocalBroker, iris_bundle: Path
) -> None:
    device = f"sp-{uuid.uuid4().hex[:6]}"
    agent = build_agent(AgentConfig(bundles=(str(iris_bundle),), broker=broker.url, device=device))
    attacker = Peer(broker.port)
    try:
        agent.start()
        assert agent.connection.wait_connected(10)
        time.sleep(0.3)
        status, info = f"edgewise/{device}/status", f"edgewise/{device}/iris-rf/info"
        genuine = retained(broker, info)
        assert json.loads(genuine)["session"] == agent.session
        attacker.client.publish(status, "offline", qos=1, retain=True).wait_for_publish(5)
        fake = json.dumps({"name": "iris-rf", "features": [{"name": "evil", "dtype": "float32"}]})
        attacker.client.publish(info, fake, qos=1, retain=True).wait_for_publish(5)
        time.sleep(1.0)
        assert retained(broker, status) == b"online"
        assert retained(broker, info) == genuine
        assert agent.health()["counters"]["overwritten"] == 2
    finally:
        attacker.close()
        agent.stop(timeout=5)


def test_send_refuses_an_info_from_another_session(broker: LocalBroker) -> None:
    """No agent restores it here: `send` sees online + an info whose session is not the one
    in the health report, and says so instead of asking for the wrong columns."""
    from edgewise.edge.link.topics import Topics

    device = f"sp-{uuid.uuid4().hex[:6]}"
    topics = Topics("edgewise", device)
    forger = Peer(broker.port)
    try:
        for topic, body in (
            (topics.status, "online"),
            (topics.health, json.dumps({"session": "genuine"})),
            (topics.model("m", "info"), json.dumps({"session": "forged", "features": []})),
        ):
            forger.client.publish(topic, body, qos=1, retain=True).wait_for_publish(5)
        subs = [(topics.status, 1), (topics.health, 1), (topics.model("m", "info"), 1)]
        conn, inbox = connect(broker.url, "auto", subs, timeout=5)
        try:
            try:
                wait_ready(inbox, topics, "m", timeout=1.0)
            except EdgewiseError as exc:
                assert "does not come from the agent that is online" in str(exc)
            else:
                raise AssertionError("a forged info was accepted")
        finally:
            conn.stop(final_status=None)
    finally:
        for topic in (topics.status, topics.health, topics.model("m", "info")):
            forger.client.publish(topic, b"", qos=1, retain=True).wait_for_publish(5)
        forger.close()
