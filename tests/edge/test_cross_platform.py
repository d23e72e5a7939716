"""A device answers like the host: the prebuilt bundles' sample inputs, served here, give
the answers the host's runtimes gave (labels equal, numbers within tolerance).

Meaningful where this is another platform (scripts/test-device: other CPythons, aarch64
under qemu); on the host that built the bundles it checks run-to-run determinism.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from edgewise.edge.runtime.bundle import load_bundle
from edgewise.edge.runtime.model import ServedModel
from tests.bundles import NAMES, prebuilt
from tests.conftest import require_onnx

# float32 runtimes on different CPUs (x86 AVX vs ARM NEON) sum in different orders.
TOLERANCE = 1e-4


def numbers(prediction: dict[str, Any]) -> list[float]:
    values: list[float] = []
    for key in ("probabilities", "distances"):
        part = prediction.get(key)
        if isinstance(part, dict):
            values += list(part.values())
        elif isinstance(part, list):
            values += part
    for key in ("value", "score"):
        if key in prediction:
            values.append(prediction[key])
    return values


@pytest.mark.parametrize("name", NAMES)
def test_answers_like_the_host(name: str) -> None:
    path = prebuilt(name)
    if path is None:
        pytest.skip("needs prebuilt bundles with the host's answers ($EDGEWISE_TEST_BUNDLES)")
    if load_bundle(path).manifest.model.format == "onnx":
        require_onnx()
    expected = json.loads((path / "expected.json").read_text())
    got = ServedModel.load(load_bundle(path)).predict(expected["instances"])
    assert [p.get("label") for p in got] == [p.get("label") for p in expected["predictions"]]
    for mine, theirs in zip(got, expected["predictions"], strict=True):
        np.testing.assert_allclose(numbers(mine), numbers(theirs), atol=TOLERANCE)


@pytest.mark.parametrize("name", NAMES)
def test_selftest_passes_on_this_platform(name: str) -> None:
    """The check every agent runs at start: the host's answers, stored in the bundle."""
    from edgewise.edge.runtime.selftest import run_selftest

    path = prebuilt(name)
    if path is None:
        pytest.skip("needs prebuilt bundles ($EDGEWISE_TEST_BUNDLES)")
    if load_bundle(path).manifest.model.format == "onnx":
        require_onnx()
    report = run_selftest(ServedModel.load(load_bundle(path)))
    assert report is not None and report.passed
