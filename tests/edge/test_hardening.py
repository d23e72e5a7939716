"""Messages and settings that once stopped an agent (issue 10), against a real Mosquitto.

Each hostile case is answered on the error topic, a good request after it is answered, and
again after the agent restarts against the same broker session and outbox.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest

from edgewise.deploy.broker import LocalBroker, start_mosquitto
from edgewise.edge.app import build_agent
from edgewise.edge.core.agent import Agent
from edgewise.edge.core.config import AgentConfig
from edgewise.edge.link.message import Message
from edgewise.edge.link.outbox import Outbox, OutMessage
from tests.mqtt_peer import Peer

IRIS_ROW = [5.1, 3.5, 1.4, 0.2]
DEEP = 1000


def make_agent(broker: LocalBroker, bundle: Path, device: str, **options: Any) -> Agent:
    config = AgentConfig(bundles=(str(bundle),), broker=broker.url, device=device, **options)
    agent = build_agent(config)
    watcher = Peer(int(broker.url.rsplit(":", 1)[1]))
    try:
        watcher.subscribe(f"edgewise/{device}/status")
        agent.start()
        # "online" is published after the SUBSCRIBE on the same connection: once it is
        # seen, the broker routes requests to the agent.
        deadline = time.monotonic() + 10
        while watcher.expect("/status", timeout=deadline - time.monotonic()).payload != b"online":
            pass
    finally:
        watcher.close()
    return agent


def good_request_answered(peer: Peer, device: str, rid: str) -> None:
    peer.request(f"edgewise/{device}/iris-rf/in", {"id": rid, "instances": [IRIS_ROW]})
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        msg = peer.expect("", timeout=max(0.1, deadline - time.monotonic()))
        doc = json.loads(msg.payload)
        if doc.get("id") == rid:
            assert msg.topic.endswith("/out"), doc
            assert doc["predictions"][0]["label"] == "setosa"
            return
    raise AssertionError(f"no answer to {rid}")


GOOD = b'{"id":"h","instances":[[5.1,3.5,1.4,0.2]]}'
# (name, payload, MQTT 5 response topic, expected error code)
CASES = [
    (
        "deep-nesting",
        b'{"id":"h","instances":' + b"[" * DEEP + b"]" * DEEP + b"}",
        None,
        "bad_request",
    ),
    ("deep-nesting-no-id", b"[" * 100_000, None, "bad_request"),
    ("response-topic-hash", GOOD, "#", "bad_request"),
    ("response-topic-plus", GOOD, "a/+/b", "bad_request"),
    ("response-topic-sys", GOOD, "$SYS/x", "bad_request"),
    ("float32-overflow", GOOD.replace(b"5.1", b"1e39"), None, "bad_value"),
    ("huge-integer", GOOD.replace(b"5.1", b"9" * 400), None, "bad_value"),
]


@pytest.mark.parametrize(
    ("name", "payload", "response_topic", "code"), CASES, ids=[c[0] for c in CASES]
)
def test_hostile_message_is_answered_and_agent_keeps_serving(
    broker: LocalBroker,
    iris_bundle: Path,
    name: str,
    payload: bytes,
    response_topic: str | None,
    code: str,
) -> None:
    device = f"hd-{uuid.uuid4().hex[:6]}"
    peer = Peer(broker.port)
    peer.subscribe(f"edgewise/{device}/+/out", f"edgewise/{device}/+/error")
    agent = make_agent(broker, iris_bundle, device)
    try:
        peer.publish(f"edgewise/{device}/iris-rf/in", payload, response_topic=response_topic)
        msg = peer.expect("/error", timeout=10)
        doc = json.loads(msg.payload)
        assert doc["code"] == code, doc
        assert doc["id"] == ("h" if payload.startswith(b'{"id":"h"') else None)
        good_request_answered(peer, device, "after")
        assert agent.counters.internal_errors == 0
        assert agent.supervisor.failed.is_set() is False
        agent.stop(timeout=5)
        # Same device, same persistent session and outbox: nothing is redelivered to trip on.
        agent = make_agent(broker, iris_bundle, device)
        good_request_answered(peer, device, "after-restart")
        time.sleep(0.3)
        assert peer.inbox.empty(), "an answer beyond the expected ones"
        assert agent.counters.received == 1 and agent.counters.internal_errors == 0
    finally:
        peer.close()
        agent.stop(timeout=5)


def test_poisoned_outbox_entry_becomes_a_dead_letter(
    broker: LocalBroker, iris_bundle: Path, state_home: Path
) -> None:
    """An entry no client can publish (stored by an older agent) no longer blocks the rest."""
    device = f"dl-{uuid.uuid4().hex[:6]}"
    config = AgentConfig(bundles=(str(iris_bundle),), broker=broker.url, device=device)
    outbox = Outbox(config.outbox_path)
    outbox.put([OutMessage("#", b'{"id":"poison"}'), OutMessage(f"edgewise/{device}/x/out", b"{}")])
    outbox.close()
    peer = Peer(broker.port)
    peer.subscribe(f"edgewise/{device}/+/out", f"edgewise/{device}/+/error")
    agent = make_agent(broker, iris_bundle, device)
    try:
        assert peer.expect("/x/out", timeout=10).payload == b"{}"  # the entry behind it
        good_request_answered(peer, device, "fresh")
        deadline = time.monotonic() + 5
        while agent.health()["counters"]["outbox_depth"] and time.monotonic() < deadline:
            time.sleep(0.05)  # the last PUBACK may still be on its way
        counters = agent.health()["counters"]
        assert counters["dead_letters"] == 1 and counters["outbox_depth"] == 0
    finally:
        peer.close()
        agent.stop(timeout=5)
    outbox = Outbox(config.outbox_path)
    try:
        [(_, topic, reason)] = outbox.dead_letter_entries()
        assert topic == "#" and "wildcard" in reason.lower()
        assert outbox.dead_letters == 1 and outbox.depth == 0
    finally:
        outbox.close()


def test_answer_over_the_brokers_packet_limit_is_a_dead_letter(
    tmp_path: Path, iris_bundle: Path
) -> None:
    """An answer larger than the broker's maximum packet would get the agent disconnected
    (and resent after every reconnect): it is set aside, and small answers still flow."""
    small = start_mosquitto(tmp_path / "mosq", extra=["max_packet_size 2048"])
    device = f"mp-{uuid.uuid4().hex[:6]}"
    peer = Peer(small.port)
    agent = None
    try:
        peer.subscribe(f"edgewise/{device}/+/out", f"edgewise/{device}/+/error")
        agent = make_agent(small, iris_bundle, device)
        assert agent.connection.max_packet_size == 2048
        # 40 rows: ~1.1 KB of request, ~3.6 KB of answer.
        peer.request(f"edgewise/{device}/iris-rf/in", {"id": "big", "instances": [IRIS_ROW] * 40})
        good_request_answered(peer, device, "small")
        assert agent.health()["counters"]["dead_letters"] == 1
        assert agent.connection.reconnects == 0
    finally:
        peer.close()
        if agent is not None:
            agent.stop(timeout=5)
        small.stop()


# -- supervision -------------------------------------------------------------------------


@pytest.fixture
def notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A listening systemd notify socket, as the agent's environment gives it."""
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0.1)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    monkeypatch.setenv("WATCHDOG_USEC", "400000")  # pings every 0.2 s
    yield sock
    sock.close()


def drain(sock: socket.socket, seconds: float) -> list[str]:
    got: list[str] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(TimeoutError):
            got.append(sock.recv(256).decode())
    return got


def test_watchdog_pings_stop_while_the_worker_is_stalled(
    broker: LocalBroker, iris_bundle: Path, notify_socket: socket.socket
) -> None:
    device = f"wd-{uuid.uuid4().hex[:6]}"
    agent = make_agent(broker, iris_bundle, device)
    release = threading.Event()
    served = agent.handle

    def stalled(msg: Message) -> Any:  # a hang inside one request (a stand-in for a bug)
        release.wait(10)
        return served(msg)

    peer = Peer(broker.port)
    try:
        before = drain(notify_socket, 1.0)
        assert "READY=1" in before and before.count("WATCHDOG=1") >= 3
        agent.handle = stalled  # type: ignore[method-assign]
        peer.request(f"edgewise/{device}/iris-rf/in", {"id": 1, "instances": [IRIS_ROW]})
        time.sleep(0.3)
        during = drain(notify_socket, 1.5)
        assert "WATCHDOG=1" not in during
        assert agent.health()["worker_heartbeat_age_s"] > 1.0
        release.set()
        assert drain(notify_socket, 1.0).count("WATCHDOG=1") >= 3
    finally:
        release.set()
        peer.close()
        agent.stop(timeout=5)
    assert "STOPPING=1" in drain(notify_socket, 0.3)


@pytest.mark.parametrize("thread", ["inference", "mqtt-network", "outbox"])
def test_dead_thread_stops_the_agent_with_offline_and_nonzero_exit(
    broker: LocalBroker, iris_bundle: Path, thread: str
) -> None:
    device = f"sv-{uuid.uuid4().hex[:6]}"
    agent = make_agent(broker, iris_bundle, device)
    peer = Peer(broker.port)
    peer.subscribe(f"edgewise/{device}/status")
    assert peer.expect("/status", timeout=5).payload == b"online"

    def boom(*args: Any, **kwargs: Any) -> Any:
        # Not an Exception: no loop of the agent catches it, so the thread ends.
        raise SystemExit("injected failure")

    # Kill one thread with an error outside any message's boundary.
    if thread == "inference":
        agent._queue.take = boom  # type: ignore[method-assign]
    elif thread == "outbox":
        agent.delivery._settle = boom  # type: ignore[attr-defined]
    else:
        agent.connection._client.loop = boom  # type: ignore[method-assign]
    try:
        code = agent.wait(threading.Event())
        assert code == 1
        assert thread in str(agent.supervisor.reason)
        statuses = [peer.expect("/status", timeout=10).payload]
        assert statuses[-1] == b"offline"
    finally:
        peer.close()
        agent.stop(timeout=2)


def test_qos0_overload_with_deep_payloads_keeps_the_network_thread(
    broker: LocalBroker, iris_bundle: Path
) -> None:
    """With the queue full, an overloaded QoS 0 request's id is read on paho's thread:
    a deep payload there must not end it."""
    device = f"ov-{uuid.uuid4().hex[:6]}"
    agent = make_agent(broker, iris_bundle, device, qos=0, queue_size=1)
    peer = Peer(broker.port)
    try:
        peer.subscribe(f"edgewise/{device}/+/out", f"edgewise/{device}/+/error")
        deep = b'{"id":"d","instances":' + b"[" * 500 + b"]" * 500 + b"}"
        n = 300
        for _ in range(n):
            peer.client.publish(f"edgewise/{device}/iris-rf/in", deep, qos=0)
        codes: dict[str, int] = {}
        while sum(codes.values()) < n:
            doc = json.loads(peer.expect("/error", timeout=10).payload)
            if "refused" in doc:  # beyond 100 refusals a second: counted in one notice
                assert doc["id"] is None and doc["code"] == "overloaded"
                codes["overloaded"] = codes.get("overloaded", 0) + int(doc["refused"])
                continue
            assert doc["id"] == "d"  # the first ones: answered one by one, id read
            codes[doc["code"]] = codes.get(doc["code"], 0) + 1
        assert sum(codes.values()) == n
        assert set(codes) <= {"bad_request", "overloaded"} and codes.get("overloaded", 0) > 0
        assert agent.connection.alive and agent.connection.callback_errors == 0
        good_request_answered(peer, device, "after")
    finally:
        peer.close()
        agent.stop(timeout=5)


# -- connection errors ---------------------------------------------------------------------


def test_wrong_password_is_one_clear_line_and_no_protocol_fallback(
    tmp_path: Path, iris_bundle: Path, caplog: pytest.LogCaptureFixture
) -> None:
    passwords = tmp_path / "passwd"
    passwords.write_text("")
    secured = start_mosquitto(
        tmp_path / "mosq", extra=["allow_anonymous false", f"password_file {passwords}"]
    )
    from edgewise.edge.link.backoff import Backoff
    from edgewise.edge.link.endpoint import Endpoint
    from edgewise.edge.link.mqtt import MqttConnection

    conn = MqttConnection(
        Endpoint.parse(f"mqtt://edge:hunter2@127.0.0.1:{secured.port}"),
        backoff=Backoff(initial=0.05, cap=0.2),
    )
    try:
        with caplog.at_level("INFO", logger="edgewise.edge.link.mqtt"):
            conn.start()
            time.sleep(2.0)
        assert not conn.connected and conn.protocol == "5"
        assert conn.reconnects >= 3
        lines = [r.getMessage() for r in caplog.records]
        assert lines == [f"broker at {conn.broker} refused the connection: not authorized"] or (
            lines == [f"broker at {conn.broker} refused the connection: bad user name or password"]
        ), lines
        assert not any("hunter2" in line for line in lines)
    finally:
        conn.stop(final_status=None, timeout=2)
        secured.stop()


def test_watch_on_an_unreachable_broker_is_one_line_within_its_timeout(tmp_path: Path) -> None:
    import subprocess
    import sys

    from edgewise.deploy.broker import free_port

    started = time.monotonic()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgewise",
            "watch",
            "--broker",
            f"mqtt://127.0.0.1:{free_port()}",
            "--timeout",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    took = time.monotonic() - started
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot reach broker" in lines[0], proc.stderr
    assert took < 2 + 3.0  # its timeout, plus the interpreter's start


def test_paho_thread_survives_a_failing_message_handler(broker: LocalBroker) -> None:
    """A callback that raises must not end paho's network thread."""
    from edgewise.edge.link.endpoint import Endpoint
    from edgewise.edge.link.mqtt import MqttConnection

    got: list[Message] = []

    def handler(msg: Message) -> None:
        if msg.payload == b"boom":
            raise RuntimeError("handler bug")
        got.append(msg)

    topic = f"t/{uuid.uuid4().hex[:6]}"
    conn = MqttConnection(
        Endpoint.parse(broker.url), on_message=handler, subscriptions=[(topic, 1)]
    )
    conn.start()
    try:
        assert conn.wait_connected(5)
        time.sleep(0.2)
        pub = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        pub.connect("127.0.0.1", broker.port)
        pub.loop_start()
        for body in (b"boom", b"ok"):
            pub.publish(topic, body, qos=1).wait_for_publish(5)
        deadline = time.monotonic() + 5
        while not got and time.monotonic() < deadline:
            time.sleep(0.05)
        pub.loop_stop()
        pub.disconnect()
        assert [m.payload for m in got] == [b"ok"]
        assert conn.alive and conn.callback_errors == 1
    finally:
        conn.stop(final_status=None, timeout=2)


def test_oversized_requests_are_dropped_by_the_broker(
    broker: LocalBroker, iris_bundle: Path, tmp_path: Path
) -> None:
    """The agent announces an MQTT 5 Maximum Packet Size from max_payload: a burst of
    8 MB requests never reaches it (memory stays bounded), and it keeps answering."""
    from edgewise.edge.core.role import receive_limit
    from tests.agents import new_device, serving

    device = new_device("mps")
    with serving(broker, [iris_bundle], device, tmp_path, max_payload=1 << 20) as agent:
        assert receive_limit(1 << 20) == (1 << 20) + (1 << 17)
        peer = Peer(broker.port)
        try:
            peer.subscribe(f"edgewise/{device}/iris-rf/out", f"edgewise/{device}/iris-rf/error")
            big = b'{"id": "big", "instances": [' + b"[1,2,3,4]," * 800_000 + b"[1,2,3,4]]}"
            for _ in range(5):
                peer.client.publish(f"edgewise/{device}/iris-rf/in", big, qos=1)
            peer.request(
                f"edgewise/{device}/iris-rf/in", {"id": 1, "instances": [[5.1, 3.5, 1.4, 0.2]]}
            )
            assert peer.expect_json("/out", timeout=20)["id"] == 1
        finally:
            peer.close()
        assert agent.counters.received == 1  # the five 8 MB requests never arrived
