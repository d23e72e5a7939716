"""What drift is measured on: per-instance profiles, their bins, and the stability index.

The same code runs on the host (``fit_reference`` over training data, written into the
manifest's ``reference``) and on the device (``Profiler`` over each answered request), so
an instance lands in the same bin on both sides. An instance is summarized by:

- tabular: its features themselves (numbers; strings as categories, null as missing);
- window ``(T, C)``: per channel RMS, peak and dominant frequency (Hz with a sample rate,
  else cycles per window);
- image ``(H, W, C)``: its mean intensity;
- text: its length in characters and the share of its tokens outside the ``VOCABULARY``
  most frequent training tokens.

Numeric quantities get ``BINS`` quantile bins plus one for missing values; categorical ones
up to ``MAX_CATEGORIES`` categories plus one for all others. The population stability index
compares two such histograms: ``sum((p - q) * ln(p / q))`` with both floored at ``FLOOR``.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from edgewise.edge.runtime.manifest import MISSING_CATEGORY, Distribution, Feature, Reference

BINS = 10
MAX_CATEGORIES = 20
VOCABULARY = 1000
FLOOR = 1e-4  # an empty bin counts as this share: ln(0) would make any change infinite
_TOKEN = re.compile(r"\w+")
Column = np.ndarray[Any, Any]


def tokens(text: str) -> list[str]:
    """Lower-cased word tokens of ``text`` (the out-of-vocabulary rate's unit)."""
    return _TOKEN.findall(text.lower())


def window_profile(
    windows: np.ndarray[Any, Any], channels: Sequence[str], sample_rate: float | None
) -> dict[str, Column]:
    """``(N, T, C)`` windows: per channel RMS, peak and dominant frequency."""
    x = np.asarray(windows, dtype=np.float64)
    _, t, c = x.shape
    rate = float(sample_rate) if sample_rate else float(t)  # cycles per window without one
    unit = "hz" if sample_rate else "cycles"
    rms = np.sqrt((x * x).mean(axis=1))
    peak = np.abs(x).max(axis=1)
    spectrum = np.abs(np.fft.rfft(x - x.mean(axis=1, keepdims=True), axis=1))[:, 1:, :]
    dominant = (spectrum.argmax(axis=1) + 1) * rate / t
    out: dict[str, Column] = {}
    for j, ch in enumerate(list(channels)[:c]):
        out[f"{ch}.rms"] = rms[:, j]
        out[f"{ch}.peak"] = peak[:, j]
        out[f"{ch}.dominant_{unit}"] = dominant[:, j]
    return out


def image_profile(images: np.ndarray[Any, Any]) -> dict[str, Column]:
    """``(N, H, W, C)`` images: the mean intensity of each."""
    x = np.asarray(images, dtype=np.float64)
    return {"mean_intensity": x.reshape(len(x), -1).mean(axis=1)}


def text_profile(texts: Sequence[str], vocabulary: frozenset[str]) -> dict[str, Column]:
    """Texts: length in characters and out-of-vocabulary token rate."""
    lengths = np.fromiter((len(t) for t in texts), np.float64, len(texts))
    oov = np.empty(len(texts), np.float64)
    for i, text in enumerate(texts):
        words = tokens(text)
        oov[i] = sum(w not in vocabulary for w in words) / len(words) if words else 0.0
    return {"length": lengths, "oov_rate": oov}


def tabular_columns(
    rows: Sequence[Sequence[Any]], features: Sequence[Feature]
) -> dict[str, Column]:
    """Rows of raw values in feature order: a float column per number (null: NaN), a
    string column per category (null: the missing category)."""
    out: dict[str, Column] = {}
    for j, f in enumerate(features):
        values = [row[j] for row in rows]
        if f.dtype == "string":
            out[f.name] = np.asarray(
                [MISSING_CATEGORY if v is None else str(v) for v in values], dtype=object
            )
        else:
            out[f.name] = np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)
    return out


def fit_distribution(
    name: str, values: Column, categories: Sequence[str] | None = None
) -> Distribution:
    """The reference histogram of one quantity: quantile bins of numbers, or the most
    frequent categories of strings (``categories``: use exactly these)."""
    if values.dtype == object or categories is not None:
        strings = [str(v) for v in values]
        if categories is None:
            categories = [c for c, _ in Counter(strings).most_common(MAX_CATEGORIES)]
        index = {c: i for i, c in enumerate(categories)}
        counts = np.bincount(
            [index.get(s, len(categories)) for s in strings], minlength=len(categories) + 1
        )
        return Distribution(
            name=name,
            kind="categorical",
            categories=tuple(categories),
            proportions=_shares(counts),
        )
    x = np.asarray(values, dtype=np.float64)
    present = x[~np.isnan(x)].astype(np.float32)
    if len(present):
        quantiles = np.quantile(present.astype(np.float64), np.linspace(0, 1, BINS + 1)[1:-1])
        edges = np.unique(quantiles.astype(np.float32))
    else:
        edges = np.zeros(0, np.float32)
    # float32 edges are exact in JSON (a float64 holds every float32), so the device
    # compares the very numbers the trainer did.
    edges_t = tuple(float(e) for e in edges)
    counts = np.bincount(numeric_bins(x, np.asarray(edges_t)), minlength=len(edges_t) + 2)
    return Distribution(name=name, kind="numeric", edges=edges_t, proportions=_shares(counts))


def _shares(counts: np.ndarray[Any, Any]) -> tuple[float, ...]:
    total = max(int(counts.sum()), 1)
    shares = [round(float(c) / total, 6) for c in counts]
    shares[int(np.argmax(counts))] += round(1.0 - sum(shares), 6)  # sums to 1 after rounding
    return tuple(max(s, 0.0) for s in shares)


def numeric_bins(x: Column, edges: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Bin index of each value: quantile bins, then one for missing (NaN).

    Values and edges are compared as float32 on both sides: the model sees float32, and a
    value on a fixed-resolution grid (2.2 from JSON) must land where its float32 training
    twin (2.2000000477) did, not below an edge that is that same float32."""
    values = np.asarray(x, np.float64).astype(np.float32)
    idx = np.searchsorted(np.asarray(edges, np.float64).astype(np.float32), values, side="right")
    idx[np.isnan(values)] = len(edges) + 1
    return idx


def psi(observed: np.ndarray[Any, Any], expected: np.ndarray[Any, Any]) -> float:
    """Population stability index of observed counts against expected shares."""
    p = observed / max(float(observed.sum()), 1.0)
    p = np.maximum(p, FLOOR)
    q = np.maximum(np.asarray(expected, np.float64), FLOOR)
    return float(((p - q) * np.log(p / q)).sum())


class Binner:
    """Turns profile columns into one flat bin index per (instance, quantity)."""

    def __init__(self, dists: Sequence[Distribution]) -> None:
        self.dists = list(dists)
        self.sizes = [len(d.proportions) for d in self.dists]
        self.offsets = np.cumsum([0, *self.sizes])[:-1]
        self.total = int(sum(self.sizes))
        self.expected = [np.asarray(d.proportions, np.float64) for d in self.dists]
        self._edges = [np.asarray(d.edges, np.float64) for d in self.dists]
        self._index = [{c: i for i, c in enumerate(d.categories)} for d in self.dists]

    def bins(self, columns: Sequence[Column]) -> np.ndarray[Any, Any]:
        """``(N, K)`` flat bin indices (offset per quantity) of K columns of N values."""
        n = len(columns[0]) if columns else 0
        out = np.empty((n, len(self.dists)), np.int32)
        for j, (dist, col) in enumerate(zip(self.dists, columns)):
            if dist.kind == "numeric":
                x = np.asarray(col, dtype=np.float64)
                out[:, j] = numeric_bins(x, self._edges[j])
            else:
                index, other = self._index[j], len(dist.categories)
                out[:, j] = [index.get(str(v), other) for v in col]
        out += self.offsets.astype(np.int32)
        return out

    def scores(self, counts: np.ndarray[Any, Any]) -> list[float]:
        """The PSI of each quantity, from flat counts."""
        return [
            psi(counts[o : o + s], e) for o, s, e in zip(self.offsets, self.sizes, self.expected)
        ]


class Profiler:
    """A served model's instances as the profile columns its reference describes."""

    def __init__(
        self, reference: Reference, features: Sequence[Feature], channels: Sequence[str]
    ) -> None:
        self.reference = reference
        self.features = list(features)
        self.names = [f.name for f in features]
        self.channels = list(channels)
        self.vocabulary = frozenset(reference.vocabulary)

    def columns(
        self, instances: Sequence[Any] | None, tensor: np.ndarray[Any, Any] | None
    ) -> list[Column]:
        """Profile columns in the reference's order for one answered request."""
        kind = self.reference.profile
        if kind in ("window", "image"):
            array = tensor if tensor is not None else np.asarray(instances, dtype=np.float64)
            cols = (
                window_profile(array, self.channels, self.reference.sample_rate)
                if kind == "window"
                else image_profile(array)
            )
        elif kind == "text":
            texts = [self._text(inst) for inst in instances or []]
            cols = text_profile(texts, self.vocabulary)
        elif tensor is not None:
            cols = {n: tensor[:, j].astype(np.float64) for j, n in enumerate(self.names)}
        else:
            cols = tabular_columns([self._row(inst) for inst in instances or []], self.features)
        return [cols[d.name] for d in self.reference.inputs]

    def _row(self, instance: Any) -> Sequence[Any]:
        if isinstance(instance, dict):
            return [instance.get(n) for n in self.names]
        return instance  # type: ignore[no-any-return]  # a list, checked when it was served

    def _text(self, instance: Any) -> str:
        if isinstance(instance, str):
            return instance
        row = self._row(instance)
        return str(row[0]) if row and row[0] is not None else ""


def fit_reference(
    profile: str,
    columns: dict[str, Column],
    rows: int,
    *,
    sample_rate: float | None = None,
    vocabulary: Sequence[str] = (),
) -> Reference:
    """The input part of a reference from training data's profile columns."""
    return Reference(
        profile=profile,  # type: ignore[arg-type]  # checked by the class
        rows=rows,
        inputs=tuple(fit_distribution(name, col) for name, col in columns.items()),
        sample_rate=sample_rate,
        vocabulary=tuple(vocabulary),
    )


def text_vocabulary(texts: Sequence[str], size: int = VOCABULARY) -> list[str]:
    """The ``size`` most frequent tokens of ``texts`` (ties in first-seen order)."""
    return [w for w, _ in Counter(w for t in texts for w in tokens(t)).most_common(size)]


def prediction_values(task: str, predictions: Sequence[dict[str, Any]]) -> Column:
    """The profiled part of each answer: the label, value, anomaly flag or cluster."""
    if task == "regression":
        return np.asarray([p.get("value", np.nan) for p in predictions], dtype=np.float64)
    if task == "anomaly":
        flags = ["anomaly" if p.get("is_anomaly") else "normal" for p in predictions]
        return np.asarray(flags, dtype=object)
    key = "cluster" if task == "clustering" else "label"
    return np.asarray([str(p.get(key)) for p in predictions], dtype=object)


def confidences(predictions: Sequence[dict[str, Any]]) -> Column:
    """Each answer's probability of its label (NaN where there is none)."""
    out = np.full(len(predictions), np.nan)
    for i, p in enumerate(predictions):
        probs = p.get("probabilities")
        if isinstance(probs, dict) and "label" in p:
            value = probs.get(str(p["label"]))
            if isinstance(value, (int, float)):
                out[i] = float(value)
    return out


def prediction_categories(
    task: str, labels: Sequence[Any], clusters: int | None
) -> list[str] | None:
    """The fixed categories of a task's answers (None: values, binned by quantiles)."""
    if task == "classification":
        return [str(c) for c in labels]
    if task == "anomaly":
        return ["normal", "anomaly"]
    if task == "clustering" and clusters is not None:
        return [str(i) for i in range(clusters)]
    return None
