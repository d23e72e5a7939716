"""Keras -> TFLite / ONNX in every mode, each checked against Keras through the edge code."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgewise.converters.keras_convert import QUANTIZE_MODES
from edgewise.converters.keras_export import KerasExportOptions, export_keras, gate
from edgewise.converters.parity import ParityError
from edgewise.edge.errors import EdgewiseError
from edgewise.edge.runtime.bundle import load_bundle
from edgewise.edge.runtime.model import ServedModel

pytestmark = pytest.mark.slow  # trains and converts Keras networks

MODES = [(fmt, q) for fmt, modes in QUANTIZE_MODES.items() for q in modes]


@pytest.fixture(scope="module")
def float_sizes(tmp_path_factory: pytest.TempPathFactory, vibration_host: Any) -> dict[str, int]:
    sizes = {}
    for fmt in ("tflite", "onnx"):
        out = tmp_path_factory.mktemp("float") / fmt
        sizes[fmt] = export_keras(
            vibration_host, out, KerasExportOptions(fmt)
        ).manifest.model.size_bytes
    return sizes


@pytest.mark.parametrize(("fmt", "quantize"), MODES)
def test_every_mode_passes_its_gate_and_answers_like_keras(
    tmp_path: Path, vibration_host: Any, float_sizes: dict[str, int], fmt: str, quantize: str
) -> None:
    bundle = export_keras(vibration_host, tmp_path / "b", KerasExportOptions(fmt, quantize))
    m = bundle.manifest.to_dict()  # as the file on disk says
    parity = m["parity"]
    assert parity["passed"] and parity["rows"] == len(vibration_host.y_heldout)
    assert m["model"]["format"] == fmt and m["model"]["quantize"] == quantize
    assert m["input"]["shape"] == [None, 256, 3] and m["output"]["labels"] == [
        "bearing_fault",
        "imbalance",
        "misalignment",
        "normal",
    ]
    # Independent of the gate's own arithmetic: run the bundle as the device would.
    served = ServedModel.load(load_bundle(bundle.path))
    X = vibration_host.X_heldout
    ref = vibration_host.model.predict(X, verbose=0)
    got = np.array([list(p["probabilities"].values()) for p in served.predict_tensor(X)])
    labels = [p["label"] for p in served.predict(X[:5].tolist())]
    assert labels == [m["output"]["labels"][i] for i in got[:5].argmax(1)]
    y = vibration_host.y_heldout
    drop = (ref.argmax(1) == y).mean() - (got.argmax(1) == y).mean()
    assert drop * 100 <= 1.0
    assert parity["max_abs_diff"] == pytest.approx(np.abs(ref - got).max(), abs=1e-6)
    if quantize == "none":
        assert np.abs(ref - got).max() <= 1e-4 and parity["tolerance"] == 1e-4
    if quantize in ("float16", "dynamic") and fmt == "tflite":
        assert m["model"]["size_bytes"] < 0.75 * float_sizes[fmt]
    if fmt == "tflite" and quantize == "int8":
        q_in, q_out = m["input"]["quantization"], m["output"]["quantization"]
        assert q_in["dtype"] == q_out["dtype"] == "int8" and q_in["scale"] > 0
        assert q_out["scale"] == pytest.approx(1 / 256) and q_out["zero_point"] == -128
        assert m["model"]["calibration"]["samples"] == 200
        assert m["model"]["size_bytes"] < 0.75 * float_sizes[fmt]
        assert served.backend.input_dtypes[m["input"]["tensor_name"]] == "int8"
    else:
        assert "quantization" not in m["input"]


def test_int8_with_unrepresentative_calibration_is_refused(
    tmp_path: Path, digits_host: Any
) -> None:
    """A real failing conversion: calibration images at 2 % of their brightness give input
    and activation ranges far too narrow, so real images saturate the int8 model.

    (One real calibration image was enough to fail on one machine and not on another:
    the trained network differs slightly between CPUs.)
    """
    dim = dataclasses.replace(digits_host, X_calibration=digits_host.X_calibration * 0.02)
    out = tmp_path / "refused"
    options = KerasExportOptions("tflite", "int8", calibration_samples=8)
    with pytest.raises(ParityError, match=r"accuracy drops .* try quantize dynamic") as info:
        export_keras(dim, out, options)
    assert "or more calibration_samples" in str(info.value)  # the library names parameters
    assert "try --quantize dynamic or more --calibration-samples" in info.value.cli_message()
    assert not out.exists(), "a refused conversion writes nothing"


@pytest.mark.parametrize(
    ("options", "ref", "new", "diff", "message"),
    [
        (KerasExportOptions("tflite", "none"), 0.9, 0.9, 2e-4, "differ from Keras"),
        (KerasExportOptions("tflite", "int8"), 0.9, 0.88, 0.1, "try quantize dynamic"),
        (KerasExportOptions("tflite", "dynamic"), 0.9, 0.85, 0.1, "try quantize float16"),
        (KerasExportOptions("tflite", "float16"), 0.9, 0.85, 0.1, "try quantize none"),
        (KerasExportOptions("onnx", "int8", max_accuracy_drop=0), 0.9, 0.89, 0.1, "dynamic"),
        (KerasExportOptions("onnx", "dynamic", max_accuracy_drop=5), 0.9, 0.8, 0.1, "none"),
    ],
)
def test_gate_refuses(
    options: KerasExportOptions, ref: float, new: float, diff: float, message: str
) -> None:
    with pytest.raises(ParityError, match=message):
        gate(options, ref, new, diff)


@pytest.mark.parametrize(
    ("options", "ref", "new", "diff"),
    [
        (KerasExportOptions("tflite", "none"), 0.9, 0.9, 5e-5),
        (KerasExportOptions("tflite", "int8"), 0.9, 0.895, 0.2),  # 0.5 points
        (KerasExportOptions("onnx", "int8", max_accuracy_drop=3), 0.9, 0.875, 0.2),
        (KerasExportOptions("tflite", "dynamic"), 0.9, 0.95, 0.2),  # a gain is no loss
    ],
)
def test_gate_passes(options: KerasExportOptions, ref: float, new: float, diff: float) -> None:
    gate(options, ref, new, diff)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"format": "coreml"}, "use one of tflite, onnx"),
        ({"format": "onnx", "quantize": "float16"}, "not offered for onnx"),
        ({"quantize": "int4"}, "use one of none, float16, dynamic, int8"),
        ({"calibration_samples": 0}, "use 1 or more"),
        ({"max_accuracy_drop": -1}, "0..100 points"),
        ({"tolerance": 0}, "between 0 and 1"),
    ],
)
def test_options_are_validated_before_any_work(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(EdgewiseError, match=message):
        KerasExportOptions(**kwargs)
