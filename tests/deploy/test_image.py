"""The agent's container image (scripts/build-image): it builds from a Debian root file
system, runs as a non-root user, and the agent in it serves a request over the loopback
broker. `podman run` does not work in this sandbox, so the image is run the way
shared/notes/platforms-and-brokers.md says works: `buildah run --isolation chroot`, which
shares the host's network (and so the test broker)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgewise.deploy.broker import LocalBroker
from tests.agents import new_device
from tests.conftest import ROOT
from tests.mqtt_peer import Peer

pytestmark = pytest.mark.slow


def build(arch: str) -> str:
    if os.geteuid() != 0:
        pytest.fail("building an image needs root (mmdebstrap, buildah)")
    tag = f"localhost/edgewise-agent:test-{arch}"
    started = time.monotonic()
    built = subprocess.run(
        ["bash", str(ROOT / "scripts" / "build-image"), "--arch", arch, "--tag", tag],
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert built.returncode == 0, (built.stdout + built.stderr)[-3000:]
    print(built.stdout.strip().splitlines()[-1], f"({time.monotonic() - started:.0f} s)")
    return tag


def buildah(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["buildah", *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def container(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    tag = build(request.param)
    ctr = buildah("from", tag).stdout.strip()
    assert ctr
    yield tag, ctr
    buildah("rm", ctr)
    buildah("rmi", tag)


def inspect(tag: str) -> dict[str, object]:
    made = buildah("inspect", "--type", "image", tag)
    assert made.returncode == 0, made.stderr
    return json.loads(made.stdout)  # type: ignore[no-any-return]


@pytest.mark.parametrize("container", ["amd64"], indirect=True)
def test_image_serves_a_request_as_a_non_root_user(
    container: tuple[str, str], broker: LocalBroker, iris_bundle: Path, tmp_path: Path
) -> None:
    tag, ctr = container
    docker = inspect(tag)["Docker"]
    config = docker["config"]  # type: ignore[index]
    assert config["User"] == "edgewise"
    assert "--probe" in config["Healthcheck"]["Test"]
    assert set(config["Volumes"]) == {"/etc/edgewise", "/var/lib/edgewise"}
    version = buildah("run", "--isolation", "chroot", ctr, "--", "edgewise", "--version")
    assert version.returncode == 0 and version.stdout.startswith("edgewise 0."), version.stderr
    whoami = buildah("run", "--isolation", "chroot", ctr, "--", "id", "-u")
    assert whoami.stdout.strip() == "10001"

    # The config volume: a config and a bundle, as an operator mounts them.
    device = new_device("img")
    etc = tmp_path / "etc"
    shutil.copytree(iris_bundle, etc / "bundles" / "iris-rf")
    (etc / "agent.toml").write_text(
        f'device = "{device}"\nbroker = "{broker.url}"\n'
        'bundles = ["/etc/edgewise/bundles/iris-rf"]\nhealth_interval = 1.0\n'
    )
    subprocess.run(["chmod", "-R", "a+rX", str(tmp_path)], check=True)
    run = ["buildah", "run", "--isolation", "chroot", "--volume", f"{etc}:/etc/edgewise:ro", ctr]
    agent = subprocess.Popen(
        [*run, "--", "edgewise", "agent", "--config", "/etc/edgewise/agent.toml"],
        stdout=(tmp_path / "agent.log").open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    peer = Peer(broker.port)
    try:
        peer.subscribe(f"edgewise/{device}/status", f"edgewise/{device}/iris-rf/out")
        deadline = time.monotonic() + 60
        while b"online" not in peer.expect("/status", 60).payload:
            assert time.monotonic() < deadline, (tmp_path / "agent.log").read_text()[-3000:]
        peer.request(
            f"edgewise/{device}/iris-rf/in", {"id": 7, "instances": [[5.1, 3.5, 1.4, 0.2]]}
        )
        answer = peer.expect_json("/iris-rf/out", 30)
        assert answer["id"] == 7 and answer["predictions"][0]["label"] == "setosa", answer
        # The container runtime's health check: the probe, in the same container.
        probe = subprocess.run(
            [*run, "--", "edgewise", "agent", "--config", "/etc/edgewise/agent.toml", "--probe"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert probe.returncode == 0 and probe.stdout.strip() == f"healthy: {device}", probe
    finally:
        peer.close()
        os.killpg(agent.pid, 15)
        agent.wait(30)


@pytest.mark.parametrize("container", ["arm64"], indirect=True)
def test_arm64_image_runs_the_agent_under_emulation(container: tuple[str, str]) -> None:
    tag, ctr = container
    assert inspect(tag)["OCIv1"]["architecture"] == "arm64"  # type: ignore[index]
    env = {"QEMU_CPU": "cortex-a72"}
    version = subprocess.run(
        ["buildah", "run", "--isolation", "chroot", ctr, "--", "edgewise", "--version"],
        capture_output=True, text=True, timeout=300, env={**os.environ, **env},
    )  # fmt: skip
    assert version.returncode == 0 and version.stdout.startswith("edgewise 0."), version.stderr
    machine = buildah(
        "run",
        "--isolation",
        "chroot",
        ctr,
        "--",
        "python3",
        "-c",
        "import platform; print(platform.machine())",
    )
    assert machine.stdout.strip() == "aarch64"
