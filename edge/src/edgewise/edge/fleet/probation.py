"""Probation after a swap: the new version must do as well as the one it replaced.

For its first ``probation_requests`` requests the new version's internal errors and
inference p99 are watched; past ``probation_max_error_rate``, or with a p99 above
``probation_max_p99_ratio`` times the old version's (and at least 1 ms more), the agent
swaps the old version back by itself and says why on the model's ``deployment`` topic.

Latencies are counted per backend run, not per request: the requests of a shared run
(micro-batching) share its stalls, and counted each they would make one slow run look
like many. A run is one sample, its time per request; the p99 waits for
``probation_requests`` runs (with one request per run, as without batching, that is the
same count). Errors are counted per request.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from edgewise.edge.core.feature import Answered, Feature
from edgewise.edge.core.health import LatencyWindow
from edgewise.edge.runtime.model import ServedModel

if TYPE_CHECKING:
    from edgewise.edge.core.config import AgentConfig

log = logging.getLogger(__name__)
MIN_BASELINE = 20  # old-version latencies needed before p99s are compared
P99_SLACK_MS = 1.0  # tiny models: a ratio of two sub-millisecond p99s is noise


@dataclass
class Trial:
    """One new version on probation."""

    model: ServedModel
    previous: ServedModel
    baseline_p99_ms: float | None
    deployment: str | None = None
    seen: int = 0
    failed: int = 0
    latencies: list[float] = field(default_factory=list)

    def verdict(self, requests: int, max_error_rate: float, max_ratio: float) -> str | None:
        """None while on probation; '' when passed; the reason to roll back otherwise."""
        rate = self.failed / max(self.seen, 1)
        if self.seen >= max(10, requests // 10) and rate > max_error_rate:
            return f"{self.failed} of {self.seen} requests failed (limit {max_error_rate:.0%})"
        if self.seen < requests or (len(self.latencies) < requests and self.seen > self.failed):
            return None  # p99 over ``requests`` runs (a trial that only failed: judged now)
        if self.baseline_p99_ms is not None and self.latencies:
            ordered = sorted(self.latencies)
            p99 = ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)]
            limit = max_ratio * self.baseline_p99_ms + P99_SLACK_MS
            if p99 > limit:
                return (
                    f"p99 inference {p99:.3f} ms, more than {max_ratio:g} x the previous "
                    f"version's {self.baseline_p99_ms:.3f} ms"
                )
        return ""


class Probation(Feature):
    """The trials of one agent: the worker thread records, any thread may start one.

    It judges only: ``on_verdict(trial, verdict)`` acts ('' passed, else the reason to
    roll back; ``edge.fleet.activation``). The inference latencies of the versions serving are
    kept here too: a new version's p99 is compared with its predecessor's."""

    def __init__(self, config: AgentConfig, on_verdict: Callable[[Trial, str], None]) -> None:
        self._config = config
        self._on_verdict = on_verdict
        self._trials: dict[str, Trial] = {}
        self._lock = threading.Lock()
        self._latency: dict[str, tuple[ServedModel, LatencyWindow]] = {}
        self._last_call: dict[str, int] = {}  # per model: the shared run last counted

    def answered(self, answer: Answered) -> None:
        model, call = answer.model, answer.call
        ms: float | None = answer.elapsed_ms
        if call is not None:  # a shared run: one sample, the first of its requests
            if self._last_call.get(model.name) == call.id:
                ms = None
            else:
                self._last_call[model.name] = call.id
                ms = call.ms / call.requests
        if ms is not None:
            kept = self._latency.get(model.name)
            if kept is None or kept[0] is not model:  # latencies are per version
                kept = self._latency[model.name] = (model, LatencyWindow())
            kept[1].add(ms)
        self.record(model, ms, failed=False)

    def failed(self, model: ServedModel | None) -> None:
        if model is not None:
            self.record(model, None, failed=True)

    def baseline(self, model: ServedModel) -> float | None:
        """``model``'s inference p99 in ms, once MIN_BASELINE requests were measured."""
        kept = self._latency.get(model.name)
        if kept is None or kept[0] is not model:
            return None
        summary = kept[1].summary()
        p99 = summary.get("p99_ms")
        return float(p99) if int(summary.get("n") or 0) >= MIN_BASELINE and p99 else None

    def start(
        self,
        model: ServedModel,
        previous: ServedModel,
        baseline_p99_ms: float | None,
        deployment: str | None = None,
    ) -> None:
        with self._lock:
            self._trials[model.name] = Trial(model, previous, baseline_p99_ms, deployment)

    def active(self, name: str) -> bool:
        return name in self._trials

    def record(self, model: ServedModel, ms: float | None, failed: bool = False) -> None:
        """One request to ``model``: ``failed`` inside the agent, else served, with ``ms``
        its run's latency sample (None: a shared run already counted)."""
        trial = self._trials.get(model.name)
        if trial is None or trial.model is not model:
            return  # not on probation, or a request that started on the old version
        with self._lock:
            trial.seen += 1
            if failed:
                trial.failed += 1
            elif ms is not None:
                trial.latencies.append(ms)
            config = self._config
            verdict = trial.verdict(
                config.probation_requests,
                config.probation_max_error_rate,
                config.probation_max_p99_ratio,
            )
            if verdict is None:
                return
            del self._trials[model.name]
        self._on_verdict(trial, verdict)
