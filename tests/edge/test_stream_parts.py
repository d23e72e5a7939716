"""The pure parts of streams: field paths, settings refusals, rows, windows, frames, lines."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from edgewise.edge.core.config import AgentConfig
from edgewise.edge.errors import EdgewiseError
from edgewise.edge.link.field_path import FieldPath, SampleError, as_number, decode_payload
from edgewise.edge.streams.assembly import Frames, Rows, Windows, resize
from edgewise.edge.streams.sources import Lines

TASMOTA = {"Time": "2026-12-05T10:00:00", "BME280": {"Temperature": 22.1, "Humidity": 45.2}}


@pytest.mark.parametrize(
    ("path", "doc", "value"),
    [
        ("BME280.Temperature", TASMOTA, 22.1),
        ("", 612, 612),
        ("values[2]", {"values": [1, 2, 3]}, 3),
        ("a.b[0].c", {"a": {"b": [{"c": "x"}]}}, "x"),
        ("m[-1][0]", {"m": [[1], [2]]}, 2),
        ('"sensor.temp"', {"sensor.temp": 5}, 5),
        (' "a\\"b" ', {'a"b': 1}, 1),
    ],
)
def test_field_paths_read_nested_values(path: str, doc: Any, value: Any) -> None:
    assert FieldPath.parse(path).read(doc) == value


@pytest.mark.parametrize("path", ["a[", "a..b", "[0]", "a]b", 'a"b', "x" * 300, "a\nb"])
def test_unreadable_field_paths_are_refused(path: str) -> None:
    with pytest.raises(EdgewiseError, match="field path"):
        FieldPath.parse(path)


@pytest.mark.parametrize(
    ("path", "doc"),
    [("a.b", {"a": 1}), ("a[3]", {"a": [1]}), ("a", [1]), ("a[0]", {"a": {"0": 1}})],
)
def test_a_missing_value_is_a_sample_error(path: str, doc: Any) -> None:
    with pytest.raises(SampleError) as exc:
        FieldPath.parse(path).read(doc)
    assert exc.value.reason == "missing"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [("abc", "not_a_number"), (True, "not_a_number"), (float("nan"), "not_finite"),
     ("inf", "not_finite"), (None, "not_a_number"), ([1], "not_a_number")],
)  # fmt: skip
def test_numbers_must_be_finite_numbers(raw: Any, reason: str) -> None:
    with pytest.raises(SampleError) as exc:
        as_number(raw)
    assert exc.value.reason == reason


def test_payloads_are_json_or_plain_text() -> None:
    assert decode_payload(b"21.5") == 21.5
    assert decode_payload(b' {"a": 1} ') == {"a": 1}
    assert decode_payload(b"ON\n") == "ON"
    with pytest.raises(SampleError):
        decode_payload(b"\xff\xfe")
    with pytest.raises(SampleError) as exc:
        decode_payload(b"[" * 100_000 + b"]" * 100_000)  # deeper than the parser goes
    assert exc.value.reason == "bad_payload"


def _stream(**keys: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"name": "s", "model": "m", "features": {"a": {"topic": "t/a"}}}
    return base | keys


@pytest.mark.parametrize(
    ("stream", "message"),
    [
        (_stream(bogus=1), "unknown key \"streams['s'].bogus\""),
        (_stream(features={"a": {"topic": "t", "colour": 1}}), "streams['s'].features.a.colour"),
        (_stream(features={"a": {"topic": "t/#/x"}}), "'#' must be a whole last level"),
        (_stream(features={"a": {"topic": "t", "field": "x["}}), "streams['s'].features.a.field"),
        (_stream(features={"a": {}}), "needs topic (or value)"),
        (_stream(features={"a": {"topic": "t", "value": 1}}), "give one of topic, column, value"),
        (_stream(trigger="topic"), "needs trigger_topic"),
        (_stream(trigger="interval"), "needs interval"),
        (_stream(source="program"), "topic belongs to mqtt streams"),
        (_stream(source="program", features={"a": {"field": "a"}}), "needs command"),
        (_stream(source="program", command=["p"], format="csv", features={"a": {}}),
         "needs column"),
        (_stream(assemble="windows", features={"a": {"topic": "x"}, "b": {"topic": "y"}}),
         "from one topic"),
        (_stream(max_age=float("nan")), "max_age"),
        (_stream(name="a/b"), "streams['a/b'].name"),
        (_stream(source="camera", assemble="images", features={}), "needs camera"),
        (_stream(assemble="images", features={}), "images come from a camera"),
    ],
)  # fmt: skip
def test_stream_settings_are_refused_in_one_line(stream: dict[str, Any], message: str) -> None:
    with pytest.raises(EdgewiseError) as exc:
        AgentConfig(device="d", streams=[stream])
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_stream_names_are_unique() -> None:
    with pytest.raises(EdgewiseError, match="names must be unique"):
        AgentConfig(device="d", streams=[_stream(), _stream()])


def test_rows_wait_for_every_feature_and_refuse_stale_ones() -> None:
    rows = Rows(["a", "zone", "b"], {"zone": "north"}, max_age=10.0)
    rows.update("a", 1.0, now=0.0)
    assert rows.assemble(1.0) == (None, "waiting")
    rows.update("b", 2.0, now=5.0)
    assert rows.assemble(6.0) == ([1.0, "north", 2.0], None)
    assert rows.assemble(10.5) == (None, "stale")  # a is 10.5 s old
    rows.update("a", 3.0, now=11.0)
    assert rows.assemble(11.0) == ([3.0, "north", 2.0], None)


@pytest.mark.parametrize(("stride", "expected_starts"), [(4, [0, 4, 8]), (2, [0, 2, 4, 6, 8]),
                                                          (6, [0, 6])])  # fmt: skip
def test_windows_follow_the_stride(stride: int, expected_starts: list[int]) -> None:
    w = Windows(length=4, channels=2, stride=stride, max_gap=1.0)
    out = []
    for i in range(12):
        out += w.push([i, -i], t=i * 0.01)
    assert [int(x[0, 0]) for x in out] == expected_starts
    assert all(x.shape == (4, 2) and x.dtype == np.float32 for x in out)
    assert np.array_equal(out[0][:, 1], [0, -1, -2, -3])


def test_a_gap_starts_a_new_window() -> None:
    w = Windows(length=3, channels=1, stride=3, max_gap=0.5)
    out = []
    for i, t in enumerate([0.0, 0.1, 1.0, 1.1, 1.2, 1.3, 0.2, 0.3, 0.4]):  # a gap, a jump back
        out += w.push([i], t)
    assert [x[:, 0].tolist() for x in out] == [[2, 3, 4], [6, 7, 8]]
    assert w.gaps == 2


def test_frames_keep_at_most_fps() -> None:
    frames = Frames(fps=2.0)
    kept = [t for t in np.arange(1000.0, 1005.0, 0.1) if frames.due(float(t))]
    assert 9 <= len(kept) <= 11


def test_resize_is_nearest_neighbour() -> None:
    frame = np.arange(16, dtype=np.uint8).reshape(4, 4, 1)
    assert resize(frame, 2, 2)[..., 0].tolist() == [[0, 2], [8, 10]]


def test_lines_are_split_and_bounded() -> None:
    got: list[bytes] = []
    long: list[int] = []
    lines = Lines(got.append, lambda: long.append(1))
    lines.feed(b"a,1\nb,")
    lines.feed(b"2\n\n")
    lines.feed(b"x" * 70000)
    lines.feed(b"yyy\nc,3\n")
    assert got == [b"a,1", b"b,2", b"c,3"] and long == [1]
