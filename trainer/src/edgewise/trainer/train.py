"""Fit a pipeline on a seeded split, measure it, and keep what conversion needs."""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
from sklearn.model_selection import train_test_split

from edgewise.converters.host_meta import AnomalySpec, HostFeature, HostMeta
from edgewise.converters.host_model import HostModel
from edgewise.edge.errors import EdgewiseError
from edgewise.edge.runtime.manifest import Reference, TrainingData, WindowFeatures
from edgewise.trainer.datasets import Dataset
from edgewise.trainer.models import (
    MODEL_TASK,
    build_pipeline,
    calibration_folds,
    check_model_name,
    describe_preprocessing,
)
from edgewise.trainer.reference import table_baseline, table_reference

log = logging.getLogger(__name__)


def evaluate(task: str, y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Accuracy and macro-F1 for classification; R², RMSE and MAE for regression."""
    from sklearn import metrics

    if task == "classification":
        return {
            "accuracy": float(metrics.accuracy_score(y_true, y_pred)),
            "f1_macro": float(metrics.f1_score(y_true, y_pred, average="macro")),
        }
    return {
        "r2": float(metrics.r2_score(y_true, y_pred)),
        "rmse": float(np.sqrt(metrics.mean_squared_error(y_true, y_pred))),
        "mae": float(metrics.mean_absolute_error(y_true, y_pred)),
    }


def split_indices(
    data: Dataset, test_size: float, seed: int, test_index: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded train/test row indices, stratified for classification; ``test_index`` given by
    a loader (time series must not leak) wins."""
    idx = np.arange(len(data.y))
    if test_index is not None:  # chosen by the loader (time series must not leak)
        test = np.zeros(len(idx), bool)
        test[test_index] = True
        return idx[~test], idx[test]
    stratify = None
    if data.task == "classification":
        _, counts = np.unique(data.y, return_counts=True)
        stratify = data.y if counts.min() >= 2 else None
    try:
        train_idx, test_idx = train_test_split(
            idx, test_size=test_size, random_state=seed, stratify=stratify
        )
    except ValueError as exc:
        raise EdgewiseError(f"cannot split {data.source} for training: {exc}") from None
    return np.asarray(train_idx), np.asarray(test_idx)


def train(
    data: Dataset,
    model: str,
    name: str,
    seed: int = 0,
    test_size: float = 0.2,
    *,
    params: dict[str, Any] | None = None,
    normal: str | None = None,
    contamination: float = 0.01,
    test_index: np.ndarray | None = None,
    window_features: WindowFeatures | None = None,
    reference: Reference | None = None,
) -> HostModel:
    """Train ``model`` on ``data``; the held-out split is kept for metrics and parity.

    Unsupervised models (``MODEL_TASK``) set the task: ``anomaly`` fits on the training
    rows labelled ``normal`` (all rows when None) and sets the alarm threshold at the
    ``1 - contamination`` quantile of their scores; ``clustering`` fits on all of them.
    The drift ``reference`` is the training rows' (window-feature models: pass the raw
    windows' one, since the device receives windows).
    """
    task = MODEL_TASK.get(model, data.task)
    check_model_name(model, task)
    if not 0 < test_size < 1:
        raise EdgewiseError(f"test size {test_size!r} must be between 0 and 1")
    if not 0 < contamination < 0.5:
        raise EdgewiseError(f"contamination {contamination!r} must be between 0 and 0.5")
    if normal is not None and task != "anomaly":
        raise EdgewiseError("--normal goes with an anomaly model (isolation-forest)")
    if normal is not None and normal not in set(np.asarray(data.y).astype(str)):
        raise EdgewiseError(f"--normal {normal!r} is not a label of {data.source}")
    train_idx, test_idx = split_indices(data, test_size, seed, test_index)
    X_train, X_test = data.X.iloc[train_idx], data.X.iloc[test_idx]
    y_train, y_test = data.y[train_idx], data.y[test_idx]
    pipeline = build_pipeline(model, task, data.numeric, data.categorical, seed, params, data.text)
    strings = set(data.categorical) | set(data.text)
    features = tuple(
        HostFeature(name=c, dtype="string" if c in strings else "float32") for c in data.X.columns
    )

    def model_input(X: Any) -> Any:  # as HostModel.model_input, before the model exists
        return X.to_numpy(dtype=np.float32) if data.layout == "tensor" else X

    X_held, y_held = X_test.reset_index(drop=True), np.asarray(y_test)
    if reference is None and window_features is None:
        reference = table_reference(X_train, data.categorical, data.text)
    baseline = table_baseline(X_train, list(strings)) if not data.text else None
    if task == "anomaly" and normal is not None:
        keep = np.asarray(y_train).astype(str) == normal
        X_train, y_train = X_train[keep], y_train[keep]
    calibration_folds(pipeline, y_train)
    started = time.perf_counter()
    pipeline.fit(model_input(X_train), y_train)
    fit_s = time.perf_counter() - started
    anomaly = None
    if task == "anomaly":
        from edgewise.trainer.unsupervised import anomaly_metrics

        metrics, anomaly = anomaly_metrics(
            pipeline, model_input(X_train), model_input(X_held), y_held, normal, contamination
        )
    elif task == "clustering":
        from edgewise.trainer.unsupervised import clustering_metrics

        metrics = clustering_metrics(pipeline, model_input(X_held), y_held)
    else:
        metrics = evaluate(task, y_held, pipeline.predict(model_input(X_held)))
    meta = HostMeta(
        name=name,
        task=task,  # type: ignore[arg-type]
        model=model,
        layout=data.layout,  # type: ignore[arg-type]
        features=features,
        text=tuple(data.text),
        preprocessing=tuple(describe_preprocessing(pipeline)),
        metrics=metrics | {"fit_seconds": round(fit_s, 4)},
        training_data=TrainingData(
            source=data.source,
            sha256=data.sha256,
            rows=len(data.X),
            test_rows=len(test_idx),
            seed=seed,
        ),
        anomaly=AnomalySpec.model_validate(anomaly) if anomaly is not None else None,
        window_features=window_features,
        reference=reference,
        baseline=baseline,
    )
    host = HostModel(pipeline, meta, X_held, y_held)
    log.info("trained %s on %s in %.2fs: %s", model, data.source, fit_s, metrics)
    return host
