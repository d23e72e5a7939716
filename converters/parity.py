"""Parity between a converted model and the original, and the gate that enforces it."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from edge.errors import EdgewiseError

DEFAULT_TOLERANCE = 1e-4


class ParityError(EdgewiseError):
    """The converted model does not answer like the original."""


@dataclass(frozen=True)
class ParityReport:
    """How closely the converted model followed the original on held-out rows."""

    rows: int
    passed: bool
    tolerance: float
    label_agreement: float | None = None
    max_abs_diff: float | None = None
    max_rel_diff: float | None = None

    def as_manifest(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def classification_parity(
    estimator: str,
    labels_ref: np.ndarray,
    labels_new: np.ndarray,
    proba_ref: np.ndarray | None,
    proba_new: np.ndarray | None,
    tolerance: float = DEFAULT_TOLERANCE,
) -> ParityReport:
    """Every label must agree and every probability be within ``tolerance``."""
    labels_ref = np.asarray(labels_ref).reshape(-1)
    labels_new = np.asarray(labels_new).reshape(-1)
    agree = labels_ref.astype(str) == labels_new.astype(str)
    worst = 0.0
    if proba_ref is not None and proba_new is not None:
        worst = float(np.max(np.abs(np.asarray(proba_ref) - np.asarray(proba_new))))
    report = ParityReport(
        rows=len(labels_ref),
        passed=bool(agree.all()) and worst <= tolerance,
        tolerance=tolerance,
        label_agreement=float(agree.mean()),
        max_abs_diff=worst,
    )
    if not report.passed:
        raise ParityError(
            f"parity check failed for {estimator}: {int((~agree).sum())} of {len(agree)} labels "
            f"differ, worst probability difference {worst:.3g} (limit {tolerance:g})"
        )
    return report


def regression_parity(
    estimator: str, ref: np.ndarray, new: np.ndarray, tolerance: float = DEFAULT_TOLERANCE
) -> ParityReport:
    """Every value within ``tolerance`` relative to max(|reference|, 1)."""
    ref = np.asarray(ref, dtype=np.float64).reshape(-1)
    new = np.asarray(new, dtype=np.float64).reshape(-1)
    diff = np.abs(ref - new)
    rel = diff / np.maximum(np.abs(ref), 1.0)
    report = ParityReport(
        rows=len(ref),
        passed=bool(np.all(rel <= tolerance)),
        tolerance=tolerance,
        max_abs_diff=float(diff.max()),
        max_rel_diff=float(rel.max()),
    )
    if not report.passed:
        raise ParityError(
            f"parity check failed for {estimator}: worst relative difference "
            f"{report.max_rel_diff:.3g} (limit {tolerance:g}), absolute {report.max_abs_diff:.3g}"
        )
    return report
