"""Micro-batching (edge.core.batching): a batched run answers exactly as one request at a time,
also with malformed requests in the batch; and under a real QoS 1 burst on Mosquitto."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgewise.deploy.broker import LocalBroker
from edgewise.edge.app import build_agent
from edgewise.edge.core.agent import Agent
from edgewise.edge.core.batching import answer_together
from edgewise.edge.core.config import AgentConfig
from edgewise.edge.link.message import Message
from edgewise.edge.link.payload import encode_tensor_request
from edgewise.edge.runtime.backends import BackendOptions
from edgewise.edge.runtime.loader import load_models
from edgewise.edge.testing import MemoryTransport
from tests.agents import answers_peer, new_device, serving

DEVICE = "batch"
IN = f"edgewise/{DEVICE}/iris-rf/in"
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5], [6.3, 2.8, 5.1, 1.5]]


def _requests() -> list[Message]:
    """Good requests of 1..3 instances, with bad ones in between."""
    bodies: list[bytes] = []
    for i in range(24):
        bodies.append(json.dumps({"id": i, "instances": ROWS[: 1 + i % 3]}).encode())
    bodies[3] = b'{"id": 3, "instances": [[1, 2, 3]]}'  # wrong width: bad_shape
    bodies[7] = b'{"id": 7, "instances": [[1, 2, 3, "x"]]}'  # bad_type
    bodies[11] = b"{not json"
    bodies[15] = b'{"id": 15, "instances": [[5.1, 3.5, 1.4, 0.2]], "explain": true}'
    bodies[21] = json.dumps({"id": 21, "instances": ROWS, "answer": "compact"}).encode()
    bodies[19] = encode_tensor_request(__import__("numpy").asarray(ROWS, "float32"), "t19")
    msgs = [Message(IN, b, 1, 0.0, mid=i + 1) for i, b in enumerate(bodies)]
    msgs.insert(5, Message(f"edgewise/{DEVICE}/nope/in", b'{"id": "x", "instances": []}', 1, 0.0))
    return msgs


# One runtime thread: ONNX Runtime's tree ensembles sum in another order when they split
# one row's trees over threads than when they split rows, so with several threads a row's
# probabilities can differ in the last float32 bit between batch sizes (also without
# batching: a request of 1 row vs 3). With one thread the answers are bit for bit the same.
EXACT: dict[str, Any] = {"num_threads": 1}


def _agent(bundle: Path, tmp_path: Path, name: str) -> Agent:
    config = AgentConfig(bundles=(str(bundle),), device=DEVICE, state_dir=str(tmp_path / name),
                         **EXACT)  # fmt: skip
    models = load_models(config.bundles, BackendOptions(1))
    return build_agent(config, models=models, transport=MemoryTransport.factory())


@pytest.fixture
def agents(iris_bundle: Path, tmp_path: Path) -> Iterator[tuple[Agent, Agent]]:
    pair = (_agent(iris_bundle, tmp_path, "a"), _agent(iris_bundle, tmp_path, "b"))
    yield pair
    for a in pair:
        a.stop(timeout=2)


def _docs(answers: list[Any]) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for a in answers:
        doc = json.loads(a.payload)
        doc.pop("inference_ms", None)  # a time, not an answer
        out.append((a.topic, doc))
    return out


@pytest.mark.parametrize("max_batch", [3, 5, 64])
def test_batched_answers_equal_one_at_a_time(agents: tuple[Agent, Agent], max_batch: int) -> None:
    batched, single = agents
    object.__setattr__(batched.config, "max_batch", max_batch)  # frozen config: test only
    msgs = _requests()
    got = _docs([a for outs in answer_together(batched, msgs) for a in outs])
    want = _docs([a for m in msgs for a in single.handle(m)])
    assert got == want
    c = batched.counters
    assert (c.received, c.answered, c.errors) == (single.counters.received,
            single.counters.answered, single.counters.errors)  # fmt: skip
    assert c.batched_requests > 0 and c.backend_calls < c.answered
    assert c.largest_batch <= max(max_batch, 3)
    assert batched.health()["counters"]["batched_requests"] == c.batched_requests


def test_a_burst_on_a_real_broker_is_batched_and_answered_exactly(
    broker: LocalBroker, iris_bundle: Path
) -> None:
    device, n = new_device("burst"), 600
    expected = load_models([str(iris_bundle)], BackendOptions(1))["iris-rf"]
    with (
        serving(broker, [iris_bundle], device, max_batch=64, **EXACT) as agent,
        answers_peer(broker, device) as peer,
    ):
        topic = f"edgewise/{device}/iris-rf/in"
        gate = threading.Event()
        served = agent.contain

        def held(msg: Message) -> Any:  # the first request waits: the rest queue up behind it
            gate.wait(10)
            return served(msg)

        agent.contain = held  # type: ignore[method-assign]
        for i in range(n):
            rows = ROWS[: 1 + i % 4] if i % 50 else [[1.0, 2.0]]  # every 50th is malformed
            form = "compact" if i % 7 == 0 else "full"  # compact answers share batches too
            peer.request(topic, {"id": i, "instances": rows, "answer": form})
        gate.set()
        got: dict[int, dict[str, Any]] = {}
        while len(got) < n:
            doc = peer.expect_json(timeout=30)
            got[doc["id"]] = doc
        agent.contain = served  # type: ignore[method-assign]
        health = agent.health()["counters"]
    for i, doc in got.items():
        want = expected.predict(ROWS[: 1 + i % 4])
        if i % 50 == 0:
            assert doc["code"] == "bad_shape"
        elif i % 7 == 0:  # the label of each, and no more
            assert doc == {"id": i, "version": "1", "predictions": [p["label"] for p in want]}
        else:
            assert doc["predictions"] == want
    assert health["batched_requests"] > n // 2 and health["backend_calls"] < health["answered"]
