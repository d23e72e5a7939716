"""Parity of every estimator x data set, ONNX Runtime against scikit-learn, and the gate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgewise.converters.host_model import load_host_model, save_host_model
from edgewise.converters.parity import ParityError
from edgewise.converters.sklearn_onnx import check_parity, convert_pipeline, export_sklearn
from edgewise.edge.runtime.bundle import load_bundle
from edgewise.edge.runtime.model import ServedModel
from edgewise.trainer.datasets import Dataset, load_builtin, load_csv
from edgewise.trainer.models import MODELS
from edgewise.trainer.train import train

CLASSIFICATION_SETS = ["iris", "wine", "digits", "rooms"]
REGRESSION_SETS = ["diabetes", "rooms-power"]


def _data(name: str, mixed_csv: Path) -> Dataset:
    if name == "rooms":
        return load_csv(mixed_csv, "status")
    if name == "rooms-power":
        return load_csv(mixed_csv, "power")
    return load_builtin(name)


CASES = [(m, d) for m in MODELS["classification"] for d in CLASSIFICATION_SETS] + [
    (m, d) for m in MODELS["regression"] for d in REGRESSION_SETS
]


@pytest.mark.parametrize(("model", "dataset"), CASES)
def test_bundle_answers_like_scikit_learn(
    model: str, dataset: str, mixed_csv: Path, tmp_path: Path
) -> None:
    data = _data(dataset, mixed_csv)
    host = train(data, model, "m", seed=0)
    bundle = export_sklearn(host, tmp_path / "b")
    parity = bundle.manifest.parity
    assert parity.passed and parity.rows == len(host.X_heldout)
    assert parity.served_by == "onnxruntime"
    # Independently of the gate: serve the bundle as the agent does and compare.
    served = ServedModel.load(load_bundle(bundle.path))
    rows = host.X_heldout.astype(object).where(host.X_heldout.notna(), None).to_numpy().tolist()
    preds = served.predict(rows)
    X = host.model_input(host.X_heldout)
    if data.task == "classification":
        assert [p["label"] for p in preds] == host.pipeline.predict(X).tolist()
        proba = np.array(
            [[p["probabilities"][str(c)] for c in host.pipeline.classes_] for p in preds]
        )
        assert np.max(np.abs(proba - host.pipeline.predict_proba(X))) <= 1e-4
        assert bundle.manifest.metrics["accuracy"] > 0.6
    else:
        values = np.array([p["value"] for p in preds])
        ref = host.pipeline.predict(X)
        assert np.all(np.abs(values - ref) <= 1e-4 * np.maximum(np.abs(ref), 1))


def test_gate_refuses_a_model_that_answers_differently(tmp_path: Path) -> None:
    data = load_builtin("breast_cancer")
    host = train(data, "gradient-boosting", "bc", seed=0)
    other = train(data, "gradient-boosting", "bc", seed=1).pipeline
    other.set_params(model__n_estimators=5).fit(host.model_input(data.X), data.y)
    wrong_graph = convert_pipeline(other, host.features, host.layout)
    with pytest.raises(
        ParityError, match=r"GradientBoostingClassifier: .*worst probability difference"
    ):
        check_parity(host, wrong_graph)


def test_regression_gate_names_estimator(tmp_path: Path) -> None:
    data = load_builtin("diabetes")
    host = train(data, "linear", "d", seed=0)
    shifted = train(data, "linear", "d", seed=0).pipeline
    shifted.steps[-1][1].intercept_ += 1.0
    with pytest.raises(ParityError, match="LinearRegression: worst relative difference"):
        check_parity(host, convert_pipeline(shifted, host.features, host.layout))


def test_host_model_round_trip_and_convert(tmp_path: Path, mixed_csv: Path) -> None:
    host = train(load_csv(mixed_csv, "status"), "random-forest", "rooms", seed=0)
    save_host_model(tmp_path / "rooms.host", host)
    loaded = load_host_model(tmp_path / "rooms.host" / "model.skops")
    assert loaded.X_heldout.shape == host.X_heldout.shape
    assert loaded.X_heldout["humidity"].isna().sum() == host.X_heldout["humidity"].isna().sum()
    bundle = export_sklearn(loaded, tmp_path / "rooms", version="2")
    assert bundle.version == "2" and bundle.layout == "columns"
    names = {f.name: f.onnx_input for f in bundle.features}
    assert names["temp c"] == "temp_c"  # skl2onnx sanitizes names; the manifest maps them
    assert bundle.manifest.training_data.sha256 == host.meta.training_data.sha256
    assert not list(bundle.path.glob("*.skops")) and not list(bundle.path.glob("*.pkl"))
