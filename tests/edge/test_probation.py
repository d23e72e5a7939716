"""Probation after a swap: a new version that fails or is much slower is rolled back by
itself (in-memory transport, fake models: the logic; test_activation.py swaps real ones)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgewise.edge.app import build_agent
from edgewise.edge.core.agent import Agent
from edgewise.edge.core.config import AgentConfig
from edgewise.edge.fleet.probation import Probation, Trial
from edgewise.edge.testing import MemoryFactory, MemoryTransport, fake_classifier

IN = "edgewise/unit/m/in"


@pytest.fixture
def link(tmp_path: Path) -> Iterator[tuple[Agent, MemoryFactory]]:
    transports = MemoryTransport.factory()
    config = AgentConfig(
        bundles=("unused",), device="unit", state_dir=str(tmp_path), probation_requests=20
    )
    agent = build_agent(config, models={"m": fake_classifier("m")}, transport=transports)
    agent.start()
    yield agent, transports
    agent.stop(timeout=2)


def _send(transport: MemoryTransport, n: int, start: int = 0) -> None:
    """One request at a time, each answered before the next: one backend run each (queued
    together, micro-batching would make them a few shared runs, and probation judges runs)."""
    for i in range(start, start + n):
        answered = _answers(transport)
        transport.deliver(IN, json.dumps({"id": i, "instances": [[1, 2]]}).encode())
        deadline = time.monotonic() + 5
        while _answers(transport) == answered and time.monotonic() < deadline:
            time.sleep(0.001)


def _answers(transport: MemoryTransport) -> int:
    return sum(1 for p in list(transport.published) if p.topic.endswith(("/out", "/error")))


def _last_deployment(transport: MemoryTransport) -> dict[str, object]:
    docs = [p for p in transport.published if p.topic.endswith("/m/deployment")]
    return dict(json.loads(docs[-1].payload))


@pytest.mark.parametrize(
    ("new", "reason"),
    [
        (fake_classifier("m", version="2", fail=True), "requests failed"),
        (fake_classifier("m", version="2", delay_s=0.02), "p99 inference"),
    ],
)
def test_a_worse_version_is_rolled_back(
    link: tuple[Agent, MemoryFactory], new: object, reason: str
) -> None:
    agent, transports = link
    transport = transports.last
    _send(transport, 30)  # the old version's baseline
    transport.wait_for("/m/out")
    old = agent.models["m"]
    baseline = agent.inference_ms["m"].summary()["p99_ms"]
    agent.activate(new)  # type: ignore[arg-type]
    probation = agent.features.get(Probation)
    probation.start(new, old, float(baseline or 0) or None)
    _send(transport, 25, start=100)
    rolled = None
    deadline = time.monotonic() + 5
    while rolled is None and time.monotonic() < deadline:
        doc = _last_deployment(transport)
        rolled = doc if doc["state"] == "rolled_back" else None
        time.sleep(0.02)
    assert rolled is not None, transport.published[-3:]
    assert rolled["version"] == "1" and rolled["refused_version"] == "2"
    assert reason in str(rolled["reason"])
    assert agent.models["m"] is old


def test_verdicts() -> None:
    trial = Trial(fake_classifier(), fake_classifier(), baseline_p99_ms=1.0)
    trial.seen, trial.latencies = 5, [1.0] * 5
    assert trial.verdict(10, 0.05, 3.0) is None  # still on probation
    trial.seen, trial.latencies = 10, [1.0] * 10
    assert trial.verdict(10, 0.05, 3.0) == ""  # passed
    trial.latencies = [1.0] * 9 + [5.0]
    assert "p99 inference 5.000 ms" in str(trial.verdict(10, 0.05, 3.0))
    trial.failed = 2
    assert "2 of 10 requests failed" in str(trial.verdict(10, 0.05, 3.0))


def test_a_shared_run_is_one_latency_sample() -> None:
    """Micro-batching: the requests of one backend run share its time; probation counts
    the run once (its time per request) and waits for ``requests`` runs before the p99."""
    from edgewise.edge.core.feature import Answered, Call

    config = AgentConfig(bundles=("unused",), device="unit", probation_requests=10)
    verdicts: list[str] = []
    probation = Probation(config, on_verdict=lambda trial, outcome: verdicts.append(outcome))
    old, new = fake_classifier("m"), fake_classifier("m", version="2")
    for i in range(30):  # the old version: one request per run, 1 ms each
        probation.answered(Answered(old, i, [[1, 2]], None, [{"label": "x"}], 1.0))
    baseline = probation.baseline(old)
    assert baseline == pytest.approx(1.0)
    probation.start(new, old, baseline)
    # One stalled run shared by 64 requests: counted per request it would be 64 samples
    # of 40 ms, the p99; counted once, it is one sample of 40 ms / 64 per request.
    stalled = Call(1, 40.0, 64)
    for i in range(64):
        probation.answered(Answered(new, i, [[1, 2]], None, [{"label": "x"}], 0.625, stalled))
    assert verdicts == []  # 64 requests, but 1 run: still on probation
    for k in range(2, 11):  # nine more runs of two requests, 1 ms per request
        call = Call(k, 2.0, 2)
        for i in range(2):
            probation.answered(Answered(new, i, [[1, 2]], None, [{"label": "x"}], 1.0, call))
    assert verdicts == [""]  # ten runs: passed, the stall was one run among ten
