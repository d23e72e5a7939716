"""Where an answer goes: the model's out or error topic, or the requester's response topic."""

from __future__ import annotations

from edgewise.edge.link.message import Message
from edgewise.edge.link.outbox import OutMessage
from edgewise.edge.link.topics import Topics


def reply(msg: Message, topic: str, body: bytes, qos: int) -> OutMessage:
    """``body`` on ``topic``, or where an MQTT 5 requester asked, with its correlation data."""
    if msg.response_topic:
        return OutMessage(msg.response_topic, body, 1, correlation_data=msg.correlation_data)
    return OutMessage(topic, body, qos)


def error_replies(
    topics: Topics, msg: Message, model: str, body: bytes, qos: int
) -> list[OutMessage]:
    """An error goes to the error topic (the monitoring channel) always, and to the
    requester's response topic when it gave one."""
    error_topic = topics.answer_topic(msg.topic, model, "error")
    out = [OutMessage(error_topic, body, qos)]
    if msg.response_topic:
        out.append(reply(msg, error_topic, body, qos))
    return out
