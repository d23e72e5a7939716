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
from edgewise.edge.errors import EdgewiseError
from edgewise.edge.runtime.bundle import load_bundle
from edgewise.edge.runtime.manifest import WindowFeatures
from edgewise.edge.runtime.model import ServedModel
from edgewise.trainer.compare import (
    DEEP_BUDGET_S,
    FRACTIONS,
    LATENCY_CALLS,
    READABLE,
    CandidateResult,
    CompareReport,
    _confusion,
    _set_interval,
    deep_score,
    export_network,
    learning_curve,
    measure_memory,
    network_split_score,
    network_trainer,
)
from edgewise.trainer.models import MODELS, build_pipeline
from edgewise.trainer.tensors import TensorData, pixel_dataset, window_feature_dataset
from edgewise.trainer.train import evaluate, split_indices, train
from edgewise.trainer.uncertainty import (
    REPEATS,
    Split,
    band,
    blocked_splits,
    held_out_rows,
    repeated,
    seeded_splits,
)

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
    repeats: int = REPEATS,
    deep_budget_s: float = DEEP_BUDGET_S,
    progress: Callable[[str], None] = lambda step: None,
) -> CompareReport:
    """Train, convert and measure every candidate on ``windows`` (sensor windows or images;
    bundles under ``work``); score each on ``repeats`` splits (networks: while
    ``deep_budget_s`` lasts) for its 95 % interval."""
    kind = windows.kind
    default = WINDOW_CANDIDATES if kind == "window" else IMAGE_CANDIDATES
    names = check_tensor_candidates(candidates or default, kind)
    if kind == "window":
        table, spec = window_feature_dataset(windows, sample_rate)
    else:
        table, spec = pixel_dataset(windows), None
    train_idx, test_idx = split_indices(table, 0.2, seed, windows.test_index)
    splits = _splits(windows, table, (train_idx, test_idx), seed, repeats)
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
                _cnn(windows, name, splits, work, seed, epochs, fractions, result, deep_budget_s)
            else:
                _features_model(table, spec, splits, name, work, seed, fractions, result)
            result.memory_kib = measure_memory(result.bundle)
            served = ServedModel.load(load_bundle(result.bundle))
            _measure(served, X_test, y_test, labels, seed, result, groups)
        except (EdgewiseError, ParityError) as exc:
            result.skipped = str(exc)
            log.warning("%s skipped: %s", name, exc)
        report.candidates.append(result)
    return report


def _splits(windows: TensorData, table: Any, first: Split, seed: int, repeats: int) -> list[Split]:
    """compare's own split first, then: blocks of each run for windows cut from a
    time-ordered CSV (random rows would put overlapping windows on both sides), else
    seeded stratified splits."""
    if windows.test_index is None:
        return seeded_splits(table, seed, repeats)
    if windows.runs is None or windows.starts is None:
        return [first]  # a loader's split we cannot vary: no interval
    window = windows.X.shape[1]
    return [first, *blocked_splits(windows.runs, windows.starts, window, repeats)[1:]]


def _features_model(
    table: Any, spec: WindowFeatures | None, splits: Sequence[Split], name: str,
    work: Path, seed: int, fractions: Sequence[float], result: CandidateResult,
) -> None:  # fmt: skip
    test_idx = splits[0][1]
    host = train(table, name, name, seed=seed, test_index=test_idx, window_features=spec)
    result.fit_seconds = float(host.meta.metrics["fit_seconds"])
    result.quality = {k: v for k, v in host.meta.metrics.items() if k != "fit_seconds"}
    out = work / name
    shutil.rmtree(out, ignore_errors=True)
    bundle = export_sklearn(host, out)
    result.artifact, result.bundle = "onnx", str(bundle.path)
    result.size_bytes = bundle.manifest.model.size_bytes
    X, y = table.X.to_numpy(dtype=np.float32), table.y

    def score(sub: np.ndarray, test: np.ndarray) -> float:
        pipe = build_pipeline(name, "classification", table.numeric, [], seed)
        pipe.fit(X[sub], y[sub])
        return float(evaluate("classification", y[test], pipe.predict(X[test]))["accuracy"])

    # Each split gives a learning curve; the full-data point is the split's score.
    curves = [
        learning_curve(fractions, tr, y, seed, lambda s, t=te: score(s, t)) for tr, te in splits
    ]
    result.learning_curve = curves[0]
    top = f"{max(fractions):g}"
    later = [c[top] for c in curves[1:]]
    _set_interval(result, [result.quality["accuracy"], *later], held_out_rows(splits))
    result.learning_band = band(curves) if len(curves) > 1 else {}


def _cnn(
    windows: TensorData, network: str, splits: Sequence[Split], work: Path, seed: int,
    epochs: int, fractions: Sequence[float], result: CandidateResult, budget_s: float,
) -> None:  # fmt: skip
    train_idx, test_idx = splits[0]
    fit = network_trainer(windows, network, test_idx, seed, epochs)
    host = fit(train_idx)
    y_test = np.asarray(windows.y)[test_idx]
    export_network(host, work, result, y_test, lambda m: _labels(m, windows.X[test_idx]))
    result.learning_curve = learning_curve(
        fractions, train_idx, np.asarray(windows.y), seed,
        lambda sub: deep_score(fit, host, sub, train_idx),
    )  # fmt: skip
    split_score = network_split_score(windows, network, seed, epochs)
    scores = repeated(splits, split_score, result.quality["accuracy"], budget_s)
    _set_interval(result, scores, held_out_rows(splits))
