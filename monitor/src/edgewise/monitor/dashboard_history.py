"""The console's server-side history: per device and model, request and error rates and
p99 latency, downsampled into fixed rings so memory stays bounded however long it runs.

Two resolutions: ``FINE`` (10 s buckets, the last 15 minutes) and ``COARSE`` (one bucket a
minute, the last 24 hours). A health report adds the answers and errors counted since the
previous report (a counter that went down is a restarted agent: its new count is the
delta) to the bucket of the report's time, and raises the bucket's p99 to the report's.
Each series is 3 float arrays per ring (about 19 KB), so 500 devices with a model each
hold under 10 MB.
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass, field

RANGES_S = {"15m": 15 * 60, "1h": 3600, "24h": 24 * 3600}


@dataclass
class Ring:
    """``slots`` buckets of ``step`` seconds: sums of answers, errors and seconds covered,
    and the largest p99 (NaN: none), each tagged with the bucket number it holds."""

    step: int
    slots: int
    answers: array[float] = field(init=False)
    errors: array[float] = field(init=False)
    covered: array[float] = field(init=False)
    p99: array[float] = field(init=False)
    tag: array[int] = field(init=False)

    def __post_init__(self) -> None:
        zeros = [0.0] * self.slots
        self.answers, self.errors, self.covered = (array("f", zeros) for _ in range(3))
        self.p99 = array("f", [math.nan] * self.slots)
        self.tag = array("q", [-1] * self.slots)

    def add(self, t: float, answers: float, errors: float, dt: float, p99: float | None) -> None:
        bucket = int(t // self.step)
        i = bucket % self.slots
        if self.tag[i] != bucket:  # an old bucket's slot: start it afresh
            self.tag[i] = bucket
            self.answers[i] = self.errors[i] = self.covered[i] = 0.0
            self.p99[i] = math.nan
        self.answers[i] += answers
        self.errors[i] += errors
        self.covered[i] += dt
        if p99 is not None and not p99 <= self.p99[i]:  # NaN compares False: first value
            self.p99[i] = p99

    def points(self, since: float, now: float) -> list[tuple[float, float, float, float | None]]:
        """(bucket start, answers/s, errors/s, p99 ms) of the buckets in [since, now], oldest
        first."""
        out = []
        first, last = int(since // self.step), int(now // self.step)
        for bucket in range(max(first, last - self.slots + 1), last + 1):
            i = bucket % self.slots
            if self.tag[i] != bucket or self.covered[i] <= 0:
                continue
            p99 = self.p99[i]
            out.append((
                float(bucket * self.step), self.answers[i] / self.covered[i],
                self.errors[i] / self.covered[i], None if math.isnan(p99) else round(p99, 3),
            ))  # fmt: skip
        return out

    def totals(self, since: float, now: float) -> tuple[float, float, float]:
        """Answers, errors and seconds covered in [since, now]."""
        a = e = c = 0.0
        first, last = int(since // self.step), int(now // self.step)
        for bucket in range(max(first, last - self.slots + 1), last + 1):
            i = bucket % self.slots
            if self.tag[i] == bucket:
                a, e, c = a + self.answers[i], e + self.errors[i], c + self.covered[i]
        return a, e, c


class History:
    """One model's rates and latency on one device, at both resolutions."""

    FINE = (10, 90)
    COARSE = (60, 1440)

    def __init__(self) -> None:
        self.fine = Ring(*self.FINE)
        self.coarse = Ring(*self.COARSE)
        self._last: tuple[float, float, float] | None = None  # time, answered, errors

    def report(self, t: float, answered: float, errors: float, p99: float | None) -> None:
        """A health report's cumulative counts at wall time ``t``."""
        last, self._last = self._last, (t, answered, errors)
        if last is None or t <= last[0]:
            return
        dt = t - last[0]
        # A count that went down is an agent that started again from zero.
        da = answered - last[1] if answered >= last[1] else answered
        de = errors - last[2] if errors >= last[2] else errors
        for ring in (self.fine, self.coarse):
            ring.add(t, da, de, dt, p99)

    def series(self, span: str, now: float) -> list[tuple[float, float, float, float | None]]:
        """The points of the last ``span`` (a key of RANGES_S): 10 s buckets for 15 minutes,
        minute buckets beyond."""
        seconds = RANGES_S[span]
        ring = self.fine if seconds <= self.fine.step * self.fine.slots else self.coarse
        return ring.points(now - seconds, now)

    def recent_error_rate(self, now: float) -> float | None:
        """Errors / (answers + errors) over the last 15 minutes (None: no requests)."""
        answers, errors, _ = self.fine.totals(now - 15 * 60, now)
        return errors / (answers + errors) if answers + errors > 0 else None

    def recent_rate(self, now: float) -> float | None:
        """Requests per second over the last minute (None: no report in it)."""
        answers, errors, covered = self.fine.totals(now - 60, now)
        return (answers + errors) / covered if covered > 0 else None
