"""scikit-learn pipelines to ONNX bundles, with a parity gate against the original.

``export_sklearn(host_model, out_dir)`` is the common case: convert, serve the staged
bundle with the device's own code on the held-out rows (converters.parity), and write it.
Options are validated before any work.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgewise.converters.bundle_writer import (
    created_at,
    library_versions,
    model_file,
    write_bundle,
)
from edgewise.converters.defaults import DEFAULT_TOLERANCE, DEFAULT_VERSION
from edgewise.converters.drift_reference import with_reference
from edgewise.converters.explain import explain_spec
from edgewise.converters.host_meta import HostFeature
from edgewise.converters.host_model import HostModel
from edgewise.converters.parity import (
    classification_parity,
    probabilities,
    regression_parity,
    serve_staged,
    with_selftest,
)
from edgewise.edge.errors import EdgewiseError
from edgewise.edge.link.topics import check_segment
from edgewise.edge.runtime.bundle import Bundle
from edgewise.edge.runtime.manifest import (
    MISSING_CATEGORY,
    AnomalyHead,
    ClassificationHead,
    ClusteringHead,
    Feature,
    Framework,
    Head,
    InputSpec,
    Manifest,
    Parity,
    Preprocessing,
    RegressionHead,
)

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


def convert_pipeline(pipeline: Any, features: Sequence[HostFeature], layout: str) -> bytes:
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
                f.name,
                StringTensorType([None, 1]) if f.dtype == "string" else FloatTensorType([None, 1]),
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


def graph_inputs(model_bytes: bytes) -> list[str]:
    """The ONNX graph's input names (skl2onnx sanitizes column names: "a b" -> "a_b")."""
    import onnx

    return [i.name for i in onnx.load_from_string(model_bytes).graph.input]


def build_manifest(
    host: HostModel, model_bytes: bytes, name: str, version: str, tolerance: float
) -> Manifest:
    """The bundle's manifest, its parity still to be measured."""
    est = _estimator(host.pipeline)
    input_names = graph_inputs(model_bytes)
    features = tuple(
        Feature(
            name=f.name,
            dtype=f.dtype,
            nullable=True,
            onnx_input=input_names[i] if host.layout == "columns" else None,
        )
        for i, f in enumerate(host.features)
    )
    window = host.meta.window_features
    outside = ["numeric null -> NaN (imputed inside the graph)"]
    text = bool(host.meta.text)
    if text:
        # skl2onnx lowercases with StringNormalizer, which needs an installed en_US.UTF-8
        # locale in ONNX Runtime: the agent lowercases instead (edge.runtime.model).
        outside.append("text lowercased (str.lower) before the graph")
    if any(f.dtype == "string" for f in features):
        outside.append('categorical null -> "" (the missing category)')
    spec = InputSpec(
        layout=host.layout,  # type: ignore[arg-type]
        features=features,
        kind="text" if text else "window" if window else "tabular",
        tensor_name=input_names[0] if host.layout == "tensor" else None,
        dtype="float32" if host.layout == "tensor" else None,
        shape=(None, len(features)) if host.layout == "tensor" else None,
        window_features=window,
        lowercase=text,
    )
    head: Head
    if host.task == "classification":
        head = ClassificationHead(
            labels=tuple(_native(c) for c in est.classes_),
            label_output="label",
            probabilities_output="probabilities" if hasattr(est, "predict_proba") else None,
        )
    elif host.task == "anomaly":
        # The graph's score is scikit-learn's decision function (low = anomalous); the
        # agent negates it (score_sign) so that a higher score is more anomalous.
        head = AnomalyHead(
            score_output="scores", score_sign=-1, threshold=host.meta.alarm_threshold
        )
    elif host.task == "clustering":
        head = ClusteringHead(
            label_output="label", distances_output="scores", clusters=int(est.n_clusters)
        )
    else:
        head = RegressionHead(value_output="variable")
    explain = explain_spec(host)
    return Manifest(
        name=name,
        version=version,
        task=host.task,  # type: ignore[arg-type]
        created_at=created_at(),
        framework=Framework(name="scikit-learn", estimator=type(est).__name__),
        model=model_file(model_bytes, "model.onnx", opset=TARGET_OPSET[""]),
        input=spec,
        output=head,
        preprocessing=Preprocessing(
            inside_graph=host.meta.preprocessing, outside_graph=tuple(outside)
        ),
        metrics=host.meta.metrics,
        parity=Parity(rows=max(len(host.y_heldout), 1), passed=False, tolerance=tolerance),
        versions=library_versions("scikit-learn", "skl2onnx", "onnx", "onnxruntime", "numpy"),
        training_data=host.meta.training_data,
        explain=explain,
    )


def device_instances(host: HostModel) -> list[Any]:
    """The held-out rows as a client sends them: missing values as null, text as typed."""
    if host.meta.text:
        return [str(v) for v in host.X_heldout[host.features[0].name]]
    string = [f.dtype == "string" for f in host.features]
    rows = []
    for row in host.X_heldout.itertuples(index=False):
        rows.append(
            [
                None
                if (is_str and v == MISSING_CATEGORY)
                or (not is_str and isinstance(v, float) and math.isnan(v))
                else (str(v) if is_str else float(v))
                for v, is_str in zip(row, string)
            ]
        )
    return rows


def _gate(
    host: HostModel, model_bytes: bytes, manifest: Manifest, tolerance: float
) -> tuple[Parity, list[Any], list[dict[str, Any]]]:
    """The parity report, and the held-out instances with the staged bundle's answers."""
    instances = device_instances(host)
    answers, backend = serve_staged(model_bytes, manifest, instances)
    return _report(host, manifest, answers, backend, tolerance), instances, answers


def _report(
    host: HostModel,
    manifest: Manifest,
    answers: list[dict[str, Any]],
    backend: str,
    tolerance: float,
) -> Parity:
    X = host.model_input(host.X_heldout)
    name = type(_estimator(host.pipeline)).__name__
    if host.task == "regression":
        new = np.asarray([a["value"] for a in answers])
        return regression_parity(name, host.pipeline.predict(X), new, tolerance, backend)
    if host.task == "anomaly":
        # The device answers score_sign * decision function: higher is more anomalous.
        ref = -host.pipeline.decision_function(X)
        new = np.asarray([a["score"] for a in answers])
        return regression_parity(name, ref, new, tolerance, backend)
    if host.task == "clustering":
        return classification_parity(
            name,
            host.pipeline.predict(X),
            np.asarray([a["cluster"] for a in answers]),
            host.pipeline.transform(X),
            np.asarray([a["distances"] for a in answers]),
            max(tolerance, 1e-5),  # distances are rounded to 6 decimals in answers
            backend,
        )
    labels = np.asarray([a["label"] for a in answers], dtype=object)
    proba_ref = proba_new = None
    if hasattr(host.pipeline, "predict_proba"):
        proba_ref = host.pipeline.predict_proba(X)
        proba_new = probabilities(answers, manifest.labels)
    return classification_parity(
        name, host.pipeline.predict(X), labels, proba_ref, proba_new, tolerance, backend
    )


def check_parity(
    host: HostModel, model_bytes: bytes, tolerance: float = DEFAULT_TOLERANCE
) -> Parity:
    """Serve the graph with the device's code on the held-out rows; raise ParityError on drift."""
    manifest = build_manifest(host, model_bytes, host.meta.name, DEFAULT_VERSION, tolerance)
    return _gate(host, model_bytes, manifest, tolerance)[0]


def export_sklearn(
    host: HostModel,
    out_dir: str | Path,
    name: str | None = None,
    version: str = DEFAULT_VERSION,
    tolerance: float = DEFAULT_TOLERANCE,
    p99_budget_ms: float | None = None,
) -> Bundle:
    """Convert a host model to an ONNX bundle in ``out_dir``; the parity gate must pass.

    The bundle carries a self-test (``p99_budget_ms``: a latency budget for it on the device).
    """
    name = check_segment("model name", name or host.meta.name)
    if not version or len(version) > 64:
        raise EdgewiseError("version must be 1 to 64 characters")
    if not 0 < tolerance < 1:
        raise EdgewiseError(f"tolerance {tolerance!r} must be between 0 and 1")
    model_bytes = convert_pipeline(host.pipeline, host.features, host.layout)
    manifest = build_manifest(host, model_bytes, name, version, tolerance)
    report, instances, answers = _gate(host, model_bytes, manifest, tolerance)
    log.info("parity on %d held-out rows: %s", report.rows, report.model_dump(exclude_none=True))
    checked = with_reference(
        manifest.model_copy(update={"parity": report}), host.meta.reference, answers
    )
    final, files = with_selftest(checked, instances, answers, tolerance, p99_budget_ms)
    return write_bundle(out_dir, model_bytes, final, files)


def _native(value: Any) -> Any:
    """numpy scalars as JSON-friendly Python values (class labels)."""
    return value.item() if isinstance(value, np.generic) else value
