"""Metrics and thresholds of the unsupervised models (anomaly detection, clustering)."""

from __future__ import annotations

from typing import Any

import numpy as np


def anomaly_scores(pipeline: Any, X: Any) -> np.ndarray:
    """Higher is more anomalous (scikit-learn's decision function, negated)."""
    return -np.asarray(pipeline.decision_function(X), dtype=np.float64)


def anomaly_metrics(
    pipeline: Any,
    X_fit: Any,
    X_test: Any,
    y_test: np.ndarray,
    normal: str | None,
    contamination: float,
) -> tuple[dict[str, float], dict[str, Any]]:
    """The threshold (from the training scores) and, with labels, how well it flags."""
    return flag_metrics(
        anomaly_scores(pipeline, X_fit), anomaly_scores(pipeline, X_test), y_test, normal,
        contamination,
    )  # fmt: skip


def flag_metrics(
    fit_scores: np.ndarray,
    scores: np.ndarray,
    y_test: np.ndarray,
    normal: str | None,
    contamination: float,
) -> tuple[dict[str, float], dict[str, Any]]:
    """Threshold at the ``1 - contamination`` quantile of the training scores; with labels,
    precision / recall / F1 / false alarms / ROC AUC of flagging the non-``normal`` rows."""
    threshold = float(np.quantile(fit_scores, 1 - contamination))
    flagged = scores > threshold
    metrics: dict[str, float] = {"flagged_rate": float(flagged.mean())}
    if normal is not None:
        from sklearn import metrics as skm

        truth = np.asarray(y_test).astype(str) != normal
        metrics |= {
            "precision": float(skm.precision_score(truth, flagged, zero_division=0)),
            "recall": float(skm.recall_score(truth, flagged, zero_division=0)),
            "f1": float(skm.f1_score(truth, flagged, zero_division=0)),
            "false_alarm_rate": float(flagged[~truth].mean()) if (~truth).any() else 0.0,
        }
        if truth.any() and (~truth).any():
            metrics["roc_auc"] = float(skm.roc_auc_score(truth, scores))
    spec = {"threshold": threshold, "contamination": contamination, "normal": normal}
    return metrics, spec


def clustering_metrics(pipeline: Any, X_test: Any, y_test: np.ndarray) -> dict[str, float]:
    """Inertia of the fit; silhouette and (with labels) adjusted Rand index on the test rows."""
    from sklearn import metrics as skm

    labels = pipeline.predict(X_test)
    out = {"inertia": float(pipeline.steps[-1][1].inertia_)}
    if len(set(labels.tolist())) > 1:
        transformed = pipeline[:-1].transform(X_test)
        out["silhouette"] = float(skm.silhouette_score(transformed, labels))
    out["adjusted_rand"] = float(skm.adjusted_rand_score(np.asarray(y_test).astype(str), labels))
    return out
