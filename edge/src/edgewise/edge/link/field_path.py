"""Field paths into sensor payloads: ``BME280.Temperature``, ``values[2]``, ``a.b[0].c``.

A stream (``edge.streams``) names where each feature's value sits in what a sensor
publishes. A path is dot-separated keys, each optionally followed by ``[index]`` list
indexes; a key holding a dot or a bracket is quoted: ``"sensor.temp"[0]``. The empty path
means the whole payload (an ESPHome state topic: ``612``). Paths are parsed once, when the
config is validated; reading a value never raises anything but ``SampleError``.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from edgewise.edge.errors import EdgewiseError

MAX_PATH = 256  # characters: a path is a config value, not data
_STEP = re.compile(r'\s*(?:"((?:[^"\\]|\\.)*)"|([^.\[\]"]+))((?:\[-?\d+\])*)\s*')
_INDEX = re.compile(r"\[(-?\d+)\]")


class SampleError(Exception):
    """A sample without a usable value; ``reason`` is the counted key (health)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class FieldPath:
    """A parsed path: keys (str) and list indexes (int), in order."""

    text: str
    steps: tuple[str | int, ...]

    @classmethod
    def parse(cls, text: str) -> FieldPath:
        """Parse ``text``; an EdgewiseError says what is wrong with it."""
        if not isinstance(text, str) or len(text) > MAX_PATH or not text.isprintable():
            raise EdgewiseError(f"field path {text!r}: a printable string of at most {MAX_PATH}")
        if text.strip() == "":
            return cls(text, ())
        steps: list[str | int] = []
        for i, part in enumerate(_split_dots(text)):
            m = _STEP.fullmatch(part)
            if m is None:
                raise EdgewiseError(
                    f"field path {text!r}: cannot read step {i + 1} ({part!r}); write keys "
                    'separated by dots, list indexes as [n], quote keys with dots: "a.b"'
                )
            quoted, bare, indexes = m.groups()
            steps.append(bare.strip() if bare is not None else _unescape(quoted))
            steps += [int(n) for n in _INDEX.findall(indexes)]
        return cls(text, tuple(steps))

    def read(self, doc: Any) -> Any:
        """The value at this path in a decoded payload (SampleError ``missing``)."""
        value = doc
        for step in self.steps:
            try:
                if isinstance(step, int):
                    if not isinstance(value, list):
                        raise TypeError
                    value = value[step]
                else:
                    if not isinstance(value, dict):
                        raise TypeError
                    value = value[step]
            except (KeyError, IndexError, TypeError):
                raise SampleError("missing", f"no value at {self.text!r}") from None
        return value


def _split_dots(text: str) -> list[str]:
    """Split on dots outside quotes."""
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for ch in text:
        if escaped:
            escaped = False
        elif ch == "\\" and quoted:
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == "." and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(ch)
    parts.append("".join(current))
    return parts


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def decode_payload(payload: bytes) -> Any:
    """A sensor payload: JSON when it parses, else the plain text (``ON``, ``21.5``)."""
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise SampleError("bad_payload", "the payload is not UTF-8") from None
    try:
        return json.loads(text)
    except RecursionError:  # nested deeper than the parser goes: no sensor sends that
        raise SampleError("bad_payload", "JSON nested too deeply") from None
    except ValueError:
        return text.strip()


def as_number(value: Any) -> float:
    """A finite number from a JSON number or a numeric string (SampleError otherwise)."""
    if isinstance(value, bool):
        raise SampleError("not_a_number", f"{value!r} is a boolean, not a number")
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise SampleError("not_a_number", f"{value[:40]!r} is not a number") from None
    else:
        raise SampleError("not_a_number", f"a {type(value).__name__} is not a number")
    if not math.isfinite(number):
        raise SampleError("not_finite", f"{value!r} is not finite")
    return number
