"""Per-prediction explanations by occlusion, for any model the device serves.

The device already has the runtime, so it explains by asking the model again: each group
of an instance's inputs is set to its training baseline (manifest ``explain.baseline``),
every occluded copy of every instance goes through the model in a few batched runs, and
a group's contribution is how much the answer drops when that group is occluded:

- classifiers: the probability of the predicted class (label-only models: 1 while the
  label holds, 0 when occlusion changes it);
- regressors: the value; anomaly models: the score; clustering: minus the distance to
  the assigned centre.

Groups are the features of a row (adjacent ones pooled when there are more than
``max_evaluations``), channel x time segment of a window, and a grid of regions of an
image. A feature of a row is set in turn to each value of its training ``Marginal``
(quintile midpoints of a number, frequent categories of a string) and the answers are
averaged with their shares, so the contribution is the answer minus its expectation over
that feature's training distribution; a window's segment or an image's region is set to
the per-channel training mean. The cost is one extra inference per value or group:
``evaluations`` in the answer. Rows whose values exceed ``max_evaluations`` use one value
per feature (the mean, the commonest category), and pool features beyond it.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgewise.edge.errors import BundleError
from edgewise.edge.runtime.manifest import Marginal, OcclusionExplain

MAX_SEGMENTS = 8  # time segments per channel of a window
MAX_GRID = 4  # regions per side of an image
CHUNK = 256  # occluded instances per run

Answer = Callable[[np.ndarray[Any, Any]], list[dict[str, Any]]]


@dataclass(frozen=True)
class Group:
    """Inputs occluded together: a name, and an index into one instance."""

    name: str
    index: tuple[Any, ...]
    feature: int | None = None  # rows: the feature whose value the answer shows


def _spans(n: int, parts: int) -> list[tuple[int, int]]:
    edges = np.linspace(0, n, parts + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in itertools.pairwise(edges) if b > a]


def row_groups(names: Sequence[str], budget: int) -> list[Group]:
    """One group per feature; adjacent features pooled to stay within ``budget``."""
    if len(names) <= budget:
        return [Group(n, (j,), j) for j, n in enumerate(names)]
    return [
        Group(f"{names[a]}..{names[b - 1]}", (slice(a, b),)) for a, b in _spans(len(names), budget)
    ]


def window_groups(shape: tuple[int, ...], channels: Sequence[str], budget: int) -> list[Group]:
    """Channel x time segment of a ``(T, C)`` window, at most ``budget`` groups."""
    steps, n_channels = shape
    names = list(channels) if len(channels) == n_channels else [f"c{k}" for k in range(n_channels)]
    if n_channels > budget:  # not even one segment per channel: whole channels, pooled
        return [
            Group(f"{names[a]}..{names[b - 1]}", (slice(None), slice(a, b)))
            for a, b in _spans(n_channels, budget)
        ]
    segments = max(1, min(MAX_SEGMENTS, budget // n_channels, steps))
    return [
        Group(f"{names[k]}[{a}:{b}]", (slice(a, b), k))
        for k in range(n_channels)
        for a, b in _spans(steps, segments)
    ]


def image_groups(shape: tuple[int, ...], budget: int) -> list[Group]:
    """A grid of regions of an ``(H, W, C)`` image (all channels), at most ``budget``."""
    height, width = shape[0], shape[1]
    grid = max(1, min(MAX_GRID, math.isqrt(budget), height, width))
    return [
        Group(f"rows {r0}-{r1 - 1}, cols {c0}-{c1 - 1}", (slice(r0, r1), slice(c0, c1)))
        for r0, r1 in _spans(height, grid)
        for c0, c1 in _spans(width, grid)
    ]


def target(answer: dict[str, Any], reference: dict[str, Any]) -> float:
    """The number an explanation attributes: see the module docstring."""
    if "probabilities" in reference:
        return float(answer["probabilities"][str(reference["label"])])
    if "label" in reference:
        return float(answer["label"] == reference["label"])
    if "value" in reference:
        return float(answer["value"])
    if "score" in reference:
        return float(answer["score"])
    return -float(answer["distances"][int(reference["cluster"])])


def _what(reference: dict[str, Any]) -> str:
    if "probabilities" in reference:
        return f"probability of {reference['label']}"
    return next(
        (k for k in ("label", "value", "score") if k in reference), "closeness to the cluster"
    )


Variant = tuple[int, float, dict[Any, Any]]  # group, weight, what to set


class Occlusion:
    """Explains the answers of one model: ``kind`` rows, window or image."""

    method = "occlusion"

    def __init__(
        self,
        spec: OcclusionExplain,
        kind: str,
        shape: tuple[int, ...],
        names: Sequence[str],
    ) -> None:
        budget = spec.max_evaluations
        cost = sum(len(b.values) if isinstance(b, Marginal) else 1 for b in spec.baseline)
        if kind == "window":
            self.groups = window_groups(shape, names, budget)
            width = shape[1]
        elif kind == "image":
            self.groups = image_groups(shape, budget)
            width = shape[2]
        else:
            width = len(names)
            self.groups = row_groups(names, budget)
        if len(spec.baseline) != width:
            raise BundleError(
                f"explain baseline has {len(spec.baseline)} values, the input has {width} "
                f"{'channels' if kind != 'rows' else 'features'}"
            )
        self.kind = kind
        # Averaging over a feature's values only while it stays within the budget.
        self._average = kind == "rows" and cost <= budget
        self._variants = self._plan(spec.baseline, width)
        # Windows and images: each region is set to the per-channel means.
        self._channels = np.asarray(
            [0.0 if kind == "rows" else b.single() if isinstance(b, Marginal) else b
             for b in spec.baseline], np.float32,
        )  # fmt: skip

    def _plan(self, baseline: Sequence[Any], width: int) -> list[Variant]:
        """Every occluded copy of an instance: its group, weight, and the values it gets.

        A feature alone in its group is averaged over its marginal's values; pooled, or
        over the budget, it takes one value.
        """
        if self.kind != "rows":
            return [(g, 1.0, {}) for g in range(len(self.groups))]
        variants: list[Variant] = []
        for g, group in enumerate(self.groups):
            cols = range(width)[group.index[0]] if group.feature is None else [group.feature]
            only = baseline[cols[0]] if len(cols) == 1 else None
            if isinstance(only, Marginal) and self._average:
                for value, share in zip(only.values, only.shares):
                    variants.append((g, float(share), {cols[0]: value}))
                continue
            values = {
                j: baseline[j].single() if isinstance(baseline[j], Marginal) else baseline[j]
                for j in cols
            }
            variants.append((g, 1.0, values))
        return variants

    def _occluded(self, matrix: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        """Every instance once per variant, in instance-major order."""
        n_var = len(self._variants)
        copies = np.repeat(matrix, n_var, axis=0)
        for v, (g, _, values) in enumerate(self._variants):
            part = copies[v::n_var]  # a view: writing to it writes to copies
            if self.kind == "rows":
                for j, value in values.items():
                    part[:, j] = value
            elif self.kind == "window":
                steps, channel = self.groups[g].index
                part[:, steps, channel] = self._channels[channel]
            else:
                rows, cols = self.groups[g].index
                part[:, rows, cols, :] = self._channels
        return copies

    def explain(
        self,
        matrix: np.ndarray[Any, Any],
        predictions: list[dict[str, Any]],
        answer: Answer,
        top: int | None,
    ) -> list[dict[str, Any]]:
        """One explanation per instance of ``matrix`` (what the model was fed, before
        encoding), its ``top`` groups by the size of their contribution (None: all)."""
        copies = self._occluded(matrix)
        answers: list[dict[str, Any]] = []
        for start in range(0, len(copies), CHUNK):
            answers += answer(copies[start : start + CHUNK])
        n_var = len(self._variants)
        out = []
        for i, pred in enumerate(predictions):
            occluded = np.zeros(len(self.groups))
            for v, (g, weight, _) in enumerate(self._variants):
                occluded[g] += weight * target(answers[i * n_var + v], pred)
            contrib = target(pred, pred) - occluded
            order = np.argsort(-np.abs(contrib), kind="stable")[:top]
            ranked = []
            for g in order:
                group = self.groups[int(g)]
                item: dict[str, Any] = {"feature": group.name}
                if group.feature is not None:
                    value = matrix[i, group.feature]
                    item["value"] = value if isinstance(value, str) else _number(value)
                item["contribution"] = round(float(contrib[g]), 6)
                ranked.append(item)
            out.append(
                {
                    "method": "occlusion",
                    "target": _what(pred),
                    "baseline": "training distribution",
                    "evaluations": n_var,
                    "top": ranked,
                }
            )
        return out


def _number(value: Any) -> float | None:
    number = float(value)
    return None if math.isnan(number) else number
