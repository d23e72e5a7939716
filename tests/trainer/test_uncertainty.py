"""compare's confidence: repeated seeded splits, 95 % intervals, ties within noise."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from edgewise.trainer.compare import CandidateResult, CompareReport, compare
from edgewise.trainer.datasets import load_builtin
from edgewise.trainer.report import recommend, render_table
from edgewise.trainer.uncertainty import blocked_splits, interval, paired


def test_interval_is_the_corrected_resampled_t() -> None:
    scores = [0.90, 0.95, 1.00, 0.90, 0.95]
    got = interval(scores, test_size=0.2)
    assert got is not None
    s2 = np.var(scores, ddof=1)
    half = stats.t.ppf(0.975, 4) * math.sqrt(s2 * (1 / 5 + 0.2 / 0.8))
    assert got.mean == pytest.approx(0.94) and got.half == pytest.approx(half)
    # Wider than the naive standard error: the splits share training rows.
    assert got.half > stats.t.ppf(0.975, 4) * math.sqrt(s2 / 5)
    assert interval([0.9]) is None


def _candidate(name: str, got: object, p50: float, readable: bool = False) -> CandidateResult:
    assert got is not None
    mean = got.mean  # type: ignore[attr-defined]
    return CandidateResult(
        name, "classical", readable, "onnx", {"accuracy": mean}, {"accuracy": mean},
        latency_us={"p50": p50, "p99": p50}, size_bytes=1024, interval=got.to_json(),  # type: ignore[attr-defined]
    )  # fmt: skip


def test_identical_split_scores_on_few_rows_are_not_certain() -> None:
    """50 of 52 held-out rows on all five splits: the spread is 0, but one row is 1.9
    points, so the interval takes the binomial floor (Agresti-Coull smoothed), and a
    candidate one row better on every split is tied with it."""
    m, t = 52, stats.t.ppf(0.975, 4)
    worse = interval([50 / m] * 5, test_rows=m)
    better = interval([51 / m] * 5, test_rows=m)
    assert worse is not None and better is not None and worse.floored
    p = (50 + 2) / (m + 4)
    assert worse.half == pytest.approx(t * math.sqrt(p * (1 - p) / m * (1 / 5 + 0.25)))
    assert worse.half > 1 / m  # wider than one row: identical scores say nothing more
    assert interval([50 / m] * 5).half < 1e-12  # type: ignore[union-attr]  # the old width
    report = CompareReport(
        "t", "classification", 258, m, ["a"], [0, 1], "accuracy",
        [_candidate("slow-better", better, 500.0), _candidate("fast-worse", worse, 5.0)],
    )  # fmt: skip
    rec = recommend(report)
    assert rec["best_quality"] == "slow-better" and rec["choice"] == "fast-worse"
    assert rec["tied"] == ["slow-better"]
    assert "contains 0" in rec["tie_rules"]["fast-worse"]


def test_paired_rule_against_hand_computed_differences() -> None:
    """Two candidates on the same five splits of 500 rows: their per-split differences,
    corrected resampled t, McNemar's floor when the differences barely vary."""
    a = interval([0.95, 0.90, 0.97, 0.92, 0.94], test_rows=500)
    b = interval([0.93, 0.89, 0.94, 0.90, 0.93], test_rows=500)
    assert a is not None and b is not None
    d = np.array([0.02, 0.01, 0.03, 0.02, 0.01])
    s2 = max(d.var(ddof=1), float(np.mean((np.abs(d) - d**2) / 500)))
    half = stats.t.ppf(0.975, 4) * math.sqrt(s2 * (1 / 5 + 0.25))
    diff = paired(a, b)
    assert diff is not None
    assert diff.mean == pytest.approx(d.mean()) and diff.half == pytest.approx(half)
    # The intervals of a and b overlap widely, yet b is below a on every split: paired,
    # the difference's interval excludes 0, so b is not tied.
    assert a.overlaps(b) and diff.low > 0
    # On 100 rows the same differences are a few rows each: McNemar's floor makes it a tie.
    a100, b100 = (interval(x.scores, test_rows=100) for x in (a, b))
    near = paired(a100, b100)  # type: ignore[arg-type]
    assert near is not None and near.floored and near.low < 0 < near.high
    report = CompareReport(
        "t", "classification", 500, 100, ["a"], [0, 1], "accuracy",
        [_candidate("a", a, 500.0), _candidate("b", b, 5.0)],
    )  # fmt: skip
    rec = recommend(report)
    assert rec["choice"] == "a" and rec["tied"] == [] and rec["tie_rules"] == {}
    # A split that one candidate did not score pairs nothing: the rest still pair.
    c = interval([0.93, None, 0.94, 0.90, 0.93], test_rows=500)
    assert c is not None and c.per_split[1] is None
    assert paired(a, c).n == 4  # type: ignore[union-attr]


def test_the_table_says_why_a_candidate_was_excluded() -> None:
    fast = interval([0.95, 0.96, 0.97, 0.96, 0.95], test_rows=100)
    report = CompareReport(
        "t", "classification", 500, 100, ["a"], [0, 1], "accuracy",
        [_candidate("slow", fast, 5000.0), _candidate("quick", fast, 5.0)],
    )  # fmt: skip
    recommend(report, max_latency_ms=1.0)
    assert "slow: excluded by the constraints: p50 latency 5.000 ms > 1.0 ms" in render_table(
        report
    )


def test_one_held_out_row_apart_is_a_tie(tmp_path: Path) -> None:
    """iris, seed 0: knn beats the forest by one of 30 held-out rows. On that split alone
    knn (10x slower) wins; over five seeded splits the two are tied, and the rule says so."""
    data = load_builtin("iris")
    report = compare(data, tmp_path, ["knn", "random-forest"], seed=0, repeats=5)
    knn, forest = report.candidates
    gap_rows = (knn.quality_edge["accuracy"] - forest.quality_edge["accuracy"]) * report.test_rows
    assert round(gap_rows) == 1  # the premise: one row apart on the single split
    rec = recommend(report)
    assert rec["choice"] == "random-forest" and rec["tied"] == ["knn"]
    assert "tied within noise with the best (knn)" in rec["text"]
    assert "paired per-split difference contains 0" in rec["rule"] and rec["rule"] in rec["text"]
    assert "paired difference (knn - random-forest)" in rec["tie_rules"]["random-forest"]
    assert knn.interval is not None and knn.interval["n"] == 5
    # The learning curves have bands, and the table shows the intervals.
    assert set(forest.learning_band) == set(forest.learning_curve)
    assert all(low <= high for low, high in forest.learning_band.values())
    assert "±" in render_table(report)


def test_apart_beyond_noise_is_not_a_tie() -> None:
    # Pure rule: intervals made up, not measured.
    def cand(name: str, scores: list[float], p50: float) -> CandidateResult:
        got = interval(scores)
        assert got is not None
        return CandidateResult(
            name, "classical", False, "onnx", {"accuracy": got.mean}, {"accuracy": got.mean},
            latency_us={"p50": p50, "p99": p50}, size_bytes=1024, interval=got.to_json(),
        )  # fmt: skip

    report = CompareReport(
        "t", "classification", 500, 100, ["a"], [0, 1], "accuracy",
        [cand("slow-good", [0.97, 0.975, 0.98, 0.97, 0.975], 500.0),
         cand("fast-worse", [0.90, 0.905, 0.91, 0.90, 0.905], 5.0)],
    )  # fmt: skip
    rec = recommend(report)
    assert rec["choice"] == "slow-good" and rec["tied"] == []
    assert "the best accuracy measured (0.974 ± " in rec["text"]


@pytest.mark.parametrize(
    ("readable_p50", "network_p50", "choice"),
    [(12.4, 10.1, "linear"), (11.0, 10.0, "linear"), (62.5, 15.4, "net"), (30.0, 10.0, "net")],
)
def test_a_readable_tie_wins_within_run_to_run_latency_noise(
    readable_p50: float, network_p50: float, choice: str
) -> None:
    """Pure rule: of tied candidates, a readable one is chosen when within 1.2x or 10 µs of
    the fastest (12.4 vs 10.1 µs is 1.23x, but only 2.3 µs); 4x and 20 µs gaps are real."""
    scores = [0.95, 0.96, 0.97, 0.96, 0.95]
    got = interval(scores)
    assert got is not None
    report = CompareReport(
        "t", "classification", 500, 100, ["a"], [0, 1], "accuracy",
        [CandidateResult(
            name, family, family == "classical", "onnx", {"accuracy": got.mean},
            {"accuracy": got.mean}, latency_us={"p50": p50, "p99": p50}, size_bytes=1024,
            interval=got.to_json(),
        ) for name, family, p50 in [("linear", "classical", readable_p50),
                                    ("net", "deep", network_p50)]],
    )  # fmt: skip
    rec = recommend(report)
    assert rec["choice"] == choice
    assert "within 1.2x or 10 µs of its latency" in rec["rule"]


def test_report_draws_the_intervals(tmp_path: Path) -> None:
    from edgewise.trainer.report_html import render_html

    report = compare(load_builtin("iris"), tmp_path, ["decision-tree", "naive-bayes"], repeats=3)
    recommend(report)
    page = render_html(report)
    for name in ("decision-tree", "naive-bayes"):
        assert f'class="interval" data-name="{name}"' in page
        assert f'class="band" data-name="{name}"' in page


@pytest.mark.parametrize(
    ("metric", "value", "drawn"),
    [("accuracy", 1.008, 1.0), ("accuracy", 0.95, 0.95), ("rmse", -0.3, 0.0), ("rmse", 7.5, 7.5)],
)
def test_drawn_intervals_stop_where_the_score_does(metric: str, value: float, drawn: float) -> None:
    from edgewise.trainer.report_html import _clip

    assert _clip(metric)(value) == drawn


@pytest.mark.parametrize("repeats", [1, 3, 5, 9])
def test_blocked_splits_hold_out_a_block_of_every_run_without_overlap(repeats: int) -> None:
    """Pure logic: windows of 16 samples every 4 from three runs of different lengths. Each
    split holds out one block of every run (the last block first, as the loader does), its
    blocks are disjoint from the other splits', and no training window shares a sample
    with a held-out window of its run."""
    window = 16
    runs = np.repeat([0, 1, 2], [40, 25, 60])
    starts = np.concatenate([np.arange(0, 160, 4), np.arange(500, 600, 4), np.arange(900, 1140, 4)])
    splits = blocked_splits(runs, starts, window, repeats)
    assert len(splits) == min(repeats, 5)
    seen = np.zeros(len(runs), bool)
    for k, (train, test) in enumerate(splits):
        assert set(runs[test]) == {0, 1, 2} and not seen[test].any()
        seen[test] = True
        for run in (0, 1, 2):
            held = starts[test][runs[test] == run]
            kept = starts[train][runs[train] == run]
            assert np.abs(kept[:, None] - held[None, :]).min() >= window
            if k == 0:  # the last fifth of the run
                assert held.max() == starts[runs == run].max()
    if repeats >= 5:
        assert seen.all()  # five blocks cover every window once
