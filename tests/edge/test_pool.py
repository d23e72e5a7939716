"""Device pools: several agents share one stream of requests through a shared subscription."""

from __future__ import annotations

import json
import queue
import time
import uuid
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from edgewise.edge.core.config import AgentConfig
from edgewise.edge.errors import EdgewiseError
from tests.agents import new_device, serving
from tests.mqtt_peer import Peer

ROW = [5.1, 3.5, 1.4, 0.2]


def test_three_agents_in_a_pool_answer_each_request_once(
    broker: Any, iris_bundle: Path, tmp_path: Path
) -> None:
    pool = f"line-{uuid.uuid4().hex[:6]}"
    devices = [new_device("pool") for _ in range(3)]
    with ExitStack() as stack:
        agents = [
            stack.enter_context(serving(broker, [iris_bundle], d, tmp_path / d, pool=pool))
            for d in devices
        ]
        peer = Peer(broker.port)
        stack.callback(peer.close)
        base = f"edgewise/pool/{pool}/iris-rf"
        peer.subscribe(f"{base}/out/+", f"{base}/error/+")
        for i in range(3000):
            bad = i % 500 == 7  # errors go to the pool's error topic
            body = b"{not json" if bad else json.dumps({"id": i, "instances": [ROW]}).encode()
            peer.client.publish(f"edgewise/pool/{pool}/iris-rf/in", body, qos=1)
        ids: Counter[Any] = Counter()
        served: Counter[str] = Counter()
        errors = 0
        deadline = time.monotonic() + 60
        while sum(ids.values()) + errors < 3000:
            assert time.monotonic() < deadline, (sum(ids.values()), errors)
            try:
                msg = peer.inbox.get(timeout=1)
            except queue.Empty:
                continue
            doc = json.loads(msg.payload)
            kind, member = msg.topic[len(base) + 1 :].split("/")
            if kind == "error":  # each member's answers and errors on topics of its own
                assert doc["code"] == "bad_json" and member in devices
                errors += 1
                continue
            ids[doc["id"]] += 1
            served[doc["device"]] += 1
            assert member == doc["device"]
        assert errors == 6 and len(ids) == 2994 and set(ids.values()) == {1}
        assert set(served) == set(devices)
        assert min(served.values()) >= 0.2 * 2994, served
        # Each member's own topics still answer, without a device field.
        peer.subscribe(f"edgewise/{devices[0]}/iris-rf/out")
        peer.request(f"edgewise/{devices[0]}/iris-rf/in", {"id": "own", "instances": [ROW]})
        own = peer.expect_json(f"{devices[0]}/iris-rf/out")
        assert own["id"] == "own" and "device" not in own
        assert all(a.health()["pool"] == pool for a in agents)


@pytest.mark.parametrize("pool", ["", "a/b", "line+", "x#", "p\x00", "q" * 129])
def test_a_bad_pool_name_is_one_line(pool: str) -> None:
    with pytest.raises(EdgewiseError, match="pool"):
        AgentConfig(pool=pool, device="d")


@pytest.mark.parametrize("device", ["pool", "fleet"])
def test_reserved_levels_are_no_device_ids(device: str) -> None:
    with pytest.raises(EdgewiseError, match="reserved"):
        AgentConfig(device=device)


def test_send_to_a_pool(broker: Any, iris_bundle: Path, tmp_path: Path) -> None:
    from edgewise.cli import main

    pool = f"line-{uuid.uuid4().hex[:6]}"
    rows = tmp_path / "rows.csv"
    lines = ["sepal length (cm),sepal width (cm),petal length (cm),petal width (cm)"]
    rows.write_text("\n".join([*lines, *(",".join(map(str, ROW)) for _ in range(200))]) + "\n")
    with ExitStack() as stack:
        for d in (new_device("pool"), new_device("pool")):
            stack.enter_context(serving(broker, [iris_bundle], d, tmp_path / d, pool=pool))
        args = ["send", "--broker", broker.url, "--pool", pool, "--model", "iris-rf",
                "--csv", str(rows), "--batch", "4", "--no-progress"]  # fmt: skip
        assert main(args) == 0
        with pytest.raises(SystemExit):
            main([*args[:5], "--device", "x", "--pool"])  # --pool needs a name
        assert main([*args, "--device", "x"]) == 1  # one or the other


@pytest.mark.parametrize(
    ("topic", "doc", "taken"),
    [
        ("p/pool/l/m/out/dev-a", {"device": "dev-a"}, True),
        ("p/pool/l/m/error/dev-a", {"code": "bad_json"}, True),  # errors name no device
        ("p/pool/l/m/out/dev-b", {"device": "dev-a"}, False),  # dev-b in dev-a's name
        ("p/pool/l/m/out/dev-a/x", {"device": "dev-a"}, False),
        ("p/pool/l/m/in", {}, False),
        ("p/pool/l/other/out/dev-a", {"device": "dev-a"}, False),
        ("p/dev-a/m/out", {}, False),
    ],
)
def test_a_pool_answer_claims_only_the_member_its_topic_names(
    topic: str, doc: dict[str, Any], taken: bool
) -> None:
    from edgewise.edge.remote.client import _signed_by_topic

    assert _signed_by_topic(topic, doc, "p/pool/l/m/in") is taken


def test_send_to_a_pool_drops_answers_in_another_members_name(
    broker: Any, iris_bundle: Path, tmp_path: Path
) -> None:
    """A client on the open broker answers every request first, on its own member topic
    but claiming the real member: `send` counts only the real answers."""
    from edgewise.edge.link.topics import Topics
    from edgewise.edge.remote.client import send_csv

    pool = f"line-{uuid.uuid4().hex[:6]}"
    base = f"edgewise/pool/{pool}/iris-rf"
    rows = tmp_path / "rows.csv"
    lines = ["sepal length (cm),sepal width (cm),petal length (cm),petal width (cm),species"]
    rows.write_text("\n".join([*lines, *(",".join(map(str, ROW)) + ",setosa" for _ in range(50))]))
    real = new_device("pool")
    forger = Peer(broker.port)
    forged = 0

    def forge(msg: Any) -> None:
        nonlocal forged
        doc = json.loads(msg.payload)
        fake = {"id": doc["id"], "device": real, "predictions": [{"label": "virginica"}]}
        forger.client.publish(f"{base}/out/forger", json.dumps(fake), qos=1)
        forged += 1

    with serving(broker, [iris_bundle], real, tmp_path / real, pool=pool):
        forger.client.message_callback_add(f"{base}/in", lambda c, u, m: forge(m))
        forger.subscribe(f"{base}/in")  # a plain listener, not in the shared group
        result = send_csv(broker.url, Topics("edgewise", "x", pool), "iris-rf", rows,
                          target="species", progress=False)  # fmt: skip
        forger.close()
    assert forged > 0 and result.answered == 50 and result.correct == 50
