"""Per-prediction explanations by occlusion, for any model the device serves.

The device already has the runtime, so it explains by asking the model again: each group
of an instance's inputs is set to its training baseline (manifest ``explain.baseline``),
every occluded copy of every instance goes through the model in a few batched runs, and
a group's contribution is how much the answer drops when that group is occluded:

- classifiers: the probability of the predicted class (label-only models: 1 while the
  label holds, 0 when occlusion changes it);
- regressors: the value; anomaly models: the score; clustering: minus the distance to
  the assigned centre.

Groups are the features of a row (adjacent ones pooled when there are more features
than ``max_evaluations``), channel x time segment of a window, and a grid of regions of
an image. The cost is one extra inference per group: ``evaluations`` in the answer.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgewise.edge.errors import BundleError
from edgewise.edge.manifest import OcclusionExplain

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
        if kind == "window":
            self.groups = window_groups(shape, names, budget)
            width = shape[1]
        elif kind == "image":
            self.groups = image_groups(shape, budget)
            width = shape[2]
        else:
            self.groups = row_groups(names, budget)
            width = len(names)
        if len(spec.baseline) != width:
            raise BundleError(
                f"explain baseline has {len(spec.baseline)} values, the input has {width} "
                f"{'channels' if kind != 'rows' else 'features'}"
            )
        self.kind = kind
        self._baseline = list(spec.baseline)
        self._names = list(names)

    def _occluded(self, matrix: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        """Every instance once per group, that group set to its baseline."""
        copies = np.repeat(matrix, len(self.groups), axis=0)
        base = self._baseline if self.kind == "rows" else np.asarray(self._baseline, np.float32)
        for g, group in enumerate(self.groups):
            part = copies[g :: len(self.groups)]
            if self.kind == "rows":
                cols = group.index[0]
                for j in range(len(self._names))[cols] if isinstance(cols, slice) else [cols]:
                    part[:, j] = base[j]
            elif self.kind == "window":
                steps, channel = group.index
                part[:, steps, channel] = base[channel]  # type: ignore[index]
            else:
                rows, cols = group.index
                part[:, rows, cols, :] = base
            copies[g :: len(self.groups)] = part
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
        n_groups = len(self.groups)
        out = []
        for i, pred in enumerate(predictions):
            own = target(pred, pred)
            contrib = np.array(
                [own - target(answers[i * n_groups + g], pred) for g in range(n_groups)]
            )
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
                    "baseline": "training mean",
                    "evaluations": n_groups,
                    "top": ranked,
                }
            )
        return out


def _number(value: Any) -> float | None:
    number = float(value)
    return None if math.isnan(number) else number
