"""Forward-then-ack (edge.link.forward): a request is acknowledged only after the broker
acknowledged its answers, in arrival order, on the connection that delivered it.

The real test puts a proxy between the agent and Mosquitto that withholds PUBACKs: the
request stays unacknowledged, and after a reconnect the broker delivers it again. A fake
connection checks the ordering logic next to it."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from edgewise.deploy.broker import LocalBroker
from edgewise.edge.app import build_agent
from edgewise.edge.core.config import AgentConfig
from edgewise.edge.link.forward import Forwarder, _Pending
from edgewise.edge.link.message import Message, PublishRefused
from edgewise.edge.link.outbox import OutMessage
from edgewise.edge.testing import Handle
from tests.agents import new_device
from tests.mqtt_peer import Peer
from tests.mqtt_proxy import PubackProxy

ROW = [5.1, 3.5, 1.4, 0.2]


def wait_until(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


@pytest.mark.parametrize("ack", ["forwarded", "stored"])
def test_request_is_acked_only_after_its_answers_puback(
    ack: str, broker: LocalBroker, iris_bundle: Path, tmp_path: Path
) -> None:
    """The broker's PUBACK for the answer is withheld, then the connection is cut. With
    forward-then-ack the request was never acknowledged, so the broker delivers it again
    (the agent sees a duplicate); acknowledged after the outbox commit ("stored"), it is
    not delivered again."""
    proxy = PubackProxy(broker.port)
    device = new_device("fwd")
    config = AgentConfig(
        bundles=(str(iris_bundle),),
        broker=f"mqtt://127.0.0.1:{proxy.port}",
        device=device,
        state_dir=str(tmp_path),
        ack=ack,
    )
    agent = build_agent(config)
    agent.start()
    peer = Peer(broker.port)
    try:
        assert agent.connection.wait_connected(10)
        peer.subscribe(f"edgewise/{device}/iris-rf/out")
        proxy.withhold.set()
        peer.request(f"edgewise/{device}/iris-rf/in", {"id": "w1", "instances": [ROW]})
        assert peer.expect_json("/iris-rf/out", 10)["id"] == "w1"  # the broker has it
        wait_until(lambda: proxy.withheld >= 1, 5, "a withheld PUBACK")
        time.sleep(0.3)
        if ack == "forwarded":
            assert agent.forwarding == 1  # answered, not acknowledged
        assert agent.counters.duplicates == 0
        proxy.withhold.clear()
        proxy.cut()  # the agent reconnects; its session kept the request if unacknowledged
        wait_until(lambda: agent.connection.connected and agent.connection.reconnects >= 1, 20,
                   "the agent to reconnect")  # fmt: skip
        if ack == "forwarded":
            wait_until(lambda: agent.counters.duplicates == 1, 10, "the request again")
            wait_until(lambda: agent.forwarding == 0, 10, "the redelivered copy's ack")
        else:
            time.sleep(1.0)
            assert agent.counters.duplicates == 0
        # Serving goes on: a new request is answered and acknowledged.
        peer.request(f"edgewise/{device}/iris-rf/in", {"id": "w2", "instances": [ROW]})
        deadline = time.monotonic() + 10
        while peer.expect_json("/iris-rf/out", 10)["id"] != "w2":
            assert time.monotonic() < deadline
        wait_until(lambda: agent.forwarding == 0, 10, "every request acknowledged")
    finally:
        peer.close()
        agent.stop(timeout=5)
        proxy.close()


# -- the ordering logic, with a fake connection ----------------------------------------------


@dataclass
class FakeConnection:
    generation: int = 0
    connected: bool = True
    published: list[str] = field(default_factory=list)
    acked: list[int] = field(default_factory=list)
    _mid: int = 0

    def publish(
        self, topic: str, payload: bytes, qos: int = 0, retain: bool = False, cd: object = None
    ) -> Handle:
        if topic == "refused":
            raise PublishRefused("too large")
        self._mid += 1
        self.published.append(topic)
        return Handle(self._mid)

    def ack(self, msg: Message) -> None:
        if msg.generation == self.generation:
            self.acked.append(msg.mid)


def request(mid: int, generation: int = 0) -> Message:
    return Message(f"t/{mid}", b"{}", 1, 0.0, mid=mid, generation=generation)


def out(topic: str = "a/out", qos: int = 1) -> OutMessage:
    return OutMessage(topic, b"{}", qos)


def test_acks_follow_pubacks_in_arrival_order() -> None:
    conn, others = FakeConnection(), []
    fwd = Forwarder(conn, others.append)  # type: ignore[arg-type]
    # 1: two answers; 2: a duplicate (no answers); 3: one answer.
    fwd.forward([(request(1), [out(), out()]), (request(2), []), (request(3), [out()])])
    assert conn.published == ["a/out"] * 3 and conn.acked == [] and fwd.pending == 3
    fwd.on_published(3)  # request 3's answer first: it still waits for 1 and 2
    assert conn.acked == []
    fwd.on_published(1)
    assert conn.acked == []  # request 1 has a second answer out
    fwd.on_published(2)
    assert conn.acked == [1, 2, 3] and fwd.pending == 0
    # Another publisher's PUBACK (the outbox's) is passed on at once.
    assert fwd.on_published(99) is False and conn.acked == [1, 2, 3]


def test_unpublishable_and_qos0_answers_do_not_hold_a_request() -> None:
    conn, others = FakeConnection(), []
    fwd = Forwarder(conn, others.append)  # type: ignore[arg-type]
    fwd.forward([(request(1), [out("refused"), out("b/out", qos=0)])])
    assert conn.acked == [1] and fwd.dead_letters == 1 and fwd.forwarded == 1


def test_a_new_connection_drops_what_waited_on_the_old_one() -> None:
    conn, others = FakeConnection(), []
    fwd = Forwarder(conn, others.append)  # type: ignore[arg-type]
    fwd.forward([(request(1), [out()])])
    conn.generation = 1  # reconnected: message ids start over, the broker resends request 1
    fwd.forward([(request(7, generation=0), [out()]), (request(1, generation=1), [out()])])
    assert fwd.abandoned == 1 and fwd.pending == 1
    assert conn.published == ["a/out", "a/out"]  # nothing for the old connection's request
    fwd.on_published(2)
    assert conn.acked == [1]
    assert fwd.takes(request(1, generation=1)) and not fwd.takes(request(1, generation=0))
    assert not fwd.takes(Message("t", b"", 0, 0.0, generation=1))


def test_flush_waits_for_the_last_puback() -> None:
    conn, others = FakeConnection(), []
    fwd = Forwarder(conn, others.append)  # type: ignore[arg-type]
    fwd.forward([(request(1), [out()])])
    assert not fwd.flush(0.05)
    fwd.on_published(1)
    assert fwd.flush(0.05) and conn.acked == [1]


def test_answers_are_identical_either_way(
    broker: LocalBroker, iris_bundle: Path, tmp_path: Path
) -> None:
    """Forwarded or stored, every payload kind gets the same answer bytes (ids, predictions,
    error codes)."""
    bodies = [
        json.dumps({"id": "ok", "instances": [ROW, ROW]}).encode(),
        json.dumps({"id": 5, "instances": [[1, 2]]}).encode(),  # wrong width: an error
        b"not json",
        json.dumps({"instances": [ROW]}).encode(),  # no id
    ]
    got: dict[str, list[tuple[str, dict[str, object]]]] = {}
    for ack in ("forwarded", "stored"):
        device = new_device(f"same-{ack}")
        config = AgentConfig(
            bundles=(str(iris_bundle),), broker=broker.url, device=device,
            state_dir=str(tmp_path / ack), ack=ack,
        )  # fmt: skip
        agent = build_agent(config)
        agent.start()
        peer = Peer(broker.port)
        try:
            assert agent.connection.wait_connected(10)
            peer.subscribe(f"edgewise/{device}/iris-rf/out", f"edgewise/{device}/iris-rf/error")
            answers = []
            for body in bodies:
                peer.publish(f"edgewise/{device}/iris-rf/in", body)
                msg = peer.expect("", 10)
                doc = json.loads(msg.payload)
                doc.pop("elapsed_ms", None)
                doc.pop("inference_ms", None)
                answers.append((msg.topic.rsplit("/", 1)[1], doc))
            got[ack] = answers
        finally:
            peer.close()
            agent.stop(timeout=5)
    assert got["forwarded"] == got["stored"]
    assert [kind for kind, _ in got["forwarded"]] == ["out", "error", "error", "out"]


def test_a_puback_racing_the_registration_is_not_lost() -> None:
    """paho may deliver a PUBACK before the worker has recorded the message id: while the
    worker holds the lock, unknown ids are queued; the ones that were not ours are passed
    on when settled."""
    conn, others = FakeConnection(), []
    fwd = Forwarder(conn, others.append)  # type: ignore[arg-type]
    with fwd._lock:  # the worker, between paho taking the answer and recording its id
        assert fwd.on_published(1) is True  # maybe ours: queued, not lost
        assert fwd.on_published(50) is True
        fwd._by_mid[1] = pending = fwd_pending(request(1))
        fwd._order.append(pending)
        fwd._settle()
    assert conn.acked == [1] and others == [50]


def fwd_pending(msg: Message) -> _Pending:
    return _Pending(msg, left=1)
