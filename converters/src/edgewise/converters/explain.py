"""What the device needs to explain a prediction cheaply, taken from a fitted pipeline.

- Linear models (logistic / linear regression) after median imputation and
  standardization: the per-feature contribution to the decision, ``coef * z`` with
  ``z = (x - mean) / scale``, exact and a few multiplications per feature.
- Every other model (trees, boosting, k-NN, SVM, networks, and any model with
  categorical columns): occlusion (edge.runtime.occlusion), per prediction, with the training
  baseline the trainer recorded; it costs one extra inference per feature or group.
  Text classifiers get none (one free-text input has nothing to occlude).

The ``global`` method (tree importances, the same for every prediction) is still served
for bundles written before occlusion existed.
"""

from __future__ import annotations

from edgewise.converters.host_meta import HostMeta
from edgewise.converters.host_model import HostModel
from edgewise.edge.runtime.manifest import LinearExplain, OcclusionExplain


def occlusion_spec(meta: HostMeta) -> OcclusionExplain | None:
    """Occlusion against the training baseline, when the trainer recorded one."""
    return OcclusionExplain(baseline=meta.baseline) if meta.baseline else None


def explain_spec(host: HostModel) -> LinearExplain | OcclusionExplain | None:
    """The manifest's ``explain`` section for ``host``, or None when it has none."""
    pipeline = host.pipeline
    if host.layout != "tensor" or not hasattr(pipeline, "named_steps"):
        return occlusion_spec(host.meta)
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
    return occlusion_spec(host.meta)
