"""Agent.handle and the answer paths on an in-memory transport and a fake backend.

Fast unit tests of pure agent logic (edge.testing); the same paths run against real
models on a real Mosquitto in test_agent.py, test_hostile.py and test_durable.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgewise.edge.app import build_agent
from edgewise.edge.core.agent import Agent
from edgewise.edge.core.config import AgentConfig
from edgewise.edge.link.message import Message
from edgewise.edge.testing import FakeBackend, MemoryFactory, MemoryTransport, fake_classifier

DEVICE = "unit"
IN = f"edgewise/{DEVICE}/m/in"


def _message(payload: bytes, topic: str = IN, **kw: object) -> Message:
    return Message(topic, payload, 1, 0.0, **kw)  # type: ignore[arg-type]


@pytest.fixture
def transports() -> MemoryFactory:
    return MemoryTransport.factory()


@pytest.fixture
def agent(transports: MemoryFactory, tmp_path: Path) -> Iterator[Agent]:
    config = AgentConfig(
        bundles=("unused",), device=DEVICE, state_dir=str(tmp_path), max_instances=4
    )
    a = build_agent(config, models={"m": fake_classifier("m")}, transport=transports)
    yield a
    a.stop(timeout=2)


def test_a_request_is_answered_on_the_out_topic(agent: Agent) -> None:
    [answer] = agent.handle(_message(b'{"id": 7, "instances": [[1, 2], [-3, -4]]}'))
    doc = json.loads(answer.payload)
    assert answer.topic == f"edgewise/{DEVICE}/m/out" and doc["id"] == 7
    assert [p["label"] for p in doc["predictions"]] == ["high", "low"]
    assert agent.counters.answered == 1


@pytest.mark.parametrize(
    ("payload", "topic", "code"),
    [
        (b"{not json", IN, "bad_json"),
        (b'{"id": "s", "instances": [[1, 2, 3]]}', IN, "bad_shape"),
        (b'{"id": "t", "instances": [[1, "x"]]}', IN, "bad_type"),
        (b'{"id": "n", "instances": [[1, 2]] }', f"edgewise/{DEVICE}/nope/in", "unknown_model"),
        (b'{"instances": [[1, 2], [1, 2], [1, 2], [1, 2], [1, 2]]}', IN, "too_large"),
    ],
)
def test_bad_requests_never_reach_the_backend(
    agent: Agent, payload: bytes, topic: str, code: str
) -> None:
    backend = agent.models["m"].backend
    assert isinstance(backend, FakeBackend)
    [answer] = agent.handle(_message(payload, topic))
    assert answer.topic.endswith("/error") and json.loads(answer.payload)["code"] == code
    assert backend.calls == 0 and agent.counters.errors == 1


def test_response_topic_and_correlation_are_honoured(agent: Agent) -> None:
    answers = agent.handle(
        _message(b'{"instances": [[1, 1]]}', response_topic="r/1", correlation_data=b"c")
    )
    assert [(a.topic, a.correlation_data) for a in answers] == [("r/1", b"c")]
    bad = agent.handle(_message(b"[]", response_topic="r/#"))
    assert [a.topic for a in bad] == [f"edgewise/{DEVICE}/m/error"]  # never a wildcard


def test_served_end_to_end_through_the_transport(agent: Agent, transports: MemoryFactory) -> None:
    agent.start()
    link = transports.last
    info = json.loads(link.wait_for("/m/info").payload)
    assert info["input"] == {"kind": "tabular", "shape": [2]} and info["labels"] == ["low", "high"]
    msg = link.deliver(IN, b'{"id": "e", "instances": [[5, 5]]}')
    out = json.loads(link.wait_for("/m/out").payload)
    assert out["id"] == "e" and out["predictions"][0]["label"] == "high"
    assert link.wait_for("/status").payload == b"online"
    agent.stop(timeout=2)
    assert msg.mid in link.acked or agent.config.session is None
    assert link.published[-1].topic.endswith("/status") and link.published[-1].payload == b"offline"


def test_an_answer_that_cannot_be_published_does_not_stop_serving(
    agent: Agent, transports: MemoryFactory
) -> None:
    agent.start()
    link = transports.last
    link.refuse = "r/"
    link.deliver(IN, b'{"id": 1, "instances": [[1, 1]]}', response_topic="r/x")
    link.deliver(IN, b'{"id": 2, "instances": [[1, 1]]}')
    assert json.loads(link.wait_for("/m/out").payload)["id"] == 2
