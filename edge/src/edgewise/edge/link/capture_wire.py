"""Capture pulls on the wire: what the device answers and the operator checks
(``edge.observe.field_data`` answers, ``edge.remote.capture_client`` pulls). No MQTT, no store."""

from __future__ import annotations

import hashlib
import json
from typing import Any

CHUNK_BYTES = 192 << 10  # rows per pull answer: well under brokers' usual message limits
MAX_ROWS = 5000
MAX_REQUEST = 1024  # bytes of a capture request
# The last columns of a pulled CSV; the trainer drops the first four when it trains on one.
CAPTURE_COLUMNS = ("predicted", "confidence", "captured_at", "reason", "label")


def rows_digest(rows: list[dict[str, Any]]) -> str:
    """The sha256 both sides compute over a pull answer's rows."""
    text = json.dumps(rows, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()
