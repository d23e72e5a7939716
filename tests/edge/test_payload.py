"""Unit tests of the request envelope (pure logic; the MQTT path is in test_agent.py)."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import pytest

from edgewise.edge.errors import RequestError
from edgewise.edge.link.payload import (
    TENSOR_MAGIC,
    compact,
    decode_request,
    encode,
    encode_tensor_request,
    peek_id,
)


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
        (b'{"id": 3, "instances": [1], "answer": "tiny"}', "bad_request", 3),
        (b'{"id": 4, "instances": [1], "answer": "compact", "explain": true}', "bad_request", 4),
    ],
)
def test_rejections_carry_code_and_id(payload: bytes, code: str, rid: object) -> None:
    with pytest.raises(RequestError) as info:
        decode_request(payload, max_payload=10 if len(payload) == 11 else 100, max_instances=2)
    assert info.value.code == code and info.value.request_id == rid


@pytest.mark.parametrize(
    ("prediction", "shown"),
    [
        ({"label": "setosa", "probabilities": {"setosa": 0.9}}, "setosa"),
        ({"value": 21.5}, 21.5),
        ({"score": -0.1, "is_anomaly": True}, True),
        ({"cluster": 2, "distance": 0.3}, 2),
    ],
)
def test_a_compact_answer_is_the_label_or_value(prediction: dict[str, Any], shown: Any) -> None:
    assert compact(prediction) == shown
    assert decode_request(b'{"instances": [1], "answer": "compact"}').compact
    assert not decode_request(b'{"instances": [1]}').compact


def test_peek_id_and_encode() -> None:
    assert peek_id(b'{"id": "n", "instances": [[NaN]]}') == "n"
    assert peek_id(b"\xff") is None and peek_id(b'{"id": true}') is None
    assert encode({"a": 1.5}) == b'{"a":1.5}'


@pytest.mark.parametrize(
    ("array", "rid"),
    [
        (np.arange(2 * 4 * 3, dtype=np.float32).reshape(2, 4, 3) / 7, "w-1"),
        (np.arange(64, dtype=np.uint8).reshape(1, 8, 8, 1), None),
        (np.array([[1.5, -2.0]], dtype=">f4"), "big-endian in, little-endian on the wire"),
    ],
)
def test_binary_tensor_round_trip(array: np.ndarray, rid: str | None) -> None:
    r = decode_request(encode_tensor_request(array, rid))
    assert r.id == rid and r.instances == [] and r.tensor is not None
    assert r.tensor.shape == array.shape and np.array_equal(r.tensor, array)
    assert r.tensor.dtype.itemsize == array.dtype.itemsize


def _header(code: int, rank: int, dims: tuple[int, ...], rid: bytes = b"") -> bytes:
    return (
        TENSOR_MAGIC
        + struct.pack("<BBH", code, rank, len(rid))
        + struct.pack(f"<{len(dims)}I", *dims)
        + rid
    )


@pytest.mark.parametrize(
    ("payload", "code", "rid"),
    [
        (TENSOR_MAGIC + b"\x01", "bad_request", None),  # shorter than the header
        (_header(9, 1, (1,)) + b"\0" * 4, "bad_type", None),  # unknown dtype code
        (_header(1, 0, ()), "bad_request", None),  # rank 0
        (_header(1, 2, (1,)), "bad_request", None),  # dims cut short
        (_header(1, 2, (2, 3), b"r7") + b"\0" * 20, "bad_shape", "r7"),  # 20 bytes, needs 24
        (_header(1, 2, (0, 3), b"r8"), "bad_request", "r8"),  # no instance
        (_header(2, 2, (3, 1), b"r9") + b"\0" * 3, "too_large", "r9"),  # over max_instances
        (_header(1, 1, (1,), b"\xff") + b"\0" * 4, "bad_encoding", None),
    ],
)
def test_binary_rejections(payload: bytes, code: str, rid: str | None) -> None:
    with pytest.raises(RequestError) as info:
        decode_request(payload, max_instances=2)
    assert info.value.code == code and info.value.request_id == rid


def test_encode_tensor_request_refuses_other_dtypes() -> None:
    with pytest.raises(ValueError, match="float32 or uint8"):
        encode_tensor_request(np.zeros((1, 2), dtype=np.float64))
