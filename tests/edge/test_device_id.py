"""Device ids: the default is unique per machine and says where it came from; two agents
with one id stop fighting over the broker session (a real broker, real processes)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgewise.deploy.broker import LocalBroker
from edgewise.edge.core.config import AgentConfig
from edgewise.edge.core.device_id import default_device
from tests.agents import new_device
from tests.conftest import ROOT
from tests.mqtt_peer import Peer


def test_the_default_id_is_the_host_name_and_a_machine_suffix(tmp_path: Path) -> None:
    import socket

    device, source = default_device(str(tmp_path))
    host = socket.gethostname()
    assert device.startswith(f"{host}-") and len(device) == len(host) + 7
    assert source.startswith("the host name + ")
    config = AgentConfig(state_dir=str(tmp_path))
    assert config.device == device and config.device_source == f"default: {source}"
    assert AgentConfig(device="pi-7", state_dir=str(tmp_path)).device_source == "given"


def test_an_upgraded_device_keeps_its_host_name_id(tmp_path: Path) -> None:
    """State files under the bare host name (an agent from before): that id stays, so the
    topics, the outbox and the persistent session carry over."""
    import socket

    host = socket.gethostname()
    (tmp_path / f"{host}.outbox.sqlite").write_bytes(b"")
    device, source = default_device(str(tmp_path))
    assert device == host and "kept because" in source


def _agent(bundle: Path, broker: LocalBroker, device: str, state: Path) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "edgewise", "agent", "--bundle", str(bundle), "--broker"]
    cmd += [broker.url, "--device", device, "--state-dir", str(state)]
    return subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


@pytest.mark.slow  # two agent processes fight for a few seconds
def test_two_agents_with_one_id_stop_fighting(
    broker: LocalBroker, iris_bundle: Path, tmp_path: Path
) -> None:
    """A cloned card: two agents as one device. A few takeovers, then one of them stops
    with one line that says why (exit 1), and the other serves."""
    device = new_device("twin")
    first = _agent(iris_bundle, broker, device, tmp_path / "a")
    time.sleep(2.0)
    second = _agent(iris_bundle, broker, device, tmp_path / "b")
    procs = [first, second]
    try:
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline and all(p.poll() is None for p in procs):
            time.sleep(0.2)
        stopped = [p for p in procs if p.poll() is not None]
        assert len(stopped) == 1, "neither agent gave up"
        survivor = next(p for p in procs if p is not stopped[0])
        out = stopped[0].communicate(timeout=20)[0]
        assert stopped[0].returncode == 1
        twin = [line for line in out.splitlines() if "twin: another client" in line]
        assert len(twin) == 1 and "give each its own --device" in twin[0], out[-2000:]
        # The survivor keeps its session and answers.
        peer = Peer(broker.port)
        try:
            peer.subscribe(f"edgewise/{device}/iris-rf/out")
            time.sleep(3.0)  # SHORT_CONNECTION_S and back-off: let it settle
            peer.request(
                f"edgewise/{device}/iris-rf/in", {"id": 7, "instances": [[5.1, 3.5, 1.4, 0.2]]}
            )
            assert peer.expect_json("/out", timeout=15)["id"] == 7
        finally:
            peer.close()
        assert survivor.poll() is None
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                p.communicate(timeout=20)
