"""Offline install kits and device identities (`edgewise kit`, `edgewise identity`).

A kit is built for a platform, installed by its own install.sh inside a network namespace
with no network at all, and the installed agent (a device-only venv from the kit's wheels)
serves a bundle over a real Mosquitto running the shipped TLS + ACL config, with the
identity the kit carries. Revoking an identity locks it out of that broker.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from edgewise.deploy.broker import LocalBroker, free_port, start_mosquitto
from edgewise.deploy.identity import IdentityStore, check_name, password_hash, render_acl
from edgewise.edge.errors import EdgewiseError
from tests.conftest import ROOT, require_mosquitto
from tests.deploy.test_security import SHIPPED, Client, Pki

ARM64 = ROOT / ".cache" / "arm64"


def edgewise(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgewise", *args], capture_output=True, text=True, timeout=timeout
    )


def broker_config(files: Path, port: int, shipped: str) -> str:
    """A shipped broker config, reading the files ``edgewise identity broker-files`` wrote."""
    text = (SHIPPED / shipped).read_text().replace("/etc/mosquitto/edgewise/", f"{files}/")
    text = text.replace("listener 8883", f"listener {port} 127.0.0.1")
    text = text.replace("persistence true", "persistence false")
    extra = ["log_dest stderr", "log_type error", "log_type warning"]
    if os.geteuid() == 0:
        extra.append("user root")
    return text + "\n".join(extra) + "\n"


@dataclass
class Fleet:
    """An operator's identity store and the broker that reads its files."""

    store: IdentityStore
    files: Path
    port: int
    work: Path
    broker: LocalBroker | None = None

    @property
    def pki(self) -> Pki:
        return Pki(self.files, self.files)

    def publish_files(self) -> None:
        made = edgewise(
            "identity", "broker-files", "--store", str(self.store.dir), "--out", str(self.files)
        )
        assert made.returncode == 0, made.stderr

    def reload(self) -> None:
        """What `systemctl reload mosquitto` does: SIGHUP re-reads passwd and acl."""
        self.publish_files()
        assert self.broker is not None
        self.broker.process.send_signal(signal.SIGHUP)
        time.sleep(0.5)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    require_mosquitto()
    work = tmp_path_factory.mktemp("fleet")
    store = work / "store"
    made = edgewise("identity", "init", "--store", str(store), "--server", "127.0.0.1")
    assert made.returncode == 0, made.stderr
    made = edgewise("identity", "issue", "operator", "--store", str(store), "--out", str(work))
    assert made.returncode == 0, made.stderr
    assert oct((work / "operator.password").stat().st_mode & 0o777) == "0o600"
    fleet = Fleet(IdentityStore(store), work / "broker", free_port(), work)
    fleet.publish_files()
    config = broker_config(fleet.files, fleet.port, "edgewise-tls.conf")
    fleet.broker = start_mosquitto(work / "mosquitto", port=fleet.port, config=config)
    yield fleet
    fleet.broker.stop()


def emulated_python(arch: str) -> tuple[str, dict[str, str]]:
    """The project's emulated Debian CPython 3.11 for ``arch`` (scripts/arm-sysroot)."""
    built = subprocess.run(
        ["bash", str(ROOT / "scripts" / "arm-sysroot"), arch], capture_output=True, text=True
    )
    assert built.returncode == 0, built.stderr[-2000:]
    sysroot = ROOT / ".cache" / arch / "sysroot"
    env = {
        "QEMU_LD_PREFIX": str(sysroot),
        "QEMU_CPU": "cortex-a72" if arch == "arm64" else "cortex-a7",
    }
    return str(sysroot / "usr" / "bin" / "python3.11"), env


# (platform, the bundle it serves): 32-bit ARM has no ONNX Runtime, so a TFLite bundle.
PLATFORMS = [
    pytest.param("linux-x86_64", "iris_bundle", id="x86_64"),
    pytest.param("linux-aarch64", "iris_bundle", id="aarch64-3.11", marks=pytest.mark.slow),
    pytest.param("linux-armv7l", "digits_bundle", id="armv7l-3.11", marks=pytest.mark.slow),
]


@pytest.mark.parametrize(("platform", "bundle_fixture"), PLATFORMS)
def test_kit_installs_offline_and_serves_with_its_identity(
    platform: str, bundle_fixture: str, fleet: Fleet, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.fail("the offline install runs in a network namespace: needs root and unshare")
    source: Path = request.getfixturevalue(bundle_fixture)
    if platform == "linux-x86_64":
        python, env = "/usr/bin/python3", {}
        version = subprocess.check_output(
            [python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"], text=True
        ).strip()
    else:
        python, env = emulated_python("arm64" if platform == "linux-aarch64" else "armhf")
        version = "3.11"
    device = f"kit-{platform.split('-')[1]}"
    # The operator signs the bundle; the device trusts only that key.
    keys = tmp_path / "keys"
    assert edgewise("keys", "new", "--out", str(keys)).returncode == 0
    bundle = tmp_path / source.name
    shutil.copytree(source, bundle)
    # The bundle's own self-test: held-out inputs and the host's answers to them.
    selftest = json.loads((source / "selftest.json").read_text())
    signed = edgewise("sign", str(bundle), "--key", str(next(keys.glob("*.key"))))
    assert signed.returncode == 0, signed.stderr
    kit = tmp_path / "kit"
    started = time.monotonic()
    made = edgewise(
        "kit", "--platform", platform, "--python", version, "--device", device,
        "--out", str(kit), "--broker", f"mqtts://127.0.0.1:{fleet.port}",
        "--store", str(fleet.store.dir), "--bundle", str(bundle),
        "--trusted-key", str(next(keys.glob("*.pub"))), "--sign-key", str(next(keys.glob("*.key"))),
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    print(made.stdout.strip(), f"({time.monotonic() - started:.0f} s)")
    doc = json.loads((kit / "kit.json").read_text())
    assert doc["device"] == device and doc["platform"] == platform
    assert any(w.startswith("edgewise_edge-") for w in doc["wheels"])
    assert not any(w.startswith(("tensorflow", "scikit_learn", "onnx-")) for w in doc["wheels"])
    assert oct((kit / "etc" / "mqtt-password").stat().st_mode & 0o777) == "0o600"
    password = (kit / "etc" / "mqtt-password").read_text()
    assert password not in made.stdout + made.stderr  # never printed

    # The install: no network at all (only a loopback that nothing listens on).
    prefix = tmp_path / "device"
    started = time.monotonic()
    installed = subprocess.run(
        ["unshare", "-n", "sh", str(kit / "install.sh"), "--prefix", str(prefix),
         "--no-service", "--python", python, "--trust", str(next(keys.glob("*.pub")))],
        capture_output=True, text=True, timeout=900, env={**os.environ, **env},
    )  # fmt: skip
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert "the kit's signature checks out" in installed.stdout + installed.stderr
    print(f"installed offline in {time.monotonic() - started:.0f} s")
    venv = prefix / "opt" / "edgewise"
    config = prefix / "etc" / "edgewise" / "agent.toml"
    assert oct((prefix / "etc" / "edgewise" / "mqtt-password").stat().st_mode & 0o777) == "0o600"
    host_only = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import sklearn"],
        capture_output=True,
        env={**os.environ, **env},
    )
    assert host_only.returncode != 0  # a device install: no scikit-learn

    # The installed agent serves over TLS with the kit's identity, against the shipped ACL.
    log = tmp_path / "agent.log"
    fleet.reload()  # the broker learns the new device's password
    agent = subprocess.Popen(
        [str(venv / "bin" / "edgewise"), "agent", "--config", str(config)],
        stdout=log.open("wb"), stderr=subprocess.STDOUT, env={**os.environ, **env},
    )  # fmt: skip
    operator = Client(
        fleet.port, fleet.pki, "operator", (fleet.work / "operator.password").read_text()
    )
    try:
        assert operator.connected, operator.refused
        operator.subscribe(f"edgewise/{device}/status", f"edgewise/{device}/{bundle.name}/out")
        deadline = time.monotonic() + 120
        while b"online" not in operator.got(f"edgewise/{device}/status", 0.5):
            assert agent.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        body = json.dumps({"id": "kit-1", "instances": selftest["instances"][:1]})
        operator.publish(f"edgewise/{device}/{bundle.name}/in", body)
        [answer] = operator.got(f"edgewise/{device}/{bundle.name}/out", 60)[:1]
        doc = json.loads(answer)
        label = selftest["expected"][0]["label"]
        assert doc["id"] == "kit-1" and doc["predictions"][0]["label"] == label, doc
    finally:
        operator.close()
        agent.terminate()
        agent.wait(30)
    assert password not in log.read_text()

    # Revoked: the device's password no longer opens the broker.
    revoked = edgewise("identity", "revoke", device, "--store", str(fleet.store.dir))
    assert revoked.returncode == 0, revoked.stderr
    fleet.reload()
    locked = Client(fleet.port, fleet.pki, device, password)
    try:
        assert not locked.connected and locked.refused is not None
    finally:
        locked.close()
    assert f"user {device}\n" not in (fleet.files / "acl").read_text()

    # The same kit, re-signed by a key this device does not trust: refused, nothing changed.
    if platform == "linux-x86_64":
        from edgewise.deploy.kit import _sign

        assert edgewise("keys", "new", "--out", str(tmp_path / "foreign")).returncode == 0
        _sign(kit, tmp_path / "foreign" / "edgewise-signing.key")
        again = subprocess.run(
            ["sh", str(kit / "install.sh"), "--prefix", str(prefix), "--no-service",
             "--python", python],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert again.returncode == 1 and "which is none of the 1 keys" in again.stderr, again.stderr
        assert "nothing was changed" in again.stderr
        assert (venv / "bin" / "edgewise").exists()


def test_certificate_identity_is_revoked_by_the_crl(fleet: Fleet, tmp_path: Path) -> None:
    """A client certificate (common name = device id) opens the mutual-TLS broker until it
    is revoked or re-issued: both put the old certificate on the CRL."""
    store = str(fleet.store.dir)
    out = tmp_path / "ids"
    made = edgewise(
        "identity", "issue", "cam-1", "--auth", "cert", "--store", store, "--out", str(out)
    )
    assert made.returncode == 0, made.stderr
    assert oct((out / "cam-1.key").stat().st_mode & 0o777) == "0o600"
    fleet.publish_files()
    port = free_port()
    broker = start_mosquitto(
        tmp_path / "mtls", port=port, config=broker_config(fleet.files, port, "edgewise-mtls.conf")
    )
    (out / "clients").mkdir()
    for suffix in ("crt", "key"):
        shutil.copy(out / f"cam-1.{suffix}", out / "clients" / f"cam-1.{suffix}")
    shutil.copy(fleet.files / "ca.crt", out / "ca.crt")
    pki = Pki(out, out)
    try:
        first = Client(port, pki, cert="cam-1")
        assert first.connected, first.refused
        first.close()
        # Re-issued: a new certificate works, the old one is on the CRL.
        shutil.copytree(out, tmp_path / "old")
        made = edgewise(
            "identity", "reissue", "cam-1", "--auth", "cert", "--store", store, "--out", str(out)
        )
        assert made.returncode == 0, made.stderr
        for suffix in ("crt", "key"):
            shutil.copy(out / f"cam-1.{suffix}", out / "clients" / f"cam-1.{suffix}")
        fleet.publish_files()
        broker.stop()  # Mosquitto reads its CRL at start
        broker = start_mosquitto(
            tmp_path / "mtls2",
            port=port,
            config=broker_config(fleet.files, port, "edgewise-mtls.conf"),
        )
        assert not Client(port, Pki(tmp_path / "old", tmp_path / "old"), cert="cam-1").connected
        second = Client(port, pki, cert="cam-1")
        assert second.connected, second.refused
        second.close()
        assert edgewise("identity", "revoke", "cam-1", "--store", store).returncode == 0
        fleet.publish_files()
        broker.stop()
        broker = start_mosquitto(
            tmp_path / "mtls3",
            port=port,
            config=broker_config(fleet.files, port, "edgewise-mtls.conf"),
        )
        assert not Client(port, pki, cert="cam-1").connected
    finally:
        broker.stop()
    listed = edgewise("identity", "list", "--store", store)
    assert "cam-1\tcert" in listed.stdout and "revoked" in listed.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--platform", "linux-mips"], "--platform 'linux-mips': use one of linux-x86_64"),
        (["--python", "2.7"], "--python '2.7': use one of 3.10"),
        (["--broker", "mqtt://127.0.0.1"], "connects with TLS"),
        (["--device", "a b"], "identity name 'a b'"),
        (["--device", "fleet"], "reserved"),
        (["--extra", "gpu"], "--extra 'gpu': use one of camera, serial"),
        (["--bundle", "/nonexistent"], "/nonexistent"),
    ],
)
def test_kit_options_are_checked_before_any_work(
    fleet: Fleet, iris_bundle: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    base = {
        "--platform": "linux-x86_64", "--python": "3.11", "--device": "pi-x",
        "--out": str(tmp_path / "kit"), "--broker": "mqtts://127.0.0.1:8883",
        "--store": str(fleet.store.dir), "--bundle": str(iris_bundle),
    }  # fmt: skip
    base.update(dict(zip(args[::2], args[1::2])))
    made = edgewise("kit", *[x for kv in base.items() for x in kv], timeout=60)
    assert made.returncode == 1
    [line] = made.stderr.strip().splitlines()
    assert line.startswith("edgewise kit: error:") and message in line, line
    assert not (tmp_path / "kit").exists()
    assert "pi-x" not in fleet.store.load()  # no identity used up


def test_config_may_not_set_what_the_kit_writes(
    fleet: Fleet, iris_bundle: Path, tmp_path: Path
) -> None:
    extra = tmp_path / "extra.toml"
    extra.write_text('health_interval = 5.0\nusername = "someone"\n')
    made = edgewise(
        "kit", "--platform", "linux-x86_64", "--python", "3.11", "--device", "pi-y",
        "--out", str(tmp_path / "kit"), "--broker", "mqtts://h", "--store", str(fleet.store.dir),
        "--bundle", str(iris_bundle), "--config", str(extra),
    )  # fmt: skip
    assert made.returncode == 1 and "the kit sets username itself" in made.stderr


# -- pure logic ---------------------------------------------------------------------------


def test_password_hash_is_mosquittos_format() -> None:
    line = password_hash("secret", salt=b"\x01" * 12)
    assert line.startswith("$7$101$AQEBAQEBAQEBAQEB$") and len(line.split("$")[4]) == 88


@pytest.mark.parametrize("name", ["", "a/b", "-x", "x" * 129, "a b", "fleet", "é"])
def test_bad_identity_names(name: str) -> None:
    with pytest.raises(EdgewiseError):
        check_name(name)


def test_acl_writes_patterns_out_per_device() -> None:
    base = "user operator\ntopic readwrite edgewise/#\n\n"
    base += "pattern read edgewise/%u/+/in\npattern write edgewise/%u/#\n"
    acl = render_acl(base, ["pi-2", "pi-1"])
    assert "pattern" not in acl
    assert acl.index(
        "user pi-1\ntopic read edgewise/pi-1/+/in\ntopic write edgewise/pi-1/#\n"
    ) < acl.index("user pi-2")
    assert acl.startswith("user operator\ntopic readwrite edgewise/#\n")


def test_install_refuses_a_kit_its_device_does_not_trust(fleet: Fleet, tmp_path: Path) -> None:
    """A kit signed by a key the device does not trust is refused before anything changes,
    with the Python of the earlier install (here: this one)."""
    from edgewise.deploy.kit import verify

    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    for d in (ours, theirs):
        assert edgewise("keys", "new", "--out", str(d)).returncode == 0
    kit = tmp_path / "kit"
    kit.mkdir()
    (kit / "SHA256SUMS").write_text("0" * 64 + "  kit.json\n")
    from edgewise.deploy.kit import _sign

    _sign(kit, theirs / "edgewise-signing.key")
    with pytest.raises(EdgewiseError, match="none of the 1 keys this device trusts"):
        verify(kit, [ours / "edgewise-signing.pub"])
    assert verify(kit, [ours / "edgewise-signing.pub", theirs / "edgewise-signing.pub"])
    (kit / "SHA256SUMS").write_text("1" * 64 + "  kit.json\n")  # changed after signing
    with pytest.raises(EdgewiseError, match="none of the 2 keys"):
        verify(kit, [ours / "edgewise-signing.pub", theirs / "edgewise-signing.pub"])
