"""The console's history rings (pure logic; the browser test covers the page)."""

from __future__ import annotations

import pytest

from edgewise.monitor.dashboard_history import History, Ring


def test_a_ring_sums_a_bucket_and_forgets_what_it_wrapped_past() -> None:
    ring = Ring(step=10, slots=3)
    ring.add(100.0, 10, 1, 5.0, 2.0)
    ring.add(105.0, 20, 0, 5.0, 7.0)  # same bucket: summed, the larger p99 kept
    assert ring.points(0, 109) == [(100.0, 3.0, 0.1, 7.0)]
    ring.add(135.0, 5, 0, 5.0, None)  # three buckets on: the slot of 100 is 130's now
    assert ring.points(0, 139) == [(130.0, 1.0, 0.0, None)]
    assert ring.totals(0, 139) == (5.0, 0.0, 5.0)


def test_history_counts_deltas_and_a_restart_from_zero() -> None:
    h = History()
    h.report(1200.0, 100, 0, 1.0)  # the first report is only the baseline
    assert h.series("15m", 1200.0) == []
    h.report(1210.0, 150, 10, 2.0)
    h.report(1220.0, 20, 0, 3.0)  # the agent started again: 20 answers since
    fine = h.series("15m", 1220.0)
    assert [p[1:] for p in fine] == [(5.0, 1.0, 2.0), (2.0, 0.0, 3.0)]
    assert h.recent_error_rate(1220.0) == pytest.approx(10 / 80)
    assert h.recent_rate(1220.0) == pytest.approx(80 / 20)
    coarse = h.series("24h", 1220.0)  # one minute bucket holds both reports
    assert len(coarse) == 1 and coarse[0][1] == pytest.approx(70 / 20)
    assert h.series("1h", 1220.0) == coarse


def test_unknown_ranges_are_refused() -> None:
    with pytest.raises(KeyError):
        History().series("2d", 0.0)
