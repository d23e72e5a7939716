"""Explanations on the device: exact linear contributions checked against scikit-learn's
own decision function, occlusion for every other model and task, ``"explain": true`` over
MQTT."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from edgewise.converters.keras_export import export_keras
from edgewise.converters.sklearn_onnx import device_instances, export_sklearn
from edgewise.deploy.broker import LocalBroker
from edgewise.edge.app import build_agent
from edgewise.edge.core.config import AgentConfig
from edgewise.edge.runtime.bundle import load_bundle
from edgewise.edge.runtime.model import ServedModel
from edgewise.trainer.datasets import load_builtin, load_csv
from edgewise.trainer.deep import train_deep
from edgewise.trainer.tensors import from_tabular
from edgewise.trainer.train import train
from tests.mqtt_peer import Peer


def served(tmp_path: Path, dataset: str, model: str) -> tuple[ServedModel, object]:
    host = train(load_builtin(dataset), model, f"{dataset}-{model}")
    bundle = export_sklearn(host, tmp_path / f"{dataset}-{model}")
    return ServedModel.load(load_bundle(bundle.path)), host


@pytest.mark.parametrize(
    ("dataset", "model"),
    [("iris", "logistic-regression"), ("breast_cancer", "logistic-regression"),
     ("diabetes", "linear")],
)  # fmt: skip
def test_linear_contributions_add_up_to_the_decision(
    tmp_path: Path, dataset: str, model: str
) -> None:
    """base + sum of all contributions == scikit-learn's decision for the predicted class."""
    edge, host = served(tmp_path, dataset, model)
    X = np.array(host.X_heldout.to_numpy(dtype=np.float32)[:20])  # type: ignore[attr-defined]
    X[0, 1] = np.nan  # a missing value is imputed as in training
    preds = edge.predict([[None if np.isnan(v) else float(v) for v in row] for row in X], True)
    pipeline = host.pipeline  # type: ignore[attr-defined]
    decision = np.asarray(pipeline.decision_function(X) if dataset != "diabetes"
                          else pipeline.predict(X))  # fmt: skip
    classes = list(getattr(pipeline, "classes_", []))
    for i, pred in enumerate(preds):
        why = edge.explainer.explain(X[i : i + 1], [pred], top=None)[0]  # type: ignore[union-attr]
        total = why["base"] + sum(t["contribution"] for t in why["top"])
        if dataset == "diabetes":
            expected = decision[i]
        elif decision.ndim == 1:  # binary: the score of class 1
            expected = decision[i] if classes.index(pred["label"]) == 1 else -decision[i]
        else:
            expected = decision[i, classes.index(pred["label"])]
        assert total == pytest.approx(expected, rel=1e-4, abs=1e-3)
        top = pred["explanation"]["top"]
        assert len(top) == 3 and top == why["top"][:3]
        magnitudes = [abs(t["contribution"]) for t in top]
        assert magnitudes == sorted(magnitudes, reverse=True)


def one_informative(n: int = 600, seed: int = 0, category: bool = False) -> pd.DataFrame:
    """Five noise columns and one that decides the label (a string one with ``category``)."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({f"noise{i}": rng.normal(size=n) for i in range(5)})
    signal = rng.normal(size=n)
    df.insert(3, "signal", np.where(signal > 0, "hot", "cold") if category else signal)
    df["label"] = np.where(signal > 0, "yes", "no")
    return df


@pytest.mark.parametrize(
    ("model", "category"),
    [("mlp", False), ("mlp", True), ("random-forest", False), ("svm", False),
     ("hist-gradient-boosting", True)],
)  # fmt: skip
def test_occlusion_finds_the_informative_feature(
    tmp_path: Path, model: str, category: bool
) -> None:
    """Networks, trees, neighbours and models with categorical columns: per prediction,
    the top attributed feature is the one the label depends on."""
    path = tmp_path / "one.csv"
    one_informative(category=category).to_csv(path, index=False)
    data = load_csv(path, "label")
    if model == "mlp":
        host = train_deep(from_tabular(data), "mlp", "one", epochs=40)
        bundle = export_keras(host, tmp_path / "b")
        rows = host.client_inputs
        rows = rows.tolist() if isinstance(rows, np.ndarray) else rows
    else:
        sk = train(data, model, "one")
        bundle = export_sklearn(sk, tmp_path / "b")
        rows = device_instances(sk)
    edge = ServedModel.load(load_bundle(bundle.path))
    assert edge.info()["explain"] == "occlusion"
    preds = edge.predict(rows[:40], explain=True)
    signal = list(data.X.columns).index("signal")
    confident = [p for p, r in zip(preds, rows) if category or abs(r[signal]) > 0.5]
    assert len(confident) >= 20
    for pred in confident:
        why = pred["explanation"]
        # Five quantiles per number, two categories for the string: runs averaged over.
        assert why["method"] == "occlusion" and why["evaluations"] == 30 - 3 * category
        assert why["top"][0]["feature"] == "signal", why
        assert why["top"][0]["contribution"] > 0  # occluding it lowers the predicted class


@pytest.mark.parametrize(
    ("dataset", "model", "target"),
    [("diabetes", "random-forest", "value"), ("iris", "isolation-forest", "score"),
     ("iris", "kmeans", "closeness to the cluster"), ("wine", "svm", "probability of")],
)  # fmt: skip
def test_every_task_explains(tmp_path: Path, dataset: str, model: str, target: str) -> None:
    edge, host = served(tmp_path, dataset, model)
    rows = device_instances(host)  # type: ignore[arg-type]
    preds = edge.predict(rows[:5], explain=True, top=None)
    n = len(edge.features)
    for pred in preds:
        why = pred["explanation"]
        assert why["method"] == "occlusion" and why["target"].startswith(target)
        assert n <= why["evaluations"] <= 64 and len(why["top"]) == n
        assert {t["feature"] for t in why["top"]} == {f.name for f in edge.features}


@pytest.mark.parametrize(
    ("bundle", "groups", "first"),
    [("digits_bundle", 16, "rows "), ("vibration_int8_bundle", 24, "")],
)
def test_windows_and_images_are_explained_by_region(
    request: pytest.FixtureRequest, bundle: str, groups: int, first: str
) -> None:
    """Images by a grid of regions, windows by channel x time segment, within the budget."""
    edge = ServedModel.load(load_bundle(request.getfixturevalue(bundle)))
    shape = edge.instance_shape or ()
    rng = np.random.default_rng(0)
    batch = rng.uniform(0, 1, size=(2, *shape)).astype(np.float32).tolist()
    preds = edge.predict(batch, explain=True, top=None)
    for pred in preds:
        why = pred["explanation"]
        assert why["evaluations"] == groups <= 64 and len(why["top"]) == groups
        assert all(t["feature"].startswith(first) for t in why["top"])
        assert all("value" not in t for t in why["top"])


def test_explain_over_mqtt_and_unsupported_model(
    tmp_path: Path, broker: LocalBroker, rooms_bundle: Path
) -> None:
    edge, _ = served(tmp_path, "iris", "logistic-regression")
    device = f"ex-{uuid.uuid4().hex[:6]}"
    config = AgentConfig(
        bundles=(str(edge.bundle.path), str(rooms_bundle)), broker=broker.url, device=device
    )
    agent = build_agent(config)
    agent.start()
    peer = Peer(broker.port)
    try:
        assert agent.connection.wait_connected(10)
        peer.subscribe(f"edgewise/{device}/+/out", f"edgewise/{device}/+/error")
        row = [5.1, 3.5, 1.4, 0.2]
        peer.request(
            f"edgewise/{device}/{edge.name}/in", {"id": 1, "instances": [row], "explain": True}
        )
        [pred] = peer.expect_json("/out")["predictions"]
        assert pred["label"] == "setosa" and pred["explanation"]["method"] == "linear"
        assert {t["feature"] for t in pred["explanation"]["top"]} <= set(
            f.name for f in edge.features
        )
        peer.request(f"edgewise/{device}/{edge.name}/in", {"id": 2, "instances": [row]})
        assert "explanation" not in peer.expect_json("/out")["predictions"][0]
        peer.request(
            f"edgewise/{device}/{edge.name}/in", {"id": 3, "instances": [row], "explain": 1}
        )
        assert peer.expect_json("/error")["code"] == "bad_request"
        # The rooms model has categorical columns: explained by occlusion.
        rooms = json.loads((rooms_bundle / "manifest.json").read_text())["name"]
        instance = {"temp c": 21.0, "zone": "attic", "humidity": None, "power": 70.0}
        peer.request(
            f"edgewise/{device}/{rooms}/in", {"id": 4, "instances": [instance], "explain": True}
        )
        why = peer.expect_json("/out")["predictions"][0]["explanation"]
        assert why["method"] == "occlusion" and why["evaluations"] == 19  # 3 x 5 + 4 zones
        values = {t["feature"]: t.get("value") for t in why["top"]}
        assert values.get("zone", "attic") == "attic" and values.get("humidity") is None
    finally:
        peer.close()
        agent.stop(timeout=5)
