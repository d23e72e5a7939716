"""Explanations on the device: exact linear contributions checked against scikit-learn's
own decision function, global importances for trees, and ``"explain": true`` over MQTT."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np
import pytest

from edgewise.converters.sklearn_onnx import export_sklearn
from edgewise.deploy.broker import LocalBroker
from edgewise.edge.agent import Agent
from edgewise.edge.bundle import load_bundle
from edgewise.edge.config import AgentConfig
from edgewise.edge.model import ServedModel
from edgewise.trainer.datasets import load_builtin
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


def test_trees_give_their_global_importance(tmp_path: Path) -> None:
    edge, host = served(tmp_path, "wine", "random-forest")
    [pred] = edge.predict([host.X_heldout.iloc[0].tolist()], explain=True)  # type: ignore[attr-defined]
    est = host.pipeline.named_steps["model"]  # type: ignore[attr-defined]
    order = np.argsort(-est.feature_importances_)[:3]
    names = list(host.X_heldout.columns)  # type: ignore[attr-defined]
    assert pred["explanation"]["method"] == "global"
    assert [t["feature"] for t in pred["explanation"]["top"]] == [names[j] for j in order]


def test_explain_over_mqtt_and_unsupported_model(
    tmp_path: Path, broker: LocalBroker, rooms_bundle: Path
) -> None:
    edge, _ = served(tmp_path, "iris", "logistic-regression")
    device = f"ex-{uuid.uuid4().hex[:6]}"
    config = AgentConfig(
        bundles=(str(edge.bundle.path), str(rooms_bundle)), broker=broker.url, device=device
    )
    agent = Agent(config)
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
        # The rooms model has categorical columns: no explanation, a clear error.
        rooms = json.loads((rooms_bundle / "manifest.json").read_text())["name"]
        instance = {"temp c": 21.0, "zone": "attic", "humidity": 40.0, "power": 70.0}
        peer.request(
            f"edgewise/{device}/{rooms}/in", {"id": 4, "instances": [instance], "explain": True}
        )
        error = peer.expect_json("/error")
        assert error["id"] == 4 and error["code"] == "unsupported"
    finally:
        peer.close()
        agent.stop(timeout=5)
