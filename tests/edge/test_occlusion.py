"""Occlusion's pure logic (groups, budget, averaging) and the one-hot encoding of rows.

The real models are in test_explain.py; here a linear fake model shows the arithmetic.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from edgewise.edge.runtime.manifest import Feature, Marginal, OcclusionExplain
from edgewise.edge.runtime.occlusion import (
    Occlusion,
    image_groups,
    row_groups,
    target,
    window_groups,
)
from edgewise.edge.runtime.one_hot import OneHotRows


@pytest.mark.parametrize(
    ("shape", "budget", "count", "first"),
    [((100, 3), 64, 24, "x[0:12]"), ((100, 3), 3, 3, "x[0:100]"), ((100, 5), 2, 2, "x..y")],
)
def test_window_groups_stay_within_the_budget(
    shape: tuple[int, int], budget: int, count: int, first: str
) -> None:
    groups = window_groups(shape, ["x", "y", "z", "u", "v"][: shape[1]], budget)
    assert len(groups) == count <= budget and groups[0].name == first


def test_image_and_row_groups() -> None:
    assert [g.name for g in image_groups((8, 8, 1), 64)][:2] == ["rows 0-1, cols 0-1",
                                                                  "rows 0-1, cols 2-3"]  # fmt: skip
    assert len(image_groups((8, 8, 1), 4)) == 4
    assert [g.name for g in row_groups(["a", "b", "c", "d"], 2)] == ["a..b", "c..d"]


def linear(weights: np.ndarray) -> Any:
    """A fake regressor: value = rows @ weights (pure logic only)."""
    return lambda m: [{"value": float(v)} for v in np.asarray(m, float) @ weights]


def test_contribution_is_the_answer_minus_its_expectation() -> None:
    spec = OcclusionExplain(baseline=(Marginal(values=(0.0, 2.0), shares=(0.5, 0.5)), 10.0, -1.0))
    occ = Occlusion(spec, "rows", (3,), ["a", "b", "c"])
    weights = np.array([1.0, 0.5, 3.0])
    rows = np.array([[4.0, 10.0, 1.0]], np.float32)
    [pred] = linear(weights)(rows)
    [why] = occ.explain(rows, [pred], linear(weights), top=None)
    got = {t["feature"]: t["contribution"] for t in why["top"]}
    # a: 1 * (4 - mean(0, 2)); b at its baseline: 0; c: 3 * (1 - (-1)).
    assert got == pytest.approx({"a": 3.0, "b": 0.0, "c": 6.0})
    assert why["evaluations"] == 4 and why["top"][0]["feature"] == "c"


def test_over_the_budget_one_value_per_feature() -> None:
    spec = OcclusionExplain(
        baseline=(Marginal(values=(0.0, 2.0), shares=(0.5, 0.5)), 10.0), max_evaluations=2
    )
    [why] = Occlusion(spec, "rows", (2,), ["a", "b"]).explain(
        np.array([[4.0, 0.0]]), [{"value": 4.0}], linear(np.array([1.0, 1.0])), top=None
    )
    assert why["evaluations"] == 2
    assert {t["feature"]: t["contribution"] for t in why["top"]} == {"a": 3.0, "b": -10.0}


def test_label_only_and_cluster_targets() -> None:
    assert target({"label": "a"}, {"label": "a"}) == 1.0
    assert target({"label": "b"}, {"label": "a"}) == 0.0
    assert target({"distances": [3.0, 1.0]}, {"cluster": 1}) == -1.0


def test_baseline_must_fit_the_input() -> None:
    with pytest.raises(Exception, match="baseline has 1 values"):
        Occlusion(OcclusionExplain(baseline=(1.0,)), "window", (10, 2), ["x", "y"])
    with pytest.raises(ValueError, match="summing to 1"):
        Marginal(values=(1.0, 2.0), shares=(0.5, 0.2))


def test_one_hot_rows() -> None:
    enc = OneHotRows(
        [Feature(name="t", dtype="float32", nullable=True),
         Feature(name="zone", dtype="string", nullable=True, categories=("", "attic", "north"))]
    )  # fmt: skip
    out = enc.encode([[1.5, "north"], [None, ""], [2.0, "cellar"]])
    assert enc.width == 4 and enc.columns(1) == slice(1, 4)
    np.testing.assert_array_equal(
        out, np.array([[1.5, 0, 0, 1], [np.nan, 1, 0, 0], [2.0, 0, 0, 0]], np.float32)
    )


def test_manifest_checks_the_encoded_width() -> None:
    from edgewise.edge.runtime.manifest import InputSpec

    features = (
        Feature(name="t", dtype="float32", nullable=True),
        Feature(name="zone", dtype="string", nullable=True, categories=("a", "b")),
    )
    InputSpec(layout="tensor", tensor_name="x", shape=(None, 3), features=features)
    with pytest.raises(ValueError, match="encode to 3 columns"):
        InputSpec(layout="tensor", tensor_name="x", shape=(None, 2), features=features)
    bare = (features[0], Feature(name="zone", dtype="string", nullable=True), features[1])
    with pytest.raises(ValueError, match="missing for"):
        InputSpec(layout="tensor", tensor_name="x", shape=(None, 4), features=bare)
