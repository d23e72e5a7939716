"""A plain paho client for tests: independent of edge.link.mqtt, so the agent is checked by a
client that shares none of its code."""

from __future__ import annotations

import json
import queue
import socket
import time
import uuid
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties


class Peer:
    """Connects, subscribes, publishes, and waits for messages with a timeout."""

    def __init__(self, port: int, protocol: int = paho.MQTTv5) -> None:
        self.inbox: queue.Queue[paho.MQTTMessage] = queue.Queue()
        self.client = paho.Client(
            paho.CallbackAPIVersion.VERSION2,
            client_id=f"test-{uuid.uuid4().hex[:8]}",
            protocol=protocol,
        )
        self.client.on_message = lambda c, u, m: self.inbox.put(m)
        # Nagle off, as in the agent: else each request can wait ~40 ms for a delayed ACK.
        self.client.on_connect = lambda c, u, f, rc, p: c.socket().setsockopt(
            socket.IPPROTO_TCP, socket.TCP_NODELAY, 1
        )
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        deadline = time.monotonic() + 5
        while not self.client.is_connected():
            assert time.monotonic() < deadline, "test peer could not connect"
            time.sleep(0.01)

    def subscribe(self, *topics: str) -> None:
        for t in topics:
            result, _ = self.client.subscribe(t, qos=1)
            assert result == paho.MQTT_ERR_SUCCESS
        time.sleep(0.1)  # let SUBACKs arrive before the test publishes

    def publish(
        self,
        topic: str,
        payload: bytes | str,
        response_topic: str | None = None,
        correlation: bytes | None = None,
        qos: int = 1,
    ) -> None:
        props = None
        if response_topic:
            props = Properties(PacketTypes.PUBLISH)
            props.ResponseTopic = response_topic
            if correlation is not None:
                props.CorrelationData = correlation
        self.client.publish(topic, payload, qos=qos, properties=props).wait_for_publish(5)

    def request(self, topic: str, doc: dict[str, Any]) -> None:
        self.publish(topic, json.dumps(doc))

    def expect(self, topic_suffix: str = "", timeout: float = 10.0) -> paho.MQTTMessage:
        """The next message whose topic ends with ``topic_suffix``."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                msg = self.inbox.get(timeout=left)
            except queue.Empty:
                break
            if msg.topic.endswith(topic_suffix):
                return msg
        raise AssertionError(f"no message on *{topic_suffix} within {timeout}s")

    def expect_json(self, topic_suffix: str = "", timeout: float = 10.0) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self.expect(topic_suffix, timeout).payload)
        return doc

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
