"""The training side of drift: each input's distribution, recorded in the host model.

``edge.drift_profile`` does the profiling and binning (the device runs the same code);
this module feeds it training data: a table's columns (or a text column), or an array of
windows, images or rows. The converters add the answers' distribution on held-out rows
(``converters.drift_reference``) and write it all into the manifest's ``reference``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from edgewise.edge.drift_profile import (
    fit_reference,
    image_profile,
    tabular_columns,
    text_profile,
    text_vocabulary,
    window_profile,
)
from edgewise.edge.manifest import MISSING_CATEGORY, Feature, Reference


def table_reference(X: pd.DataFrame, strings: Sequence[str], text: Sequence[str]) -> Reference:
    """A table's training rows: its columns (``strings`` are categories), or with a
    ``text`` column, the texts' lengths and out-of-vocabulary rates."""
    if text:
        texts = [str(v) for v in X[text[0]].fillna(MISSING_CATEGORY)]
        vocabulary = text_vocabulary(texts)
        return fit_reference(
            "text", text_profile(texts, frozenset(vocabulary)), len(X), vocabulary=vocabulary
        )
    features = [
        Feature(name=str(c), dtype="string" if c in strings else "float32", nullable=True)
        for c in X.columns
    ]
    rows = [[None if _missing(v) else v for v in row] for row in X.itertuples(index=False)]
    return fit_reference("tabular", tabular_columns(rows, features), len(X))


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def array_reference(
    kind: str, X: np.ndarray[Any, Any], channels: Sequence[str], sample_rate: float | None = None
) -> Reference:
    """Training arrays: rows ``(N, F)``, windows ``(N, T, C)`` or images ``(N, H, W, C)``."""
    if kind == "window":
        columns = window_profile(X, channels, sample_rate)
        return fit_reference("window", columns, len(X), sample_rate=sample_rate)
    if kind == "image":
        return fit_reference("image", image_profile(X), len(X))
    names = list(channels) if len(channels) == X.shape[1] else [f"x{i}" for i in range(X.shape[1])]
    return fit_reference(
        "tabular", {n: X[:, j].astype(np.float64) for j, n in enumerate(names)}, len(X)
    )


def table_baseline(X: pd.DataFrame, strings: Sequence[str]) -> tuple[float | str, ...]:
    """What occlusion sets a feature to (edge.occlusion): a number's training mean, a
    string's most frequent training category (missing counts as ``""``)."""
    values: list[float | str] = []
    for c in X.columns:
        if c in strings:
            counts = X[c].fillna(MISSING_CATEGORY).astype(str).value_counts()
            values.append(str(counts.index[0]) if len(counts) else MISSING_CATEGORY)
        else:
            mean = pd.to_numeric(X[c], errors="coerce").astype(float).mean()
            values.append(0.0 if np.isnan(mean) else round(float(mean), 6))
    return tuple(values)


def array_baseline(kind: str, X: np.ndarray[Any, Any]) -> tuple[float, ...]:
    """Occlusion baseline of arrays: per-feature means of rows, per-channel means of
    windows ``(N, T, C)`` and images ``(N, H, W, C)``."""
    axes = tuple(range(X.ndim - 1))
    with np.errstate(all="ignore"):
        means = np.nanmean(X.astype(np.float64), axis=axes) if len(X) else np.zeros(X.shape[-1])
    return tuple(round(float(v), 6) for v in np.nan_to_num(means))
