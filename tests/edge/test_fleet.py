"""Fleet roll-outs over a real broker (docs/fleet.md): bundles as retained chunks, desired
state per device and group, agents that fetch, verify and swap, and the commands."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edgewise.deploy.broker import LocalBroker
from edgewise.edge.link.endpoint import Endpoint
from edgewise.edge.link.fleet_topics import Target
from edgewise.edge.remote.fleet_client import FleetLink, publish_bundle, set_desired
from edgewise.edge.runtime.desired import Desired
from edgewise.edge.runtime.signing import generate_keys, load_private_key, sign_bundle
from edgewise.edge.runtime.transfer import pack
from tests.agents import serving
from tests.conftest import ROOT
from tests.edge.test_activation import _break_selftest, _bump_version
from tests.mqtt_peer import Peer

ROW = [5.1, 3.5, 1.4, 0.2]
MODEL = "iris-rf"


def signed_copy(
    src: Path, dest: Path, version: str, key: Path, change: Callable[[Path], None] | None = None
) -> Path:
    bundle = Path(shutil.copytree(src, dest))
    _bump_version(bundle, version)
    if change is not None:
        change(bundle)
    sign_bundle(bundle, load_private_key(key))
    return bundle


def operator_key() -> Any:
    """The operator's private key the ``versions`` fixture named in the environment."""
    import os

    return load_private_key(os.environ["EDGEWISE_SIGNING_KEY"])


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "edgewise", *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


class Watcher(Peer):
    """A peer that keeps the latest retained document of every topic it hears."""

    def __init__(self, broker: LocalBroker, prefix: str) -> None:
        super().__init__(broker.port)
        self.latest: dict[str, Any] = {}
        self.answers: dict[Any, dict[str, Any]] = {}
        self.errors: list[dict[str, Any]] = []
        self.heard: list[tuple[float, str]] = []  # (monotonic time, topic) of every message
        self._lock = threading.Lock()
        self.client.on_message = lambda c, u, m: self._keep(m.topic, m.payload)
        self.subscribe(f"{prefix}/#")

    def _keep(self, topic: str, payload: bytes) -> None:
        if "/fleet/bundles/" in topic:
            return
        try:
            doc = json.loads(payload) if payload else None
        except ValueError:
            doc = payload
        with self._lock:
            self.heard.append((time.monotonic(), topic))
            self.latest[topic] = doc
            if topic.endswith("/out") and isinstance(doc, dict):
                self.answers[doc["id"]] = doc
            elif topic.endswith("/error") and isinstance(doc, dict):
                self.errors.append(doc)

    def wait(self, check: Callable[[], Any], timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                got = check()
            if got:
                return got
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}; latest: {self._deployments()}")

    def _deployments(self) -> dict[str, Any]:
        return {t: d for t, d in self.latest.items() if t.endswith("/deployment")}

    def clear(self, topic: str) -> None:
        """Clear a retained message (an empty retained publish)."""
        self.client.publish(topic, b"", qos=1, retain=True).wait_for_publish(5)

    def until(self, topic: str, ok: Callable[[Any], bool], timeout: float = 20) -> Any:
        """The latest document on ``topic`` once ``ok(doc)`` holds."""
        found = self.wait(lambda: topic in self.latest and ok(self.latest[topic]), timeout, topic)
        assert found
        return self.latest[topic]

    def deployment(self, prefix: str, device: str, deployment: str, timeout: float = 60) -> Any:
        topic = f"{prefix}/{device}/{MODEL}/deployment"

        def settled() -> Any:
            doc = self.latest.get(topic)
            settled = ("active", "shadow", "failed", "rolled_back")
            ours = isinstance(doc, dict) and doc.get("deployment") == deployment
            return doc if ours and doc["state"] in settled else None

        return self.wait(settled, timeout, f"{device} to settle {deployment}")

    def ask(self, prefix: str, device: str, rid: Any) -> dict[str, Any]:
        self.until(f"{prefix}/{device}/status", lambda s: s == b"online")  # subscribed by then
        self.request(f"{prefix}/{device}/{MODEL}/in", {"id": rid, "instances": [ROW]})
        return self.wait(lambda: self.answers.get(rid), 20, f"the answer to {rid}")


def roll_out(
    broker: LocalBroker, prefix: str, bundle: Path, target: Target, mode: str = "active",
    blob: bytes | None = None,
) -> Desired:  # fmt: skip
    """Publish ``bundle`` (or a tampered ``blob`` under its index) and a desired state,
    signed with the operator key ($EDGEWISE_SIGNING_KEY, set by the ``versions`` fixture)."""
    index, good = pack(bundle, chunk_size=16384)
    link = FleetLink(Endpoint.parse(broker.url), prefix, "auto", [])
    try:
        publish_bundle(link, index, blob if blob is not None else good)
        want = Desired.new(target.model, index.sha256, index.version, mode)
        set_desired(link, [target], want, operator_key())
    finally:
        link.close()
    return want


def start_agent(
    bundle: Path, broker: LocalBroker, device: str, prefix: str, state: Path, key: Path
) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "edgewise", "agent", "--bundle", str(bundle)]
    cmd += ["--broker", broker.url, "--device", device, "--prefix", prefix, "--group", "line-3"]
    cmd += ["--trusted-key", str(key), "--state-dir", str(state), "--health-interval", "1"]
    log = (state.parent / f"{device}.log").open("ab")
    return subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)


def test_group_roll_out_under_load_loses_nothing(
    broker: LocalBroker,
    prefix: str,
    versions: dict[str, Path],
    keys: tuple[Path, Path],
    watcher: Watcher,
    tmp_path: Path,
) -> None:
    devices = [f"line-{i}" for i in range(3)]
    procs = [start_agent(versions["1"], broker, d, prefix, tmp_path / d, keys[1]) for d in devices]
    try:
        for d in devices:
            watcher.wait(lambda d=d: watcher.latest.get(f"{prefix}/{d}/health"), 60, f"{d} health")
        sent: list[int] = []
        stop = threading.Event()

        def stream() -> None:
            i = 0
            while not stop.is_set():
                watcher.request(
                    f"{prefix}/{devices[i % 3]}/{MODEL}/in", {"id": i, "instances": [ROW]}
                )
                sent.append(i)
                i += 1
                time.sleep(0.004)

        sender = threading.Thread(target=stream)
        sender.start()
        try:
            watcher.wait(lambda: len(watcher.answers) >= 100, 30, "answers from v1")
            out = cli("deploy", str(versions["2"]), "--group", "line-3", "--broker", broker.url,
                      "--prefix", prefix, "--wait", "--timeout", "120")  # fmt: skip
            assert out.returncode == 0, out.stdout + out.stderr
            after = len(sent)
            watcher.wait(lambda: len(sent) >= after + 150, 30, "requests after the roll-out")
        finally:
            stop.set()
            sender.join()
        watcher.wait(lambda: len(watcher.answers) >= len(sent), 60, "every answer")
        assert not watcher.errors, watcher.errors[:3]
        got = [watcher.answers[i] for i in sent]
        assert all("predictions" in a and a["version"] in ("1", "2") for a in got)
        for d in devices:  # each device's last answers come from v2, and it says so
            mine = [a for i, a in zip(sent, got) if i % 3 == devices.index(d)]
            assert mine[-1]["version"] == "2"
            doc = watcher.latest[f"{prefix}/{d}/{MODEL}/deployment"]
            assert doc["state"] == "active" and doc["version"] == "2", doc
        for line in ("published iris-rf v2", "line-0: active"):
            assert line in out.stdout
        table = cli("fleet", "--broker", broker.url, "--prefix", prefix)
        lines = table.stdout.splitlines()[1:]
        rows = [r.split() for r in lines]
        assert sorted(r[0] for r in rows) == devices
        assert all(r[1] == "online" and r[2] == "line-3" for r in rows), rows
        # Desired (and from where) beside what each device reported.
        assert all("v2 active (group line-3)" in r and "active v2" in r for r in lines), lines
        # By hand, back to v1 on one device: it kept v1 on disk.
        back = cli("rollback", "--device", "line-0", "--model", MODEL, "--broker", broker.url,
                   "--prefix", prefix, "--timeout", "60")  # fmt: skip
        assert back.returncode == 0, back.stdout + back.stderr
        assert watcher.ask(prefix, "line-0", "after-rollback")["version"] == "1"
        assert watcher.ask(prefix, "line-1", "still-v2")["version"] == "2"
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(20)


def _flip_model_byte(bundle: Path) -> None:
    path = bundle / "model.onnx"
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x01
    path.write_bytes(bytes(data))


BAD = {
    "tampered chunk": ("chunk 0 does not match", None),
    "unknown key": ("not trusted here", None),
    "manifest does not match the model file": ("sha256 of model.onnx", _flip_model_byte),
    "self-test fails": ("self-test", _break_selftest),
    "too large for the device": ("max_bundle_bytes", None),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_roll_out_is_refused_and_v1_keeps_serving(
    case: str,
    broker: LocalBroker,
    prefix: str,
    versions: dict[str, Path],
    keys: tuple[Path, Path],
    watcher: Watcher,
    tmp_path: Path,
) -> None:
    reason, change = BAD[case]
    key = keys[0]
    if case == "unknown key":
        key = generate_keys(tmp_path / "other")[0]
    bad = signed_copy(versions["1"], tmp_path / "bad", "2", key, change)
    blob = None
    if case == "tampered chunk":
        blob = bytearray(pack(bad)[1])
        blob[100] ^= 0xFF
    limit = {"max_bundle_bytes": 1024} if case == "too large for the device" else {}
    state = tmp_path / "state"
    with serving(broker, [versions["1"]], "dev", state, prefix=prefix,
                 trusted_keys=(str(keys[1]),), **limit):  # fmt: skip
        watcher.ask(prefix, "dev", "before")
        want = roll_out(
            broker,
            prefix,
            bad,
            Target("devices", "dev", MODEL),
            blob=None if blob is None else bytes(blob),
        )
        doc = watcher.deployment(prefix, "dev", want.id)
        assert doc["state"] == "failed" and reason in doc["reason"], doc
        assert doc["version"] == "1"  # what serves
        assert watcher.ask(prefix, "dev", "after")["version"] == "1"
    store = state / "fleet" / "dev"
    assert not list((store / "bundles").glob("*")) if (store / "bundles").exists() else True
    assert not (store / "partial" / want.bundle).exists()  # nothing half-written is left


def test_a_device_without_trusted_keys_ignores_roll_outs(
    broker: LocalBroker, prefix: str, versions: dict[str, Path], watcher: Watcher
) -> None:
    with serving(broker, [versions["1"]], "open", prefix=prefix):
        roll_out(broker, prefix, versions["2"], Target("devices", "open", MODEL))
        topic = f"{prefix}/open/{MODEL}/deployment"
        doc = watcher.until(topic, lambda d: isinstance(d, dict) and d["state"] == "failed")
        assert "trusted keys" in doc["reason"]
        assert watcher.ask(prefix, "open", "x")["version"] == "1"


def test_an_offline_device_converges_and_keeps_its_version_over_restarts(
    broker: LocalBroker,
    prefix: str,
    versions: dict[str, Path],
    keys: tuple[Path, Path],
    watcher: Watcher,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = {"prefix": prefix, "trusted_keys": (str(keys[1]),), "groups": ("g",)}
    state = tmp_path / "state"
    with serving(broker, [versions["1"]], "late", state, **settings):
        watcher.ask(prefix, "late", "first")
    want = roll_out(broker, prefix, versions["2"], Target("groups", "g", MODEL))  # while away
    with serving(broker, [versions["1"]], "late", state, **settings):
        assert watcher.deployment(prefix, "late", want.id)["state"] == "active"
        assert watcher.ask(prefix, "late", "second")["version"] == "2"
    watcher.clear(f"{prefix}/fleet/groups/g/{MODEL}")  # no desired state any more
    caplog.clear()
    with serving(broker, [versions["1"]], "late", state, **settings):
        assert watcher.ask(prefix, "late", "third")["version"] == "2"  # from its own record
    # The flags named v1: one line says that the remembered roll-out wins, and what resets it.
    said = [m for r in caplog.records if "--bundle/--config names" in (m := r.getMessage())]
    assert len(said) == 1 and f"model {MODEL} serves v2 from a roll-out, not v1" in said[0]
    assert "`edgewise deploy BUNDLE --device late`" in said[0]


def test_shadow_then_promote(
    broker: LocalBroker,
    prefix: str,
    versions: dict[str, Path],
    keys: tuple[Path, Path],
    watcher: Watcher,
) -> None:
    with serving(broker, [versions["1"]], "sh", prefix=prefix, trusted_keys=(str(keys[1]),)):
        out = cli("deploy", str(versions["2"]), "--device", "sh", "--shadow", "--wait",
                  "--broker", broker.url, "--prefix", prefix)  # fmt: skip
        assert out.returncode == 0 and "sh: shadow" in out.stdout, out.stdout + out.stderr
        for i in range(30):
            assert watcher.ask(prefix, "sh", f"s{i}")["version"] == "1"  # the shadow is silent
        topic = f"{prefix}/sh/{MODEL}/shadow"
        shadow = watcher.until(topic, lambda d: isinstance(d, dict) and d["compared"] >= 20)
        assert shadow["version"] == "2" and shadow["agreement"] == 1.0
        assert shadow["mean_abs_delta"] == 0.0 and shadow["errors"] == 0
        out = cli("promote", "--device", "sh", "--model", MODEL, "--wait",
                  "--broker", broker.url, "--prefix", prefix)  # fmt: skip
        assert out.returncode == 0, out.stdout + out.stderr
        assert watcher.ask(prefix, "sh", "promoted")["version"] == "2"
        watcher.until(topic, lambda d: d is None, 10)  # the shadow document is cleared


def test_undeploy_and_bundles_gc(
    broker: LocalBroker,
    prefix: str,
    versions: dict[str, Path],
    keys: tuple[Path, Path],
    watcher: Watcher,
    caplog: pytest.LogCaptureFixture,
) -> None:
    stale = roll_out(broker, prefix, versions["2"], Target("devices", "nobody", MODEL))
    watcher.clear(f"{prefix}/fleet/devices/nobody/{MODEL}")  # nothing names it now
    with serving(broker, [versions["1"]], "u", prefix=prefix, trusted_keys=(str(keys[1]),)):
        watcher.ask(prefix, "u", "before")
        out = cli("undeploy", "--device", "u", "--model", MODEL, "--wait",
                  "--broker", broker.url, "--prefix", prefix)  # fmt: skip
        assert out.returncode == 0 and "u: removed" in out.stdout, out.stdout + out.stderr
        watcher.request(f"{prefix}/u/{MODEL}/in", {"id": "gone", "instances": [ROW]})
        err = watcher.wait(
            lambda: [e for e in watcher.errors if e.get("id") == "gone"], 10, "error"
        )
        assert err[0]["code"] == "unknown_model"
        for kind in ("info", "deployment"):
            assert watcher.latest[f"{prefix}/u/{MODEL}/{kind}"] is None
    caplog.clear()
    with serving(broker, [versions["1"]], "u", prefix=prefix, trusted_keys=(str(keys[1]),)):
        pass  # the flags name v1, the remembered undeploy wins: one line says so
    said = [m for r in caplog.records if "--bundle/--config names" in (m := r.getMessage())]
    assert len(said) == 1 and f"model {MODEL} stays removed (edgewise undeploy)" in said[0]
    peer = Peer(broker.port)
    try:
        peer.subscribe(f"{prefix}/fleet/bundles/{stale.bundle}/+")
        peer.expect("/index", timeout=5)  # still there before gc
    finally:
        peer.close()
    out = cli("bundles", "gc", "--broker", broker.url, "--prefix", prefix)
    assert out.returncode == 0 and "1 bundle(s)" in out.stdout, out.stdout + out.stderr
    peer = Peer(broker.port)
    try:
        peer.subscribe(f"{prefix}/fleet/bundles/{stale.bundle}/+")
        with pytest.raises(AssertionError):
            peer.expect("", timeout=1.5)  # neither the index nor a chunk is retained now
    finally:
        peer.close()


def test_a_refused_roll_out_is_not_tried_again_after_a_restart(
    broker: LocalBroker,
    prefix: str,
    versions: dict[str, Path],
    keys: tuple[Path, Path],
    watcher: Watcher,
    tmp_path: Path,
) -> None:
    bad = signed_copy(versions["1"], tmp_path / "bad", "2", keys[0], _break_selftest)
    settings = {"prefix": prefix, "trusted_keys": (str(keys[1]),)}
    state = tmp_path / "state"
    with serving(broker, [versions["1"]], "once", state, **settings):
        want = roll_out(broker, prefix, bad, Target("devices", "once", MODEL))
        assert watcher.deployment(prefix, "once", want.id)["state"] == "failed"
    mark = time.monotonic()
    with serving(broker, [versions["1"]], "once", state, **settings):  # desired still retained
        assert watcher.ask(prefix, "once", "after")["version"] == "1"
        time.sleep(1.0)
    topic = f"{prefix}/once/{MODEL}/deployment"
    tried = [t for at, t in list(watcher.heard) if at > mark and t == topic]
    assert len(tried) == 1  # only the start's "active v1", no new download or self-test
