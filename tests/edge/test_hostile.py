"""Hostile input through a real broker: generated payloads, floods, back-pressure.

Every request gets exactly one answer, on ``out`` or ``error``, and the agent keeps serving.
"""

from __future__ import annotations

import json
import math
import os
import queue
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as paho
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgewise.deploy.broker import LocalBroker
from edgewise.edge.app import build_agent
from edgewise.edge.core.agent import Agent
from edgewise.edge.core.config import AgentConfig
from edgewise.edge.link.payload import encode_tensor_request
from tests.mqtt_peer import Peer

IRIS_ROW = [5.1, 3.5, 1.4, 0.2]
IRIS_NAMES = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]
MAX_PAYLOAD = 2048
FUZZ_EXAMPLES = int(os.environ.get("EDGEWISE_FUZZ_EXAMPLES", "10000"))

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),  # NaN and infinities included; json.dumps writes them as NaN/Infinity
    st.text(max_size=12),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
numbers = st.floats(width=32) | st.integers(min_value=-(10**6), max_value=10**6)
rows = st.lists(numbers | st.none(), min_size=3, max_size=5)
named = st.dictionaries(st.sampled_from([*IRIS_NAMES, "colour"]), numbers | st.none() | scalars)
instances = st.lists(st.one_of(rows, named, json_values), min_size=0, max_size=4)
ids = st.one_of(st.text(min_size=1, max_size=16), st.integers(-(2**40), 2**40), json_values)
documents = st.fixed_dictionaries(
    {"instances": instances}, optional={"id": ids, "extra": json_values}
).map(lambda d: json.dumps(d).encode())
tensors = st.builds(
    lambda n, width, seed: encode_tensor_request(
        np.random.default_rng(seed).normal(size=(n, width)).astype(np.float32), f"t{seed}"
    ),
    st.integers(1, 3),
    st.integers(1, 6),
    st.integers(0, 2**16),
)
payloads = st.one_of(
    documents,
    st.builds(lambda: json.dumps({"id": "ok", "instances": [IRIS_ROW]}).encode()),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=256),
    st.text(max_size=128).map(str.encode),
    st.binary(max_size=64).map(lambda b: b"EWT1" + b),
    tensors,
    st.integers(MAX_PAYLOAD + 1, 3 * MAX_PAYLOAD).map(lambda n: b"[" + b"1," * (n // 2) + b"1]"),
    # Deep nesting (the parser would recurse): with and without a leading id, in strings too.
    st.integers(60, 900).map(lambda n: b'{"id":"deep","instances":' + b"[" * n + b"]" * n + b"}"),
    st.integers(60, 2000).map(lambda n: b"{" * n),
    st.integers(60, 900).map(lambda n: b'{"id":"s","instances":[["' + b"[" * n + b'"]]}'),
)
# Text a broker accepts in topics and string properties: printable, no NUL or controls.
mqtt_text = st.text(
    st.characters(categories=["L", "N", "P", "S", "Zs"], exclude_characters="/+#"),
    min_size=1,
    max_size=10,
)
models = st.one_of(st.sampled_from(["iris-rf", "iris-rf", "iris-rf", "nosuch"]), mqtt_text)
BAD_RESPONSE_TOPICS = ["#", "a/+/b", "fuzz/#", "$SYS/x", "$share/g/x"]
properties = st.fixed_dictionaries(
    {},
    optional={
        # Three usable response topics to one the agent must refuse.
        "response": st.one_of(
            mqtt_text, mqtt_text, mqtt_text, st.sampled_from(BAD_RESPONSE_TOPICS)
        ),
        "correlation": st.binary(max_size=32),
        "user": st.lists(st.tuples(mqtt_text, mqtt_text), max_size=3),
        "content_type": mqtt_text,
        "utf8": st.booleans(),
    },
)


def publish_with(peer: Peer, topic: str, payload: bytes, props: dict[str, Any], reply: str) -> str:
    """Publish with MQTT 5 properties; returns the response topic used ("" for none)."""
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    p = Properties(PacketTypes.PUBLISH)
    response = ""
    if "response" in props:
        given = props["response"]
        response = given if given in BAD_RESPONSE_TOPICS else f"{reply}/{given}"
        p.ResponseTopic = response
    if "correlation" in props:
        p.CorrelationData = props["correlation"]
    if props.get("user"):
        p.UserProperty = props["user"]
    if "content_type" in props:
        p.ContentType = props["content_type"]
    if props.get("utf8"):
        try:
            payload.decode("utf-8")
            p.PayloadFormatIndicator = 1  # only when true: the broker may check it
        except UnicodeDecodeError:
            pass
    peer.client.publish(topic, payload, qos=1, properties=p).wait_for_publish(5)
    return response


def readable_id(payload: bytes) -> Any:
    """The id the agent must echo: a str/int ``id`` of a JSON object (NaN tolerated)."""
    try:
        doc = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    rid = doc.get("id") if isinstance(doc, dict) else None
    return rid if isinstance(rid, (str, int)) and not isinstance(rid, bool) else None


def make_agent(broker: LocalBroker, bundle: Path, device: str, **options: Any) -> Agent:
    config = AgentConfig(
        bundles=(str(bundle),), broker=broker.url, device=device, max_instances=50, **options
    )
    agent = build_agent(config)
    agent.start()
    assert agent.connection.wait_connected(10)
    return agent


@pytest.fixture
def fuzz_agent(broker: LocalBroker, iris_bundle: Path) -> Iterator[Agent]:
    agent = make_agent(broker, iris_bundle, f"fuzz-{uuid.uuid4().hex[:6]}", max_payload=MAX_PAYLOAD)
    yield agent
    agent.stop(timeout=5)


def test_fuzzed_payloads_each_answered_once(broker: LocalBroker, fuzz_agent: Agent) -> None:
    """Payloads, sub-topics and MQTT 5 properties from hypothesis: every request gets its
    answer (on out or error; on its response topic too when it gave a usable one)."""
    device = fuzz_agent.config.device
    reply = f"fuzz-reply/{device}"
    peer = Peer(broker.port)
    peer.subscribe(f"edgewise/{device}/+/out", f"edgewise/{device}/+/error", f"{reply}/#")
    codes: Counter[str] = Counter()
    sent = 0

    @settings(
        max_examples=FUZZ_EXAMPLES,
        deadline=None,
        derandomize=True,  # a fixed seed: the same 10,000 payloads every run
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(payload=payloads, model=models, props=properties)
    def one(payload: bytes, model: str, props: dict[str, Any]) -> None:
        nonlocal sent
        response = publish_with(peer, f"edgewise/{device}/{model}/in", payload, props, reply)
        sent += 1
        msg = peer.expect("", timeout=10)
        doc = json.loads(msg.payload)
        rid = readable_id(payload)
        if rid is not None:
            assert doc["id"] == rid
        is_error = "code" in doc
        if response in BAD_RESPONSE_TOPICS:
            assert msg.topic == f"edgewise/{device}/{model}/error" and doc["code"] == "bad_request"
        elif response:
            if is_error:  # on the error topic and on the response topic, in either order
                other = peer.expect("", timeout=10)
                assert {msg.topic, other.topic} == {f"edgewise/{device}/{model}/error", response}
                assert json.loads(other.payload) == doc
            else:
                assert msg.topic == response
        else:
            assert msg.topic.endswith("/error" if is_error else "/out")
        if is_error:
            assert isinstance(doc["code"], str) and doc["message"]
            codes[doc["code"]] += 1
        else:
            assert model == "iris-rf" and len(doc["predictions"]) >= 1
            codes["ok"] += 1

    try:
        one()
        time.sleep(0.5)
        extra = [peer.inbox.get_nowait().topic for _ in range(peer.inbox.qsize())]
        assert not extra, f"{len(extra)} answers beyond one per request: {extra[:5]}"
    finally:
        peer.close()
    print(f"\nfuzz: {sent} payloads, answers by code: {dict(codes.most_common())}")
    assert sent >= FUZZ_EXAMPLES
    assert fuzz_agent.counters.received == sent
    assert fuzz_agent.counters.internal_errors == 0 and fuzz_agent.connection.callback_errors == 0
    # The generators reach the main kinds of bad input, not just one.
    for code in ("ok", "bad_json", "bad_encoding", "bad_request", "too_large", "unknown_model"):
        assert codes[code] > 0, (code, codes)
    fuzz_agent.health()  # and it can still report on itself


def collect(peer: Peer, n: int, timeout: float) -> list[paho.MQTTMessage]:
    got: list[paho.MQTTMessage] = []
    deadline = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        try:
            got.append(peer.inbox.get(timeout=0.5))
        except queue.Empty:
            continue
    return got


def test_qos0_flood_beyond_queue_is_answered_overloaded(
    broker: LocalBroker, iris_bundle: Path
) -> None:
    device = f"flood-{uuid.uuid4().hex[:6]}"
    agent = make_agent(broker, iris_bundle, device, qos=0, queue_size=5)
    peer = Peer(broker.port)
    try:
        peer.subscribe(f"edgewise/{device}/+/out", f"edgewise/{device}/+/error")
        n = 3000
        body = [json.dumps({"id": i, "instances": [IRIS_ROW] * 40}) for i in range(n)]
        for b in body:
            peer.client.publish(f"edgewise/{device}/iris-rf/in", b, qos=0)
        docs: list[dict[str, Any]] = []
        refused = 0  # beyond 100 refusals a second: counted in notices, not answered each
        deadline = time.monotonic() + 60
        while len(docs) + refused < n and time.monotonic() < deadline:
            docs += [json.loads(m.payload) for m in collect(peer, 1, 1)]
            refused = sum(int(d.get("refused", 0)) for d in docs)
        each = [d for d in docs if "refused" not in d]
        by_id = Counter(d["id"] for d in each)
        overloaded = sum(d.get("code") == "overloaded" for d in each) + refused
        assert len(by_id) + refused == n and set(by_id) <= set(range(n))
        assert max(by_id.values()) == 1 and overloaded > 0
        assert agent.counters.peak_queued <= 5
        peer.request(f"edgewise/{device}/iris-rf/in", {"id": "after", "instances": [IRIS_ROW]})
        assert peer.expect_json("/out")["id"] == "after"
    finally:
        peer.close()
        agent.stop(timeout=5)


def test_qos1_backlog_is_bounded_in_the_agent(broker: LocalBroker, iris_bundle: Path) -> None:
    """3,000 QoS 1 requests wait in the broker while the agent is away; when it comes back
    its queue never holds more than queue_size, and nothing is refused or lost."""
    device = f"bp-{uuid.uuid4().hex[:6]}"
    make_agent(broker, iris_bundle, device).stop(timeout=5)  # leaves its session behind
    peer = Peer(broker.port)
    agent = None
    try:
        peer.subscribe(f"edgewise/{device}/+/out", f"edgewise/{device}/+/error")
        n = 3000
        for i in range(n):
            body = json.dumps({"id": i, "instances": [IRIS_ROW]})
            peer.client.publish(f"edgewise/{device}/iris-rf/in", body, qos=1).wait_for_publish(5)
        agent = make_agent(broker, iris_bundle, device, queue_size=50)
        answers = collect(peer, n, 60)
        assert sorted(json.loads(m.payload)["id"] for m in answers) == list(range(n))
        assert all(m.topic.endswith("/out") for m in answers)
        assert agent.counters.overloaded == 0
        assert 1 <= agent.counters.peak_queued <= 50
    finally:
        peer.close()
        if agent is not None:
            agent.stop(timeout=5)


def test_health_is_retained_and_complete(broker: LocalBroker, iris_bundle: Path) -> None:
    device = f"hl-{uuid.uuid4().hex[:6]}"
    agent = make_agent(broker, iris_bundle, device, health_interval=1)
    peer = Peer(broker.port)
    try:
        peer.subscribe(f"edgewise/{device}/+/out", f"edgewise/{device}/+/error")
        for i in range(50):
            peer.request(f"edgewise/{device}/iris-rf/in", {"id": i, "instances": [IRIS_ROW]})
        peer.publish(f"edgewise/{device}/iris-rf/in", b"not json")
        assert len(collect(peer, 51, 20)) == 51
        time.sleep(1.3)  # at least one report after the last answer
        late = Peer(broker.port)  # subscribes afterwards: gets the retained report
        try:
            late.subscribe(f"edgewise/{device}/health")
            msg = late.expect("/health")
        finally:
            late.close()
        assert msg.retain
        doc = json.loads(msg.payload)
    finally:
        peer.close()
        agent.stop(timeout=5)
    counters = doc["counters"]
    assert counters["received"] == 51 and counters["answered"] == 50 and counters["errors"] == 1
    assert counters["outbox_depth"] == 0 and counters["dropped"] == 0
    assert counters["reconnects"] == 0 and counters["internal_errors"] == 0
    assert counters["dead_letters"] == 0 and counters["callback_errors"] == 0
    assert doc["durable"] is True and doc["outbox_error"] is None
    assert 0 <= doc["worker_heartbeat_age_s"] < 1
    model = doc["models"]["iris-rf"]
    manifest = json.loads((iris_bundle / "manifest.json").read_text())
    assert model["sha256"] == manifest["model"]["sha256"] and model["version"] == "1"
    # Inference is timed for the 50 served requests; end to end for all 51 (errors too).
    for key, n in (("inference_ms", 50), ("e2e_ms", 51)):
        window = model[key]
        assert window["n"] == n and 0 < window["p50_ms"] <= window["p99_ms"]
    assert model["e2e_ms"]["p50_ms"] > model["inference_ms"]["p50_ms"]
    assert doc["rss_bytes"] > 10 << 20 and doc["uptime_s"] > 0
    assert doc["cpu_temp_c"] is None or -40 < doc["cpu_temp_c"] < 150
    assert not math.isnan(doc["time"])
