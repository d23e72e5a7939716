"""The JSON envelope of requests and answers on the MQTT topics (docs/mqtt.md)."""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgewise.edge.errors import RequestError

DEFAULT_MAX_PAYLOAD = 1 << 20  # 1 MiB
DEFAULT_MAX_INSTANCES = 1024
MAX_DEPTH = 64  # JSON nesting refused beyond this, before the parser recurses

# A JSON string with its escapes (or an unterminated one): removed before counting
# brackets, so brackets inside strings do not count towards the depth.
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"?')
# An "id" given as the first member of the object, read without parsing the rest.
_LEADING_ID = re.compile(rb'\A\s*\{\s*"id"\s*:\s*("(?:[^"\\]|\\.){0,256}"|-?[0-9]{1,19})\s*[,}]')
_STEP = np.zeros(256, dtype=np.int8)
_STEP[list(b"[{")] = 1
_STEP[list(b"]}")] = -1


# Binary tensor requests (docs/mqtt.md): magic, dtype code, rank, id length, dims, id, data.
TENSOR_MAGIC = b"EWT1"
TENSOR_DTYPES: dict[int, np.dtype[Any]] = {1: np.dtype("<f4"), 2: np.dtype("u1")}
_HEADER = struct.Struct("<4sBBH")
MAX_RANK = 8


@dataclass(frozen=True)
class Request:
    """A decoded request: its id (echoed in the answer) and its instances.

    JSON requests fill ``instances``; binary ones fill ``tensor`` (batch axis first).
    """

    id: str | int | None
    instances: list[Any]
    tensor: np.ndarray[Any, Any] | None = None
    explain: bool = False
    compact: bool = False  # "answer": "compact": each prediction as its label or value only


def encode_tensor_request(array: np.ndarray[Any, Any], request_id: str | None = None) -> bytes:
    """A binary request for a batch of windows/images: float32 or uint8, batch axis first."""
    array = np.asarray(array)
    codes = {dt: code for code, dt in TENSOR_DTYPES.items()}
    dtype = array.dtype.newbyteorder("<") if array.dtype.kind == "f" else array.dtype
    if dtype not in codes:
        raise ValueError(f"binary requests carry float32 or uint8, not {array.dtype}")
    if not 1 <= array.ndim <= MAX_RANK:
        raise ValueError(f"rank {array.ndim}: binary requests carry 1..{MAX_RANK} axes")
    rid = (request_id or "").encode("utf-8")
    head = _HEADER.pack(TENSOR_MAGIC, codes[dtype], array.ndim, len(rid))
    dims = struct.pack(f"<{array.ndim}I", *array.shape)
    return head + dims + rid + np.ascontiguousarray(array, dtype=dtype).tobytes()


def _decode_tensor(payload: bytes, max_instances: int) -> Request:
    if len(payload) < _HEADER.size:
        raise RequestError("bad_request", "binary request shorter than its header")
    _, code, rank, id_len = _HEADER.unpack_from(payload)
    if code not in TENSOR_DTYPES:
        raise RequestError("bad_type", f"binary dtype code {code}; known: 1 (float32), 2 (uint8)")
    if not 1 <= rank <= MAX_RANK:
        raise RequestError("bad_request", f"binary rank {rank}; allowed 1..{MAX_RANK}")
    offset = _HEADER.size + 4 * rank
    if len(payload) < offset + id_len:
        raise RequestError("bad_request", "binary request shorter than its header")
    dims = struct.unpack_from(f"<{rank}I", payload, _HEADER.size)
    try:
        rid = payload[offset : offset + id_len].decode("utf-8") or None
    except UnicodeDecodeError:
        raise RequestError("bad_encoding", "binary request id is not UTF-8") from None
    data = payload[offset + id_len :]
    dtype = TENSOR_DTYPES[code]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        raise RequestError(
            "bad_shape",
            f"binary data is {len(data)} bytes, shape {list(dims)} of {dtype.name} needs "
            f"{expected}",
            rid,
        )
    if dims[0] < 1 or dims[0] > max_instances:
        raise RequestError(
            "too_large" if dims[0] else "bad_request",
            f"{dims[0]} instances; allowed 1..{max_instances} per request",
            rid,
        )
    return Request(id=rid, instances=[], tensor=np.frombuffer(data, dtype=dtype).reshape(dims))


def _reject_constant(name: str) -> float:
    # json.loads accepts NaN/Infinity by default; they are not JSON.
    raise ValueError(f"{name} is not valid JSON")


# One decoder for every request: json.loads builds a new one per call when given options.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
FIELDS = frozenset(("id", "instances", "explain", "answer"))  # a request's members


def nesting_depth(payload: bytes) -> int:
    """How deep arrays and objects nest in a JSON text (brackets inside strings ignored).

    Cheap for ordinary requests: with at most ``MAX_DEPTH`` opening brackets in all, the
    depth cannot exceed the limit and nothing is scanned.
    """
    if payload.count(b"[") + payload.count(b"{") <= MAX_DEPTH:
        return 0
    steps = _STEP[np.frombuffer(_STRING.sub(b"", payload), dtype=np.uint8)]
    return int(np.cumsum(steps, dtype=np.int32).max(initial=0))


def peek_id(payload: bytes) -> str | int | None:
    """Best-effort id of a payload that is not strict JSON (e.g. has NaN), for the answer.

    Never raises: it runs on error paths, where a second failure would lose the answer.
    Of a payload too large or too deep to parse, only a leading ``"id"`` member is read.
    """
    try:
        if len(payload) > DEFAULT_MAX_PAYLOAD or nesting_depth(payload) > MAX_DEPTH:
            return _leading_id(payload)
        doc = json.loads(payload)
    except Exception:  # any parse failure (incl. RecursionError) only means: no id
        return None
    if isinstance(doc, dict):
        rid = doc.get("id")
        if isinstance(rid, (str, int)) and not isinstance(rid, bool):
            return rid
    return None


def _leading_id(payload: bytes) -> str | int | None:
    match = _LEADING_ID.match(payload)
    if match is None:
        return None
    try:
        value = json.loads(match.group(1))
    except ValueError:
        return None
    return value if isinstance(value, (str, int)) else None


def decode_request(
    payload: bytes,
    max_payload: int = DEFAULT_MAX_PAYLOAD,
    max_instances: int = DEFAULT_MAX_INSTANCES,
) -> Request:
    """Parse and check a request payload; raise RequestError with a code when it is bad."""
    if len(payload) > max_payload:
        raise RequestError(
            "too_large", f"payload is {len(payload)} bytes, the limit is {max_payload}"
        )
    if payload.startswith(TENSOR_MAGIC):
        return _decode_tensor(payload, max_instances)
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequestError("bad_encoding", f"payload is not UTF-8 ({exc.reason})") from None
    depth = nesting_depth(payload)
    if depth > MAX_DEPTH:
        raise RequestError(
            "bad_request",
            f"JSON nests {depth} levels deep; at most {MAX_DEPTH} are allowed",
            _leading_id(payload),
        )
    try:
        doc = _DECODER.decode(text)
    except (ValueError, RecursionError) as exc:
        raise RequestError("bad_json", f"payload is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise RequestError(
            "bad_request", f"payload must be a JSON object, got {type(doc).__name__}"
        )
    rid = doc.get("id")
    if rid is not None and (not isinstance(rid, (str, int)) or isinstance(rid, bool)):
        raise RequestError("bad_request", "field 'id' must be a string or an integer")
    if not FIELDS.issuperset(doc):
        unknown = sorted(set(doc) - FIELDS)
        allowed = "id, instances, explain, answer"
        raise RequestError("bad_request", f"unknown field(s) {unknown}; allowed: {allowed}", rid)
    explain = doc.get("explain", False)
    if not isinstance(explain, bool):
        raise RequestError("bad_request", "field 'explain' must be true or false", rid)
    form = doc.get("answer", "full")
    if form not in ("full", "compact"):
        raise RequestError("bad_request", 'field \'answer\' must be "full" or "compact"', rid)
    if form == "compact" and explain:
        raise RequestError("bad_request", "a compact answer carries no explanation", rid)
    instances = doc.get("instances")
    if not isinstance(instances, list) or not instances:
        raise RequestError("bad_request", "field 'instances' must be a non-empty list", rid)
    if len(instances) > max_instances:
        raise RequestError(
            "too_large",
            f"{len(instances)} instances, the limit is {max_instances} per request",
            rid,
        )
    return Request(id=rid, instances=instances, explain=explain, compact=form == "compact")


COMPACT_KEYS = ("label", "value", "is_anomaly", "cluster")


def compact(prediction: dict[str, Any]) -> Any:
    """A prediction as its label (classification), value (regression), anomaly flag or
    cluster only: the opt-in compact answer for high-rate streams."""
    return next((prediction[k] for k in COMPACT_KEYS if k in prediction), None)


# One encoder for every answer: json.dumps builds a new one per call when given options
# (a third of its time for an answer). Answers are trees built here, never circular.
_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False, check_circular=False)


def encode(doc: dict[str, Any]) -> bytes:
    """Compact JSON bytes for an answer."""
    return _ENCODER.encode(doc).encode("utf-8")


def error_doc(rid: str | int | None, code: str, message: str, model: str | None) -> dict[str, Any]:
    """The body published on the error topic."""
    return {"id": rid, "model": model, "code": code, "message": message}
