"""The host model's meta.json: typed, round-tripped, and a bad one named in one line."""

from __future__ import annotations

import json

import pytest

from edgewise.converters.host_meta import HostFeature, HostMeta
from edgewise.edge.errors import EdgewiseError
from edgewise.edge.runtime.manifest import TrainingData

META = HostMeta(
    name="rooms",
    task="classification",
    model="random-forest",
    layout="columns",
    features=(
        HostFeature(name="temp c", dtype="float32"),
        HostFeature(name="zone", dtype="string"),
    ),
    metrics={"accuracy": 0.9},
    training_data=TrainingData(source="csv:rooms.csv", sha256="0" * 64, rows=10),
)


def test_round_trip() -> None:
    assert HostMeta.from_json(META.to_json(), "m") == META


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"surprise": 1}, "m: meta.json does not match: surprise: Extra inputs"),
        ({"task": "ranking"}, "task: Input should be"),
        ({"features": [{"name": "a", "dtype": "int"}]}, "features.0.dtype"),
    ],
)
def test_a_bad_meta_is_one_line(change: dict[str, object], message: str) -> None:
    raw = json.loads(META.to_json()) | change
    with pytest.raises(EdgewiseError, match=message):
        HostMeta.from_json(json.dumps(raw), "m")


def test_an_anomaly_model_needs_its_threshold() -> None:
    with pytest.raises(EdgewiseError, match="without a threshold"):
        _ = META.model_copy(update={"task": "anomaly"}).alarm_threshold
