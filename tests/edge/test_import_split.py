"""The device side loads none of the host libraries, and runs from an edge-only install."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from edgewise.deploy.broker import LocalBroker
from tests.conftest import CI, ROOT
from tests.mqtt_peer import Peer

HOST_MODULES = [
    "tensorflow",
    "keras",
    "sklearn",
    "skl2onnx",
    "onnx",
    "tf2onnx",
    "pandas",
    # our own host packages, and any top-level name the installed package must not take
    "edgewise.trainer",
    "edgewise.converters",
    "edge",
    "trainer",
    "converters",
    "deploy",
]

PROBE = """
import json, sys
from edgewise.edge.core.agent import Agent
from edgewise.edge.app import build_agent
from edgewise.edge.core.config import AgentConfig
import edgewise.cli
edgewise.cli.build_parser("agent")
a = build_agent(AgentConfig(bundles=(sys.argv[1],), broker=sys.argv[2], device="split"))
a.start()
assert a.connection.wait_connected(10)
a.stop(timeout=2)
top = {m.split('.')[0] for m in sys.modules}
ours = {'.'.join(m.split('.')[:2]) for m in sys.modules if m.startswith('edgewise.')}
print(json.dumps(sorted(top | ours)))
"""


@pytest.fixture(params=["iris", "vibration"])
def case(request: pytest.FixtureRequest) -> tuple[Path, str, list[Any], Any]:
    """(bundle, model name, instances, label the host process predicts): ONNX and TFLite."""
    from edgewise.edge.runtime.bundle import load_bundle
    from edgewise.edge.runtime.model import ServedModel

    if request.param == "iris":
        path, instances = request.getfixturevalue("iris_bundle"), [[5.1, 3.5, 1.4, 0.2]]
    else:
        path = request.getfixturevalue("vibration_int8_bundle")
        instances = request.getfixturevalue("vibration_host").X_heldout[:1].tolist()
    bundle = load_bundle(path)
    label = ServedModel.load(bundle).predict(instances)[0]["label"]
    return path, bundle.name, instances, label


def test_agent_loads_no_host_library(broker: LocalBroker, case: tuple[Path, str, Any, Any]) -> None:
    bundle, *_ = case
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(bundle), broker.url],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=True,
    )
    loaded = set(json.loads(out.stdout.strip().splitlines()[-1]))
    assert "paho" in loaded and ({"onnxruntime", "ai_edge_litert"} & loaded)
    assert loaded.isdisjoint(HOST_MODULES), loaded & set(HOST_MODULES)


def test_agent_runs_from_edge_only_virtualenv(
    broker: LocalBroker, case: tuple[Path, str, list[Any], Any]
) -> None:
    """EDGEWISE_EDGE_PYTHON: a Python whose venv has only `pip install .[edge]` (scripts/test)."""
    python = os.environ.get("EDGEWISE_EDGE_PYTHON")
    if not python:
        if CI:
            pytest.fail("CI=true needs EDGEWISE_EDGE_PYTHON (scripts/test builds .venv-edge)")
        pytest.skip("EDGEWISE_EDGE_PYTHON is not set")
    missing = subprocess.run(
        [
            python,
            "-c",
            "import importlib.util as u; "
            "print([m for m in ('sklearn','onnx','tensorflow','pandas') if u.find_spec(m)])",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert missing.stdout.strip() == "[]", "the edge venv must not have host libraries"
    agent = subprocess.Popen(
        [
            python,
            "-m",
            "edgewise",
            "agent",
            "--bundle",
            str(case[0]),
            "--broker",
            broker.url,
            "--device",
            f"edge-only-{case[1]}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd="/",
    )
    peer = Peer(broker.port)
    try:
        _, name, instances, label = case
        device = f"edgewise/edge-only-{name}"
        peer.subscribe(f"{device}/status", f"{device}/{name}/out")
        assert peer.expect("/status", timeout=30).payload == b"online"
        peer.request(f"{device}/{name}/in", {"id": "e", "instances": instances})
        assert peer.expect_json(f"/{name}/out")["predictions"][0]["label"] == label
    finally:
        peer.close()
        agent.terminate()
        output = agent.communicate(timeout=20)[0].decode()
    assert agent.returncode == 0, output
