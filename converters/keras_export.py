"""A trained Keras host model -> a checked TFLite or ONNX bundle.

``export_keras`` validates its options before any work, converts, then runs the converted
file through the same code the device runs (edge backend + ``ServedModel``, including
int8 quantize/dequantize) on the held-out data, and compares with Keras:

- float formats (``--quantize none``) must agree within ``tolerance`` (max abs difference
  of the probabilities, 1e-4 by default);
- every format must not lose more than ``max_accuracy_drop`` points of accuracy; a failed
  gate names the drop and the next mode to try. Nothing is written when a gate fails.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from converters.bundle_writer import library_versions, write_bundle
from converters.keras_convert import QUANTIZE_MODES, onnx_io, tflite_io, to_onnx, to_tflite
from converters.keras_host import KerasHostModel
from converters.parity import DEFAULT_TOLERANCE, ParityError
from edge.bundle import Bundle
from edge.errors import EdgewiseError
from edge.model import ServedModel
from edge.topics import check_segment

log = logging.getLogger(__name__)

DEFAULT_MAX_ACCURACY_DROP = 1.0  # points of accuracy (percent)
DEFAULT_CALIBRATION_SAMPLES = 200
# What to try when a mode loses too much: the next less aggressive one.
NEXT_MODE = {
    ("tflite", "int8"): "--quantize dynamic (int8 weights, float activations)",
    ("tflite", "dynamic"): "--quantize float16",
    ("tflite", "float16"): "--quantize none",
    ("onnx", "int8"): "--quantize dynamic",
    ("onnx", "dynamic"): "--quantize none",
}


@dataclass(frozen=True)
class KerasExportOptions:
    """Validated options of a Keras conversion (checked before any work is done)."""

    format: str = "tflite"
    quantize: str = "none"
    calibration_samples: int = DEFAULT_CALIBRATION_SAMPLES
    max_accuracy_drop: float = DEFAULT_MAX_ACCURACY_DROP
    tolerance: float = DEFAULT_TOLERANCE

    def __post_init__(self) -> None:
        if self.format not in QUANTIZE_MODES:
            raise EdgewiseError(f"--format {self.format!r}: use one of {', '.join(QUANTIZE_MODES)}")
        modes = QUANTIZE_MODES[self.format]
        if self.quantize not in modes:
            raise EdgewiseError(
                f"--quantize {self.quantize!r} is not offered for {self.format}; "
                f"use one of {', '.join(modes)}"
            )
        if self.calibration_samples < 1:
            raise EdgewiseError(f"--calibration-samples {self.calibration_samples}: use 1 or more")
        if not 0 <= self.max_accuracy_drop <= 100:
            raise EdgewiseError(f"--max-accuracy-drop {self.max_accuracy_drop}: use 0..100 points")
        if not 0 < self.tolerance < 1:
            raise EdgewiseError(f"--tolerance {self.tolerance!r} must be between 0 and 1")


def gate(
    options: KerasExportOptions,
    accuracy_ref: float,
    accuracy_new: float,
    max_abs_diff: float,
    metric: str = "accuracy",
) -> None:
    """Raise ParityError when the converted model is not close enough (pure logic).

    ``metric`` names what the accuracies measure (detectors: alarm agreement with Keras).
    """
    mode = f"{options.format} --quantize {options.quantize}"
    outputs = "probabilities" if metric == "accuracy" else "scores"
    if options.quantize == "none" and max_abs_diff > options.tolerance:
        raise ParityError(
            f"{mode}: {outputs} differ from Keras by up to {max_abs_diff:.3g} "
            f"(limit {options.tolerance:g}); the float conversion is wrong"
        )
    drop = (accuracy_ref - accuracy_new) * 100
    if drop > options.max_accuracy_drop:
        hint = NEXT_MODE.get((options.format, options.quantize), "a float format")
        more = " or more --calibration-samples" if options.quantize == "int8" else ""
        raise ParityError(
            f"{mode}: {metric} drops {drop:.2f} points ({accuracy_ref:.4f} -> "
            f"{accuracy_new:.4f}), more than --max-accuracy-drop {options.max_accuracy_drop:g}; "
            f"try {hint}{more}"
        )


def _manifest(
    host: KerasHostModel,
    options: KerasExportOptions,
    io: dict[str, Any],
    name: str,
    version: str,
    calibration_rows: int,
) -> dict[str, Any]:
    meta = host.meta
    shape = host.input_shape
    if len(shape) == 1:  # tabular: one feature per column
        features = [
            {"name": c, "dtype": "float32", "nullable": meta.get("impute") is not None}
            for c in meta["channels"]
        ]
    else:  # windows / images: the features name the channels (last axis)
        features = [{"name": c, "dtype": "float32", "nullable": False} for c in meta["channels"]]
    input_spec: dict[str, Any] = {
        "layout": "tensor",
        "kind": meta["kind"],
        "tensor_name": io["input"]["name"],
        "dtype": "float32",
        "shape": [None, *shape],
        "features": features,
    }
    task = str(meta.get("task", "classification"))
    inside = ["standardize / rescale (first layer)", "softmax"]
    if task == "anomaly":
        output: dict[str, Any] = {
            "score_output": io["output"]["name"],
            "score_sign": 1,
            "threshold": float(meta["anomaly"]["threshold"]),
        }
        inside = ["standardize (first layer)", "autoencoder", "mean squared reconstruction error"]
    else:
        output = {"labels": host.labels, "probabilities_output": io["output"]["name"]}
    if meta.get("window_features"):
        input_spec |= {"kind": "window", "window_features": meta["window_features"]}
    outside: list[str] = []
    if meta.get("impute"):
        input_spec["impute"] = meta["impute"]
        outside.append("missing values -> training mean (input.impute)")
    for where, spec in (("input", input_spec), ("output", output)):
        q = io[where]
        if "scale" in q:
            spec["quantization"] = {k: q[k] for k in ("dtype", "scale", "zero_point")}
            outside.append(
                f"{where} {'quantized to' if where == 'input' else 'dequantized from'} "
                f"{q['dtype']} (scale, zero point in the manifest)"
            )
    model: dict[str, Any] = {"quantize": options.quantize}
    if options.quantize == "int8":
        model["calibration"] = {
            "samples": calibration_rows,
            "sha256": host.calibration_sha256(calibration_rows),
        }
    return {
        "name": name,
        "version": version,
        "task": task,
        "framework": {"name": "keras", "estimator": meta["model"]},
        "model": model,
        "input": input_spec,
        "output": output,
        "preprocessing": {"inside_graph": inside, "outside_graph": outside},
        "metrics": meta["metrics"],
        "parity": {"rows": len(host.y_heldout), "passed": False},
        "versions": library_versions(
            "tensorflow-cpu", "tensorflow", "keras", "tf2onnx", "onnxruntime", "ai-edge-litert"
        ),
        "training_data": meta["training_data"],
    }


def _served_outputs(bundle: Bundle, X: np.ndarray) -> np.ndarray:
    """Probabilities (or anomaly scores, one column) as the device computes them (edge
    backend, quantize/dequantize)."""
    served = ServedModel.load(bundle)
    rows: list[list[float]] = []
    for start in range(0, len(X), 256):
        for p in served.predict_tensor(X[start : start + 256]):
            rows.append([p["score"]] if "score" in p else list(p["probabilities"].values()))
    return np.asarray(rows, dtype=np.float64)


def export_keras(
    host: KerasHostModel,
    out_dir: str | Path,
    options: KerasExportOptions | None = None,
    name: str | None = None,
    version: str = "1",
) -> Bundle:
    """Convert a Keras host model to a bundle in ``out_dir``; the gates must pass."""
    options = options or KerasExportOptions()
    name = check_segment("model name", name or str(host.meta["name"]))
    if not version or len(version) > 64:
        raise EdgewiseError("version must be 1 to 64 characters")
    n_cal = min(options.calibration_samples, len(host.X_calibration))
    calibration = host.X_calibration[:n_cal]
    if options.format == "tflite":
        model_bytes = to_tflite(host.model, host.input_shape, options.quantize, calibration)
        io = tflite_io(model_bytes)
    else:
        model_bytes = to_onnx(host.model, host.input_shape, options.quantize, calibration)
        io = onnx_io(model_bytes)
    model_file = f"model.{options.format}"
    manifest = _manifest(host, options, io, name, version, n_cal)
    ref = np.asarray(host.model.predict(host.X_heldout, batch_size=256, verbose=0), np.float64)
    staged = manifest
    if manifest["input"].get("window_features"):
        # The held-out rows are features: check the network on them (the device computes
        # them from windows with the same edge.features code the trainer used).
        spec = {k: v for k, v in manifest["input"].items() if k != "window_features"}
        staged = manifest | {"input": spec | {"kind": "tabular"}}
    with tempfile.TemporaryDirectory() as staging:
        new = _served_outputs(
            write_bundle(staging, model_bytes, model_file, staged), host.X_heldout
        )
    y = host.y_heldout
    if manifest["task"] == "anomaly":
        # "Accuracy" of a detector's conversion: how many alarms it keeps as they were.
        limit = manifest["output"]["threshold"]
        acc_ref, acc_new = 1.0, float(((ref > limit) == (new > limit)).mean())
        max_diff = float((np.abs(ref - new) / np.maximum(np.abs(ref), 1.0)).max())
        agreement = acc_new
    else:
        acc_ref = float((ref.argmax(1) == y).mean())
        acc_new = float((new.argmax(1) == y).mean())
        max_diff = float(np.abs(ref - new).max())
        agreement = float((ref.argmax(1) == new.argmax(1)).mean())
    report = {
        "rows": len(y),
        "label_agreement": agreement,
        "max_abs_diff": max_diff,
        "accuracy_reference": acc_ref,
        "accuracy_converted": acc_new,
        "accuracy_drop_points": round((acc_ref - acc_new) * 100, 4),
        "max_accuracy_drop_points": options.max_accuracy_drop,
    }
    if options.quantize == "none":
        report["tolerance"] = options.tolerance
    log.info("%s %s parity: %s", options.format, options.quantize, report)
    metric = "alarm agreement" if manifest["task"] == "anomaly" else "accuracy"
    gate(options, acc_ref, acc_new, max_diff, metric)
    manifest["parity"] = report | {"passed": True}
    manifest["metrics"] = manifest["metrics"] | {"accuracy_converted": acc_new}
    return write_bundle(out_dir, model_bytes, model_file, manifest)
