"""scikit-learn pipelines to ONNX bundles, with a parity gate against the original.

``export_sklearn(host_model, out_dir)`` is the common case: convert, check parity on the
held-out rows with ONNX Runtime, and write the bundle. Options are validated before any work.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from converters.bundle_writer import library_versions, write_bundle
from converters.explain import explain_spec
from converters.host_model import HostModel
from converters.parity import (
    DEFAULT_TOLERANCE,
    ParityReport,
    classification_parity,
    regression_parity,
)
from edge.bundle import Bundle
from edge.errors import EdgewiseError
from edge.topics import check_segment

log = logging.getLogger(__name__)

# ONNX Runtime has run opset 17 / ai.onnx.ml 3 since 1.14 (2023), so older device
# images can run these graphs; every converter we use supports them.
TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}
TENSOR_INPUT = "X"


def _estimator(pipeline: Any) -> Any:
    return pipeline.steps[-1][1] if hasattr(pipeline, "steps") else pipeline


# Word tokens for text models: Python's pattern (scikit-learn) and the same set in RE2 syntax
# (ONNX Runtime's Tokenizer), where \w is ASCII-only and (?u) is an error.
TEXT_TOKEN_PATTERN = r"(?u)\w{2,}"
TEXT_TOKEN_RE2 = r"[\pL\pN_]{2,}"


def _patch_tokenizers(onx: Any) -> None:
    for node in onx.graph.node:
        if node.op_type != "Tokenizer":
            continue
        for attr in node.attribute:
            if attr.name == "tokenexp" and attr.s.decode() == TEXT_TOKEN_PATTERN:
                attr.s = TEXT_TOKEN_RE2.encode()


def convert_pipeline(pipeline: Any, features: list[dict[str, str]], layout: str) -> bytes:
    """Serialized ONNX graph of a fitted pipeline taking the raw features."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType

    if layout == "tensor":
        initial_types: list[tuple[str, Any]] = [
            (TENSOR_INPUT, FloatTensorType([None, len(features)]))
        ]
    else:
        initial_types = [
            (
                f["name"],
                StringTensorType([None, 1])
                if f["dtype"] == "string"
                else FloatTensorType([None, 1]),
            )
            for f in features
        ]
    est = _estimator(pipeline)
    # Plain tensor outputs: a ZipMap (list of dicts) is slow and awkward on the device.
    options = {id(est): {"zipmap": False}} if hasattr(est, "predict_proba") else None
    try:
        onx = convert_sklearn(
            pipeline, initial_types=initial_types, options=options, target_opset=TARGET_OPSET
        )
    except Exception as exc:  # skl2onnx raises many types for unsupported pieces
        raise EdgewiseError(
            f"skl2onnx cannot convert {type(est).__name__}: {str(exc).splitlines()[0]}"
        ) from None
    _patch_tokenizers(onx)
    return bytes(onx.SerializeToString())


def onnx_feeds(
    input_names: list[str], X: pd.DataFrame, features: list[dict[str, str]], layout: str
) -> dict[str, np.ndarray]:
    """ONNX Runtime feeds for a frame of raw features (input names in feature order)."""
    if layout == "tensor":
        return {input_names[0]: X.to_numpy(dtype=np.float32)}
    return {
        name: X[f["name"]]
        .to_numpy(dtype=object if f["dtype"] == "string" else np.float32)
        .reshape(-1, 1)
        for name, f in zip(input_names, features)
    }


def check_parity(
    host: HostModel, model_bytes: bytes, tolerance: float = DEFAULT_TOLERANCE
) -> tuple[ParityReport, list[str]]:
    """Run the ONNX graph and the pipeline on the held-out rows; raise ParityError on drift."""
    import onnxruntime as ort

    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    input_names = [i.name for i in session.get_inputs()]
    output_names = [o.name for o in session.get_outputs()]
    feeds = onnx_feeds(input_names, host.X_heldout, host.features, host.layout)
    outputs = dict(zip(output_names, session.run(None, feeds)))
    X = host.model_input(host.X_heldout)
    name = type(_estimator(host.pipeline)).__name__
    if host.task == "regression":
        report = regression_parity(name, host.pipeline.predict(X), outputs["variable"], tolerance)
    elif host.task == "anomaly":
        report = regression_parity(
            name, host.pipeline.decision_function(X), outputs["scores"], tolerance
        )
    elif host.task == "clustering":
        report = classification_parity(
            name,
            host.pipeline.predict(X),
            outputs["label"],
            host.pipeline.transform(X),
            outputs["scores"],
            tolerance,
        )
    else:
        proba_ref = (
            host.pipeline.predict_proba(X) if hasattr(host.pipeline, "predict_proba") else None
        )
        report = classification_parity(
            name,
            host.pipeline.predict(X),
            outputs["label"],
            proba_ref,
            outputs.get("probabilities"),
            tolerance,
        )
    return report, input_names


def export_sklearn(
    host: HostModel,
    out_dir: str | Path,
    name: str | None = None,
    version: str = "1",
    tolerance: float = DEFAULT_TOLERANCE,
) -> Bundle:
    """Convert a host model to an ONNX bundle in ``out_dir``; the parity gate must pass."""
    name = check_segment("model name", name or str(host.meta["name"]))
    if not version or len(version) > 64:
        raise EdgewiseError("version must be 1 to 64 characters")
    if not 0 < tolerance < 1:
        raise EdgewiseError(f"tolerance {tolerance!r} must be between 0 and 1")
    model_bytes = convert_pipeline(host.pipeline, host.features, host.layout)
    report, input_names = check_parity(host, model_bytes, tolerance)
    est = _estimator(host.pipeline)
    log.info("parity on %d held-out rows: %s", report.rows, report.as_manifest())
    features: list[dict[str, Any]] = []
    for i, f in enumerate(host.features):
        entry: dict[str, Any] = {"name": f["name"], "dtype": f["dtype"], "nullable": True}
        if host.layout == "columns":
            entry["onnx_input"] = input_names[i]  # skl2onnx sanitizes names ("a b" -> "a_b")
        features.append(entry)
    input_spec: dict[str, Any] = {"layout": host.layout, "features": features}
    if host.layout == "tensor":
        input_spec |= {
            "tensor_name": input_names[0],
            "dtype": "float32",
            "shape": [None, len(features)],
        }
    if host.task == "classification":
        output: dict[str, Any] = {
            "labels": [_native(c) for c in est.classes_],
            "label_output": "label",
            "probabilities_output": "probabilities",
        }
    elif host.task == "anomaly":
        # The graph's score is scikit-learn's decision function (low = anomalous); the
        # agent negates it (score_sign) so that a higher score is more anomalous.
        output = {
            "score_output": "scores",
            "score_sign": -1,
            "threshold": float(host.meta["anomaly"]["threshold"]),
        }
    elif host.task == "clustering":
        output = {
            "label_output": "label",
            "distances_output": "scores",
            "clusters": int(est.n_clusters),
        }
    else:
        output = {"value_output": "variable"}
    window = host.meta.get("window_features")
    if window is not None:
        input_spec |= {"kind": "window", "window_features": window}
    outside = ["numeric null -> NaN (imputed inside the graph)"]
    if host.meta.get("text"):
        # skl2onnx lowercases with StringNormalizer, which needs an installed en_US.UTF-8
        # locale in ONNX Runtime: the agent lowercases instead (edge.model).
        input_spec |= {"kind": "text", "lowercase": True}
        outside.append("text lowercased (str.lower) before the graph")
    if any(f["dtype"] == "string" for f in host.features):
        outside.append('categorical null -> "" (the missing category)')
    manifest = {
        "name": name,
        "version": version,
        "task": host.task,
        "framework": {"name": "scikit-learn", "estimator": type(est).__name__},
        "model": {"opset": TARGET_OPSET[""]},
        "input": input_spec,
        "output": output,
        "preprocessing": {
            "inside_graph": host.meta.get("preprocessing", []),
            "outside_graph": outside,
        },
        "metrics": host.meta.get("metrics", {}),
        "parity": report.as_manifest(),
        "versions": library_versions("scikit-learn", "skl2onnx", "onnx", "onnxruntime", "numpy"),
        "training_data": host.meta["training_data"],
    }
    explain = explain_spec(host)
    if explain is not None:
        manifest["explain"] = explain
    return write_bundle(out_dir, model_bytes, "model.onnx", manifest)


def _native(value: Any) -> Any:
    """numpy scalars as JSON-friendly Python values (class labels)."""
    return value.item() if isinstance(value, np.generic) else value
