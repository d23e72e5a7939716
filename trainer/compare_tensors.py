"""``compare`` for sensor windows and images.

- Windows: hand-made window features + classical models against a 1-D CNN on the raw
  windows. Every candidate gets raw windows through the edge code (the agent computes
  the features for the classical ones), so feature extraction is inside the latency.
  Permutation importance is per channel (one channel shuffled across windows).
- Images: classical models on the flattened pixels (the client sends the pixel row)
  against a 2-D CNN on the image. Permutation importance is per horizontal band of the
  image (a quarter of the rows shuffled across images).
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgewise.converters.parity import ParityError
from edgewise.converters.sklearn_onnx import export_sklearn
from edgewise.edge.bundle import load_bundle
from edgewise.edge.errors import EdgewiseError
from edgewise.edge.manifest import WindowFeatures
from edgewise.edge.model import ServedModel
from edgewise.trainer.compare import (
    FRACTIONS,
    LATENCY_CALLS,
    READABLE,
    CandidateResult,
    CompareReport,
    _confusion,
    deep_score,
    export_network,
    learning_curve,
    measure_memory,
    network_trainer,
)
from edgewise.trainer.models import MODELS, build_pipeline
from edgewise.trainer.tensors import TensorData, pixel_dataset, window_feature_dataset
from edgewise.trainer.train import evaluate, split_indices, train

log = logging.getLogger(__name__)

WINDOW_CANDIDATES = ("logistic-regression", "decision-tree", "random-forest",
                     "hist-gradient-boosting", "cnn1d")  # fmt: skip
IMAGE_CANDIDATES = ("logistic-regression", "random-forest", "hist-gradient-boosting", "knn",
                    "cnn2d")  # fmt: skip
NETWORK = {"window": "cnn1d", "image": "cnn2d"}
IMAGE_BANDS = 4


def check_tensor_candidates(names: Sequence[str], kind: str = "window") -> list[str]:
    allowed = [*MODELS["classification"], NETWORK[kind]]
    bad = [n for n in names if n not in allowed]
    if bad:
        what = "sensor windows" if kind == "window" else "images"
        raise EdgewiseError(f"unknown candidate(s) {bad} for {what}; choose from {allowed}")
    return list(dict.fromkeys(names))


def _groups(data: TensorData) -> list[tuple[str, Any]]:
    """Named index groups for permutation importance: channels, or bands of image rows."""
    if data.kind == "window":
        return [(c, (slice(None), slice(None), i)) for i, c in enumerate(data.channels)]
    h = data.X.shape[1]
    edges = np.linspace(0, h, IMAGE_BANDS + 1).astype(int)
    return [
        (f"rows {edges[b]}-{edges[b + 1] - 1}", (slice(None), slice(edges[b], edges[b + 1])))
        for b in range(IMAGE_BANDS)
    ]


def _labels(model: ServedModel, X: np.ndarray) -> np.ndarray:
    out: list[Any] = []
    for start in range(0, len(X), 512):
        out += [p["label"] for p in model.predict_tensor(X[start : start + 512])]
    return np.asarray(out)


def _measure(
    model: ServedModel, X_raw: np.ndarray, y: np.ndarray, labels: list[Any], seed: int,
    result: CandidateResult, groups: list[tuple[str, Any]],
) -> None:  # fmt: skip
    # What the device receives: windows and images as they are, except that classical
    # image candidates take the flattened pixel row.
    def device_input(a: np.ndarray) -> np.ndarray:
        shape = model.instance_shape or ()
        return a.reshape(len(a), -1) if len(shape) == 1 and a.ndim > 2 else a

    X = device_input(X_raw)
    pred = _labels(model, X)
    result.quality_edge = evaluate("classification", y, pred)
    result.confusion = _confusion(y, pred, labels)
    for i in range(30):  # warm-up
        model.predict_tensor(X[i % len(X)][None])
    lat = []
    for i in range(LATENCY_CALLS):
        one = X[i % len(X)][None]
        t0 = time.perf_counter()
        model.predict_tensor(one)
        lat.append((time.perf_counter() - t0) * 1e6)
    result.latency_us = {"p50": float(np.percentile(lat, 50)), "p99": float(np.percentile(lat, 99))}
    rng = np.random.default_rng(seed)
    base = result.quality_edge["accuracy"]
    scores = {}
    for group, index in groups:
        drops = []
        for _ in range(3):
            shuffled = X_raw.copy()
            shuffled[index] = X_raw[rng.permutation(len(X_raw))][index]
            pred = _labels(model, device_input(shuffled))
            drops.append(base - evaluate("classification", y, pred)["accuracy"])
        scores[group] = round(float(np.mean(drops)), 5)
    result.importance = dict(sorted(scores.items(), key=lambda kv: -kv[1]))


def compare_tensors(
    windows: TensorData,
    work: Path,
    candidates: Sequence[str] | None = None,
    *,
    sample_rate: float = 1.0,
    seed: int = 0,
    epochs: int = 60,
    fractions: Sequence[float] = FRACTIONS,
    progress: Callable[[str], None] = lambda step: None,
) -> CompareReport:
    """Train, convert and measure every candidate on ``windows`` (sensor windows or images;
    bundles under ``work``)."""
    kind = windows.kind
    default = WINDOW_CANDIDATES if kind == "window" else IMAGE_CANDIDATES
    names = check_tensor_candidates(candidates or default, kind)
    if kind == "window":
        table, spec = window_feature_dataset(windows, sample_rate)
    else:
        table, spec = pixel_dataset(windows), None
    train_idx, test_idx = split_indices(table, 0.2, seed, windows.test_index)
    X_test, y_test = windows.X[test_idx], np.asarray(windows.y)[test_idx]
    labels = sorted(np.unique(windows.y).tolist())
    groups = _groups(windows)
    report = CompareReport(
        windows.source, "classification", len(windows.y), len(test_idx),
        [g for g, _ in groups], labels, "accuracy", [],
    )  # fmt: skip
    for i, name in enumerate(names, 1):
        progress(f"[{i}/{len(names)}] {name}")
        deep = name == NETWORK[kind]
        result = CandidateResult(name, "deep" if deep else "classical", name in READABLE)
        try:
            if deep:
                _cnn(windows, name, train_idx, test_idx, work, seed, epochs, fractions, result)
            else:
                _features_model(
                    table, spec, train_idx, test_idx, name, work, seed, fractions, result
                )
            result.memory_kib = measure_memory(result.bundle)
            served = ServedModel.load(load_bundle(result.bundle))
            _measure(served, X_test, y_test, labels, seed, result, groups)
        except (EdgewiseError, ParityError) as exc:
            result.skipped = str(exc)
            log.warning("%s skipped: %s", name, exc)
        report.candidates.append(result)
    return report


def _features_model(
    table: Any, spec: WindowFeatures | None, train_idx: np.ndarray, test_idx: np.ndarray, name: str,
    work: Path, seed: int, fractions: Sequence[float], result: CandidateResult,
) -> None:  # fmt: skip
    host = train(table, name, name, seed=seed, test_index=test_idx, window_features=spec)
    result.fit_seconds = float(host.meta.metrics["fit_seconds"])
    result.quality = {k: v for k, v in host.meta.metrics.items() if k != "fit_seconds"}
    out = work / name
    shutil.rmtree(out, ignore_errors=True)
    bundle = export_sklearn(host, out)
    result.artifact, result.bundle = "onnx", str(bundle.path)
    result.size_bytes = bundle.manifest.model.size_bytes
    X, y = table.X.to_numpy(dtype=np.float32), table.y

    def score(sub: np.ndarray) -> float:
        pipe = build_pipeline(name, "classification", table.numeric, [], seed)
        pipe.fit(X[sub], y[sub])
        return evaluate("classification", y[test_idx], pipe.predict(X[test_idx]))["accuracy"]

    result.learning_curve = learning_curve(fractions, train_idx, y, seed, score)


def _cnn(
    windows: TensorData, network: str, train_idx: np.ndarray, test_idx: np.ndarray,
    work: Path, seed: int, epochs: int, fractions: Sequence[float], result: CandidateResult,
) -> None:  # fmt: skip
    fit = network_trainer(windows, network, test_idx, seed, epochs)
    host = fit(train_idx)
    y_test = np.asarray(windows.y)[test_idx]
    export_network(host, work, result, y_test, lambda m: _labels(m, windows.X[test_idx]))
    result.learning_curve = learning_curve(
        fractions, train_idx, np.asarray(windows.y), seed,
        lambda sub: deep_score(fit, host, sub, train_idx),
    )  # fmt: skip
