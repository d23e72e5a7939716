"""Tabular data for training: the data sets scikit-learn ships, or a user's CSV file.

Numeric columns become float32 (so that the float32 ONNX graph sees exactly the values the
scikit-learn model saw); categorical columns become strings, with missing values mapped to
"" outside the graph (the manifest records that step).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from pandas.api.types import is_bool_dtype, is_numeric_dtype

from edgewise.edge.errors import EdgewiseError
from edgewise.edge.link.capture_wire import CAPTURE_COLUMNS
from edgewise.edge.runtime.manifest import MISSING_CATEGORY

log = logging.getLogger(__name__)

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


def load_csv(
    path: str | Path,
    target: str,
    task: str | None = None,
    drop: Sequence[str] = (),
    warn: bool = True,
) -> Dataset:
    """A user's CSV: ``target`` is the label column, every other column but ``drop`` is a
    feature. With ``warn``, a column a model cannot learn from (an id, free text taken as
    categories) gets one warning line naming it and the flag that fixes it."""
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
    unknown = [c for c in drop if c not in df.columns or c == target]
    if unknown:
        raise EdgewiseError(
            f"--drop {unknown[0]!r}: no such feature column; columns: "
            + ", ".join(c for c in df.columns if c != target)
        )
    df = df.drop(columns=list(drop))
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
    if warn:
        for line in column_warnings(df, categorical):
            log.warning("%s", line)
    digest = hashlib.sha256(raw).hexdigest()
    return Dataset(df, y, task, f"csv:{p.name}", digest, categorical)


MIN_ROWS_TO_JUDGE = 20  # below this, every column may be unique by chance
TEXT_SHARE = 0.9  # distinct values per row above which a string column is not categories


def column_warnings(df: pd.DataFrame, categorical: Sequence[str]) -> list[str]:
    """One line per feature column no model can learn from, with the flag that fixes it:
    a string column with a value per row that reads like prose (use ``--text``), or a
    column that numbers the rows, like an id (``--drop``)."""
    n = len(df)
    if n < MIN_ROWS_TO_JUDGE:
        return []
    out = []
    for c in df.columns:
        values = df[c]
        distinct = int(values.nunique())
        if c in categorical:
            words = values.astype(str).str.contains(" ").mean()
            if distinct >= TEXT_SHARE * n and words >= 0.5:
                out.append(
                    f"column {c!r} looks like free text ({distinct} distinct values in {n} "
                    f"rows): as categories it teaches nothing; train on it with --text {c}, "
                    f"or leave it out with --drop {c}"
                )
            elif distinct == n:
                out.append(
                    f"column {c!r} has a different value in every row, like an id: a model "
                    f"cannot learn from it; leave it out with --drop {c}"
                )
            continue
        x = values.to_numpy(dtype=np.float64)
        if distinct == n and np.all(np.mod(x, 1) == 0):
            steps = np.diff(x)
            if np.all(steps > 0) or np.all(steps < 0) or x.max() - x.min() == n - 1:
                out.append(
                    f"column {c!r} numbers the rows (a different whole number in every row, "
                    f"like an id): a model learns their order, not your data; leave it out "
                    f"with --drop {c}"
                )
    return out


def load_text_csv(path: str | Path, target: str, text: str) -> Dataset:
    """A CSV with a free-text column (e.g. message -> spam/ham): only ``text`` is a feature.

    Text is lowercased here and by the agent before the graph (the ONNX string normalizer
    needs a locale many devices lack, so it is kept out of the graph).
    """
    data = load_csv(path, target, "classification", warn=False)  # only ``text`` is used
    if text not in data.X.columns:
        raise EdgewiseError(
            f"--text {text!r}: no such column; columns: {', '.join(map(str, data.X.columns))}"
        )
    if text not in data.categorical:
        raise EdgewiseError(f"--text {text!r} is a numeric column, not text")
    X = pd.DataFrame({text: data.X[text].astype(str).str.lower()})
    return Dataset(X, data.y, data.task, data.source, data.sha256, [], [text])
