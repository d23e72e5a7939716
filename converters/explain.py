"""What the device needs to explain a prediction cheaply, taken from a fitted pipeline.

- Linear models (logistic / linear regression) after median imputation and
  standardization: the per-feature contribution to the decision, ``coef * z`` with
  ``z = (x - mean) / scale``, exact and a few multiplications per feature.
- Tree ensembles and single trees: their global (impurity) importance, the same for every
  prediction; labelled ``global`` so nobody reads it as a per-prediction attribution.

Only numeric (``tensor`` layout) pipelines are covered: with one-hot columns a feature's
contribution is spread over encoded columns the device does not see.
"""

from __future__ import annotations

from edgewise.converters.host_model import HostModel
from edgewise.edge.manifest import GlobalExplain, LinearExplain


def explain_spec(host: HostModel) -> LinearExplain | GlobalExplain | None:
    """The manifest's ``explain`` section for ``host``, or None when it has none."""
    pipeline = host.pipeline
    if host.layout != "tensor" or not hasattr(pipeline, "named_steps"):
        return None
    steps = pipeline.named_steps
    est = steps["model"]
    imputer = steps.get("impute")
    if hasattr(est, "coef_") and "scale" in steps and imputer is not None:
        scaler = steps["scale"]
        coef = est.coef_.reshape(1, -1) if est.coef_.ndim == 1 else est.coef_
        intercept = (
            est.intercept_.reshape(-1) if hasattr(est.intercept_, "reshape") else [est.intercept_]
        )
        return LinearExplain(
            impute=tuple(float(v) for v in imputer.statistics_),
            mean=tuple(float(v) for v in scaler.mean_),
            scale=tuple(float(v) for v in scaler.scale_),
            coef=tuple(tuple(float(v) for v in row) for row in coef),
            intercept=tuple(float(v) for v in intercept),
        )
    if hasattr(est, "feature_importances_"):
        return GlobalExplain(importance=tuple(float(v) for v in est.feature_importances_))
    return None
