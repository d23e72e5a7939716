"""Every bundle carries a self-test that the device runs before serving it."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from edgewise.edge.runtime.bundle import load_bundle
from edgewise.edge.runtime.loader import load_models
from edgewise.edge.runtime.model import ServedModel
from edgewise.edge.runtime.selftest import SelfTestFailed, compare, run_selftest


@pytest.mark.parametrize("fixture", ["iris_bundle", "rooms_bundle", "vibration_int8_bundle"])
def test_bundles_pass_their_own_selftest(fixture: str, request: pytest.FixtureRequest) -> None:
    path: Path = request.getfixturevalue(fixture)
    model = ServedModel.load(load_bundle(path))
    report = run_selftest(model)
    assert report is not None and report.passed and report.count >= 20
    assert report.worst_diff <= model.bundle.manifest.selftest.tolerance  # type: ignore[union-attr]


def _rewrite(bundle: Path, change: Any, **spec: Any) -> None:
    """A self-test whose expectations differ (as a runtime that computes differently would
    see them), with the manifest's hash updated so that only the comparison can fail."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    test = bundle / manifest["selftest"]["file"]
    doc = json.loads(test.read_text())
    change(doc)
    test.write_text(json.dumps(doc))
    manifest["selftest"] |= {"sha256": hashlib.sha256(test.read_bytes()).hexdigest(), **spec}
    (bundle / "manifest.json").write_text(json.dumps(manifest))


def _wrong_label(doc: dict[str, Any]) -> None:
    first = doc["expected"][0]
    others = [k for k in first["probabilities"] if k != str(first["label"])]
    first["label"] = others[0]
    first["probabilities"] = dict.fromkeys(first["probabilities"], 0.0) | {others[0]: 1.0}


@pytest.mark.parametrize(
    ("change", "spec", "message"),
    [
        (_wrong_label, {}, r"1 of \d+ answers differ from the host's"),
        (lambda doc: None, {"p99_budget_ms": 1e-6}, "exceeds the budget of 1e-06 ms"),
        (lambda doc: doc["instances"].pop(), {}, "self-test file selftest.json is unusable"),
    ],
)
def test_a_failed_selftest_refuses_the_bundle(
    iris_bundle: Path, tmp_path: Path, change: Any, spec: dict[str, Any], message: str
) -> None:
    bundle = Path(shutil.copytree(iris_bundle, tmp_path / "b"))
    _rewrite(bundle, change, **spec)
    with pytest.raises(SelfTestFailed, match=message):
        load_models([str(bundle)])


@pytest.mark.parametrize(
    ("expected", "got", "agrees"),
    [
        ({"label": "a", "probabilities": {"a": 0.9, "b": 0.1}},
         {"label": "a", "probabilities": {"a": 0.90004, "b": 0.09996}}, True),
        ({"label": "a", "probabilities": {"a": 0.9, "b": 0.1}},
         {"label": "a", "probabilities": {"a": 0.8, "b": 0.2}}, False),
        # a near-tie may flip between runtimes: the label alone does not fail it
        ({"label": "a", "probabilities": {"a": 0.50002, "b": 0.49998}},
         {"label": "b", "probabilities": {"a": 0.49999, "b": 0.50001}}, True),
        ({"value": 1000.0}, {"value": 1000.05}, True),
        ({"value": 1000.0}, {"value": 1001.0}, False),
        ({"cluster": 1, "distances": [2.0, 1.0]}, {"cluster": 0, "distances": [1.0, 2.0]}, False),
    ],
)  # fmt: skip
def test_compare(expected: dict[str, Any], got: dict[str, Any], agrees: bool) -> None:
    assert (compare(expected, got, 1e-4) is not None) is agrees
