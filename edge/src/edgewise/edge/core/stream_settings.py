"""``[[streams]]``: the user's own sensors bound to a model (edge.streams, docs/streams.md).

A stream says where samples come from (``source``: MQTT topics on the agent's broker, a
local program's standard output, a serial port, a camera), where each feature or channel
sits in a sample (``[streams.features]``: a topic and a field path, a CSV column, or a
constant), how samples become instances (``assemble``: rows, windows, images) and when a
prediction runs. Validated with the rest of the config: unknown keys are refused, and
each error is one line naming the stream and the key.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edgewise.edge.errors import EdgewiseError
from edgewise.edge.link.field_path import FieldPath
from edgewise.edge.link.topics import check_segment

Positive = Annotated[float, Field(gt=0, le=86400 * 365, allow_inf_nan=False)]
MAX_FEATURES = 4096


class Binding(BaseModel):
    """Where one feature (rows) or channel (windows) comes from in a sample.

    ``topic`` + ``field`` (MQTT; ``field`` empty: the whole payload), ``field`` alone
    (a JSON line of a program or serial port), ``column`` (a CSV line, from 0), or
    ``value`` (a constant: what the sensors do not measure, e.g. the room's zone).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    topic: str | None = None
    field: str = ""
    column: int | None = Field(None, ge=0, le=MAX_FEATURES)
    value: float | int | str | None = None

    @field_validator("field")
    @classmethod
    def _field(cls, value: str) -> str:
        try:
            FieldPath.parse(value)
        except EdgewiseError as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("topic")
    @classmethod
    def _topic(cls, value: str | None) -> str | None:
        if value is not None:
            check_filter(value)
        return value

    @field_validator("value")
    @classmethod
    def _value(cls, value: float | int | str | None) -> float | int | str | None:
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError("a constant must be finite")
        return value

    @property
    def path(self) -> FieldPath:
        return FieldPath.parse(self.field)

    @property
    def constant(self) -> bool:
        return self.value is not None


def check_filter(value: str) -> str:
    """A topic filter a stream subscribes to: MQTT's wildcard rules, printable."""
    if not value or not value.isprintable() or len(value.encode()) > 65535:
        raise ValueError(f"topic {value!r}: a printable topic filter of at most 65535 bytes")
    levels = value.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            raise ValueError(f"topic {value!r}: '#' must be a whole last level")
        if "+" in level and level != "+":
            raise ValueError(f"topic {value!r}: '+' must be a whole level")
    return value


class StreamSettings(BaseModel):
    """One ``[[streams]]`` table."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    name: str
    model: str
    source: Literal["mqtt", "program", "serial", "camera"] = "mqtt"
    assemble: Literal["rows", "windows", "images"] = "rows"
    features: dict[str, Binding] = Field(default_factory=dict)
    # Rows: when a prediction runs, and how old a value may be.
    trigger: Literal["update", "topic", "interval"] = "update"
    trigger_topic: str | None = None
    interval: Positive | None = None
    max_age: Positive = 300.0
    # Windows: samples between window starts (default: the window length), the longest
    # gap between samples inside one window, and where a sample's time is (seconds).
    window: int | None = Field(None, ge=2, le=10_000_000)  # checked against the model's
    stride: int | None = Field(None, ge=1, le=10_000_000)
    max_gap: Positive = 1.0
    timestamp: str | None = None
    # Images: at most this many frames per second.
    fps: Positive = 1.0
    # Programs, serial ports and cameras.
    command: tuple[Annotated[str, Field(min_length=1)], ...] = ()
    cwd: str | None = None
    format: Literal["json", "csv"] = "json"
    port: str | None = None
    baud: int = Field(115200, ge=50, le=10_000_000)
    camera: str | None = None
    # What is published: every prediction, or only when the answer changes.
    publish: Literal["every", "change"] = "every"
    # Classifiers: the labels that are normal; any other label is an anomaly (HA's
    # binary sensor). Anomaly models say it themselves.
    normal: tuple[str, ...] = ()
    queue: int = Field(1000, ge=1, le=1_000_000)  # samples waiting; beyond it the oldest go

    @field_validator("command", "normal", mode="before")
    @classmethod
    def _tuple(cls, value: object) -> object:
        return tuple(value) if isinstance(value, list) else value

    @field_validator("name", "model")
    @classmethod
    def _segment(cls, value: str) -> str:
        try:
            return check_segment("name", value)
        except EdgewiseError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("trigger_topic")
    @classmethod
    def _trigger_topic(cls, value: str | None) -> str | None:
        return check_filter(value) if value is not None else None

    @field_validator("timestamp")
    @classmethod
    def _timestamp(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                FieldPath.parse(value)
            except EdgewiseError as exc:
                raise ValueError(str(exc)) from None
        return value

    @model_validator(mode="after")
    def _consistent(self) -> StreamSettings:
        src, bound = self.source, self.features.items()
        if self.assemble != "images" and not self.features:
            raise ValueError("features: bind at least one feature or channel")
        if len(self.features) > MAX_FEATURES:
            raise ValueError(f"features: at most {MAX_FEATURES}")
        for name, b in bound:
            where = f"features.{name}"
            given = [k for k in ("topic", "column", "value") if getattr(b, k) is not None]
            if len(given) > 1:
                raise ValueError(f"{where}: give one of topic, column, value (got {given})")
            if src == "mqtt" and b.topic is None and not b.constant:
                raise ValueError(f"{where}: an mqtt stream needs topic (or value) per feature")
            if src != "mqtt" and b.topic is not None:
                raise ValueError(f"{where}: topic belongs to mqtt streams (source = {src})")
            if b.column is not None and self.format != "csv":
                raise ValueError(f"{where}: column needs format = 'csv'")
            csv_line = self.format == "csv" and src in ("program", "serial")
            if csv_line and not b.constant and b.column is None:
                raise ValueError(f"{where}: a csv stream needs column per feature")
        if self.assemble == "windows":
            if any(b.constant for b in self.features.values()):
                raise ValueError("features: a window's channels are measured, not constants")
            if src == "mqtt" and len({b.topic for b in self.features.values()}) != 1:
                raise ValueError("features: a window's channels come from one topic")
        if self.window is not None and self.assemble != "windows":
            raise ValueError(f"window belongs to windows (assemble = {self.assemble})")
        if self.trigger == "topic" and self.trigger_topic is None:
            raise ValueError("trigger = 'topic' needs trigger_topic")
        if self.trigger == "interval" and self.interval is None:
            raise ValueError("trigger = 'interval' needs interval (seconds)")
        if self.trigger != "update" and self.assemble != "rows":
            raise ValueError(f"trigger belongs to rows (assemble = {self.assemble})")
        if self.trigger == "topic" and src != "mqtt":
            raise ValueError("trigger = 'topic' needs source = 'mqtt'")
        needs = {"program": "command", "serial": "port", "camera": "camera"}.get(src)
        if needs is not None and not getattr(self, needs):
            raise ValueError(f"source = {src!r} needs {needs}")
        if (src == "camera") != (self.assemble == "images"):
            raise ValueError("a camera makes images, and images come from a camera")
        return self

    @property
    def topics(self) -> list[str]:
        """The MQTT filters this stream subscribes to (samples and trigger)."""
        found = [b.topic for b in self.features.values() if b.topic is not None]
        if self.trigger_topic is not None:
            found.append(self.trigger_topic)
        return list(dict.fromkeys(found))


def check_streams(streams: tuple[StreamSettings, ...]) -> None:
    """Names unique across streams."""
    names = [s.name for s in streams]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"streams: names must be unique ({twice} twice)")
