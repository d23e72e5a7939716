"""What the link hands to the rest of the agent: received messages and session settings,
as plain data (no paho types: only ``edge.link.mqtt`` imports paho)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from edgewise.edge.errors import EdgewiseError


class Message(NamedTuple):
    """A received message, detached from paho's types (immutable; a named tuple because
    one is made per received message: a quarter of a frozen dataclass's cost)."""

    topic: str
    payload: bytes
    qos: int
    received_at: float  # time.monotonic()
    response_topic: str | None = None
    correlation_data: bytes | None = None
    mid: int = 0
    dup: bool = False
    retain: bool = False  # True: a retained message sent because we subscribed
    generation: int = 0  # which connection delivered it: acks go back on that one only


@dataclass(frozen=True)
class Session:
    """A persistent session: the broker keeps subscriptions and QoS 1 messages while we
    are away (MQTT 5: clean start off, expiry in seconds; 3.1.1: clean session off), and
    requests are acknowledged by hand with ``MqttConnection.ack``."""

    expiry: int = 7 * 24 * 3600
    receive_maximum: int = 100  # MQTT 5: unacked requests the broker may send us at once


def publish_size(topic: str, payload: bytes | str, qos: int, correlation: bytes | None) -> int:
    """An upper bound of a PUBLISH packet's size on the wire (MQTT 5)."""
    body = len(payload.encode("utf-8") if isinstance(payload, str) else payload)
    body += 2 + len(topic.encode("utf-8", "replace")) + (2 if qos else 0)
    body += 4 + (3 + len(correlation) if correlation is not None else 0)  # properties
    return 1 + 4 + body  # fixed header: type byte and up to four length bytes


class PublishRefused(EdgewiseError):
    """A message that can never be published: the client library or the broker refuses it."""
