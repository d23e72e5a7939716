"""How much of a difference between compare's candidates is noise: repeated seeded splits.

One held-out split of a small table decides by a row or two (52 test rows: one row is 1.9
accuracy points). ``compare`` therefore scores each candidate on ``repeats`` stratified
splits (seeds ``seed``, ``seed + 1``, ...; the first is the split it measures everything
else on) and gives the mean and a 95 % interval. The splits share most training rows, so
their scores are correlated and the plain standard error is too small: the interval uses
the corrected resampled t statistic of Nadeau and Bengio (2003), variance
``s^2 * (1/n + n_test/n_train)``.

Two floors keep a few identical split scores from claiming certainty they cannot have
(five splits that each get 50 of 52 rows right have ``s^2 = 0``, yet one row is 1.9
points): for an accuracy on ``m`` held-out rows, ``s^2`` is never taken below the binomial
variance of one split's score, ``p(1 - p) / m`` with ``p`` smoothed as Agresti and Coull do
(``(k + 2) / (m + 4)``, so 52 of 52 is not certain either). Candidates are scored on the
same splits, so a tie is judged on their paired per-split differences (``paired``); the
floor there is the variance of a difference of ``d`` on ``m`` rows when the fewest
possible rows disagree (``|d| m``, all one way): ``(|d| - d^2) / m``, McNemar's view.
``edgewise.trainer.report.recommend`` calls a candidate tied with the best when the 95 %
interval of that difference contains 0.
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
    """Mean and 95 % interval of a score over ``n`` seeded splits (``scores``).

    ``per_split``: the score of every split in order, None where it was not scored, so
    two candidates' scores pair up by split. ``test_rows``: held-out rows per split when
    the score is an accuracy (the binomial floor applies); ``floored``: the floor, not the
    spread of the scores, set the width."""

    mean: float
    low: float
    high: float
    n: int
    scores: tuple[float, ...]
    per_split: tuple[float | None, ...] = ()
    test_rows: int | None = None
    floored: bool = False

    @property
    def half(self) -> float:
        return (self.high - self.low) / 2

    def overlaps(self, other: Interval) -> bool:
        return self.low <= other.high and other.low <= self.high

    def text(self, digits: int = 3) -> str:
        return f"{self.mean:.{digits}f} ± {self.half:.{digits}f}"

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        return {**doc, "scores": list(self.scores), "per_split": list(self.per_split),
                "half": self.half}  # fmt: skip

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Interval:
        return cls(
            doc["mean"], doc["low"], doc["high"], doc["n"], tuple(doc["scores"]),
            tuple(doc.get("per_split") or doc["scores"]), doc.get("test_rows"),
            bool(doc.get("floored", False)),
        )  # fmt: skip


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _t_interval(values: np.ndarray, floor: float, test_size: float) -> tuple[float, float, bool]:
    """Mean, half width and whether ``floor`` set the variance: corrected resampled t."""
    n = len(values)
    spread = float(values.var(ddof=1))
    s2 = max(spread, floor)
    var = s2 * (1 / n + test_size / (1 - test_size))
    return float(values.mean()), float(stats.t.ppf(0.975, n - 1)) * math.sqrt(var), floor > spread


def interval(
    scores: Sequence[float | None], test_size: float = TEST_SIZE, test_rows: int | None = None
) -> Interval | None:
    """The corrected resampled-t 95 % interval of ``scores`` (one per split in order, None or
    NaN where a split was not scored; None below two scores). ``test_rows``: the held-out
    rows of a split when the score is an accuracy, for the binomial floor."""
    per_split = tuple(float(s) if _finite(s) else None for s in scores)  # type: ignore[arg-type]
    values = np.asarray([s for s in per_split if s is not None], float)
    if len(values) < 2:
        return None
    floor = 0.0
    if test_rows:
        smoothed = (float(values.mean()) * test_rows + 2) / (test_rows + 4)
        floor = smoothed * (1 - smoothed) / test_rows
    mean, half, floored = _t_interval(values, floor, test_size)
    return Interval(
        mean, mean - half, mean + half, len(values), tuple(float(v) for v in values),
        per_split, test_rows, floored,
    )  # fmt: skip


def paired(best: Interval, other: Interval, test_size: float = TEST_SIZE) -> Interval | None:
    """The 95 % interval of ``best - other`` per split, over the splits both were scored on
    (None below two). With ``test_rows``, the variance is at least McNemar's floor: a
    difference ``d`` on ``m`` rows means at least ``|d| m`` rows disagree."""
    pairs = [
        (b, o) for b, o in zip(best.per_split, other.per_split, strict=False)
        if b is not None and o is not None
    ]  # fmt: skip
    if len(pairs) < 2:
        return None
    diffs = np.asarray([b - o for b, o in pairs], float)
    rows = best.test_rows or other.test_rows
    floor = float(np.mean((np.abs(diffs) - diffs**2) / rows)) if rows else 0.0
    mean, half, floored = _t_interval(diffs, max(floor, 0.0), test_size)
    per_split = tuple(float(d) for d in diffs)
    return Interval(mean, mean - half, mean + half, len(diffs), per_split, per_split, rows, floored)


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
            scores.append(math.nan)  # kept in place: scores pair up by split
    return scores


def held_out_rows(splits: Sequence[Split]) -> int:
    """Held-out rows per split (the mean, rounded: blocked splits differ by a few)."""
    return max(1, round(float(np.mean([len(test) for _, test in splits]))))


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
