"""How much of a difference between compare's candidates is noise: repeated seeded splits.

One held-out split of a small table decides by a row or two (52 test rows: one row is 1.9
accuracy points). ``compare`` therefore scores each candidate on ``repeats`` stratified
splits (seeds ``seed``, ``seed + 1``, ...; the first is the split it measures everything
else on) and gives the mean and a 95 % interval. The splits share most training rows, so
their scores are correlated and the plain standard error is too small: the interval uses
the corrected resampled t statistic of Nadeau and Bengio (2003), variance
``s^2 * (1/n + n_test/n_train)``. Two candidates whose intervals overlap are tied within
noise (``edgewise.trainer.report.recommend``).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats

from edgewise.trainer.datasets import Dataset
from edgewise.trainer.train import split_indices

log = logging.getLogger(__name__)

REPEATS = 5
TEST_SIZE = 0.2


@dataclass(frozen=True)
class Interval:
    """Mean and 95 % interval of a score over ``n`` seeded splits (``scores``)."""

    mean: float
    low: float
    high: float
    n: int
    scores: tuple[float, ...]

    @property
    def half(self) -> float:
        return (self.high - self.low) / 2

    def overlaps(self, other: Interval) -> bool:
        return self.low <= other.high and other.low <= self.high

    def text(self, digits: int = 3) -> str:
        return f"{self.mean:.{digits}f} ± {self.half:.{digits}f}"

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "scores": list(self.scores), "half": self.half}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Interval:
        return cls(doc["mean"], doc["low"], doc["high"], doc["n"], tuple(doc["scores"]))


def interval(scores: Sequence[float], test_size: float = TEST_SIZE) -> Interval | None:
    """The corrected resampled-t 95 % interval of ``scores`` (None below two scores)."""
    values = np.asarray([s for s in scores if s is not None and math.isfinite(s)], float)
    n = len(values)
    if n < 2:
        return None
    mean = float(values.mean())
    var = float(values.var(ddof=1)) * (1 / n + test_size / (1 - test_size))
    half = float(stats.t.ppf(0.975, n - 1)) * math.sqrt(var)
    return Interval(mean, mean - half, mean + half, n, tuple(float(v) for v in values))


def split_seeds(seed: int, repeats: int) -> list[int]:
    """The split seeds: ``seed`` (compare's own split) first."""
    return [seed + k for k in range(repeats)]


Split = tuple[np.ndarray, np.ndarray]


def seeded_splits(data: Dataset, seed: int, repeats: int) -> list[Split]:
    """``repeats`` stratified (train rows, test rows) splits, seeds ``seed``, ``seed + 1``..."""
    return [split_indices(data, TEST_SIZE, s, None) for s in split_seeds(seed, repeats)]


def repeated(
    splits: Sequence[Split],
    score: Callable[[np.ndarray, np.ndarray], float],
    first: float | None = None,
    budget_s: float | None = None,
) -> list[float]:
    """``score(train rows, test rows)`` on each split. ``first``: the score already measured
    on the first split. With ``budget_s``, no new split starts once that many seconds have
    gone (networks: each split is a training run)."""
    started = time.monotonic()
    scores = [] if first is None else [first]
    for k, (train_idx, test_idx) in enumerate(splits[len(scores) :], len(scores)):
        if budget_s is not None and time.monotonic() - started > budget_s:
            log.info("repeated splits: budget of %.0f s spent after %d", budget_s, len(scores))
            break
        try:
            scores.append(float(score(train_idx, test_idx)))
        except ValueError as exc:  # e.g. a class missing from a tiny training split
            log.info("split %d not scored: %s", k, exc)
    return scores


def blocked_splits(
    runs: np.ndarray, starts: np.ndarray, window: int, repeats: int, test_size: float = TEST_SIZE
) -> list[Split]:
    """Time-ordered windows (run id and first sample of each): ``repeats`` splits that each
    hold out one block of every run, the last block first (the loader's own split), and
    drop the training windows that overlap a held-out one, so overlapping windows never
    leak. Blocks are ``test_size`` of each run's span, walking back from its end."""
    out: list[Split] = []
    blocks = max(2, round(1 / test_size))
    for k in range(min(repeats, blocks)):
        test = np.zeros(len(starts), bool)
        for run in np.unique(runs):
            member = runs == run
            lo, hi = starts[member].min(), starts[member].max() + 1
            edges = lo + (hi - lo) * np.arange(blocks + 1) / blocks
            b = blocks - 1 - k
            test |= member & (starts >= edges[b]) & (starts < edges[b + 1])
        train = ~test
        for run in np.unique(runs[test]):
            held = starts[test & (runs == run)]
            near = np.abs(starts[:, None] - held[None, :]).min(axis=1) < window
            train &= ~((runs == run) & near)
        out.append((np.flatnonzero(train), np.flatnonzero(test)))
    return out


def band(curves: Sequence[dict[str, float | None]]) -> dict[str, list[float]]:
    """Per learning-curve fraction, the 95 % interval [low, high] over the splits' curves."""
    out: dict[str, list[float]] = {}
    for frac in curves[0] if curves else {}:
        got = interval([c[frac] for c in curves if c.get(frac) is not None])  # type: ignore[misc]
        if got is not None:
            out[frac] = [round(got.low, 5), round(got.high, 5)]
    return out
