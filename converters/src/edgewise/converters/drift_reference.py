"""The manifest's drift ``reference``: training inputs (from the host model) plus the
distribution and mean confidence of the answers the staged bundle gave on held-out rows."""

from __future__ import annotations

from typing import Any

import numpy as np

from edgewise.edge.runtime.drift_profile import (
    confidences,
    fit_distribution,
    prediction_categories,
    prediction_values,
)
from edgewise.edge.runtime.manifest import ClusteringHead, Manifest, Reference


def with_reference(
    manifest: Manifest, reference: Reference | None, answers: list[dict[str, Any]]
) -> Manifest:
    """``manifest`` with ``reference`` completed by the held-out ``answers`` (unchanged
    without a reference: a host model trained before drift existed)."""
    if reference is None or not answers:
        return manifest
    head = manifest.output
    clusters = head.clusters if isinstance(head, ClusteringHead) else None
    categories = prediction_categories(manifest.task, manifest.labels, clusters)
    values = prediction_values(manifest.task, answers)
    predictions = fit_distribution("prediction", values, categories)
    conf = confidences(answers)
    present = conf[~np.isnan(conf)]
    mean = round(float(present.mean()), 6) if len(present) else None
    complete = reference.model_copy(update={"predictions": predictions, "confidence": mean})
    return manifest.model_copy(update={"reference": complete})
