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

from edgewise.edge.config import AgentConfig
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
        peer.subscribe(f"edgewise/pool/{pool}/iris-rf/out", f"edgewise/pool/{pool}/iris-rf/error")
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
            if msg.topic.endswith("/error"):
                assert doc["code"] == "bad_json"
                errors += 1
                continue
            ids[doc["id"]] += 1
            served[doc["device"]] += 1
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
