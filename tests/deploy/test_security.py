"""TLS, credentials and per-device ACLs against a real Mosquitto running the shipped
configuration (deploy/mosquitto/edgewise-tls.conf, edgewise-mtls.conf, acl), with
certificates made by the shipped script for this test session."""

from __future__ import annotations

import json
import os
import queue
import shutil
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import paho.mqtt.client as paho
import pytest

from edgewise.deploy.broker import LocalBroker, free_port, start_mosquitto
from edgewise.edge.app import build_agent
from edgewise.edge.core.agent import Agent
from edgewise.edge.core.config import AgentConfig
from edgewise.edge.errors import EdgewiseError
from tests.conftest import ROOT, require_mosquitto

SHIPPED = ROOT / "deploy" / "mosquitto"
IRIS_ROW = [5.1, 3.5, 1.4, 0.2]
# Characters that break URLs and shells: they must survive percent-encoding and files.
PASSWORDS = {
    "dev-a": "p@ss/w#rd?%a",
    "dev-b": "s3cret-b",
    "operator": "op@/#?%-pw",
    "dashboard": "dash%board",
    "exporter": "exp0rter",
}


@dataclass(frozen=True)
class Pki:
    dir: Path
    other_ca: Path  # a CA that did not sign the broker's certificate

    @property
    def ca(self) -> Path:
        return self.dir / "ca.crt"

    def cert(self, name: str) -> tuple[str, str]:
        return str(self.dir / "clients" / f"{name}.crt"), str(self.dir / "clients" / f"{name}.key")


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    if shutil.which("openssl") is None:
        pytest.fail("openssl is needed to make test certificates")
    root = tmp_path_factory.mktemp("pki")
    script = str(SHIPPED / "make-certs")
    subprocess.run([script, str(root / "ca"), *PASSWORDS], check=True, capture_output=True)
    subprocess.run([script, str(root / "other")], check=True, capture_output=True)
    return Pki(root / "ca", root / "other" / "ca.crt")


@dataclass
class SecureBroker:
    broker: LocalBroker
    wss_port: int | None = None

    @property
    def port(self) -> int:
        return self.broker.port

    def url(
        self, user: str | None = None, with_password: bool = True, scheme: str = "mqtts"
    ) -> str:
        port = self.wss_port if scheme == "wss" else self.port
        auth = ""
        if user:
            auth = quote(user, safe="")
            if with_password:
                auth += ":" + quote(PASSWORDS[user], safe="")
            auth += "@"
        return f"{scheme}://{auth}127.0.0.1:{port}"


def shipped_config(name: str, workdir: Path, pki: Pki, port: int, wss_port: int | None) -> str:
    """The shipped config, pointed at this session's files and ports."""
    text = (SHIPPED / name).read_text()
    text = text.replace("/etc/mosquitto/edgewise/ca.crt", str(pki.ca))
    text = text.replace("/etc/mosquitto/edgewise/server.", str(pki.dir / "server."))
    text = text.replace("/etc/mosquitto/edgewise/crl.pem", str(pki.dir / "crl.pem"))
    text = text.replace("/etc/mosquitto/edgewise/", f"{workdir}/")
    text = text.replace("listener 8883", f"listener {port} 127.0.0.1")
    text = text.replace("persistence true", "persistence false")
    lines = [text, "log_dest stderr", "log_type error", "log_type warning"]
    if wss_port is not None:  # secure WebSockets beside the TLS listener
        lines += [f"listener {wss_port}", "protocol websockets", "use_username_as_clientid true"]
        lines += [f"cafile {pki.ca}", f"certfile {pki.dir}/server.crt"]
        lines += [f"keyfile {pki.dir}/server.key"]
    if os.geteuid() == 0:
        lines.append("user root")
    return "\n".join(lines) + "\n"


ROSTER = '[groups]\nline = ["dev-a", "dev-b"]\n\n[pools]\nline-3 = ["dev-a"]\n'


def roster_acl(work: Path) -> None:
    """``work/acl``: the shipped ACL and the pool entries of ROSTER, as an operator makes
    it (``edgewise roster acl roster.toml --base deploy/mosquitto/acl``)."""
    (work / "roster.toml").write_text(ROSTER)
    made = edgewise("roster", "acl", str(work / "roster.toml"), "--base", str(SHIPPED / "acl"))
    assert made.returncode == 0, made.stderr
    (work / "acl").write_text(made.stdout)


@pytest.fixture(scope="session")
def tls_broker(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[SecureBroker]:
    """Passwords + ACL + TLS, as edgewise-tls.conf ships, with a wss:// listener too."""
    require_mosquitto()
    work = tmp_path_factory.mktemp("tls-broker")
    roster_acl(work)
    passwd = work / "passwd"
    passwd.touch()
    for user, password in PASSWORDS.items():
        subprocess.run(["mosquitto_passwd", "-b", str(passwd), user, password], check=True)
    port, wss = free_port(), free_port()
    config = shipped_config("edgewise-tls.conf", work, pki, port, wss)
    broker = SecureBroker(start_mosquitto(work, port=port, config=config), wss)
    yield broker
    broker.broker.stop()


@pytest.fixture(scope="session")
def mtls_broker(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[SecureBroker]:
    """Client certificates (common name = user name) + ACL, as edgewise-mtls.conf ships."""
    require_mosquitto()
    work = tmp_path_factory.mktemp("mtls-broker")
    roster_acl(work)
    port = free_port()
    config = shipped_config("edgewise-mtls.conf", work, pki, port, None)
    broker = SecureBroker(start_mosquitto(work, port=port, config=config))
    yield broker
    broker.broker.stop()


class Client:
    """A plain paho client over TLS (shares no code with the agent)."""

    def __init__(
        self,
        port: int,
        pki: Pki,
        user: str | None = None,
        password: str | None = None,
        cert: str | None = None,
        client_id: str | None = None,
        clean_start: bool = True,
    ) -> None:
        self.inbox: queue.Queue[paho.MQTTMessage] = queue.Queue()
        self.refused: Any = None
        self.connected = False
        self.client = paho.Client(
            paho.CallbackAPIVersion.VERSION2,
            client_id=client_id or f"test-{uuid.uuid4().hex[:8]}",
            protocol=paho.MQTTv5,
        )
        context = ssl.create_default_context(cafile=str(pki.ca))
        if cert:
            context.load_cert_chain(*pki.cert(cert))
        self.client.tls_set_context(context)
        if user:
            self.client.username_pw_set(user, password)
        self.client.on_message = lambda c, u, m: self.inbox.put(m)
        self.client.on_connect = self._on_connect
        self.client.connect("127.0.0.1", port, clean_start=clean_start)
        self.client.loop_start()
        deadline = time.monotonic() + 5
        while not self.connected and self.refused is None and time.monotonic() < deadline:
            time.sleep(0.01)

    def _on_connect(self, c: Any, u: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            self.refused = reason
        else:
            self.connected = True

    def subscribe(self, *topics: str) -> None:
        for t in topics:
            self.client.subscribe(t, qos=1)
        time.sleep(0.2)

    def publish(self, topic: str, payload: bytes | str, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)

    def got(self, topic: str, timeout: float) -> list[bytes]:
        """Payloads received on ``topic`` within ``timeout`` seconds."""
        found: list[bytes] = []
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                msg = self.inbox.get(timeout=left)
            except queue.Empty:
                break
            if msg.topic == topic:
                found.append(msg.payload)
        return found

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def started_agent(bundle: Path, device: str, broker: str, state: Path, **tls: str) -> Agent:
    """An in-process agent for ``device``, connected (TLS settings as AgentConfig keys)."""
    config = AgentConfig(
        bundles=(str(bundle),), device=device, broker=broker, state_dir=str(state), **tls
    )
    agent = build_agent(config)
    agent.start()
    if not agent.connection.wait_connected(10):
        agent.stop(timeout=2)
        raise AssertionError(agent.connection.last_error)
    return agent


def password_file(tmp_path: Path, user: str) -> Path:
    path = tmp_path / f"{user}.pw"
    path.write_text(PASSWORDS[user] + "\n")
    path.chmod(0o600)
    return path


def edgewise(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> Any:
    return subprocess.run(
        [sys.executable, "-m", "edgewise", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


# -- TLS with passwords: agent, send and watch ----------------------------------------------


def test_agent_send_watch_over_tls_keep_passwords_secret(
    tls_broker: SecureBroker, pki: Pki, iris_bundle: Path, tmp_path: Path
) -> None:
    log = tmp_path / "agent.log"
    agent = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edgewise",
            "--log-level",
            "debug",
            "agent",
            "--bundle",
            str(iris_bundle),
            "--device",
            "dev-a",
            "--broker",
            tls_broker.url("dev-a"),
            "--ca-file",
            str(pki.ca),
            "--health-interval",
            "1",
        ],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
    )
    # One connection per user name (the client id is the user name): the dashboard user
    # watches for the agent, then hands over to `edgewise watch`, then reads the health.
    dashboard = Client(tls_broker.port, pki, "dashboard", PASSWORDS["dashboard"])
    health: list[bytes] = []
    try:
        assert dashboard.connected
        dashboard.subscribe("edgewise/dev-a/status")
        deadline = time.monotonic() + 30
        while b"online" not in dashboard.got("edgewise/dev-a/status", 0.5):
            assert time.monotonic() < deadline, log.read_text()[-2000:]
        dashboard.close()
        rows = tmp_path / "rows.csv"
        header = "sepal length (cm),sepal width (cm),petal length (cm),petal width (cm)"
        rows.write_text(header + "\n" + "\n".join(",".join(map(str, IRIS_ROW)) for _ in range(5)))
        watcher = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "edgewise",
                "watch",
                "--device",
                "dev-a",
                "--broker",
                tls_broker.url("dashboard", with_password=False),
                "--ca-file",
                str(pki.ca),
                "--count",
                "6",  # the retained status, then the five answers
                "--timeout",
                "30",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "EDGEWISE_MQTT_PASSWORD": PASSWORDS["dashboard"]},
        )
        time.sleep(1.5)  # the watcher subscribes first
        sent = edgewise(
            "send",
            "--device",
            "dev-a",
            "--model",
            "iris-rf",
            "--csv",
            str(rows),
            "--broker",
            tls_broker.url(),
            "--username",
            "operator",
            "--password-file",
            str(password_file(tmp_path, "operator")),
            "--ca-file",
            str(pki.ca),
            "--no-progress",
        )
        assert sent.returncode == 0, sent.stderr
        assert "sent 5 rows, 5 answered" in sent.stdout
        watched, watch_err = watcher.communicate(timeout=60)
        assert watcher.returncode == 0, watch_err
        assert watched.count("edgewise/dev-a/iris-rf/out") == 5, watched
        dashboard = Client(tls_broker.port, pki, "dashboard", PASSWORDS["dashboard"])
        dashboard.subscribe("edgewise/dev-a/health")
        health = dashboard.got("edgewise/dev-a/health", 1.5)
        assert health and json.loads(health[-1])["counters"]["answered"] == 5
    finally:
        dashboard.close()
        agent.terminate()
        agent.wait(30)
    text = log.read_text()
    assert agent.returncode == 0, text[-2000:]
    assert "connected to mqtts://dev-a:***@127.0.0.1" in text
    everything = [text, sent.stdout, sent.stderr, watched, watch_err, *map(bytes.decode, health)]
    for secret in PASSWORDS.values():
        for encoded in {secret, quote(secret, safe="")}:
            assert not any(encoded in chunk for chunk in everything), encoded


def test_mutual_tls(mtls_broker: SecureBroker, pki: Pki, iris_bundle: Path, tmp_path: Path) -> None:
    cert, key = pki.cert("dev-a")
    agent = started_agent(
        iris_bundle, "dev-a", mtls_broker.url(), tmp_path,
        ca_file=str(pki.ca), cert_file=cert, key_file=key,
    )  # fmt: skip
    operator = Client(mtls_broker.port, pki, cert="operator")
    try:
        operator.subscribe("edgewise/dev-a/iris-rf/out")
        operator.publish(
            "edgewise/dev-a/iris-rf/in", json.dumps({"id": 1, "instances": [IRIS_ROW]})
        )
        [answer] = operator.got("edgewise/dev-a/iris-rf/out", 5)[:1]
        assert json.loads(answer)["predictions"][0]["label"] == "setosa"
    finally:
        operator.close()
        agent.stop(timeout=5)
    # Without a client certificate the broker refuses the handshake.
    stranger = edgewise(
        "watch", "--broker", mtls_broker.url(), "--ca-file", str(pki.ca), "--timeout", "3"
    )
    assert stranger.returncode == 1 and len(stranger.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--ca-file", "{other_ca}"], "is not trusted by the CA file"),
        (
            ["--ca-file", "{ca}", "--tls-server-name", "wrong.example"],
            "is not valid for 'wrong.example'",
        ),
    ],
    ids=["wrong-ca", "wrong-server-name"],
)
def test_tls_refusals_are_one_line(
    tls_broker: SecureBroker, pki: Pki, tmp_path: Path, flags: list[str], message: str
) -> None:
    args = [f.format(ca=pki.ca, other_ca=pki.other_ca) for f in flags]
    result = edgewise("watch", "--broker", tls_broker.url("dashboard"), *args, "--timeout", "3")
    # (The URL holds the password: that is warned about on a line of its own first.)
    warned = "warning: the --broker URL holds a password"
    lines = [ln for ln in result.stderr.strip().splitlines() if warned not in ln]
    assert result.returncode == 1 and len(lines) == 1, result.stderr
    assert message in lines[0] and PASSWORDS["dashboard"] not in lines[0]
    # The right name, given explicitly, passes.
    ok = edgewise(
        "watch",
        "--broker",
        tls_broker.url("dashboard"),
        "--ca-file",
        str(pki.ca),
        "--tls-server-name",
        "localhost",
        "--timeout",
        "1",
    )
    assert ok.returncode == 0, ok.stderr


# -- ACLs -------------------------------------------------------------------------------------

# (who, action, topic, allowed): what the shipped acl file gives each role, as tested here.
ACL_MATRIX = [
    ("dev-a", "read", "edgewise/dev-a/m/in", True),
    ("dev-a", "read", "edgewise/dev-b/m/in", False),
    ("dev-a", "read", "edgewise/dev-b/m/out", False),
    ("dev-a", "write", "edgewise/dev-a/m/out", True),
    ("dev-a", "write", "edgewise/dev-a/status", True),
    ("dev-a", "write", "edgewise/dev-b/status", False),
    ("dev-a", "write", "edgewise/dev-b/m/out", False),
    ("dev-a", "write", "edgewise/dev-b/m/in", False),
    ("dev-a", "write", "other/topic", False),
    ("dev-a", "read", "edgewise/fleet/devices/dev-a/m", True),
    ("dev-a", "read", "edgewise/fleet/devices/dev-b/m", False),
    ("dev-a", "read", "edgewise/fleet/groups/line-3/m", True),
    ("dev-a", "read", "edgewise/fleet/bundles/abc/0", True),
    ("dev-a", "write", "edgewise/fleet/devices/dev-a/m", False),
    ("dev-a", "write", "edgewise/fleet/bundles/abc/0", False),
    ("operator", "write", "edgewise/fleet/groups/line-3/m", True),
    ("dev-a", "write", "homeassistant/sensor/edgewise_dev-a/m_prediction/config", True),
    ("dev-a", "write", "homeassistant/sensor/edgewise_dev-b/m_prediction/config", False),
    ("dev-a", "write", "homeassistant/device/edgewise_dev-a/config", True),
    ("dev-a", "write", "homeassistant/device/edgewise_dev-b/config", False),
    ("operator", "write", "edgewise/dev-b/m/in", True),
    ("operator", "read", "edgewise/dev-a/m/out", True),
    ("dashboard", "read", "edgewise/dev-a/health", True),
    ("dashboard", "write", "edgewise/dev-a/m/in", False),
    ("dashboard", "write", "edgewise/dev-a/status", False),
    # The exporter reads what it exports, and nothing else; it writes nothing.
    ("exporter", "read", "edgewise/dev-a/health", True),
    ("exporter", "read", "edgewise/dev-a/status", True),
    ("exporter", "read", "edgewise/dev-a/m/deployment", True),
    ("exporter", "read", "edgewise/dev-a/m/out", False),
    ("exporter", "read", "edgewise/dev-a/m/in", False),
    ("exporter", "write", "edgewise/dev-a/m/in", False),
    # Pools: the roster's members read their pools' requests, nobody else; a member
    # answers only on topics named after itself.
    ("dev-a", "read", "edgewise/pool/line-3/m/in", True),
    ("dev-b", "read", "edgewise/pool/line-3/m/in", False),
    ("dev-a", "read", "edgewise/pool/line-4/m/in", False),
    ("dev-a", "write", "edgewise/pool/line-3/m/out/dev-a", True),
    ("dev-a", "write", "edgewise/pool/line-3/m/error/dev-a", True),
    ("dev-a", "write", "edgewise/pool/line-3/m/out/dev-b", False),
    ("dev-a", "write", "edgewise/pool/line-3/m/out", False),
    ("dev-a", "write", "edgewise/pool/line-3/m/in", False),
    ("dev-a", "write", "edgewise/pool/line-3/m/reply/c1", False),
    ("dashboard", "write", "edgewise/pool/line-3/m/in", False),
    # Captured field data (docs/drift.md): only the operator asks a device for it.
    ("dev-a", "read", "edgewise/dev-a/m/capture", True),
    ("dev-a", "read", "edgewise/dev-b/m/capture", False),
    ("dev-a", "write", "edgewise/dev-b/m/capture", False),
    ("dashboard", "write", "edgewise/dev-a/m/capture", False),
    ("operator", "write", "edgewise/dev-a/m/capture", True),
    ("operator", "read", "edgewise/dev-a/m/capture/reply/x", True),
]


@pytest.mark.parametrize(
    ("who", "action", "topic", "allowed"),
    ACL_MATRIX,
    ids=[f"{r[0]}-{r[1]}-{r[2]}" for r in ACL_MATRIX],
)
def test_acl_matrix(
    tls_broker: SecureBroker, pki: Pki, who: str, action: str, topic: str, allowed: bool
) -> None:
    """A denied publish is silent for the publisher: the test checks what arrives."""
    actor = Client(tls_broker.port, pki, who, PASSWORDS[who])
    # The counterpart publishes (read tests) or listens (write tests). It is the operator,
    # unless the operator is the actor: one user name is one client id, one connection.
    peer = {"operator": {"read": "dev-a", "write": "dashboard"}}.get(who, {}).get(
        action, "operator"
    )
    other = Client(tls_broker.port, pki, peer, PASSWORDS[peer])
    try:
        assert actor.connected and other.connected
        body = f"probe-{uuid.uuid4().hex[:6]}".encode()
        if action == "read":
            actor.subscribe(topic)
            other.publish(topic, body)
            got = actor.got(topic, 1.0)
        else:
            other.subscribe(topic)
            actor.publish(topic, body)
            got = other.got(topic, 1.0)
        assert (body in got) is allowed
    finally:
        actor.close()
        other.close()


def test_only_the_rosters_pool_members_hear_a_pools_requests(
    tls_broker: SecureBroker, pki: Pki, iris_bundle: Path, tmp_path: Path
) -> None:
    """dev-b is in no pool in the roster: its shared subscription to line-3 is refused, so
    the broker deals every request to the member (with any device allowed to join, dev-b
    took about half of them and answered none), and what dev-b publishes in dev-a's name
    on the pool's answer topics never arrives."""
    member = started_agent(
        iris_bundle, "dev-a", tls_broker.url("dev-a"), tmp_path / "a", ca_file=str(pki.ca),
        pool="line-3",
    )  # fmt: skip
    intruder = Client(tls_broker.port, pki, "dev-b", PASSWORDS["dev-b"])
    requester = Client(tls_broker.port, pki, "operator", PASSWORDS["operator"])
    base = "edgewise/pool/line-3/iris-rf"
    try:
        intruder.subscribe(f"$share/line-3/{base}/+/in", f"$share/line-3/{base}/in")
        requester.subscribe(f"{base}/out/+")
        intruder.publish(f"{base}/out/dev-a", json.dumps({"id": "r0", "device": "dev-a"}))
        for i in range(40):
            requester.publish(f"{base}/in", json.dumps({"id": f"r{i}", "instances": [IRIS_ROW]}))
        answers: dict[str, Any] = {}
        deadline = time.monotonic() + 20
        while len(answers) < 40 and time.monotonic() < deadline:
            try:
                msg = requester.inbox.get(timeout=0.5)
            except queue.Empty:
                continue
            doc = json.loads(msg.payload)
            assert msg.topic == f"{base}/out/dev-a" and doc["device"] == "dev-a", doc
            assert "predictions" in doc, doc  # not the intruder's forgery
            answers[doc["id"]] = doc
        assert len(answers) == 40
        assert intruder.inbox.empty()
    finally:
        intruder.close()
        requester.close()
        member.stop(timeout=5)


def test_anonymous_is_refused(tls_broker: SecureBroker, pki: Pki) -> None:
    stranger = Client(tls_broker.port, pki)
    try:
        assert not stranger.connected and stranger.refused is not None
        assert "authori" in str(stranger.refused).lower()
    finally:
        stranger.close()


def test_device_cannot_take_another_devices_session(
    tls_broker: SecureBroker, pki: Pki, iris_bundle: Path, tmp_path: Path
) -> None:
    agent = started_agent(
        iris_bundle, "dev-b", tls_broker.url("dev-b"), tmp_path, ca_file=str(pki.ca)
    )
    operator = Client(tls_broker.port, pki, "operator", PASSWORDS["operator"])
    try:
        # dev-a asks for dev-b's client id and session: the broker uses its user name.
        thief = Client(
            tls_broker.port,
            pki,
            "dev-a",
            PASSWORDS["dev-a"],
            client_id=agent.connection.client_id,
            clean_start=False,
        )
        operator.subscribe("edgewise/dev-b/iris-rf/out")
        for i in range(20):
            operator.publish(
                "edgewise/dev-b/iris-rf/in", json.dumps({"id": i, "instances": [IRIS_ROW]})
            )
        answers = operator.got("edgewise/dev-b/iris-rf/out", 3)
        assert len(answers) == 20 and thief.inbox.empty()
        assert agent.connection.reconnects == 0 and agent.connection.connected
        thief.close()
    finally:
        operator.close()
        agent.stop(timeout=5)


# -- WebSockets --------------------------------------------------------------------------------


def test_agent_over_secure_websockets(
    tls_broker: SecureBroker, pki: Pki, iris_bundle: Path, tmp_path: Path
) -> None:
    wss = tls_broker.url("dev-a", scheme="wss")
    agent = started_agent(iris_bundle, "dev-a", wss, tmp_path, ca_file=str(pki.ca))
    operator = Client(tls_broker.port, pki, "operator", PASSWORDS["operator"])
    try:
        operator.subscribe("edgewise/dev-a/iris-rf/out")
        operator.publish(
            "edgewise/dev-a/iris-rf/in", json.dumps({"id": "w", "instances": [IRIS_ROW]})
        )
        assert operator.got("edgewise/dev-a/iris-rf/out", 5)
    finally:
        operator.close()
        agent.stop(timeout=5)


# -- settings ----------------------------------------------------------------------------------


def test_password_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "pw"
    path.write_text("secret-value\n")
    path.chmod(0o644)
    with pytest.raises(EdgewiseError, match=r"readable by others .*chmod 600") as info:
        AgentConfig(broker="mqtts://dev-a@127.0.0.1", password_file=str(path))
    assert "secret-value" not in str(info.value)


def test_tls_settings_need_a_tls_url(tmp_path: Path, pki: Pki) -> None:
    with pytest.raises(EdgewiseError, match="need an mqtts:// or wss:// broker URL"):
        AgentConfig(broker="mqtt://127.0.0.1", ca_file=str(pki.ca))


def test_tls_insecure_connects_but_warns_at_every_start(
    tls_broker: SecureBroker, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    from edgewise.edge.link.endpoint import Endpoint
    from edgewise.edge.link.mqtt import MqttConnection

    endpoint = Endpoint.from_settings(
        tls_broker.url("dashboard"), ca_file=str(pki.other_ca), tls_insecure=True
    )
    for _ in range(2):
        conn = MqttConnection(endpoint)
        with caplog.at_level("WARNING", logger="edgewise.edge.link.mqtt"):
            conn.start()
            try:
                assert conn.wait_connected(5), conn.last_error
            finally:
                conn.stop(final_status=None)
    warnings = [r.getMessage() for r in caplog.records if "checks are OFF" in r.getMessage()]
    assert len(warnings) == 2 and PASSWORDS["dashboard"] not in warnings[0]


def test_the_shipped_broker_takes_no_packet_over_its_size_limit(
    tls_broker: SecureBroker, pki: Pki
) -> None:
    """max_packet_size: a client sending 5 MiB is disconnected and nothing is forwarded;
    1 MiB (the agent's default max_payload) goes through."""
    listener = Client(tls_broker.port, pki, "operator", PASSWORDS["operator"])
    try:
        topic = "edgewise/dev-a/m/out"
        listener.subscribe(topic)
        sender = Client(tls_broker.port, pki, "dev-a", PASSWORDS["dev-a"])
        assert sender.connected
        sender.client.publish(topic, b"x" * (5 << 20), qos=0)  # QoS 0: never resent
        deadline = time.monotonic() + 5
        while sender.client.is_connected() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not sender.client.is_connected() or sender.refused is not None
        sender.close()
        sender = Client(tls_broker.port, pki, "dev-a", PASSWORDS["dev-a"])
        sender.publish(topic, b"y" * (1 << 20))
        sender.close()
        assert [len(p) for p in listener.got(topic, 2.0)] == [1 << 20]
    finally:
        listener.close()
