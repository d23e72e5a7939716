"""Classical models on sensor windows, anomaly detection and clustering, end to end:
trained, converted (parity gate), and served over a real broker from raw windows."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgewise.converters.keras_export import KerasExportOptions, export_keras
from edgewise.converters.parity import ParityError
from edgewise.converters.sklearn_onnx import export_sklearn
from edgewise.deploy.broker import LocalBroker
from edgewise.edge.app import build_agent
from edgewise.edge.core.config import AgentConfig
from edgewise.edge.link.payload import encode_tensor_request
from edgewise.trainer.autoencoder import train_autoencoder
from edgewise.trainer.datasets import load_builtin
from edgewise.trainer.tensors import (
    TensorData,
    load_vibration,
    sample_rate_of,
    window_feature_dataset,
)
from edgewise.trainer.train import train
from tests.edgewise.test_cli import edgewise
from tests.mqtt_peer import Peer

pytestmark = pytest.mark.slow  # trains an autoencoder


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("unsupervised")
    windows = load_vibration(per_class=60, seed=1)
    data, spec = window_feature_dataset(windows, sample_rate_of(windows, None))
    out: dict[str, Any] = {"windows": windows}
    for name, model, options in [
        ("vib-rf", "random-forest", {}),
        ("vib-iforest", "isolation-forest", {"normal": "normal"}),
    ]:
        host = train(data, model, name, window_features=spec, **options)
        out[name] = (export_sklearn(host, root / name), host)
    host = train(load_builtin("iris"), "kmeans", "iris-km", params={"n_clusters": 3})
    out["iris-km"] = (export_sklearn(host, root / "iris-km"), host)
    rows = TensorData(
        data.X.to_numpy(dtype=np.float32), data.y, "tabular", list(data.X.columns), data.source
    )
    ae = train_autoencoder(rows, "vib-ae", normal="normal", epochs=40, window_features=spec)
    out["vib-ae"] = (export_keras(ae, root / "vib-ae", KerasExportOptions("tflite", "none")), ae)
    return out


@pytest.fixture(scope="module")
def served(
    broker: LocalBroker, bundles: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Peer, str]]:
    device = f"un-{uuid.uuid4().hex[:6]}"
    names = ("vib-rf", "vib-iforest", "iris-km", "vib-ae")
    paths = tuple(str(bundles[k][0].path) for k in names)
    # Module scope starts before the per-test XDG_STATE_HOME: name the state dir.
    state = str(tmp_path_factory.mktemp("state"))
    agent = build_agent(
        AgentConfig(bundles=paths, broker=broker.url, device=device, state_dir=state)
    )
    agent.start()
    assert agent.connection.wait_connected(10)
    peer = Peer(broker.port)
    peer.subscribe(f"edgewise/{device}/+/out", f"edgewise/{device}/+/error")
    yield peer, device
    peer.close()
    agent.stop(timeout=5)


def ask(peer: Peer, device: str, model: str, body: bytes | dict[str, Any]) -> Any:
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()
    peer.publish(f"edgewise/{device}/{model}/in", payload)
    return peer.expect_json("/out")["predictions"]


def test_window_features_model_serves_raw_windows(
    served: tuple[Peer, str], bundles: dict[str, Any]
) -> None:
    peer, device = served
    bundle, host = bundles["vib-rf"]
    manifest = bundle.manifest.to_dict()
    assert manifest["input"]["kind"] == "window"
    assert manifest["input"]["window_features"]["window"] == [256, 3]
    windows = bundles["windows"]
    test = np.arange(len(windows.y))[-40:]  # any windows: binary and JSON must agree
    binary = ask(peer, device, "vib-rf", encode_tensor_request(windows.X[test], "w"))
    as_json = ask(peer, device, "vib-rf", {"instances": windows.X[test[:3]].tolist()})
    assert [p["label"] for p in binary[:3]] == [p["label"] for p in as_json]
    host_labels = host.pipeline.predict(host.model_input(_features(windows.X[test], bundle)))
    assert [p["label"] for p in binary] == host_labels.tolist()


def _features(X: np.ndarray, bundle: Any) -> Any:
    import pandas as pd

    from edgewise.edge.runtime.features import window_features

    w = bundle.manifest.to_dict()["input"]["window_features"]
    names = [f["name"] for f in bundle.manifest.to_dict()["input"]["features"]]
    return pd.DataFrame(window_features(X, w["sample_rate"], w["bands"]), columns=names)


def test_anomaly_trained_on_normal_flags_faults(
    served: tuple[Peer, str], bundles: dict[str, Any]
) -> None:
    peer, device = served
    bundle, host = bundles["vib-iforest"]
    out = bundle.manifest.to_dict()["output"]
    assert (
        bundle.manifest.to_dict()["task"] == "anomaly"
        and out["threshold"] == host.meta.alarm_threshold
    )
    fresh = load_vibration(per_class=25, seed=99)  # windows the model never saw
    preds = ask(peer, device, "vib-iforest", encode_tensor_request(fresh.X, "a"))
    flagged = np.array([p["is_anomaly"] for p in preds])
    scores = np.array([p["score"] for p in preds])
    assert np.array_equal(flagged, scores > out["threshold"])
    host_scores = -host.pipeline.decision_function(
        host.model_input(_features(fresh.X, bundle))
    )  # fmt: skip
    np.testing.assert_allclose(scores, host_scores, atol=1e-4)
    fault = fresh.y != "normal"
    recall, false_alarms = flagged[fault].mean(), flagged[~fault].mean()
    print(f"\nanomaly on 100 unseen windows: recall {recall:.2f}, false alarms {false_alarms:.2f}")
    assert recall >= 0.9 and false_alarms <= 0.2


def test_autoencoder_scores_raw_windows_like_keras(
    served: tuple[Peer, str], bundles: dict[str, Any]
) -> None:
    peer, device = served
    bundle, host = bundles["vib-ae"]
    out = bundle.manifest.to_dict()["output"]
    assert (
        bundle.manifest.to_dict()["task"] == "anomaly"
        and bundle.manifest.to_dict()["model"]["format"] == "tflite"
    )
    fresh = load_vibration(per_class=25, seed=99)
    preds = ask(peer, device, "vib-ae", encode_tensor_request(fresh.X, "ae"))
    scores = np.array([p["score"] for p in preds])
    keras_scores = host.model.predict(
        _features(fresh.X, bundle).to_numpy(dtype=np.float32), verbose=0
    ).reshape(-1)
    np.testing.assert_allclose(scores, keras_scores, rtol=1e-4, atol=1e-5)
    flagged = np.array([p["is_anomaly"] for p in preds])
    assert np.array_equal(flagged, scores > out["threshold"])
    fault = fresh.y != "normal"
    recall, false_alarms = flagged[fault].mean(), flagged[~fault].mean()
    print(
        f"\nautoencoder on 100 unseen windows: recall {recall:.2f}, false alarms {false_alarms:.2f}"
    )
    assert recall >= 0.9 and false_alarms <= 0.2


def test_autoencoder_int8_is_refused_when_alarms_change(
    tmp_path: Path, bundles: dict[str, Any]
) -> None:
    """A real refused conversion: the score is a small difference of large values, and
    int8 activations move it across the threshold for many rows."""
    _, host = bundles["vib-ae"]
    with pytest.raises(ParityError, match="alarm agreement drops"):
        export_keras(host, tmp_path / "ae-int8", KerasExportOptions("tflite", "int8"))
    assert not (tmp_path / "ae-int8").exists()


def test_kmeans_answers_cluster_and_distances(
    served: tuple[Peer, str], bundles: dict[str, Any]
) -> None:
    peer, device = served
    bundle, host = bundles["iris-km"]
    rows = host.X_heldout.to_numpy(dtype=np.float32)[:10]
    preds = ask(peer, device, "iris-km", {"instances": rows.tolist()})
    assert [p["cluster"] for p in preds] == host.pipeline.predict(rows).tolist()
    np.testing.assert_allclose(
        [p["distances"] for p in preds], host.pipeline.transform(rows), atol=1e-4
    )
    assert bundle.manifest.to_dict()["output"]["clusters"] == 3
    assert {"inertia", "silhouette", "adjusted_rand"} <= set(bundle.manifest.to_dict()["metrics"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "isolation-forest", "--normal", "sane"], "not a label"),
        (["--model", "random-forest", "--normal", "normal"], "--normal goes with an anomaly"),
        (["--model", "kmeans", "--clusters", "0"], "--clusters 0"),
        (["--model", "isolation-forest", "--contamination", "0.7"], "contamination 0.7"),
    ],
)
def test_bad_unsupervised_options(tmp_path: Path, args: list[str], message: str) -> None:
    result = edgewise("train", "--dataset", "vibration", "--out", str(tmp_path / "x"), *args)
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0 and len(lines) == 1 and message in lines[0], result.stderr
