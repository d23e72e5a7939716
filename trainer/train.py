"""Fit a pipeline on a seeded split, measure it, and keep what conversion needs."""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
from sklearn.model_selection import train_test_split

from converters.host_model import HostModel
from edge.errors import EdgewiseError
from trainer.datasets import Dataset
from trainer.models import build_pipeline, check_model_name, describe_preprocessing

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


def train(data: Dataset, model: str, name: str, seed: int = 0, test_size: float = 0.2) -> HostModel:
    """Train ``model`` on ``data``; the held-out split is kept for metrics and parity."""
    check_model_name(model, data.task)
    if not 0 < test_size < 1:
        raise EdgewiseError(f"test size {test_size!r} must be between 0 and 1")
    stratify = None
    if data.task == "classification":
        _, counts = np.unique(data.y, return_counts=True)
        stratify = data.y if counts.min() >= 2 else None
    try:
        X_train, X_test, y_train, y_test = train_test_split(
            data.X, data.y, test_size=test_size, random_state=seed, stratify=stratify
        )
    except ValueError as exc:
        raise EdgewiseError(f"cannot split {data.source} for training: {exc}") from None
    pipeline = build_pipeline(model, data.task, data.numeric, data.categorical, seed)
    features = [
        {"name": c, "dtype": "string" if c in data.categorical else "float32"}
        for c in data.X.columns
    ]
    meta: dict[str, Any] = {"name": name, "task": data.task, "model": model, "layout": data.layout}
    host = HostModel(
        pipeline, meta | {"features": features}, X_test.reset_index(drop=True), np.asarray(y_test)
    )
    started = time.perf_counter()
    pipeline.fit(host.model_input(X_train), y_train)
    fit_s = time.perf_counter() - started
    metrics = evaluate(
        data.task, host.y_heldout, pipeline.predict(host.model_input(host.X_heldout))
    )
    host.meta |= {
        "preprocessing": describe_preprocessing(pipeline),
        "metrics": metrics | {"fit_seconds": round(fit_s, 4)},
        "training_data": {
            "source": data.source,
            "sha256": data.sha256,
            "rows": len(data.X),
            "test_rows": len(X_test),
            "seed": seed,
        },
    }
    log.info("trained %s on %s in %.2fs: %s", model, data.source, fit_s, metrics)
    return host
