"""What the operator sees: ``deploy --wait`` says why a device does not follow, ``fleet``
shows desired vs reported, stale devices and pins, ``fleet unpin`` and ``fleet forget``
(docs/fleet.md). Real agents on a real broker; the table logic also on hand-made state."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from edgewise.deploy.broker import LocalBroker
from edgewise.edge.link.fleet_topics import Target
from edgewise.edge.remote.fleet_status import device_topics, fleet_rows, waiting_reason
from edgewise.edge.runtime.desired import Desired
from tests.agents import serving
from tests.edge.test_activation import _break_selftest
from tests.edge.test_fleet import MODEL, Watcher, cli, roll_out, signed_copy


def _retained(prefix: str, now: float) -> dict[str, bytes]:
    pin = Desired.new(MODEL, "ab" * 32, "1", "active")
    group = Desired.new(MODEL, "cd" * 32, "2", "active")
    return {
        f"{prefix}/pi-a/status": b"online",
        f"{prefix}/pi-a/health": json.dumps(
            {"time": now - 200, "groups": ["g"], "remote_deploy": True}
        ).encode(),
        f"{prefix}/pi-a/{MODEL}/deployment": json.dumps(
            {"state": "active", "version": "1", "deployment": pin.id}
        ).encode(),
        f"{prefix}/fleet/devices/pi-a/{MODEL}": pin.to_json(),
        f"{prefix}/fleet/groups/g/{MODEL}": group.to_json(),
        f"{prefix}/pi-c/status": b"offline",
        f"{prefix}/pi-c/health": b'{"time": ' + b"9" * 400 + b', "groups": ["g"]}',
        f"{prefix}/pi-b/status": b"online",
        f"{prefix}/pi-b/health": json.dumps(
            {"time": "400-digit", "groups": 5, "remote_deploy": False, "models": "abc"}
        ).encode(),  # hostile types: shown as ?, never a traceback
    }


def test_the_table_shows_desired_vs_reported_pins_and_stale_devices() -> None:
    now = time.time()
    rows = {(r[0], r[3]): r for r in fleet_rows(_retained("p", now), "p", now)}
    a = rows[("pi-a", MODEL)]
    assert a[1] == "stale"  # online, but no health for 200 s (3 intervals of 30 s)
    assert a[4] == "v1 active (pin)" and a[5] == "active v1"
    b = rows[("pi-b", "-")]
    assert b[1] == "stale" and b[2] == "-"
    assert rows[("pi-c", "-")][7] == "-"  # a 400-digit time is no time


def test_why_a_device_does_not_follow() -> None:
    retained = _retained("p", time.time())
    group = Desired.parse(retained[f"p/fleet/groups/g/{MODEL}"])
    blocked, why = waiting_reason(retained, "p", "pi-a", MODEL, group.id, "g")  # type: ignore[misc]
    assert blocked and "overrides group g's" in why and "fleet unpin pi-a" in why
    blocked, why = waiting_reason(retained, "p", "pi-b", MODEL, group.id, "g")  # type: ignore[misc]
    assert blocked and "--trusted-key" in why
    blocked, why = waiting_reason(retained, "p", "pi-x", MODEL, group.id, None)  # type: ignore[misc]
    assert not blocked and why.startswith("?")  # never seen: may still come
    assert device_topics(retained, "p", "pi-a") == sorted(
        [f"p/fleet/devices/pi-a/{MODEL}", f"p/pi-a/{MODEL}/deployment", "p/pi-a/health",
         "p/pi-a/status"]
    )  # fmt: skip


def _deploy(broker: LocalBroker, prefix: str, bundle: Path, *where: str) -> tuple[int, str, float]:
    started = time.monotonic()
    out = cli("deploy", str(bundle), *where, "--broker", broker.url, "--prefix", prefix,
              "--wait", "--timeout", "40")  # fmt: skip
    return out.returncode, out.stdout + out.stderr, time.monotonic() - started


def test_deploy_wait_says_the_device_trusts_no_key(
    broker: LocalBroker, prefix: str, versions: dict[str, Path]
) -> None:
    with serving(broker, [versions["1"]], "nokey", prefix=prefix, health_interval=1.0):
        time.sleep(1.5)  # its health is retained
        rc, out, took = _deploy(broker, prefix, versions["2"], "--device", "nokey")
    assert rc == 1 and "nokey: not following: trusts no operator key" in out, out
    assert took < 30 and "timed out" not in out  # said at once, not after the timeout


def test_deploy_wait_says_a_self_test_failed(
    broker: LocalBroker,
    prefix: str,
    versions: dict[str, Path],
    keys: tuple[Path, Path],
    tmp_path: Path,
) -> None:
    bad = signed_copy(versions["1"], tmp_path / "bad", "2", keys[0], _break_selftest)
    with serving(broker, [versions["1"]], "st", prefix=prefix, trusted_keys=(str(keys[1]),)):
        rc, out, _ = _deploy(broker, prefix, bad, "--device", "st")
    assert rc == 1 and "st: failed:" in out and "self-test" in out, out


def test_a_pin_overrides_the_group_until_unpinned(
    broker: LocalBroker,
    prefix: str,
    versions: dict[str, Path],
    keys: tuple[Path, Path],
    watcher: Watcher,
) -> None:
    settings = {"prefix": prefix, "trusted_keys": (str(keys[1]),), "groups": ("g",),
                "health_interval": 1.0}  # fmt: skip
    with serving(broker, [versions["1"]], "pinned", **settings):
        pin = roll_out(broker, prefix, versions["1"], Target("devices", "pinned", MODEL))
        watcher.deployment(prefix, "pinned", pin.id)
        time.sleep(1.5)
        rc, out, took = _deploy(broker, prefix, versions["2"], "--group", "g")
        assert rc == 1 and "overrides group g's" in out and "fleet unpin pinned" in out, out
        assert took < 30 and "timed out" not in out
        table = cli("fleet", "--broker", broker.url, "--prefix", prefix).stdout
        assert "v1 active (pin)" in table, table
        done = cli("fleet", "unpin", "pinned", "--model", MODEL, "--broker", broker.url,
                   "--prefix", prefix)  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        # The group's desired state (v2) applies now, without a new deploy.
        watcher.until(
            f"{prefix}/pinned/{MODEL}/deployment",
            lambda d: (
                isinstance(d, dict) and d.get("state") == "active" and d.get("version") == "2"
            ),
        )


def test_forget_clears_a_decommissioned_device(
    broker: LocalBroker, prefix: str, versions: dict[str, Path], watcher: Watcher
) -> None:
    with serving(broker, [versions["1"]], "old-pi", prefix=prefix):
        watcher.ask(prefix, "old-pi", "last")
        online = cli("fleet", "forget", "old-pi", "--broker", broker.url, "--prefix", prefix)
        assert online.returncode == 1 and "reads online" in online.stderr
    out = cli("fleet", "forget", "old-pi", "--broker", broker.url, "--prefix", prefix)
    assert out.returncode == 0 and "cleared" in out.stdout, out.stdout + out.stderr
    table = cli("fleet", "--broker", broker.url, "--prefix", prefix).stdout
    assert "old-pi" not in table


@pytest.mark.parametrize("which", ["exporter", "dashboard"])
def test_monitors_drop_a_forgotten_device(which: str) -> None:
    from edgewise.edge.link.message import Message

    def msg(topic: str, payload: bytes) -> Message:
        return Message(topic=topic, payload=payload, qos=1, received_at=0.0, retain=True)

    if which == "exporter":
        from edgewise.monitor.exporter import FleetState

        state: Any = FleetState("p")
    else:
        from edgewise.monitor.dashboard_state import FleetView

        state = FleetView("p")
    state.on_message(msg("p/pi/status", b"online"))
    state.on_message(msg("p/pi/health", json.dumps({"time": 1.0}).encode()))
    state.on_message(msg("p/pi/status", b""))
    text = json.dumps(state.snapshot(), default=str)
    assert "pi" not in text.replace("p/", "")
