"""Keras 3 network -> TFLite or ONNX bytes, with the quantization modes edgewise offers.

TFLite goes Keras ExportArchive -> SavedModel -> ``tf.lite.TFLiteConverter`` (the path
Keras itself uses; a concrete function with captured variables gave NaNs and a failing
READ_VARIABLE under int8 calibration here). Only TFLite builtin ops are allowed, so every
model runs on the plain LiteRT interpreter. ONNX goes through Keras's own
``export(format="onnx")`` (tf2onnx patched for Keras 3; ``tf2onnx.convert.from_keras``
fails on Keras 3) and is quantized with ``onnxruntime.quantization``.
"""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from edgewise.edge.runtime.native_stderr import quiet_native_stderr

QUANTIZE_MODES: dict[str, tuple[str, ...]] = {
    "tflite": ("none", "float16", "dynamic", "int8"),
    "onnx": ("none", "dynamic", "int8"),
}
ONNX_OPSET = 17
INPUT_NAME = "input"


def _signature(input_shape: tuple[int, ...]) -> list[Any]:
    import tensorflow as tf

    return [tf.TensorSpec([None, *input_shape], tf.float32, name=INPUT_NAME)]


def to_tflite(
    model: Any,
    input_shape: tuple[int, ...],
    quantize: str = "none",
    calibration: np.ndarray | None = None,
) -> bytes:
    """Convert with the TFLite converter; int8 means int8 input and output too."""
    import tensorflow as tf
    from keras import export as keras_export

    with tempfile.TemporaryDirectory() as saved:
        archive = keras_export.ExportArchive()
        archive.track(model)
        archive.add_endpoint(
            "serve",
            functools.partial(model.__call__, training=False),
            input_signature=_signature(input_shape),
        )
        archive.write_out(saved, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if quantize != "none":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantize == "float16":
            converter.target_spec.supported_types = [tf.float16]
        elif quantize == "int8":
            if calibration is None or len(calibration) == 0:
                raise ValueError("int8 quantization needs calibration data")
            rows = calibration.astype(np.float32)

            def representative() -> Iterator[list[np.ndarray]]:
                for i in range(len(rows)):
                    yield [rows[i : i + 1]]

            converter.representative_dataset = representative
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
        with quiet_native_stderr("the TFLite converter"):
            return bytes(converter.convert())


def tflite_io(model_bytes: bytes) -> dict[str, Any]:
    """Input/output tensor names, dtypes and (scale, zero point) of a TFLite model."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=model_bytes)

    def describe(d: dict[str, Any]) -> dict[str, Any]:
        scale, zero_point = d["quantization"]
        out = {"name": d["name"], "dtype": np.dtype(d["dtype"]).name}
        if scale:
            out |= {"scale": float(scale), "zero_point": int(zero_point)}
        return out

    return {
        "input": describe(interp.get_input_details()[0]),
        "output": describe(interp.get_output_details()[0]),
    }


class _Calibration:
    """onnxruntime's CalibrationDataReader protocol over an array."""

    def __init__(self, rows: np.ndarray, input_name: str) -> None:
        self._rows = iter(rows.astype(np.float32))
        self._name = input_name

    def get_next(self) -> dict[str, np.ndarray] | None:
        row = next(self._rows, None)
        return None if row is None else {self._name: row[np.newaxis]}

    def rewind(self) -> None:  # pragma: no cover - called by some ORT versions only
        pass


def to_onnx(
    model: Any,
    input_shape: tuple[int, ...],
    quantize: str = "none",
    calibration: np.ndarray | None = None,
) -> bytes:
    """Export with Keras's ONNX exporter, then optionally quantize with onnxruntime."""
    import warnings

    with tempfile.TemporaryDirectory() as tmp:
        plain = Path(tmp) / "model.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # tf2onnx's np.object probe
            model.export(
                str(plain),
                format="onnx",
                verbose=False,
                input_signature=_signature(input_shape),
                opset_version=ONNX_OPSET,
            )
        if quantize == "none":
            return plain.read_bytes()
        from onnxruntime import quantization as q

        out = Path(tmp) / "model.q.onnx"
        prepared = Path(tmp) / "model.pre.onnx"
        q.quant_pre_process(str(plain), str(prepared), skip_symbolic_shape=True)
        if quantize == "dynamic":
            # Weights int8, activations quantized on the fly; Conv stays float because
            # ORT's CPU ConvInteger takes only uint8 weights.
            q.quantize_dynamic(
                str(prepared),
                str(out),
                weight_type=q.QuantType.QInt8,
                op_types_to_quantize=["MatMul", "Gemm"],
            )
        elif quantize == "int8":
            if calibration is None or len(calibration) == 0:
                raise ValueError("int8 quantization needs calibration data")
            q.quantize_static(
                str(prepared),
                str(out),
                _Calibration(calibration, INPUT_NAME),
                quant_format=q.QuantFormat.QDQ,
                activation_type=q.QuantType.QInt8,
                weight_type=q.QuantType.QInt8,
            )
        else:
            raise ValueError(f"onnx quantize mode {quantize!r}")
        return out.read_bytes()


def onnx_io(model_bytes: bytes) -> dict[str, Any]:
    """Input/output names of an ONNX model (float in, float out)."""
    import onnxruntime as ort

    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    return {
        "input": {"name": session.get_inputs()[0].name, "dtype": "float32"},
        "output": {"name": session.get_outputs()[0].name, "dtype": "float32"},
    }


def without_standardize(
    model: Any, check_rows: np.ndarray
) -> tuple[Any, np.ndarray, np.ndarray] | None:
    """A table network without its first ``standardize`` layer, and that layer's per-column
    scale and offset (for the agent to apply), or None when ``model`` is not a chain that
    starts with one. The cut model must answer ``check_rows`` as the whole one does."""
    import keras

    layers = model.layers
    if len(model.inputs) != 1 or len(model.inputs[0].shape) != 2 or len(layers) < 3:
        return None
    if layers[1].name != "standardize" or not isinstance(layers[1], keras.layers.Rescaling):
        return None
    width = int(model.inputs[0].shape[1])
    scale = np.broadcast_to(np.asarray(layers[1].scale, np.float64), (width,)).copy()
    offset = np.broadcast_to(np.asarray(layers[1].offset, np.float64), (width,)).copy()
    inputs = keras.Input(shape=(width,), name=INPUT_NAME)
    x = inputs
    try:
        for layer in layers[2:]:  # a chain: every layer takes the previous one's output
            x = layer(x)
    except Exception:
        return None
    cut = keras.Model(inputs, x, name=f"{model.name}-scaled")
    rows = check_rows.astype(np.float32)
    whole = np.asarray(model(rows, training=False))
    part = np.asarray(cut((rows * scale + offset).astype(np.float32), training=False))
    if whole.shape != part.shape or not np.allclose(whole, part, atol=1e-4):
        return None  # not a chain after all (a branch or a skip connection)
    return cut, scale, offset
