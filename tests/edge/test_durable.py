"""Nothing is lost: the agent (a real child process) and Mosquitto (its own, with
persistence) are disrupted in the middle of a stream of QoS 1 requests.

The requester is plain paho with a persistent session, sharing no code with the agent.
Run with ``-s`` to see the figures (sent, answered, duplicates, time to recover).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edgewise.deploy.broker import LocalBroker, start_mosquitto
from edgewise.edge.link.outbox import Outbox, OutMessage
from tests.conftest import CI, ROOT, require_mosquitto
from tests.mqtt_peer import Peer

pytestmark = pytest.mark.slow  # thousands of QoS 1 requests through disruptions

ROW = [5.1, 3.5, 1.4, 0.2]


class Requester:
    """Publishes numbered QoS 1 requests and counts every answer per id."""

    def __init__(self, port: int, device: str, model: str = "iris-rf") -> None:
        self.base = f"edgewise/{device}"
        self.topic_in = f"{self.base}/{model}/in"
        self.answers: Counter[str] = Counter()
        self.errors: list[bytes] = []
        self.status = ""
        self.last_answer_at = 0.0
        self._lock = threading.Lock()
        self.client = paho.Client(
            paho.CallbackAPIVersion.VERSION2,
            client_id=f"requester-{device}",
            protocol=paho.MQTTv5,
        )
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.max_inflight_messages_set(50)
        self.client.reconnect_delay_set(0.05, 0.5)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600  # answers wait in the broker while we are away
        self.client.connect("127.0.0.1", port, clean_start=False, properties=props)
        self.client.loop_start()

    def _on_connect(self, client: paho.Client, *_: object) -> None:
        client.subscribe(
            [(f"{self.base}/+/out", 1), (f"{self.base}/+/error", 1), (f"{self.base}/status", 1)]
        )

    def _on_message(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        if msg.topic.endswith("/status"):
            self.status = msg.payload.decode()
        elif msg.topic.endswith("/error"):
            self.errors.append(msg.payload)
        else:
            with self._lock:
                self.answers[json.loads(msg.payload)["id"]] += 1
                self.last_answer_at = time.monotonic()

    @property
    def unique(self) -> int:
        with self._lock:
            return len(self.answers)

    def wait(self, predicate: object, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():  # type: ignore[operator]
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.01)

    def send(self, ids: list[str], max_outstanding: int = 300) -> None:
        """Publish all ids, keeping at most ``max_outstanding`` unanswered (a stream)."""
        for i, rid in enumerate(ids):
            while i - self.unique > max_outstanding:
                time.sleep(0.001)
            self.client.publish(self.topic_in, json.dumps({"id": rid, "instances": [ROW]}), qos=1)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def start_agent(
    bundle: Path, broker: LocalBroker, device: str, log: Path, state_dir: Path | None = None
) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "edgewise", "agent", "--bundle", str(bundle)]
    cmd += ["--broker", broker.url, "--device", device, "--health-interval", "1"]
    if state_dir is not None:
        cmd += ["--state-dir", str(state_dir)]
    with log.open("ab") as out:
        return subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)


@pytest.fixture
def persistent_broker(tmp_path: Path) -> Iterator[LocalBroker]:
    require_mosquitto()
    b = start_mosquitto(tmp_path / "broker", persistence=True)
    yield b
    b.stop()


@pytest.mark.parametrize("disruption", ["broker_restart", "agent_kill_9"])
def test_nothing_missing_after_disruption(
    disruption: str, tmp_path: Path, iris_bundle: Path, persistent_broker: LocalBroker
) -> None:
    n = 5000
    device = f"dur-{disruption.replace('_', '-')}"
    log = tmp_path / "agent.log"
    agent = start_agent(iris_bundle, persistent_broker, device, log)
    req = Requester(persistent_broker.port, device)
    try:
        req.wait(lambda: req.status == "online", 30, "the agent to come online")
        ids = [f"r{i}" for i in range(n)]
        sender = threading.Thread(target=req.send, args=(ids,), daemon=True)
        started = time.monotonic()
        sender.start()
        req.wait(lambda: req.unique >= n // 4, 60, "a quarter of the answers")
        at_disruption = req.unique
        if disruption == "broker_restart":
            persistent_broker.stop()
            time.sleep(1.0)
            persistent_broker.restart()
        else:
            agent.kill()  # SIGKILL: no clean shutdown, no flush
            agent.wait(10)
            agent = start_agent(iris_bundle, persistent_broker, device, log)
        back = time.monotonic()
        req.wait(lambda: req.last_answer_at > back, 60, "the first answer after recovery")
        recovery = req.last_answer_at - back
        req.wait(lambda: req.unique == n, 120, f"all {n} answers")
        sender.join(10)
        elapsed = time.monotonic() - started
        time.sleep(0.5)  # late duplicates, if any, arrive now
        total = sum(req.answers.values())
        duplicates = total - req.unique
        print(
            f"\n{disruption}: sent {n}, answered {req.unique} unique ({total} in all, "
            f"{duplicates} duplicates), missing {n - req.unique}, disrupted after "
            f"{at_disruption}, first answer {recovery:.2f}s after recovery, {elapsed:.1f}s in all"
        )
        assert set(req.answers) == set(ids)
        assert not req.errors, req.errors[:3]
    finally:
        req.close()
        agent.terminate()
        agent.wait(30)
    assert agent.returncode == 0, log.read_text()[-2000:]


def test_requests_sent_while_agent_is_away_are_answered(
    tmp_path: Path, iris_bundle: Path, persistent_broker: LocalBroker
) -> None:
    device = "away"
    log = tmp_path / "agent.log"
    agent = start_agent(iris_bundle, persistent_broker, device, log)
    req = Requester(persistent_broker.port, device)
    try:
        req.wait(lambda: req.status == "online", 30, "the agent to come online")
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(30) == 0
        req.wait(lambda: req.status == "offline", 10, "the offline status")
        ids = [f"a{i}" for i in range(200)]
        req.send(ids, max_outstanding=len(ids))  # the agent is away: the broker keeps them
        time.sleep(0.5)
        assert req.unique == 0
        agent = start_agent(iris_bundle, persistent_broker, device, log)
        req.wait(lambda: req.unique == len(ids), 60, "the answers after the agent came back")
    finally:
        req.close()
        agent.terminate()
        agent.wait(30)


def test_second_signal_exits_at_once(tmp_path: Path, iris_bundle: Path) -> None:
    """With answers waiting for a broker that is gone, SIGTERM waits to flush them; a
    second SIGTERM exits at once, and the answers stay on disk for the next start."""
    require_mosquitto()
    state = Path(os.environ["XDG_STATE_HOME"]) / "edgewise"
    outbox = Outbox(state / "stuck.outbox.sqlite")
    outbox.put([OutMessage("edgewise/stuck/iris-rf/out", b'{"id":"old"}')])
    outbox.close()
    broker = start_mosquitto(tmp_path / "broker")  # only to get a port nobody listens on
    broker.stop()
    cmd = [sys.executable, "-m", "edgewise", "agent", "--bundle", str(iris_bundle)]
    cmd += ["--broker", broker.url, "--device", "stuck", "--config", str(tmp_path / "a.toml")]
    (tmp_path / "a.toml").write_text("drain_timeout = 60.0\n")
    agent = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        time.sleep(3.0)  # loaded and trying to connect
        agent.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert agent.poll() is None, "the first signal must wait for the outbox"
        t0 = time.monotonic()
        agent.send_signal(signal.SIGTERM)
        rc = agent.wait(5)
        assert time.monotonic() - t0 < 2.0
        assert rc == 128 + signal.SIGTERM
    finally:
        if agent.poll() is None:
            agent.kill()
    reopened = Outbox(state / "stuck.outbox.sqlite")
    assert [m.payload for _, m in reopened.peek()] == [b'{"id":"old"}']
    reopened.close()


# -- a full disk (issue 10) ----------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs, mounted for this test (needs root, as the tests run in CI)."""
    where = tmp_path / "disk"
    where.mkdir()
    mounted = os.geteuid() == 0 and (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(where)], capture_output=True
        ).returncode
        == 0
    )
    if not mounted:
        if CI:
            pytest.fail("CI=true needs to mount a tmpfs (run the tests as root)")
        pytest.skip("mounting a tmpfs needs root")
    yield where
    subprocess.run(["umount", "-l", str(where)], check=False)


def fill(disk: Path) -> Path:
    """Write zeros until the disk is full; the file to delete to free it."""
    filler = disk / "filler"
    with filler.open("wb", buffering=0) as fh:
        try:
            while True:
                fh.write(b"\0" * 4096)
        except OSError:
            pass
    return filler


@pytest.mark.parametrize("recovery", ["kill_9_then_free", "free_space"])
def test_full_disk_loses_no_request(
    tmp_path: Path,
    iris_bundle: Path,
    persistent_broker: LocalBroker,
    small_disk: Path,
    recovery: str,
) -> None:
    """A full disk under the agent. QoS 1 requests from the broker are still answered: they
    are forwarded, nothing of theirs is written (the broker holds each request until its
    answers' PUBACKs). Killed mid-stream and restarted after space is freed, nothing is
    lost. What has no copy upstream (a QoS 0 request) needs the outbox: it waits for the
    disk, nothing is acknowledged meanwhile, health says so, and it is answered once space
    is freed."""
    n = 2000
    device = f"full-disk-{recovery.replace('_', '-')}"
    log = tmp_path / "agent.log"
    agent = start_agent(iris_bundle, persistent_broker, device, log, small_disk)
    req = Requester(persistent_broker.port, device)
    watcher = Peer(persistent_broker.port)
    try:
        req.wait(lambda: req.status == "online", 30, "the agent to come online")
        filler = fill(small_disk)
        watcher.subscribe(f"edgewise/{device}/health")
        ids = [f"f{i}" for i in range(n)]
        sender = threading.Thread(target=req.send, args=(ids, 300), daemon=True)
        sender.start()
        if recovery == "kill_9_then_free":
            req.wait(lambda: req.unique >= n // 4, 60, "a quarter of the answers")
            agent.kill()  # SIGKILL with requests in flight on a full disk
            agent.wait(10)
            filler.unlink()  # a full disk cannot hold the outbox an agent starts with
            agent = start_agent(iris_bundle, persistent_broker, device, log, small_disk)
        req.wait(lambda: req.unique == n, 120, f"all {n} answers")
        sender.join(10)
        print(f"\nfull disk ({recovery}): sent {n}, answered {req.unique}")
        assert set(req.answers) == set(ids)
        assert not req.errors, req.errors[:3]
        if recovery == "free_space":
            # QoS 0: the outbox is its only copy, and the disk is full.
            body = json.dumps({"id": "q0", "instances": [ROW]})
            req.client.publish(req.topic_in, body, qos=0)
            deadline = time.monotonic() + 30
            while True:  # the retained health turns non-durable once a commit fails
                health = json.loads(watcher.expect("/health", timeout=5).payload)
                if health["outbox_error"]:
                    break
                assert time.monotonic() < deadline, "health never reported the outbox error"
            assert health["durable"] is False and "full" in health["outbox_error"]
            time.sleep(1.0)
            assert "q0" not in req.answers, "an answer went out that nothing stored"
            assert agent.poll() is None, "the agent must keep running"
            filler.unlink()
            req.wait(lambda: "q0" in req.answers, 60, "the QoS 0 request's answer")
            deadline = time.monotonic() + 10
            while health["outbox_error"] or not health["durable"]:
                assert time.monotonic() < deadline, "health never said durable again"
                health = json.loads(watcher.expect("/health", timeout=5).payload)
            text = log.read_text()
            assert "not acknowledging requests until it can" in text
            assert "serving resumes" in text
    finally:
        watcher.close()
        req.close()
        agent.terminate()
        agent.wait(30)
    assert agent.returncode == 0, log.read_text()[-2000:]
    text = log.read_text()
    assert text.count("Traceback") == 0, text[-3000:]


def test_starting_on_a_full_disk_is_one_clear_line(iris_bundle: Path, small_disk: Path) -> None:
    fill(small_disk)
    cmd = [sys.executable, "-m", "edgewise", "agent", "--bundle", str(iris_bundle)]
    cmd += ["--device", "no-room", "--state-dir", str(small_disk / "state")]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if " INFO " not in line]
    assert errors == [
        f"edgewise agent: error: outbox {small_disk}/state/no-room.outbox.sqlite: cannot open "
        "(database or disk is full)"
    ], proc.stderr
