"""The training side of drift: each input's distribution, recorded in the host model.

``edge.runtime.drift_profile`` does the profiling and binning (the device runs the same code);
this module feeds it training data: a table's columns (or a text column), or an array of
windows, images or rows. The converters add the answers' distribution on held-out rows
(``converters.drift_reference``) and write it all into the manifest's ``reference``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from edgewise.edge.runtime.drift_profile import (
    fit_reference,
    image_profile,
    tabular_columns,
    text_profile,
    text_vocabulary,
    window_profile,
)
from edgewise.edge.runtime.manifest import MISSING_CATEGORY, Feature, Marginal, Reference


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
    rows = [[None if is_missing(v) else v for v in row] for row in X.itertuples(index=False)]
    return fit_reference("tabular", tabular_columns(rows, features), len(X))


def is_missing(value: Any) -> bool:
    """None or a float NaN: a missing table value."""
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


QUANTILES = (0.1, 0.3, 0.5, 0.7, 0.9)  # a number's occlusion values, equal shares


def marginal(values: Any, string: bool, top: int = 8) -> Marginal:
    """A training column as occlusion values (edge.runtime.occlusion): the ``top`` most frequent
    categories of a string (missing counts as ``""``), the quintile midpoints of a number."""
    if string:
        column = pd.Series(values, dtype=object).fillna(MISSING_CATEGORY).astype(str)
        counts = column.value_counts().iloc[:top]
    else:
        numbers = pd.to_numeric(pd.Series(values), errors="coerce").astype(float).dropna()
        points = numbers.quantile(QUANTILES).round(6) if len(numbers) else pd.Series([0.0])
        counts = points.value_counts(sort=False)  # equal quantiles merge their shares
    if not len(counts):
        counts = pd.Series({MISSING_CATEGORY: 1})
    shares = (counts / counts.sum()).round(6)
    shares.iloc[0] += 1 - shares.sum()  # rounding: the shares sum to 1
    return Marginal(
        values=tuple(str(k) if string else float(k) for k in counts.index),
        shares=tuple(float(v) for v in shares),
    )


def table_baseline(X: pd.DataFrame, strings: Sequence[str]) -> tuple[Marginal, ...]:
    """Occlusion baseline of a table's training rows: one ``marginal`` per column."""
    return tuple(marginal(X[c].to_numpy(), c in strings) for c in X.columns)


def array_baseline(kind: str, X: np.ndarray[Any, Any]) -> tuple[float | Marginal, ...]:
    """Occlusion baseline of arrays: a ``marginal`` per column of rows, per-channel means
    of windows ``(N, T, C)`` and images ``(N, H, W, C)``."""
    if kind == "tabular":
        return tuple(marginal(X[:, j], False) for j in range(X.shape[1]))
    with np.errstate(all="ignore"):
        means = np.nanmean(X.astype(np.float64), axis=tuple(range(X.ndim - 1)))
    return tuple(round(float(v), 6) for v in np.nan_to_num(means))
