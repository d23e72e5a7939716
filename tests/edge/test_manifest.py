"""The typed manifest: round trips, one schema, clear errors, the head chosen by task."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from edgewise.edge.runtime.bundle import load_bundle
from edgewise.edge.runtime.manifest import (
    HEADS,
    ClassificationHead,
    Manifest,
    ManifestError,
    json_schema,
)

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT / "edge/src/edgewise/edge/runtime/schemas/manifest-v1.schema.json"


def _raw(bundle: Path) -> dict[str, Any]:
    return dict(json.loads((bundle / "manifest.json").read_text()))


def test_schema_file_is_generated_from_the_classes() -> None:
    """One source of truth: `python -m edgewise.edge.runtime.manifest > .../schemas/...`
    rewrites it."""
    assert json.loads(SCHEMA.read_text()) == json_schema()
    switch = {c["if"]["properties"]["task"]["const"] for c in json_schema()["allOf"]}
    assert switch == set(HEADS)
    docs = (ROOT / "docs/bundle.md").read_text()
    assert SCHEMA.name in docs
    assert set(json_schema()["required"]) <= set(docs.split("`"))


@pytest.mark.parametrize("fixture", ["iris_bundle", "rooms_bundle", "vibration_int8_bundle"])
def test_written_manifests_round_trip(fixture: str, request: pytest.FixtureRequest) -> None:
    path: Path = request.getfixturevalue(fixture)
    text = (path / "manifest.json").read_text()
    manifest = Manifest.from_json(text)
    assert json.loads(manifest.to_json()) == json.loads(text)
    assert load_bundle(path).manifest == manifest


def test_the_head_follows_the_task(iris_bundle: Path) -> None:
    manifest = Manifest.from_json((iris_bundle / "manifest.json").read_text())
    assert isinstance(manifest.output, ClassificationHead)
    assert manifest.labels == ("setosa", "versicolor", "virginica")
    raw = _raw(iris_bundle) | {"task": "regression"}
    with pytest.raises(ManifestError, match=r"output \(regression\): value_output: Field required"):
        Manifest.from_dict(raw)


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("surprise",), 1, "surprise: Extra inputs are not permitted"),
        (("name",), "a/b", "name: String should match pattern"),
        (("task",), "ranking", "task: Input should be 'classification'"),
        (("version",), 1, "version: Input should be a valid string"),
        (("model", "size_bytes"), "12", "model.size_bytes: Input should be a valid integer"),
        (("model", "sha256"), "ABC", "model.sha256: String should match pattern"),
        (("model", "format"), "tflite", "model.format tflite does not match model.onnx"),
        (("input", "features", 0, "nullable"), 1, "input.features.0.nullable: .*valid boolean"),
        (("input", "layout"), "columns", "a columns layout needs onnx_input"),
        (("output", "labels"), ["one"], r"output \(classification\): labels: .*at least 2 items"),
        (("output", "label_output"), None, None),  # probabilities alone are enough
        (("parity", "rows"), 0, "parity.rows: Input should be greater than or equal to 1"),
    ],
)
def test_a_bad_field_is_named(
    iris_bundle: Path, path: tuple[Any, ...], value: Any, message: str | None
) -> None:
    raw = _raw(iris_bundle)
    node: Any = raw
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    text = json.dumps(raw)
    if message is None:
        assert Manifest.from_json(text).output.label_output is None  # type: ignore[union-attr]
        return
    with pytest.raises(ManifestError, match=message):
        Manifest.from_json(text)


def test_a_classification_head_needs_an_output() -> None:
    with pytest.raises(ValueError, match="needs label_output or probabilities_output"):
        ClassificationHead(labels=("a", "b"))
