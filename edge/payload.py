"""The JSON envelope of requests and answers on the MQTT topics (docs/mqtt.md)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from edge.errors import RequestError

DEFAULT_MAX_PAYLOAD = 1 << 20  # 1 MiB
DEFAULT_MAX_INSTANCES = 1024


@dataclass(frozen=True)
class Request:
    """A decoded request: its id (echoed in the answer) and its instances."""

    id: str | int | None
    instances: list[Any]


def _reject_constant(name: str) -> float:
    # json.loads accepts NaN/Infinity by default; they are not JSON.
    raise ValueError(f"{name} is not valid JSON")


def peek_id(payload: bytes) -> str | int | None:
    """Best-effort id of a payload that is not strict JSON (e.g. has NaN), for the answer."""
    try:
        doc = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    if isinstance(doc, dict):
        rid = doc.get("id")
        if isinstance(rid, (str, int)) and not isinstance(rid, bool):
            return rid
    return None


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
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequestError("bad_encoding", f"payload is not UTF-8 ({exc.reason})") from None
    try:
        doc = json.loads(text, parse_constant=_reject_constant)
    except ValueError as exc:
        raise RequestError("bad_json", f"payload is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise RequestError(
            "bad_request", f"payload must be a JSON object, got {type(doc).__name__}"
        )
    rid = doc.get("id")
    if rid is not None and (not isinstance(rid, (str, int)) or isinstance(rid, bool)):
        raise RequestError("bad_request", "field 'id' must be a string or an integer")
    unknown = sorted(set(doc) - {"id", "instances"})
    if unknown:
        raise RequestError(
            "bad_request", f"unknown field(s) {unknown}; allowed: id, instances", rid
        )
    instances = doc.get("instances")
    if not isinstance(instances, list) or not instances:
        raise RequestError("bad_request", "field 'instances' must be a non-empty list", rid)
    if len(instances) > max_instances:
        raise RequestError(
            "too_large",
            f"{len(instances)} instances, the limit is {max_instances} per request",
            rid,
        )
    return Request(id=rid, instances=instances)


def encode(doc: dict[str, Any]) -> bytes:
    """Compact JSON bytes for an answer."""
    return json.dumps(doc, separators=(",", ":"), allow_nan=False).encode("utf-8")


def error_doc(rid: str | int | None, code: str, message: str, model: str | None) -> dict[str, Any]:
    """The body published on the error topic."""
    return {"id": rid, "model": model, "code": code, "message": message}
