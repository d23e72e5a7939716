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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgewise.converters.bundle_writer import (
    created_at,
    library_versions,
    model_file,
    write_bundle,
)
from edgewise.converters.defaults import (
    DEFAULT_CALIBRATION_SAMPLES,
    DEFAULT_MAX_ACCURACY_DROP,
    DEFAULT_TOLERANCE,
    DEFAULT_VERSION,
)
from edgewise.converters.drift_reference import with_reference
from edgewise.converters.explain import occlusion_spec
from edgewise.converters.keras_convert import (
    QUANTIZE_MODES,
    onnx_io,
    tflite_io,
    to_onnx,
    to_tflite,
    without_standardize,
)
from edgewise.converters.keras_host import KerasHostModel
from edgewise.converters.parity import (
    ParityError,
    probabilities,
    serve_staged,
    with_selftest,
)
from edgewise.edge.errors import EdgewiseError, OptionError
from edgewise.edge.link.topics import check_segment
from edgewise.edge.runtime.bundle import Bundle
from edgewise.edge.runtime.manifest import (
    AnomalyHead,
    Calibration,
    ClassificationHead,
    Feature,
    Framework,
    InputSpec,
    Manifest,
    Parity,
    Preprocessing,
    Quantization,
    Scaling,
)

log = logging.getLogger(__name__)
# A quantized model's self-test allows this many output steps of difference (twice the
# largest measured across runtimes; labels must still agree).
QUANTIZED_STEPS = 8

# What to try when a mode loses too much: the next less aggressive one.
NEXT_MODE = {
    ("tflite", "int8"): "dynamic",  # int8 weights, float activations
    ("tflite", "dynamic"): "float16",
    ("tflite", "float16"): "none",
    ("onnx", "int8"): "dynamic",
    ("onnx", "dynamic"): "none",
}


SCALED_BY_AGENT = "standardized by the agent (input.scaling)"


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
            raise OptionError("format", f"{self.format!r}: use one of {', '.join(QUANTIZE_MODES)}")
        modes = QUANTIZE_MODES[self.format]
        if self.quantize not in modes:
            raise OptionError(
                "quantize",
                f"{self.quantize!r} is not offered for {self.format}; "
                f"use one of {', '.join(modes)}",
            )
        if self.calibration_samples < 1:
            raise OptionError("calibration_samples", f"{self.calibration_samples}: use 1 or more")
        if not 0 <= self.max_accuracy_drop <= 100:
            raise OptionError("max_accuracy_drop", f"{self.max_accuracy_drop}: use 0..100 points")
        if not 0 < self.tolerance < 1:
            raise OptionError("tolerance", f"{self.tolerance!r} must be between 0 and 1")


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
    mode = f"{options.format} quantize {options.quantize}"
    outputs = "probabilities" if metric == "accuracy" else "scores"
    if options.quantize == "none" and max_abs_diff > options.tolerance:
        raise ParityError(
            f"{mode}: {outputs} differ from Keras by up to {max_abs_diff:.3g} "
            f"(limit {options.tolerance:g}); the float conversion is wrong"
        )
    drop = (accuracy_ref - accuracy_new) * 100
    if drop > options.max_accuracy_drop:
        tries: list[tuple[str, str | None]] = [
            ("quantize", NEXT_MODE.get((options.format, options.quantize), "none"))
        ]
        if options.quantize == "int8":
            tries.append(("calibration_samples", None))
        raise ParityError(
            f"{mode}: {metric} drops {drop:.2f} points ({accuracy_ref:.4f} -> "
            f"{accuracy_new:.4f}), more than the {options.max_accuracy_drop:g} allowed",
            tries,
        )


def _quantization(io: dict[str, Any], where: str) -> Quantization | None:
    q = io[where]
    if "scale" not in q:
        return None
    return Quantization(dtype=q["dtype"], scale=q["scale"], zero_point=q["zero_point"])


def build_manifest(
    host: KerasHostModel,
    options: KerasExportOptions,
    model_bytes: bytes,
    io: dict[str, Any],
    name: str,
    version: str,
    calibration_rows: int,
    scaling: Scaling | None = None,
) -> Manifest:
    """The bundle's manifest, its parity still to be measured. ``scaling``: the network's
    standardization, done by the agent (an int8 table network cut after that layer)."""
    meta = host.meta
    shape = host.input_shape
    # Tabular: one feature per column; windows / images: the features name the channels.
    nullable = len(shape) == 1 and meta.impute is not None
    features = tuple(Feature(name=c, dtype="float32", nullable=nullable) for c in meta.channels)
    if meta.features:  # a mixed table: the agent one-hot encodes the string features
        features = tuple(f.device_feature() for f in meta.features)
    window = meta.window_features
    in_quant, out_quant = _quantization(io, "input"), _quantization(io, "output")
    task = meta.task
    inside = ["standardize / rescale (first layer)", "softmax"]
    head: AnomalyHead | ClassificationHead
    if task == "anomaly":
        head = AnomalyHead(
            score_output=io["output"]["name"],
            score_sign=1,
            threshold=meta.alarm_threshold,
            quantization=out_quant,
        )
        inside = ["standardize (first layer)", "autoencoder", "mean squared reconstruction error"]
    else:
        head = ClassificationHead(
            labels=tuple(host.labels),
            probabilities_output=io["output"]["name"],
            quantization=out_quant,
        )
    outside: list[str] = []
    if scaling is not None:
        inside = inside[1:]
    if meta.features:
        outside.append("string features one-hot encoded (input.features[].categories)")
    if meta.impute:
        outside.append("missing values -> training mean (input.impute)")
    if scaling is not None:
        outside.append(SCALED_BY_AGENT)
    for where, q in (("input", in_quant), ("output", out_quant)):
        if q is not None:
            verb = "quantized to" if where == "input" else "dequantized from"
            outside.append(f"{where} {verb} {q.dtype} (scale, zero point in the manifest)")
    calibration = None
    if options.quantize == "int8":
        calibration = Calibration(
            samples=calibration_rows, sha256=host.calibration_sha256(calibration_rows)
        )
    return Manifest(
        name=name,
        version=version,
        task=task,  # type: ignore[arg-type]
        created_at=created_at(),
        framework=Framework(name="keras", estimator=meta.model),
        model=model_file(
            model_bytes,
            f"model.{options.format}",
            quantize=options.quantize,
            calibration=calibration,
        ),
        input=InputSpec(
            layout="tensor",
            kind="window" if window else meta.kind or "tabular",
            tensor_name=io["input"]["name"],
            dtype="float32",
            shape=(None, *shape),
            features=features,
            quantization=in_quant,
            impute=meta.impute or None,
            window_features=window,
            scaling=scaling,
        ),
        output=head,
        preprocessing=Preprocessing(inside_graph=tuple(inside), outside_graph=tuple(outside)),
        metrics=meta.metrics,
        parity=Parity(rows=max(len(host.y_heldout), 1), passed=False),
        versions=library_versions(
            "tensorflow-cpu", "tensorflow", "keras", "tf2onnx", "onnxruntime", "ai-edge-litert"
        ),
        training_data=meta.training_data,
        explain=occlusion_spec(meta),
    )


def export_keras(
    host: KerasHostModel,
    out_dir: str | Path,
    options: KerasExportOptions | None = None,
    name: str | None = None,
    version: str = DEFAULT_VERSION,
    p99_budget_ms: float | None = None,
) -> Bundle:
    """Convert a Keras host model to a bundle in ``out_dir``; the gates must pass."""
    options = options or KerasExportOptions()
    name = check_segment("model name", name or host.meta.name)
    if not version or len(version) > 64:
        raise EdgewiseError("version must be 1 to 64 characters")
    n_cal = min(options.calibration_samples, len(host.X_calibration))
    calibration = host.X_calibration[:n_cal]
    ref = np.asarray(host.model.predict(host.X_heldout, batch_size=256, verbose=0), np.float64)
    checked = [
        _checked(host, options, variant, build, ref, name, version, n_cal)
        for variant, build in _variants(host, options, calibration)
    ]
    # The gate's choice: the variant whose labels agree most with the float network (then
    # the smaller difference); the held-out labels judge it below, as every conversion.
    chosen = max(checked, key=lambda c: (c.agreement, -c.max_diff))
    if len(checked) > 1:
        log.info(
            "int8 variants (label agreement with Keras): %s; kept %s",
            ", ".join(f"{c.variant} {c.agreement:.4f}" for c in checked),
            chosen.variant,
        )
    manifest, model_bytes, answers = chosen.manifest, chosen.model_bytes, chosen.answers
    acc_ref, acc_new, max_diff = chosen.acc_ref, chosen.acc_new, chosen.max_diff
    agreement, backend, y = chosen.agreement, chosen.backend, host.y_heldout
    metric = "alarm agreement" if manifest.task == "anomaly" else "accuracy"
    gate(options, acc_ref, acc_new, max_diff, metric)
    report = Parity(
        rows=len(y),
        passed=True,
        served_by=backend,
        tolerance=options.tolerance if options.quantize == "none" else None,
        label_agreement=agreement,
        max_abs_diff=max_diff,
        accuracy_reference=acc_ref,
        accuracy_converted=acc_new,
        accuracy_drop_points=round((acc_ref - acc_new) * 100, 4),
        max_accuracy_drop_points=options.max_accuracy_drop,
    )
    log.info("%s %s parity: %s", options.format, options.quantize, report)
    final = manifest.model_copy(
        update={"parity": report, "metrics": manifest.metrics | {"accuracy_converted": acc_new}}
    )
    # Self-test tolerance: integer kernels round differently between runtimes and CPUs,
    # and the steps add up through the layers: tflite-runtime 2.14 on armv7l answered one
    # of 24 vibration windows 4 output steps away from x86 LiteRT (label equal).
    tolerance = options.tolerance
    if options.quantize != "none":
        head_quant = getattr(final.output, "quantization", None)
        tolerance = max(1e-3, QUANTIZED_STEPS * float(head_quant.scale) if head_quant else 0.0)
    final = with_reference(final, host.meta.reference, answers)
    inputs = host.client_inputs
    instances = inputs.tolist() if isinstance(inputs, np.ndarray) else inputs
    final, files = with_selftest(final, instances, answers, tolerance, p99_budget_ms)
    return write_bundle(out_dir, model_bytes, final, files)


@dataclass(frozen=True)
class _Checked:
    """One converted variant, run through the device's code on the held-out inputs."""

    variant: str
    manifest: Manifest
    model_bytes: bytes
    answers: list[dict[str, Any]]
    backend: str
    acc_ref: float
    acc_new: float
    max_diff: float
    agreement: float


def _variants(
    host: KerasHostModel, options: KerasExportOptions, calibration: np.ndarray
) -> list[tuple[str, Any]]:
    """What to convert: the whole network; for int8 on a table also the network without
    its standardization (the agent standardizes, so the int8 input holds comparable
    columns). Each is ``(variant, build)`` with ``build() -> (bytes, io, scaling)``."""

    def convert(model: Any, rows: np.ndarray) -> tuple[bytes, dict[str, Any]]:
        if options.format == "tflite":
            data = to_tflite(model, host.input_shape, options.quantize, rows)
            return data, tflite_io(data)
        data = to_onnx(model, host.input_shape, options.quantize, rows)
        return data, onnx_io(data)

    out: list[tuple[str, Any]] = [("in graph", lambda: (*convert(host.model, calibration), None))]
    if (
        options.quantize == "int8"
        and host.meta.kind in (None, "tabular")
        and (host.meta.task == "classification")
    ):
        cut = without_standardize(host.model, calibration[:64])
        if cut is not None:
            model, scale, offset = cut
            scaled = (calibration * scale + offset).astype(np.float32)
            scaling = Scaling(scale=tuple(scale.tolist()), offset=tuple(offset.tolist()))
            out.append(("by the agent", lambda: (*convert(model, scaled), scaling)))
    return out


def _checked(
    host: KerasHostModel,
    options: KerasExportOptions,
    variant: str,
    build: Any,
    ref: np.ndarray,
    name: str,
    version: str,
    n_cal: int,
) -> _Checked:
    model_bytes, io, scaling = build()
    manifest = build_manifest(host, options, model_bytes, io, name, version, n_cal, scaling)
    answers, backend = serve_staged(model_bytes, manifest, host.client_inputs)
    y = host.y_heldout
    if isinstance(manifest.output, AnomalyHead):
        # "Accuracy" of a detector's conversion: how many alarms it keeps as they were.
        new = np.asarray([[a["score"]] for a in answers], np.float64)
        limit = manifest.output.threshold
        acc_ref, acc_new = 1.0, float(((ref > limit) == (new > limit)).mean())
        max_diff = float((np.abs(ref - new) / np.maximum(np.abs(ref), 1.0)).max())
        agreement = acc_new
    else:
        new = probabilities(answers, manifest.labels)
        acc_ref = float((ref.argmax(1) == y).mean())
        acc_new = float((new.argmax(1) == y).mean())
        max_diff = float(np.abs(ref - new).max())
        agreement = float((ref.argmax(1) == new.argmax(1)).mean())
    return _Checked(
        variant, manifest, model_bytes, answers, backend, acc_ref, acc_new, max_diff, agreement
    )
