"""Explanations on the device, from the manifest's ``explain`` section (docs/mqtt.md).

``linear``: exact per-feature contributions to the decision of the predicted class
(logit for classifiers, the value for regressors): ``coef[k] * (x - mean) / scale`` with
missing values imputed as in training; ``base`` is the intercept, so base + the sum of
all contributions is the model's decision. ``global``: the model's global importances,
the same for every prediction.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgewise.edge.errors import BundleError
from edgewise.edge.runtime.manifest import GlobalExplain, LinearExplain

DEFAULT_TOP = 3


class Explainer:
    """Builds the ``explanation`` of each prediction of one model."""

    def __init__(
        self, spec: LinearExplain | GlobalExplain, features: list[str], labels: list[Any] | None
    ) -> None:
        self.method = spec.method
        self.features = features
        n = len(features)
        if isinstance(spec, LinearExplain):
            self._impute = np.asarray(spec.impute, dtype=np.float64)
            self._mean = np.asarray(spec.mean, dtype=np.float64)
            self._scale = np.asarray(spec.scale, dtype=np.float64)
            self._coef = np.asarray(spec.coef, dtype=np.float64)
            self._intercept = np.asarray(spec.intercept, dtype=np.float64)
            shapes = {len(self._impute), len(self._mean), len(self._scale), self._coef.shape[1]}
            if shapes != {n}:
                raise BundleError(f"explain section does not match the {n} features")
        else:
            self._importance = np.asarray(spec.importance, dtype=np.float64)
            if len(self._importance) != n:
                raise BundleError(f"explain section does not match the {n} features")
        self._labels = [str(label) for label in labels] if labels else None

    def explain(
        self, rows: np.ndarray[Any, Any], predictions: list[dict[str, Any]], top: int | None
    ) -> list[dict[str, Any]]:
        """One explanation per row; ``top`` features by magnitude (None: all)."""
        if self.method == "global":
            order = np.argsort(-self._importance)[:top]
            ranked = [
                {"feature": self.features[j], "importance": round(float(self._importance[j]), 6)}
                for j in order
            ]
            return [{"method": "global", "top": ranked} for _ in predictions]
        x = np.where(np.isnan(rows), self._impute, rows.astype(np.float64))
        z = (x - self._mean) / self._scale
        out = []
        for i, pred in enumerate(predictions):
            weights, base = self._weights(pred)
            contrib = weights * z[i]
            order = np.argsort(-np.abs(contrib))[:top]
            ranked = [
                {
                    "feature": self.features[j],
                    "value": float(x[i, j]),
                    "contribution": round(float(contrib[j]), 6),
                }
                for j in order
            ]
            out.append({"method": "linear", "base": round(base, 6), "top": ranked})
        return out

    def _weights(self, pred: dict[str, Any]) -> tuple[np.ndarray[Any, Any], float]:
        if self._labels is None:  # regression: one row of coefficients
            return self._coef[0], float(self._intercept[0])
        k = self._labels.index(str(pred["label"]))
        if self._coef.shape[0] == 1:  # binary: the row scores class 1; class 0 is its negative
            sign = 1.0 if k == 1 else -1.0
            return sign * self._coef[0], sign * float(self._intercept[0])
        return self._coef[k], float(self._intercept[k])
