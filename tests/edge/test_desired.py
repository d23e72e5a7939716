"""Signed desired states (docs/fleet.md#threat-model): nobody on the broker without the
operator's key steers a device. Each attack from a real client on a real broker, against a
real agent; legitimate roll-outs and rollbacks still pass (test_fleet.py)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from edgewise.deploy.broker import LocalBroker
from edgewise.edge.errors import EdgewiseError
from edgewise.edge.link.fleet_topics import Target
from edgewise.edge.runtime.desired import Desired, older, version_key
from edgewise.edge.runtime.signing import generate_keys, load_private_key, load_public_key
from tests.agents import serving
from tests.edge.test_fleet import MODEL, Watcher, operator_key, roll_out, signed_copy
from tests.mqtt_peer import Peer

DEVICE = "signed"


def test_a_signature_binds_every_field_and_the_topic(tmp_path: Path) -> None:
    private, public = generate_keys(tmp_path)
    key, trusted = load_private_key(private), [load_public_key(public)]
    doc = Desired.new(MODEL, "ab" * 32, "2").signed("devices/pi-1", 7, key)
    assert doc.verify("devices/pi-1", trusted) == doc.signature.kid  # type: ignore[union-attr]
    with pytest.raises(EdgewiseError, match="signed for 'devices/pi-1', not 'devices/pi-2'"):
        doc.verify("devices/pi-2", trusted)
    changed = Desired.parse(doc.to_json().replace(b'"version":"2"', b'"version":"1"'))
    with pytest.raises(EdgewiseError, match="bad signature"):
        changed.verify("devices/pi-1", trusted)
    with pytest.raises(EdgewiseError, match="not signed"):
        Desired.new(MODEL, None).verify("devices/pi-1", trusted)
    other = load_private_key(generate_keys(tmp_path / "other")[0])
    with pytest.raises(EdgewiseError, match="not trusted here"):
        Desired.new(MODEL, None).signed("devices/pi-1", 1, other).verify("devices/pi-1", trusted)


@pytest.mark.parametrize(
    ("version", "than", "is_older"),
    [("1", "3", True), ("2.10", "2.9", False), ("v2", "3", True), ("3", "3", False),
     ("beta", "3", False), (None, "3", False)],
)  # fmt: skip
def test_versions_are_ordered_when_they_are_numbers(
    version: str | None, than: str, is_older: bool
) -> None:
    assert older(version, than) is is_older
    assert version_key("2.10") == (2, 10)


@pytest.fixture
def v3(versions: dict[str, Path], keys: tuple[Path, Path], tmp_path: Path) -> Path:
    return signed_copy(versions["1"], tmp_path / "v3", "3", keys[0])


def _publish(broker: LocalBroker, topic: str, payload: bytes) -> None:
    peer = Peer(broker.port)
    try:
        peer.client.publish(topic, payload, qos=1, retain=True).wait_for_publish(5)
    finally:
        peer.close()


def _still_serves(watcher: Watcher, prefix: str, version: str, rid: str) -> None:
    time.sleep(1.0)  # the refused document has been handled by now
    assert watcher.ask(prefix, DEVICE, rid)["version"] == version


def test_replayed_forged_and_unsigned_documents_change_nothing(
    broker: LocalBroker,
    prefix: str,
    versions: dict[str, Path],
    v3: Path,
    keys: tuple[Path, Path],
    watcher: Watcher,
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    settings = {"prefix": prefix, "trusted_keys": (str(keys[1]),), "groups": ("g",)}
    topic = f"{prefix}/fleet/devices/{DEVICE}/{MODEL}"
    deployment = f"{prefix}/{DEVICE}/{MODEL}/deployment"
    with serving(broker, [versions["1"]], DEVICE, state, **settings) as agent:
        target = Target("devices", DEVICE, MODEL)
        first = roll_out(broker, prefix, versions["2"], target)
        watcher.deployment(prefix, DEVICE, first.id)
        old_doc = watcher.latest[topic]  # the v2 desired state, byte for byte below
        second = roll_out(broker, prefix, v3, target)
        watcher.deployment(prefix, DEVICE, second.id)
        before = dict(watcher.latest[deployment])
        # 1. Replay the v2 document byte for byte.
        _publish(broker, topic, json.dumps(old_doc, separators=(",", ":")).encode())
        _still_serves(watcher, prefix, "3", "after replay")
        # 2. Forge one for the v1 bundle still on disk (its sha is public), unsigned.
        forged = Desired.new(MODEL, before["history"][-1]["bundle"], "1")
        _publish(broker, topic, forged.to_json())
        _still_serves(watcher, prefix, "3", "after forgery")
        # 3. An unsigned removal, and a group's desired state nobody signed.
        _publish(broker, topic, Desired.new(MODEL, None).to_json())
        _publish(broker, f"{prefix}/fleet/groups/g/{MODEL}", Desired.new(MODEL, None).to_json())
        _still_serves(watcher, prefix, "3", "after removal")
        # 4. A document signed for another device, moved onto this one.
        elsewhere = Desired.new(MODEL, None).signed(f"devices/x-{DEVICE}", 2**62, operator_key())
        _publish(broker, topic, elsewhere.to_json())
        _still_serves(watcher, prefix, "3", "after a moved document")
        # Nothing was published about the model: its deployment document is as it was.
        assert watcher.latest[deployment]["deployment"] == second.id
        assert agent.health()["refused_desired"] == 5
    # A restart with --bundle v1 keeps v3 (its record), and the forged document retained on
    # the topic is refused again.
    with serving(broker, [versions["1"]], DEVICE, state, **settings):
        _still_serves(watcher, prefix, "3", "after restart")


def test_garbage_on_invented_model_names_creates_no_topics(
    broker: LocalBroker, prefix: str, versions: dict[str, Path], keys: tuple[Path, Path],
    watcher: Watcher,
) -> None:  # fmt: skip
    with serving(broker, [versions["1"]], DEVICE, prefix=prefix, trusted_keys=(str(keys[1]),)):
        watcher.ask(prefix, DEVICE, "before")
        names = [f"m{i}" for i in range(50)] + ["<img src=x onerror=alert(1)>"]
        for name in names:
            _publish(broker, f"{prefix}/fleet/devices/{DEVICE}/{name}", b'{"model": 1}')
        _still_serves(watcher, prefix, "1", "after garbage")
    made = [t for t in watcher.latest if t.startswith(f"{prefix}/{DEVICE}/m")]
    mine = [t for t in watcher.latest if t.startswith(f"{prefix}/{DEVICE}/")]
    assert made == [] and not any("<img" in t for t in mine)


def test_an_older_version_needs_a_rollback(
    broker: LocalBroker, prefix: str, versions: dict[str, Path], keys: tuple[Path, Path],
    watcher: Watcher,
) -> None:  # fmt: skip
    """Signed, but v1 below the active v2 without `rollback: true`: failed, with why."""
    with serving(broker, [versions["2"]], DEVICE, prefix=prefix, trusted_keys=(str(keys[1]),)):
        want = roll_out(broker, prefix, versions["1"], Target("devices", DEVICE, MODEL))
        doc = watcher.deployment(prefix, DEVICE, want.id)
        assert doc["state"] == "failed" and "takes a rollback" in doc["reason"]
        _still_serves(watcher, prefix, "2", "after downgrade")
