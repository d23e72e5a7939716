"""Unit tests of the request envelope (pure logic; the MQTT path is in test_agent.py)."""

from __future__ import annotations

import pytest

from edge.errors import RequestError
from edge.payload import decode_request, encode, peek_id


def test_decodes_id_and_instances() -> None:
    r = decode_request(b'{"id": "x", "instances": [[1, 2]]}')
    assert r.id == "x" and r.instances == [[1, 2]]
    assert decode_request(b'{"instances": [{"a": 1}]}').id is None


@pytest.mark.parametrize(
    ("payload", "code", "rid"),
    [
        (b"x" * 11, "too_large", None),
        (b'{"id": 1, "instances": [1, 2, 3]}', "too_large", 1),
        (b'{"id": [1], "instances": [1]}', "bad_request", None),
        (b'{"id": 2, "instances": {}}', "bad_request", 2),
        (b"Infinity", "bad_json", None),
    ],
)
def test_rejections_carry_code_and_id(payload: bytes, code: str, rid: object) -> None:
    with pytest.raises(RequestError) as info:
        decode_request(payload, max_payload=10 if len(payload) == 11 else 100, max_instances=2)
    assert info.value.code == code and info.value.request_id == rid


def test_peek_id_and_encode() -> None:
    assert peek_id(b'{"id": "n", "instances": [[NaN]]}') == "n"
    assert peek_id(b"\xff") is None and peek_id(b'{"id": true}') is None
    assert encode({"a": 1.5}) == b'{"a":1.5}'
