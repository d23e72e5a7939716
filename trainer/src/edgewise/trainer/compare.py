"""Classical ML or deep learning? Measure both on the user's own tabular data.

``compare`` trains every candidate on one seeded split, converts it with the project's
own converters (parity gates included), and measures the converted artifact through the
edge code that will run it on the device (``ServedModel``): quality, per-sample latency,
size, a learning curve, and permutation importance. ``recommend`` picks one under the
user's constraints and says why, in figures.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from edgewise.converters.keras_export import KerasExportOptions, export_keras
from edgewise.converters.parity import ParityError
from edgewise.converters.sklearn_onnx import export_sklearn
from edgewise.edge.errors import EdgewiseError
from edgewise.edge.runtime.bundle import load_bundle
from edgewise.edge.runtime.model import ServedModel
from edgewise.trainer.datasets import Dataset
from edgewise.trainer.models import MODELS, build_pipeline
from edgewise.trainer.train import evaluate, split_indices, train
from edgewise.trainer.uncertainty import (
    REPEATS,
    band,
    held_out_rows,
    interval,
    repeated,
    seeded_splits,
)

log = logging.getLogger(__name__)

FRACTIONS = (0.1, 0.25, 0.5, 1.0)
# Inherently readable: a person can follow the decision (weights, one tree, likelihoods).
READABLE = {"logistic-regression", "linear", "decision-tree", "naive-bayes"}
DEFAULT_CANDIDATES = {
    "classification": ("logistic-regression", "decision-tree", "random-forest",
                       "hist-gradient-boosting", "knn", "mlp"),
    "regression": ("linear", "decision-tree", "random-forest", "hist-gradient-boosting", "knn"),
}  # fmt: skip
DEEP = {"mlp"}
DEEP_BUDGET_S = 120.0  # repeated splits of a network stop starting after this long
LATENCY_CALLS = 300


@dataclass
class CandidateResult:
    """Everything measured for one candidate (the JSON report holds a list of these)."""

    name: str
    family: str  # "classical" or "deep"
    readable: bool
    artifact: str = ""  # "onnx" / "tflite"
    quality: dict[str, float] = field(default_factory=dict)  # host model, held-out split
    quality_edge: dict[str, float] = field(default_factory=dict)  # converted, via edge code
    quality_int8: dict[str, float] | None = None
    int8_note: str = ""
    fit_seconds: float = 0.0
    latency_us: dict[str, float] = field(default_factory=dict)  # p50/p99 per sample, batch 1
    size_bytes: int = 0
    size_int8_bytes: int | None = None
    memory_kib: int | None = None  # peak RSS growth to load and serve it (fresh process)
    learning_curve: dict[str, float | None] = field(default_factory=dict)  # fraction -> score
    # Over repeated seeded splits (trainer.uncertainty): the primary metric's mean and
    # 95 % interval, and per learning-curve fraction an interval [low, high].
    interval: dict[str, Any] | None = None
    learning_band: dict[str, list[float]] = field(default_factory=dict)
    importance: dict[str, float] = field(default_factory=dict)  # feature -> score drop
    confusion: list[list[int]] | None = None
    bundle: str = ""
    skipped: str = ""  # why the candidate could not be measured, if it could not


@dataclass
class CompareReport:
    """The whole comparison: data set, candidates, recommendation."""

    source: str
    task: str
    rows: int
    test_rows: int
    features: list[str]
    labels: list[Any] | None
    primary: str  # the metric the recommendation ranks by
    candidates: list[CandidateResult]
    recommendation: dict[str, Any] = field(default_factory=dict)
    constraints: dict[str, float | None] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def primary_metric(task: str) -> str:
    return "accuracy" if task == "classification" else "rmse"


def check_candidates(names: Sequence[str], task: str) -> list[str]:
    """Validate candidate names before any work."""
    allowed = [*MODELS[task], *(DEEP if task == "classification" else ())]
    bad = [n for n in names if n not in allowed]
    if bad:
        raise EdgewiseError(f"unknown candidate(s) {bad} for {task}; choose from {allowed}")
    if not names:
        raise EdgewiseError("no candidate given")
    return list(dict.fromkeys(names))


def compare(
    data: Dataset,
    work: Path,
    candidates: Sequence[str] | None = None,
    *,
    seed: int = 0,
    epochs: int = 60,
    fractions: Sequence[float] = FRACTIONS,
    repeats: int = REPEATS,
    deep_budget_s: float = DEEP_BUDGET_S,
    progress: Callable[[str], None] = lambda step: None,
) -> CompareReport:
    """Train, convert and measure every candidate on ``data`` (bundles go under ``work``);
    score each on ``repeats`` seeded splits (networks: while ``deep_budget_s`` lasts)."""
    names = check_candidates(candidates or DEFAULT_CANDIDATES[data.task], data.task)
    results: list[CandidateResult] = []
    report: CompareReport | None = None
    for i, name in enumerate(names, 1):
        progress(f"[{i}/{len(names)}] {name}")
        family = "deep" if name in DEEP else "classical"
        result = CandidateResult(name, family, name in READABLE)
        try:
            if family == "classical":
                heldout = _classical(data, name, work, seed, fractions, result, repeats)
            else:
                heldout = _deep(data, name, work, seed, epochs, fractions, result)
                from edgewise.trainer.tensors import from_tabular

                fit_on = network_split_score(from_tabular(data), name, seed, epochs)
                splits = seeded_splits(data, seed, repeats)
                scores = repeated(splits, fit_on, result.quality["accuracy"], deep_budget_s)
                _set_interval(result, scores, held_out_rows(splits))
        except (EdgewiseError, ParityError) as exc:
            result.skipped = str(exc)
            log.warning("%s skipped: %s", name, exc)
            results.append(result)
            continue
        if report is None:
            report = CompareReport(
                data.source,
                data.task,
                len(data.X),
                len(heldout[1]),
                list(data.X.columns),
                sorted(np.unique(data.y).tolist()) if data.task == "classification" else None,
                primary_metric(data.task),
                results,
            )
        results.append(result)
    if report is None:
        raise EdgewiseError(
            "no candidate could be trained: " + "; ".join(r.skipped for r in results)
        )
    return report


def _fraction_index(train_idx: np.ndarray, y: np.ndarray, frac: float, seed: int) -> np.ndarray:
    """A seeded subsample of the training rows (a fit that fails on it scores None)."""
    rng = np.random.default_rng(seed)
    if frac >= 1.0:
        return train_idx
    n = max(2, round(frac * len(train_idx)))
    picked = rng.permutation(train_idx)[:n]
    return np.sort(picked)


def measure_memory(bundle: str | Path, calls: int = 200) -> int | None:
    """Peak RSS growth (KiB) of loading ``bundle`` and answering ``calls`` requests, in a
    fresh process with the runtimes already imported (edge.observe.memory_probe)."""
    import json
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "edgewise.edge.observe.memory_probe", str(bundle), str(calls)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode or not lines:
        log.warning("memory probe of %s failed: %s", bundle, done.stderr[-300:])
        return None
    return int(json.loads(lines[-1])["peak_rss_growth_kib"])


def learning_curve(
    fractions: Sequence[float],
    train_idx: np.ndarray,
    y: np.ndarray,
    seed: int,
    score: Callable[[np.ndarray], float],
) -> dict[str, float | None]:
    """``score(training rows)`` on growing seeded subsets of the training rows; a fit that
    fails on a subset (e.g. one class only in a tiny one) scores None."""
    curve: dict[str, float | None] = {}
    for frac in fractions:
        try:
            curve[f"{frac:g}"] = float(score(_fraction_index(train_idx, y, frac, seed)))
        except ValueError as exc:
            log.info("learning curve at %.0f%% of the training set: %s", frac * 100, exc)
            curve[f"{frac:g}"] = None
    return curve


def _rows(X: pd.DataFrame) -> list[list[Any]]:
    return [[None if pd.isna(v) else v for v in row] for row in X.itertuples(index=False)]


def _measure_edge(
    model: ServedModel, rows: list[list[Any]], y: np.ndarray, task: str, seed: int
) -> tuple[dict[str, float], dict[str, float], np.ndarray]:
    """Quality of the converted model through the edge code, and its per-sample latency."""
    pred = _predict(model, rows, task)
    quality = evaluate(task, y, pred)
    calls = [rows[i % len(rows)] for i in range(LATENCY_CALLS)]
    for row in calls[:30]:  # warm-up
        model.predict([row])
    lat = []
    for row in calls:
        t0 = time.perf_counter()
        model.predict([row])
        lat.append((time.perf_counter() - t0) * 1e6)
    return (
        quality,
        {"p50": float(np.percentile(lat, 50)), "p99": float(np.percentile(lat, 99))},
        pred,
    )


def _predict(model: ServedModel, rows: list[list[Any]], task: str) -> np.ndarray:
    out = model.predict(rows)
    key = "label" if task == "classification" else "value"
    return np.asarray([p[key] for p in out])


def _importance(
    model: ServedModel, X: pd.DataFrame, y: np.ndarray, task: str, seed: int, repeats: int = 3
) -> dict[str, float]:
    """Permutation importance on the converted model: how much the primary metric worsens
    when one feature's column is shuffled (accuracy points lost, or RMSE gained)."""
    rng = np.random.default_rng(seed)
    metric = primary_metric(task)
    base = evaluate(task, y, _predict(model, _rows(X), task))[metric]
    scores: dict[str, float] = {}
    for col in X.columns:
        drops = []
        for _ in range(repeats):
            shuffled = X.copy()
            shuffled[col] = rng.permutation(shuffled[col].to_numpy())
            value = evaluate(task, y, _predict(model, _rows(shuffled), task))[metric]
            drops.append(base - value if metric == "accuracy" else value - base)
        scores[str(col)] = round(float(np.mean(drops)), 5)
    return dict(sorted(scores.items(), key=lambda kv: -kv[1]))


def _confusion(y: np.ndarray, pred: np.ndarray, labels: list[Any]) -> list[list[int]]:
    index = {label: i for i, label in enumerate(labels)}
    matrix = np.zeros((len(labels), len(labels)), dtype=int)
    for t, p in zip(y.tolist(), pred.tolist(), strict=True):
        matrix[index[t], index[p]] += 1
    return matrix.tolist()


def _classical(
    data: Dataset,
    name: str,
    work: Path,
    seed: int,
    fractions: Sequence[float],
    result: CandidateResult,
    repeats: int = REPEATS,
) -> tuple[np.ndarray, np.ndarray]:
    host = train(data, name, name, seed=seed)
    result.fit_seconds = float(host.meta.metrics["fit_seconds"])
    result.quality = {k: v for k, v in host.meta.metrics.items() if k != "fit_seconds"}
    out = work / name
    shutil.rmtree(out, ignore_errors=True)
    bundle = export_sklearn(host, out)
    result.artifact, result.bundle = "onnx", str(bundle.path)
    result.memory_kib = measure_memory(bundle.path)
    served = ServedModel.load(load_bundle(bundle.path))
    result.size_bytes = bundle.manifest.model.size_bytes
    y = np.asarray(host.y_heldout)
    result.quality_edge, result.latency_us, pred = _measure_edge(
        served, _rows(host.X_heldout), y, data.task, seed
    )
    if data.task == "classification":
        labels = sorted(np.unique(data.y).tolist())
        result.confusion = _confusion(y, pred, labels)
    result.importance = _importance(served, host.X_heldout, y, data.task, seed)
    train_idx, test_idx = split_indices(data, 0.2, seed, None)
    metric = primary_metric(data.task)

    def score(sub: np.ndarray, test: np.ndarray = test_idx) -> float:
        pipe = build_pipeline(name, data.task, data.numeric, data.categorical, seed)
        pipe.fit(host.model_input(data.X.iloc[sub]), data.y[sub])
        pred = pipe.predict(host.model_input(data.X.iloc[test]))
        return float(evaluate(data.task, data.y[test], pred)[metric])

    result.learning_curve = learning_curve(fractions, train_idx, data.y, seed, score)
    curves = [result.learning_curve]

    def split_score(train: np.ndarray, test: np.ndarray) -> float:
        # Each split also gives a learning curve: the curves' spread is the band.
        curves.append(learning_curve(fractions, train, data.y, seed, lambda s: score(s, test)))
        return curves[-1][f"{max(fractions):g}"] or float("nan")

    splits = seeded_splits(data, seed, repeats)
    rows = held_out_rows(splits) if metric == "accuracy" else None
    _set_interval(result, repeated(splits, split_score, result.quality[metric]), rows)
    result.learning_band = band(curves) if len(curves) > 1 else {}
    return train_idx, test_idx


def _set_interval(
    result: CandidateResult, scores: Sequence[float | None], test_rows: int | None
) -> None:
    """The candidate's interval over its splits; ``test_rows`` for an accuracy's floor."""
    got = interval(scores, test_rows=test_rows)
    result.interval = got.to_json() if got is not None else None


def network_split_score(
    tensors: Any, name: str, seed: int, epochs: int
) -> Callable[[np.ndarray, np.ndarray], float]:
    """``score(train rows, test rows)``: held-out accuracy of a network trained on those
    rows of ``tensors`` (TensorData)."""

    def score(train_idx: np.ndarray, test_idx: np.ndarray) -> float:
        host = network_trainer(tensors, name, test_idx, seed, epochs)(train_idx)
        return float(host.meta.metrics["accuracy"])

    return score


def _deep(
    data: Dataset,
    name: str,
    work: Path,
    seed: int,
    epochs: int,
    fractions: Sequence[float],
    result: CandidateResult,
) -> tuple[np.ndarray, np.ndarray]:
    from edgewise.trainer.tensors import from_tabular

    tensor = from_tabular(data)  # refuses free text and regression, one line
    train_idx, test_idx = split_indices(data, 0.2, seed, None)
    fit = network_trainer(tensor, name, test_idx, seed, epochs)
    host = fit(train_idx)
    X_test = data.X.iloc[test_idx].reset_index(drop=True)
    y = data.y[test_idx]
    export_network(
        host, work, result, y, lambda m: _predict(m, _rows(X_test), data.task)
    )  # fmt: skip
    result.memory_kib = measure_memory(result.bundle)
    served = ServedModel.load(load_bundle(result.bundle))
    result.quality_edge, result.latency_us, pred = _measure_edge(
        served, _rows(X_test), y, data.task, seed
    )
    result.confusion = _confusion(y, pred, sorted(np.unique(data.y).tolist()))
    result.importance = _importance(served, X_test, y, data.task, seed)
    result.learning_curve = learning_curve(
        fractions, train_idx, data.y, seed, lambda sub: deep_score(fit, host, sub, train_idx)
    )
    return train_idx, test_idx


def network_trainer(
    data: Any, network: str, test_idx: np.ndarray, seed: int, epochs: int
) -> Callable[[np.ndarray], Any]:
    """``fit(training rows)``: the network trained on those rows of ``data`` (TensorData),
    always held out on ``test_idx``, so every subset is scored on the same rows."""
    from edgewise.trainer.deep import train_deep

    def fit(index: np.ndarray) -> Any:
        rows = np.concatenate([index, test_idx])
        sub = data.subset(rows, test_index=np.arange(len(index), len(rows)))
        return train_deep(sub, network, network, seed=seed, epochs=epochs)

    return fit


def export_network(
    host: Any,
    work: Path,
    result: CandidateResult,
    y_test: np.ndarray,
    predict: Callable[[ServedModel], np.ndarray],
) -> None:
    """Float TFLite bundle (the candidate) and, where the gate lets it, its int8 twin:
    training figures, sizes, and the int8 quality from ``predict`` on the test rows."""
    name = str(host.meta.name)
    result.fit_seconds = float(host.meta.metrics["fit_seconds"])
    result.quality = {k: v for k, v in host.meta.metrics.items() if k in ("accuracy", "f1_macro")}
    out = work / name
    shutil.rmtree(out, ignore_errors=True)
    bundle = export_keras(host, out, KerasExportOptions("tflite", "none"))
    result.artifact, result.bundle = "tflite", str(bundle.path)
    result.size_bytes = bundle.manifest.model.size_bytes
    int8_dir = work / f"{name}-int8"
    shutil.rmtree(int8_dir, ignore_errors=True)
    try:
        int8 = export_keras(host, int8_dir, KerasExportOptions("tflite", "int8"))
        result.size_int8_bytes = int8.manifest.model.size_bytes
        served8 = ServedModel.load(load_bundle(int8.path))
        result.quality_int8 = evaluate("classification", y_test, predict(served8))
    except (ParityError, EdgewiseError) as exc:  # refused by the gate, or not loadable
        result.int8_note = f"int8 refused: {exc}"


def deep_score(fit: Callable[[np.ndarray], Any], full: Any, sub: np.ndarray, train: Any) -> float:
    """Held-out accuracy of a network trained on ``sub`` (the full one is reused)."""
    host = full if len(sub) == len(train) else fit(sub)
    return float(host.meta.metrics["accuracy"])
