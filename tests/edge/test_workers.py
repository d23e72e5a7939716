"""``workers`` > 1: helper processes share the device's requests (edge.workers)."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from edgewise.deploy.broker import LocalBroker, start_amqtt
from edgewise.edge.app import build_agent
from edgewise.edge.core.agent import Agent
from edgewise.edge.core.config import AgentConfig
from edgewise.edge.errors import EdgewiseError
from edgewise.edge.link.endpoint import Endpoint
from edgewise.edge.link.mqtt import MqttConnection
from edgewise.edge.workers import Retirement, Workers
from tests.agents import new_device, serving
from tests.mqtt_peer import Peer

ROW = [5.1, 3.5, 1.4, 0.2]


def wait_for(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def helpers_connected(agent: Agent) -> bool:
    return all(w["connected"] for w in agent.health()["workers"])


@pytest.fixture
def answers(broker: LocalBroker) -> Iterator[tuple[str, Peer]]:
    """A new device id, and a peer subscribed to its answers and errors."""
    device = new_device("workers")
    peer = Peer(broker.port)
    peer.subscribe(f"edgewise/{device}/iris-rf/out", f"edgewise/{device}/iris-rf/error")
    yield device, peer
    peer.close()


@contextmanager
def two_workers(broker: LocalBroker, bundle: Path, device: str, state: Path) -> Iterator[Agent]:
    """An agent with ``workers = 2`` whose helper is connected."""
    with serving(broker, [bundle], device, state, workers=2) as agent:
        wait_for(lambda: helpers_connected(agent), 20, "the helper did not connect")
        yield agent


def collect(peer: Peer, device: str, n: int, timeout: float, during: Any = None) -> Counter[Any]:
    """Answer ids of ``n`` requests published now (``during(answered)`` is called as
    answers arrive), each counted as often as it was answered."""
    topic = f"edgewise/{device}/iris-rf/in"
    publisher = threading.Thread(
        target=lambda: [
            peer.client.publish(topic, json.dumps({"id": i, "instances": [ROW]}), qos=1)
            for i in range(n)
        ]
    )
    publisher.start()
    ids: Counter[Any] = Counter()
    deadline = time.monotonic() + timeout
    while len(ids) < n and time.monotonic() < deadline:
        try:
            msg = peer.inbox.get(timeout=0.5)
        except queue.Empty:
            continue
        assert msg.topic.endswith("/out"), msg.payload[:200]
        ids[json.loads(msg.payload)["id"]] += 1
        if during is not None:
            during(len(ids))
    publisher.join(30)
    return ids


def test_two_workers_answer_each_request_once_and_drain_on_stop(
    broker: LocalBroker, iris_bundle: Path, tmp_path: Path, answers: tuple[str, Peer]
) -> None:
    device, peer = answers
    with two_workers(broker, iris_bundle, device, tmp_path) as agent:
        ids = collect(peer, device, 5000, timeout=90)
        assert len(ids) == 5000 and set(ids.values()) == {1}
        # Both processes served: the supervisor itself, and the helper.
        assert agent.counters.answered > 0
        wait_for(lambda: agent.health()["counters"]["answered"] == 5000, 5, "health sum")
        health = agent.health()
        (helper,) = health["workers"]
        assert 0 < helper["answered"] < 5000 and helper["restarts"] == 0
        assert health["models"]["iris-rf"]["answered"] == 5000
        process = agent.features.get(Workers).helpers[0].process
        assert process is not None
    assert process.poll() == 0  # drained and exited with the agent


def test_a_killed_worker_is_restarted_and_nothing_is_lost(
    broker: LocalBroker, iris_bundle: Path, tmp_path: Path, answers: tuple[str, Peer]
) -> None:
    device, peer = answers
    killed: list[int] = []
    with two_workers(broker, iris_bundle, device, tmp_path) as agent:
        helper = agent.features.get(Workers).helpers[0]

        def kill_midstream(answered: int) -> None:
            if answered >= 1000 and not killed and helper.process is not None:
                killed.append(helper.process.pid)
                os.kill(helper.process.pid, signal.SIGKILL)

        ids = collect(peer, device, 4000, timeout=90, during=kill_midstream)
        assert killed, "the stream ended before the kill"
        # At least once: an answer stored but not yet acknowledged may come twice.
        assert set(ids) == set(range(4000)), 4000 - len(ids)
        summary = agent.health()["workers"][0]
        assert summary["restarts"] == 1 and summary["pid"] not in (None, killed[0])


@pytest.mark.slow  # waits out the stall limit (10 s)
def test_a_frozen_worker_is_restarted_and_every_request_answered(
    broker: LocalBroker, iris_bundle: Path, tmp_path: Path, answers: tuple[str, Peer]
) -> None:
    """SIGSTOP: the helper's process lives but answers nothing and reports nothing. Health
    says it is stalled, the supervisor kills and restarts it, and the requests it held
    come back from the broker to the new run."""
    device, peer = answers
    frozen: list[int] = []
    seen_stalled: list[dict[str, Any]] = []
    with two_workers(broker, iris_bundle, device, tmp_path) as agent:
        helper = agent.features.get(Workers).helpers[0]

        assert helper.process is not None
        frozen.append(helper.process.pid)
        os.kill(frozen[0], signal.SIGSTOP)  # frozen before the stream: it gets its share

        try:
            # Health tells it from a running one (3 s without a report), before the kill.
            wait_for(lambda: agent.health()["workers"][0]["stalled"], 8, "not marked stalled")
            seen_stalled.append(agent.health()["workers"][0])
            ids = collect(peer, device, 400, timeout=60)
        finally:  # never leave a stopped process behind, whatever happened
            with contextlib.suppress(ProcessLookupError):
                os.kill(frozen[0], signal.SIGCONT)
        assert set(ids) == set(range(400)), 400 - len(ids)
        summary = agent.health()["workers"][0]
        assert summary["stalls"] == 1 and summary["restarts"] == 1
        assert summary["pid"] not in (None, frozen[0]) and not summary["stalled"]
    stalled = seen_stalled[0]
    assert stalled["connected"] is False and stalled["running"] is True
    assert stalled["report_age_s"] >= 3 and stalled["stalls"] == 0  # rounded to 0.1 s


def test_workers_need_mqtt5() -> None:
    with pytest.raises(EdgewiseError, match="needs MQTT 5"):
        AgentConfig(device="d", workers=2, protocol="3.1.1")


def test_workers_on_a_311_only_broker_stop_with_one_reason(
    tmp_path: Path, iris_bundle: Path
) -> None:
    pytest.importorskip("amqtt")
    b = start_amqtt(tmp_path)
    try:
        config = AgentConfig(
            bundles=(str(iris_bundle),),
            broker=b.url,
            device=new_device("workers"),
            workers=2,
            state_dir=str(tmp_path / "state"),
        )
        agent = build_agent(config)
        agent.start()
        never = threading.Event()
        assert agent.wait(never) == 1
        assert "needs MQTT 5" in str(agent.supervisor.reason)
        assert agent.features.get(Workers) is not None and all(
            h.process is None for h in agent.features.get(Workers).helpers
        )
    finally:
        b.stop()


@pytest.mark.parametrize("value", ["0", "65", "two", "-1"])
def test_bad_workers_flag_is_one_line(value: str, iris_bundle: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgewise",
            "agent",
            "--bundle",
            str(iris_bundle),
            "--workers",
            value,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "--workers" in out.stderr and "Traceback" not in out.stderr


def test_lowering_workers_retires_the_helper_and_loses_nothing(
    broker: LocalBroker, iris_bundle: Path, tmp_path: Path, answers: tuple[str, Peer]
) -> None:
    device, peer = answers
    with two_workers(broker, iris_bundle, device, tmp_path):
        pass
    # Both sessions stay members of the shared subscription: the broker deals them
    # these requests while no process runs.
    for i in range(200):
        peer.client.publish(f"edgewise/{device}/iris-rf/in",
                            json.dumps({"id": i, "instances": [ROW]}), qos=1)  # fmt: skip
    time.sleep(0.5)
    with serving(broker, [iris_bundle], device, tmp_path, workers=1) as agent:
        assert len(agent.features.get(Retirement).retiring) == 1
        agent.features.get(Retirement).retiring[0].wait(30)
        assert agent.features.get(Retirement).retiring[0].returncode == 0
        for i in range(200, 400):  # after retirement, all to the one process
            peer.client.publish(f"edgewise/{device}/iris-rf/in",
                                json.dumps({"id": i, "instances": [ROW]}), qos=1)  # fmt: skip
        ids: Counter[Any] = Counter()
        deadline = time.monotonic() + 30
        while len(ids) < 400 and time.monotonic() < deadline:
            try:
                ids[json.loads(peer.inbox.get(timeout=0.5).payload)["id"]] += 1
            except queue.Empty:
                continue
        assert set(ids) == set(range(400)), 400 - len(ids)
        assert agent.counters.answered >= 300  # its held share and all the later ones


def test_two_connections_with_one_client_id_are_reported(
    broker: LocalBroker, caplog: pytest.LogCaptureFixture
) -> None:
    """What workers behind ``use_username_as_clientid`` would do: say so, not flap quietly."""
    endpoint = Endpoint.parse(broker.url)
    client_id = f"edgewise-agent-{new_device('same')}"
    first = MqttConnection(endpoint, client_id=client_id, protocol="5")
    second = MqttConnection(endpoint, client_id=client_id, protocol="5")
    try:
        first.start()
        assert first.wait_connected(10)
        second.start()
        wait_for(lambda: "same client id" in caplog.text, 15, "no takeover reported")
        assert client_id in caplog.text and "docs/mqtt.md#workers" in caplog.text
    finally:
        first.stop(timeout=2)
        second.stop(timeout=2)


def test_a_new_version_restarts_the_helpers_one_by_one(
    broker: LocalBroker, iris_bundle: Path, tmp_path: Path, answers: tuple[str, Peer]
) -> None:
    device, peer = answers
    with two_workers(broker, iris_bundle, device, tmp_path) as agent:
        assert agent.features.get(Workers) is not None
        before = agent.features.get(Workers).helpers[0].process
        assert before is not None
        agent.activate(agent.models["iris-rf"])  # what a roll-out or reload does
        wait_for(
            lambda: agent.features.get(Workers).helpers[0].process is not before, 30, "no restart"
        )
        assert before.returncode == 0  # drained, not killed
        wait_for(lambda: helpers_connected(agent), 20, "the new helper did not connect")
        ids = collect(peer, device, 1000, timeout=60)
        assert set(ids) == set(range(1000))
        assert agent.health()["workers"][0]["restarts"] == 0  # asked for, not a failure
