"""Deep training: transfer learning from a saved base, the MLP's missing values and
categorical columns (served over MQTT), errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from edgewise.converters.keras_export import KerasExportOptions, export_keras
from edgewise.converters.keras_host import save_keras_host_model
from edgewise.deploy.broker import LocalBroker
from edgewise.edge.errors import EdgewiseError
from edgewise.edge.runtime.model import ServedModel
from edgewise.trainer.datasets import load_csv
from edgewise.trainer.deep import train_deep
from edgewise.trainer.tensors import TensorData, load_digits_images, load_vibration
from tests.agents import answers_peer, new_device, serving
from tests.bundles import make_mixed_frame

pytestmark = pytest.mark.slow  # trains Keras networks


def _digits(classes: list[int]) -> TensorData:
    data = load_digits_images()
    return data.subset(np.flatnonzero(np.isin(data.y, classes)))


@pytest.fixture(scope="module")
def base_0_4(tmp_path_factory: pytest.TempPathFactory) -> Path:
    host = train_deep(_digits([0, 1, 2, 3, 4]), "cnn2d", "base", epochs=30)
    assert host.meta.metrics["accuracy"] > 0.9
    return save_keras_host_model(tmp_path_factory.mktemp("base") / "b", host) / "model.keras"


def _weights(model: Any, names: list[str]) -> list[np.ndarray]:
    return [w for n in names for w in model.get_layer(n).get_weights()]


@pytest.mark.parametrize("freeze", [True, False])
def test_transfer_keeps_the_base_and_learns_new_classes(base_0_4: Path, freeze: bool) -> None:
    import keras

    base = keras.models.load_model(base_0_4)
    convs = [layer.name for layer in base.layers if "conv" in layer.name]
    new = _digits([5, 6, 7, 8, 9])
    host = train_deep(
        new, "cnn2d", "tl", base=str(base_0_4), freeze_base=freeze, per_class=10, epochs=60
    )
    scratch = train_deep(new, "cnn2d", "scratch", per_class=10, epochs=60)
    assert host.labels == [5, 6, 7, 8, 9] and host.meta.training_data.train_rows == 50
    assert host.model.get_layer("head").units == 5
    unchanged = all(
        np.array_equal(a, b) for a, b in zip(_weights(base, convs), _weights(host.model, convs))
    )
    assert unchanged == freeze  # frozen: the base's filters are reused as they are
    acc, acc_scratch = host.meta.metrics["accuracy"], scratch.meta.metrics["accuracy"]
    print(f"freeze={freeze}: transfer {acc:.3f} vs scratch {acc_scratch:.3f} (10 per class)")
    # Measured (closing note): on 8x8 digits, a base trained on 0-4 does not beat training
    # from scratch on 5-9; the test holds transfer to "learns the new classes", not to a win.
    assert acc > 0.75


def test_base_must_take_the_same_input(base_0_4: Path) -> None:
    with pytest.raises(EdgewiseError, match=r"takes inputs of shape \(8, 8, 1\)"):
        train_deep(load_vibration(per_class=5), "cnn1d", "x", base=str(base_0_4), epochs=1)


@pytest.mark.parametrize(
    ("model", "message"),
    [("cnn2d", "cnn2d takes image data"), ("resnet", "unknown deep model")],
)
def test_model_and_data_must_match(model: str, message: str) -> None:
    with pytest.raises(EdgewiseError, match=message):
        train_deep(load_vibration(per_class=5), model, "x", epochs=1)


def test_mlp_fills_missing_values_on_the_device(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n = 300
    df = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(5, 2, size=n)})
    df["label"] = np.where(df["a"] + (df["b"] - 5) / 2 > 0, "high", "low")
    df.loc[rng.random(n) < 0.1, "b"] = np.nan
    df.to_csv(tmp_path / "t.csv", index=False)
    from edgewise.trainer.tensors import from_tabular

    host = train_deep(from_tabular(load_csv(tmp_path / "t.csv", "label")), "mlp", "t", epochs=30)
    assert host.meta.metrics["accuracy"] > 0.85
    bundle = export_keras(host, tmp_path / "bundle")
    impute = bundle.manifest.to_dict()["input"]["impute"]
    assert len(impute) == 2 and abs(impute[1] - 5) < 0.5
    served = ServedModel.load(bundle)
    with_null = served.predict([{"a": 0.3, "b": None}, [0.3, None]])
    filled = served.predict([[0.3, impute[1]]])
    assert with_null[0] == with_null[1] == filled[0]


@pytest.fixture(scope="module")
def rooms_mlp(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """An MLP on the mixed rooms table (a categorical zone with missing values)."""
    from edgewise.trainer.tensors import from_tabular

    path = tmp_path_factory.mktemp("rooms") / "rooms.csv"
    make_mixed_frame().to_csv(path, index=False)
    return train_deep(from_tabular(load_csv(path, "status")), "mlp", "rooms-mlp", epochs=40)


@pytest.mark.parametrize("fmt", ["tflite", "onnx"])
def test_mlp_on_a_mixed_table_is_served_with_strings_and_nulls(
    tmp_path: Path, broker: LocalBroker, rooms_mlp: Any, fmt: str
) -> None:
    host = rooms_mlp
    assert host.meta.metrics["accuracy"] > 0.85
    bundle = export_keras(host, tmp_path / fmt, KerasExportOptions(fmt, "none"))
    spec = bundle.manifest.input
    assert bundle.manifest.parity.passed and bundle.manifest.parity.label_agreement == 1.0
    zone = next(f for f in spec.features if f.name == "zone")
    assert zone.categories == ("", "attic", "north", "south")  # missing is its own category
    assert spec.shape == (None, 7) and spec.impute is not None
    instances = [
        {"temp c": 27.0, "zone": "attic", "humidity": None, "power": 96.0},
        {"temp c": 17.5, "zone": None, "humidity": 40.0, "power": 52.0},
        {"temp c": 21.0, "zone": "basement", "humidity": None, "power": 63.0},  # unseen zone
    ]
    device = new_device("mixed")
    with serving(broker, [bundle.path], device), answers_peer(broker, device) as peer:
        peer.request(f"edgewise/{device}/rooms-mlp/in", {"id": 1, "instances": instances})
        answers = peer.expect_json("/out")["predictions"]
    # What Keras answers for the same rows encoded by hand: one-hot zone (an unseen value
    # is all zeros), a missing humidity as the training mean.
    hum = spec.impute[5]
    encoded = np.array(
        [[27.0, 0, 1, 0, 0, hum, 96.0], [17.5, 1, 0, 0, 0, 40.0, 52.0],
         [21.0, 0, 0, 0, 0, hum, 63.0]], np.float32,
    )  # fmt: skip
    expected = host.model.predict(encoded, verbose=0)
    got = np.array([[a["probabilities"][str(c)] for c in host.labels] for a in answers])
    np.testing.assert_allclose(got, expected, atol=1e-4)
    assert [a["label"] for a in answers] == [host.labels[k] for k in expected.argmax(1)]
    assert answers[0]["label"] == "alarm" and answers[1]["label"] == "ok"


@pytest.fixture(scope="module")
def breast_cancer_mlp() -> Any:
    """An MLP on breast_cancer: columns from about 0.001 to 4,000 before standardization."""
    from edgewise.trainer.datasets import load_builtin
    from edgewise.trainer.tensors import from_tabular

    return train_deep(from_tabular(load_builtin("breast_cancer")), "mlp", "bc-mlp", epochs=60)


@pytest.mark.parametrize("fmt", ["tflite", "onnx"])
@pytest.mark.parametrize("table", ["rooms", "breast_cancer"])
def test_int8_mlp_on_a_table_keeps_its_accuracy_over_mqtt(
    tmp_path: Path, broker: LocalBroker, request: pytest.FixtureRequest, table: str, fmt: str
) -> None:
    """int8 with the standardization done by the agent (input.scaling): within 2 points of
    the float network, measured on the answers a real agent gives over MQTT. Kept in the
    graph, breast_cancer's raw columns share one int8 scale and the MLP fell to 0.63."""
    host = request.getfixturevalue("rooms_mlp" if table == "rooms" else "breast_cancer_mlp")
    float_acc = host.meta.metrics["accuracy"]
    bundle = export_keras(host, tmp_path / fmt, KerasExportOptions(fmt, "int8"))
    spec, parity = bundle.manifest.input, bundle.manifest.parity
    if table == "breast_cancer":  # the gate's choice: the in-graph variant collapses
        assert spec.scaling is not None
    if spec.scaling is not None:
        assert "standardized by the agent (input.scaling)" in (
            bundle.manifest.preprocessing.outside_graph
        )
        assert len(spec.scaling.scale) == spec.shape[1]  # type: ignore[index]
    inputs = host.client_inputs
    rows = inputs.tolist() if isinstance(inputs, np.ndarray) else list(inputs)
    device = new_device("int8")
    labels: list[Any] = []
    with serving(broker, [bundle.path], device), answers_peer(broker, device) as peer:
        for start in range(0, len(rows), 32):
            peer.request(
                f"edgewise/{device}/{bundle.manifest.name}/in",
                {"id": start, "instances": rows[start : start + 32]},
            )
            labels += [a["label"] for a in peer.expect_json("/out")["predictions"]]
    truth = [host.labels[k] for k in host.y_heldout]
    device_acc = float(np.mean([a == b for a, b in zip(labels, truth, strict=True)]))
    print(f"{table} {fmt} int8: float {float_acc:.4f}, on the device {device_acc:.4f}")
    assert device_acc >= float_acc - 0.02
    assert device_acc == pytest.approx(parity.accuracy_converted)
