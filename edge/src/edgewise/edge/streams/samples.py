"""Reading bound values out of one sample: an MQTT payload, a JSON line, a CSV line.

Every problem is a ``SampleError`` with a reason that health counts per stream
(``missing``, ``not_a_number``, ``not_finite``, ``not_a_string``, ``bad_payload``,
``bad_line``, ``too_large``); nothing else is raised.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from edgewise.edge.core.stream_settings import Binding, StreamSettings
from edgewise.edge.link.field_path import FieldPath, SampleError, as_number

MAX_LINE = 65536  # bytes of one line from a program or serial port


@dataclass(frozen=True)
class Bound:
    """One bound feature: its name, where it is read, and what it must be."""

    name: str
    binding: Binding
    path: FieldPath
    string: bool  # a string feature (else a number)

    def convert(self, raw: Any) -> Any:
        if not self.string:
            return as_number(raw)
        if isinstance(raw, str):
            return raw
        if isinstance(raw, int) and not isinstance(raw, bool):
            return str(raw)  # a zone number where the model learnt strings
        raise SampleError("not_a_string", f"{self.name}: a {type(raw).__name__}, not a string")


def parse_line(line: bytes, fmt: str) -> Any:
    """A JSON object or the fields of a CSV line."""
    if len(line) > MAX_LINE:
        raise SampleError("too_large", f"a line of more than {MAX_LINE} bytes")
    try:
        text = line.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise SampleError("bad_line", "the line is not UTF-8") from None
    if fmt == "csv":
        return next(csv.reader([text]), [])
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):
        raise SampleError("bad_line", f"not JSON: {text[:40]!r}") from None
    if not isinstance(doc, dict):
        raise SampleError("bad_line", "a JSON line must be an object")
    return doc


def read_field(bound: Bound, sample: Any) -> Any:
    """The converted value of ``bound`` in a parsed sample (JSON document or CSV fields)."""
    if bound.binding.column is not None:
        if not isinstance(sample, list) or bound.binding.column >= len(sample):
            raise SampleError("missing", f"{bound.name}: no column {bound.binding.column}")
        return bound.convert(sample[bound.binding.column])
    return bound.convert(bound.path.read(sample))


def read_time(path: FieldPath | None, sample: Any, arrival: float) -> float:
    """A sample's time in seconds: its own (a field, or a CSV column given as its number),
    or its arrival time."""
    if path is None:
        return arrival
    if isinstance(sample, list):
        step = path.steps[0] if len(path.steps) == 1 else None
        if not isinstance(step, str) or not step.isdigit() or int(step) >= len(sample):
            raise SampleError("missing", f"no timestamp column {path.text!r}")
        return as_number(sample[int(step)])
    return as_number(path.read(sample))


class Sink(Protocol):
    """What a source feeds: a running stream (``edge.streams.stream``), or ``record``."""

    name: str
    settings: StreamSettings
    source: dict[str, Any]  # what health says of the source

    def on_line(self, line: bytes, now: float) -> None: ...
    def on_frame(self, frame: np.ndarray[Any, Any], now: float) -> None: ...
    def bad_sample(self, reason: str, message: str) -> None: ...
