"""The features' fixed points (edge.core.feature): routing, and containment of a feature
that raises, with the in-memory transport (the logic) and on the real broker."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from edgewise.deploy.broker import LocalBroker
from edgewise.edge.app import build_agent
from edgewise.edge.core.config import AgentConfig
from edgewise.edge.core.feature import Answered, Feature, Route, Router, matches
from edgewise.edge.testing import MemoryTransport, fake_classifier
from tests.agents import new_device
from tests.mqtt_peer import Peer

ROW = [5.1, 3.5, 1.4, 0.2]


class Broken(Feature):
    """Every point raises; ``answered`` counts its calls first."""

    def __init__(self) -> None:
        self.calls = 0

    def answered(self, answer: Answered) -> None:
        self.calls += 1
        raise RuntimeError("broken answered")

    def tick(self) -> None:
        raise RuntimeError("broken tick")

    def health(self, doc: dict[str, Any]) -> None:
        raise RuntimeError("broken health")

    def swapped(self, old: Any, new: Any) -> None:
        raise RuntimeError("broken swapped")


@pytest.mark.parametrize(
    ("pattern", "topic", "hit"),
    [
        ("a/b/c", "a/b/c", True),
        ("a/+/c", "a/b/c", True),
        ("a/+/c", "a/b/c/d", False),
        ("a/#", "a/b/c/d", True),
        ("a/#", "b/a", False),
        ("a/+", "a", False),
        ("+/+/in", "x/y/in", True),
    ],
)
def test_filters_match_as_mqtt_does(pattern: str, topic: str, hit: bool) -> None:
    assert matches(pattern.split("/"), topic.split("/")) is hit


def test_exact_routes_win_then_wildcards_in_order() -> None:
    router, first, second, exact = Router(), Feature(), Feature(), Feature()
    router.add(first, Route("p/fleet/#", subscribe=False))
    router.add(second, Route("p/fleet/devices/+/+"))
    router.add(exact, Route("p/fleet/devices/d/m"))
    assert router.find("p/fleet/devices/d/m")[0] is exact  # type: ignore[index]
    assert router.find("p/fleet/devices/e/m")[0] is first  # type: ignore[index]
    assert router.find("p/d/m/in") is None  # a request: the core's
    for i in range(5000):  # topics named by clients: the cache stays bounded
        router.find(f"p/d/m{i}/in")
    assert len(router._cache) <= 4096


def test_a_raising_feature_is_counted_and_requests_are_still_answered(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    transports = MemoryTransport.factory()
    config = AgentConfig(bundles=("unused",), device="unit", state_dir=str(tmp_path))
    agent = build_agent(config, models={"m": fake_classifier("m")}, transport=transports)
    broken = Broken()
    agent.attach(broken)
    agent.start()
    try:
        for i in range(20):
            body = json.dumps({"id": i, "instances": [[1, 2]]}).encode()
            transports.last.deliver("edgewise/unit/m/in", body)
        deadline = time.monotonic() + 5
        while agent.counters.answered < 20 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert agent.counters.answered == 20 and broken.calls == 20
        answers = [p for p in transports.last.published if p.topic.endswith("/m/out")]
        assert len(answers) == 20
        health = agent.health()  # the broken health hook does not take the report down
        assert health["counters"]["callback_errors"] >= 21  # 20 answers, ticks, health
        assert health["counters"]["answered"] == 20
    finally:
        agent.stop(timeout=2)
    said = [r.getMessage() for r in caplog.records if "feature Broken failed" in r.getMessage()]
    assert any("in answered" in m for m in said) and any("in health" in m for m in said)
    assert sum("in answered" in m for m in said) == 1  # once a minute, not once a request


def test_a_raising_feature_on_the_real_broker(
    broker: LocalBroker, iris_bundle: Path, tmp_path: Path
) -> None:
    device = new_device("broken")
    config = AgentConfig(
        bundles=(str(iris_bundle),), broker=broker.url, device=device, state_dir=str(tmp_path)
    )
    agent = build_agent(config)
    agent.attach(Broken())
    agent.start()
    peer = Peer(broker.port)
    try:
        assert agent.connection.wait_connected(10)
        peer.subscribe(f"edgewise/{device}/iris-rf/out")
        for i in range(10):
            peer.request(f"edgewise/{device}/iris-rf/in", {"id": i, "instances": [ROW]})
        got = [peer.expect_json(f"{device}/iris-rf/out")["id"] for _ in range(10)]
        assert sorted(got) == list(range(10))
        agent.activate(agent.models["iris-rf"])  # a swap: its hook raises too
        assert agent.health()["counters"]["callback_errors"] >= 10
    finally:
        peer.close()
        agent.stop(timeout=5)
