"""Rows of a mixed table as the float matrix a network takes (manifest ``categories``).

A network trained on a table with categorical columns takes one float tensor: each
numeric feature is one column (missing values stay NaN, filled later with the manifest's
``input.impute``), each string feature is one column per training category. A value not
among the categories, unseen in training, encodes as all zeros, as scikit-learn's
``OneHotEncoder(handle_unknown="ignore")`` does in the classical pipelines; a missing
string is the category ``""`` (``MISSING_CATEGORY``), its own column when training had
missing values. The trainer encodes with this same class, so host and device agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from edgewise.edge.runtime.manifest import Feature


class OneHotRows:
    """Encodes rows (raw values in feature order) for a tensor-layout tabular model."""

    def __init__(self, features: Sequence[Feature]) -> None:
        self.features = tuple(features)
        self.starts: list[int] = []
        self._vocab: list[dict[str, int] | None] = []
        start = 0
        for feature in self.features:
            self.starts.append(start)
            cats = feature.categories
            self._vocab.append({c: k for k, c in enumerate(cats)} if cats is not None else None)
            start += feature.width
        self.width = start

    def columns(self, j: int) -> slice:
        """The tensor columns of feature ``j``."""
        return slice(self.starts[j], self.starts[j] + self.features[j].width)

    def encode(self, rows: np.ndarray[Any, Any] | Sequence[Sequence[Any]]) -> np.ndarray[Any, Any]:
        """``(n, features)`` raw values -> ``(n, width)`` float32 (NaN for missing numbers)."""
        n = len(rows)
        out = np.zeros((n, self.width), dtype=np.float32)
        for j, vocab in enumerate(self._vocab):
            start = self.starts[j]
            column = [row[j] for row in rows]
            if vocab is None:
                out[:, start] = np.asarray(
                    [np.nan if v is None else v for v in column], dtype=np.float32
                )
                continue
            hits = [(i, vocab.get(v)) for i, v in enumerate(column) if isinstance(v, str)]
            index = [(i, start + k) for i, k in hits if k is not None]
            if index:
                r, c = zip(*index)
                out[list(r), list(c)] = 1.0
        return out
