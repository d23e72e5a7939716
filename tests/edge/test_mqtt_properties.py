"""``ReceivedProperties`` (edge.link.mqtt) decodes exactly as paho's ``Properties``.

The agent swaps it in for paho's per-packet class to save ~25 µs per received MQTT 5
message (bench/bench_streams.py); every property a PUBLISH may carry is round-tripped
through paho's own encoder and both decoders. The broker tests (response topics,
correlation data, user properties) cover the same path end to end.
"""

from __future__ import annotations

from typing import Any

import pytest
from paho.mqtt import _packet
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import MQTTException, Properties

from edgewise.edge.link.mqtt import ReceivedProperties

CASES: list[dict[str, Any]] = [
    {},
    {"ResponseTopic": "edgewise/reply/1", "CorrelationData": b"\x00\x01\xff"},
    {"UserProperty": [("a", "1"), ("a", "2"), ("b", "é")], "ContentType": "application/json"},
    {"MessageExpiryInterval": 60, "PayloadFormatIndicator": 1, "TopicAlias": 3},
    {"SubscriptionIdentifier": [7, 300000]},
]


def packed(props: dict[str, Any]) -> bytes:
    p = Properties(PacketTypes.PUBLISH)
    for name, value in props.items():
        if name == "UserProperty":
            p.UserProperty = value
        elif name == "SubscriptionIdentifier":
            for ident in value:  # more than one is allowed on a received PUBLISH
                p.SubscriptionIdentifier = ident
        else:
            setattr(p, name, value)
    return bytes(p.pack())


@pytest.mark.parametrize("props", CASES, ids=lambda c: ",".join(c) or "none")
def test_received_properties_decode_as_paho(props: dict[str, Any]) -> None:
    raw = packed(props) + b"payload"
    theirs, n_theirs = Properties(PacketTypes.PUBLISH).unpack(raw)
    ours, n_ours = ReceivedProperties(PacketTypes.PUBLISH).unpack(raw)
    assert n_ours == n_theirs
    assert ours.json() == theirs.json() and str(ours) == str(theirs)
    assert ours.isEmpty() == theirs.isEmpty()
    for name in props:
        assert getattr(ours, name) == getattr(theirs, name)


def test_an_instance_forgets_what_an_earlier_packet_set() -> None:
    p = ReceivedProperties(PacketTypes.PUBLISH)
    p.unpack(packed({"ResponseTopic": "r", "CorrelationData": b"c"}))
    p.unpack(packed({}))
    assert p.isEmpty() and not hasattr(p, "ResponseTopic")


def test_a_duplicated_property_is_refused_as_by_paho() -> None:
    one = packed({"ResponseTopic": "r"})
    body = one[1:]  # the property bytes without their length
    raw = bytes([2 * len(body)]) + body * 2
    for cls in (Properties, ReceivedProperties):
        with pytest.raises(MQTTException):
            cls(PacketTypes.PUBLISH).unpack(raw)


def test_the_agent_decodes_publish_packets_with_it() -> None:
    assert _packet.Properties is ReceivedProperties
