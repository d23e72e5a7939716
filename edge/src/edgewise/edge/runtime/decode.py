"""Model outputs as answers: one decoder per output head, chosen by the manifest's task."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from edgewise.edge.runtime.manifest import (
    AnomalyHead,
    ClassificationHead,
    ClusteringHead,
    Head,
    Quantization,
    RegressionHead,
)

Outputs = dict[str, np.ndarray[Any, Any]]
Decoder = Callable[[Head, Outputs], list[dict[str, Any]]]


def _dequantize(
    array: np.ndarray[Any, Any], q: Quantization | None, dtype: type[np.floating[Any]]
) -> np.ndarray[Any, Any]:
    array = array.astype(dtype, copy=False)
    return array if q is None else (array - q.zero_point) * dtype(q.scale)


def _decode_classification(head: Head, outputs: Outputs) -> list[dict[str, Any]]:
    assert isinstance(head, ClassificationHead)
    probs = outputs[head.probabilities_output] if head.probabilities_output else None
    if probs is not None and head.quantization is not None:
        # Dequantized int8 probabilities come in steps of the scale (1/256) and do not
        # sum to 1: spread the rounding back so that each answer is a distribution.
        probs = _dequantize(probs, head.quantization, np.float32)
        np.clip(probs, 0.0, None, out=probs)
        total = probs.sum(axis=1, keepdims=True)
        k = probs.shape[1] if probs.ndim == 2 else 1
        probs = np.divide(probs, total, out=np.full_like(probs, 1.0 / k), where=total > 0)
    if head.label_output:
        labels = outputs[head.label_output].reshape(-1).tolist()
    else:  # networks output probabilities only: the label is the most probable class
        assert probs is not None
        labels = [head.labels[i] for i in probs.argmax(axis=1).tolist()]
    if probs is None:
        return [{"label": lab} for lab in labels]
    keys = [str(c) for c in head.labels]
    return [
        {"label": lab, "probabilities": dict(zip(keys, row))}
        for lab, row in zip(labels, probs.tolist())
    ]


def _decode_regression(head: Head, outputs: Outputs) -> list[dict[str, Any]]:
    assert isinstance(head, RegressionHead)
    return [{"value": float(v)} for v in outputs[head.value_output].reshape(-1)]


def _decode_anomaly(head: Head, outputs: Outputs) -> list[dict[str, Any]]:
    assert isinstance(head, AnomalyHead)
    raw = _dequantize(outputs[head.score_output].reshape(-1), head.quantization, np.float64)
    scores = head.score_sign * raw
    return [{"score": float(v), "is_anomaly": bool(v > head.threshold)} for v in scores]


def _decode_clustering(head: Head, outputs: Outputs) -> list[dict[str, Any]]:
    assert isinstance(head, ClusteringHead)
    clusters = outputs[head.label_output].reshape(-1).tolist()
    distances = outputs[head.distances_output].tolist()
    return [
        {"cluster": int(c), "distances": [round(float(d), 6) for d in row]}
        for c, row in zip(clusters, distances)
    ]


DECODERS: dict[str, Decoder] = {
    "classification": _decode_classification,
    "regression": _decode_regression,
    "anomaly": _decode_anomaly,
    "clustering": _decode_clustering,
}


def output_names(head: Head) -> list[str]:
    """The model outputs a head reads."""
    names = [
        getattr(head, field, None)
        for field in (
            "label_output",
            "probabilities_output",
            "value_output",
            "score_output",
            "distances_output",
        )
    ]
    return [n for n in names if n]


SHOWN = ("label", "value", "score", "is_anomaly", "cluster")  # what a summary keeps


def flat(prediction: dict[str, Any]) -> dict[str, Any]:
    """One prediction flattened for dashboards (state topics, stream events): its label,
    value, score, anomaly flag or cluster, and the label's probability as ``confidence``."""
    doc = {key: prediction[key] for key in SHOWN if key in prediction}
    probabilities = prediction.get("probabilities")
    if isinstance(probabilities, dict) and "label" in prediction:
        doc["confidence"] = probabilities.get(str(prediction["label"]))
    return doc
