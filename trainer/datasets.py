"""Tabular data for training: the data sets scikit-learn ships, or a user's CSV file.

Numeric columns become float32 (so that the float32 ONNX graph sees exactly the values the
scikit-learn model saw); categorical columns become strings, with missing values mapped to
"" outside the graph (the manifest records that step).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from pandas.api.types import is_bool_dtype, is_numeric_dtype

from edgewise.edge.capture_store import CAPTURE_COLUMNS
from edgewise.edge.errors import EdgewiseError
from edgewise.edge.manifest import MISSING_CATEGORY

# name -> (scikit-learn loader, task)
BUILTIN: dict[str, tuple[str, str]] = {
    "iris": ("load_iris", "classification"),
    "wine": ("load_wine", "classification"),
    "breast_cancer": ("load_breast_cancer", "classification"),
    "digits": ("load_digits", "classification"),
    "diabetes": ("load_diabetes", "regression"),
}
TASKS = ("classification", "regression")
# An integer target with at most this many distinct values is taken as class labels.
MAX_INTEGER_CLASSES = 20


@dataclass
class Dataset:
    """Features (raw, as the device will receive them), target and provenance."""

    X: pd.DataFrame
    y: np.ndarray
    task: str
    source: str
    sha256: str
    categorical: list[str]
    text: list[str] = field(default_factory=list)  # free-text columns (TF-IDF in the graph)

    @property
    def numeric(self) -> list[str]:
        return [c for c in self.X.columns if c not in self.categorical and c not in self.text]

    @property
    def layout(self) -> str:
        """'tensor' (one float32 matrix input) when all features are numeric, else 'columns'."""
        return "columns" if self.categorical or self.text else "tensor"

    @property
    def has_missing(self) -> bool:
        return bool(self.X[self.numeric].isna().to_numpy().any())


def load_builtin(name: str) -> Dataset:
    """One of the data sets that ship with scikit-learn (no download)."""
    if name not in BUILTIN:
        raise EdgewiseError(f"unknown data set {name!r}; built-in: {', '.join(BUILTIN)}")
    import sklearn.datasets

    loader, task = BUILTIN[name]
    bunch = getattr(sklearn.datasets, loader)()
    if name == "digits":
        columns = [f"pixel_{i // 8}_{i % 8}" for i in range(64)]
    else:
        columns = [str(c) for c in bunch.feature_names]
    X = pd.DataFrame(np.asarray(bunch.data, dtype=np.float32), columns=columns)
    y = np.asarray(bunch.target)
    if task == "classification" and name != "digits":
        y = np.asarray(bunch.target_names)[y].astype(str)  # readable labels on the device
    digest = hashlib.sha256(X.to_numpy().tobytes() + np.ascontiguousarray(y).tobytes()).hexdigest()
    return Dataset(X, y, task, f"sklearn:{name}", digest, [])


def infer_task(y: pd.Series) -> str:
    """Classification for text, boolean or few-valued integer targets, else regression."""
    if not is_numeric_dtype(y) or is_bool_dtype(y):
        return "classification"
    values = y.dropna()
    integral = bool(np.all(np.mod(values.to_numpy(dtype=float), 1) == 0))
    if integral and values.nunique() <= MAX_INTEGER_CLASSES:
        return "classification"
    return "regression"


def load_csv(path: str | Path, target: str, task: str | None = None) -> Dataset:
    """A user's CSV: ``target`` is the label column, every other column is a feature."""
    p = Path(path)
    if task is not None and task not in TASKS:
        raise EdgewiseError(f"task {task!r}: use one of {', '.join(TASKS)}")
    if not p.is_file():
        raise EdgewiseError(f"CSV file {p}: no such file")
    raw = p.read_bytes()
    try:
        df = pd.read_csv(p)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise EdgewiseError(f"CSV file {p} cannot be read: {str(exc).splitlines()[0]}") from None
    if target not in df.columns:
        raise EdgewiseError(
            f"CSV file {p} has no column {target!r}; columns: {', '.join(map(str, df.columns))}"
        )
    df.columns = [str(c) for c in df.columns]
    if tuple(df.columns[-len(CAPTURE_COLUMNS) :]) == CAPTURE_COLUMNS and target == "label":
        # Samples pulled from a device (edgewise capture pull): what the model said about
        # them is not a feature to learn from.
        df = df.drop(columns=list(CAPTURE_COLUMNS[:-1]))
    y_raw = df.pop(target)
    if df.shape[1] == 0:
        raise EdgewiseError(f"CSV file {p} has no feature columns besides {target!r}")
    keep = y_raw.notna()
    if not keep.all():
        df, y_raw = df[keep].reset_index(drop=True), y_raw[keep].reset_index(drop=True)
    task = task or infer_task(y_raw)
    if task == "regression":
        if not is_numeric_dtype(y_raw) or is_bool_dtype(y_raw):
            raise EdgewiseError(f"target {target!r} is not numeric; it cannot be regressed")
        y = y_raw.to_numpy(dtype=np.float64)
    elif is_numeric_dtype(y_raw) and not is_bool_dtype(y_raw):
        numeric_y = y_raw.to_numpy(dtype=float)
        y = (
            numeric_y.astype(np.int64)
            if np.all(np.mod(numeric_y, 1) == 0)
            else y_raw.astype(str).to_numpy()
        )
    else:
        y = y_raw.astype(str).to_numpy()
    categorical = [c for c in df.columns if not is_numeric_dtype(df[c]) or is_bool_dtype(df[c])]
    for c in df.columns:
        if c in categorical:
            df[c] = df[c].astype(object).where(df[c].notna(), MISSING_CATEGORY).astype(str)
        else:
            df[c] = df[c].astype(np.float32)
    if task == "classification" and len(np.unique(y)) < 2:
        raise EdgewiseError(f"target {target!r} has fewer than two classes")
    digest = hashlib.sha256(raw).hexdigest()
    return Dataset(df, y, task, f"csv:{p.name}", digest, categorical)


def load_text_csv(path: str | Path, target: str, text: str) -> Dataset:
    """A CSV with a free-text column (e.g. message -> spam/ham): only ``text`` is a feature.

    Text is lowercased here and by the agent before the graph (the ONNX string normalizer
    needs a locale many devices lack, so it is kept out of the graph).
    """
    data = load_csv(path, target, "classification")
    if text not in data.X.columns:
        raise EdgewiseError(
            f"--text {text!r}: no such column; columns: {', '.join(map(str, data.X.columns))}"
        )
    if text not in data.categorical:
        raise EdgewiseError(f"--text {text!r} is a numeric column, not text")
    X = pd.DataFrame({text: data.X[text].astype(str).str.lower()})
    return Dataset(X, data.y, data.task, data.source, data.sha256, [], [text])
