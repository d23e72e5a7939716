"""Golden shapes: what a running agent publishes and writes, key for key.

Written before edge/ was rearranged by role (issue 28), so that a refactor that changes
no behaviour can show it: the keys of the health, info, deployment, drift, shadow-free
state and Home Assistant discovery documents, the retained topics, the client ids and
the files in ``state_dir`` must stay what running fleets and persistent sessions know.
Dynamic names (device, model, features, labels) are replaced by placeholders.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from pathlib import Path
from typing import Any

from edgewise.deploy.broker import LocalBroker
from edgewise.edge.link.fleet_topics import Target
from edgewise.edge.workers import helper_client_id
from tests.agents import serving
from tests.edge.test_fleet import roll_out
from tests.mqtt_peer import Peer

GOLDEN = Path(__file__).with_name("golden.json")

ROW = [5.1, 3.5, 1.4, 0.2]
FEATURES = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]
LABELS = ["setosa", "versicolor", "virginica"]
DEVICE = f"golden-{uuid.uuid4().hex[:6]}"  # no retained topic of an earlier run


def placeholders(text: str) -> str:
    text = text.replace(DEVICE, "<device>").replace("iris-rf", "<model>")
    text = re.sub(r"[0-9a-f]{64}", "<sha256>", text)  # signed with this session's key
    for name in FEATURES:
        text = text.replace(name, "<feature>")
    for name in LABELS:
        text = text.replace(name, "<label>")
    return text


def shape(doc: Any, at: str = "") -> set[str]:
    """Every key path of a JSON document (``a.b``, ``a[].c``), with placeholders."""
    found: set[str] = set()
    if isinstance(doc, dict):
        for key, value in doc.items():
            path = f"{at}.{placeholders(str(key))}" if at else placeholders(str(key))
            found.add(path)
            found |= shape(value, path)
    elif isinstance(doc, list):
        for item in doc:
            found |= shape(item, f"{at}[]")
    return found


def collect(
    broker: LocalBroker, bundles: dict[str, Path], state: Path, keys: tuple[Path, Path]
) -> dict[str, Any]:
    """Run an agent with every feature on, ask it, and gather what it published."""
    peer = Peer(broker.port)
    seen: dict[str, Any] = {}

    def keep(topic: str, payload: bytes) -> None:
        try:
            seen[topic] = json.loads(payload) if payload else None
        except ValueError:
            seen[topic] = payload.decode(errors="replace")

    peer.client.on_message = lambda c, u, m: keep(m.topic, m.payload)
    peer.subscribe(f"edgewise/{DEVICE}/#", f"homeassistant/+/edgewise_{DEVICE}/#")
    settings = {
        "trusted_keys": (str(keys[1]),), "ha_discovery": True, "health_interval": 1.0,
        "capture": {"sample_rate": 1.0}, "drift": {"window": 10, "min_instances": 10},
        "groups": ("g",),
    }  # fmt: skip
    try:
        with serving(broker, [bundles["1"]], DEVICE, state, **settings) as agent:
            # A roll-out to v2: the deployment document after one, the fleet's state file.
            roll_out(broker, "edgewise", bundles["2"], Target("devices", DEVICE, "iris-rf"))
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                doc = seen.get(f"edgewise/{DEVICE}/iris-rf/deployment")
                if isinstance(doc, dict) and doc.get("version") == "2":
                    break
                time.sleep(0.1)
            client_id = getattr(agent.connection, "client_id", None)
            for i in range(12):
                peer.request(f"edgewise/{DEVICE}/iris-rf/in", {"id": i, "instances": [ROW]})
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                health = seen.get(f"edgewise/{DEVICE}/health")
                drift = seen.get(f"edgewise/{DEVICE}/iris-rf/drift")
                if isinstance(health, dict) and drift and health.get("answered", 0) >= 12:
                    break
                time.sleep(0.1)
        time.sleep(0.5)
        snapshot = dict(seen)
        for topic in list(seen):  # leave no retained topic behind
            peer.client.publish(topic, b"", qos=1, retain=True).wait_for_publish(5)
    finally:
        peer.close()
    return {
        "topics": sorted(placeholders(t) for t in snapshot),
        "docs": {
            placeholders(t): sorted(shape(d)) for t, d in snapshot.items() if isinstance(d, dict)
        },
        "files": sorted(placeholders(str(p.relative_to(state))) for p in state.rglob("*")),
        "client_ids": [placeholders(str(client_id)), placeholders(helper_client_id(DEVICE, 2))],
    }


def test_an_agent_publishes_and_writes_what_it_always_did(
    broker: LocalBroker, versions: dict[str, Path], keys: tuple[Path, Path], tmp_path: Path
) -> None:
    """Against tests/edge/golden.json (recorded from main before issue 28's move;
    ``EDGEWISE_GOLDEN_WRITE=1`` records it anew, for a change that means to alter them)."""
    got = collect(broker, versions, tmp_path / "state", keys)
    if os.environ.get("EDGEWISE_GOLDEN_WRITE"):
        GOLDEN.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
    want = json.loads(GOLDEN.read_text())
    assert got["client_ids"] == want["client_ids"]
    assert got["files"] == want["files"]
    assert got["topics"] == want["topics"]
    for topic, keys_ in want["docs"].items():
        assert got["docs"].get(topic) == keys_, topic
