"""Canaries chosen from the operator's signed roster and judged by the operator's own
probe requests (edge.remote.canary), on a real broker with real agents."""

from __future__ import annotations

import json
from pathlib import Path

from edgewise.deploy.broker import LocalBroker
from tests.agents import serving
from tests.edge.test_fleet import MODEL, Watcher, cli


def publish_roster(
    broker: LocalBroker, prefix: str, tmp_path: Path, groups: dict[str, list[str]], *extra: str
) -> None:
    """``edgewise roster publish`` of a roster with ``groups``, signed with the operator key
    ($EDGEWISE_SIGNING_KEY, or ``--key`` in ``extra``)."""
    lines = ["[groups]", *(f"{g} = {json.dumps(m)}" for g, m in groups.items())]
    roster = tmp_path / "roster.toml"
    roster.write_text("\n".join(lines) + "\n")
    out = cli("roster", "publish", str(roster), "--broker", broker.url, "--prefix", prefix, *extra)
    assert out.returncode == 0 and "roster published: 1 group(s)" in out.stdout, out.stderr


def deploy_canary(broker: LocalBroker, prefix: str, bundle: Path, *extra: str) -> tuple[int, str]:
    out = cli("deploy", str(bundle), "--group", "g", "--canary", "1", "--wait",
              "--broker", broker.url, "--prefix", prefix, "--timeout", "60", *extra)  # fmt: skip
    return out.returncode, out.stdout + out.stderr


def wait_health(watcher: Watcher, prefix: str, devices: str | list[str]) -> None:
    for d in devices:
        watcher.wait(lambda d=d: watcher.latest.get(f"{prefix}/{d}/health"), 20, "health")


def test_a_canary_passes_on_probes_and_the_group_follows(
    broker: LocalBroker,
    prefix: str,
    versions: dict[str, Path],
    keys: tuple[Path, Path],
    watcher: Watcher,
    tmp_path: Path,
) -> None:
    """`intruder` says it is in g (its own config and health) and sorts first, but the
    roster does not list it: it is neither the canary nor followed."""
    common = {"prefix": prefix, "trusted_keys": (str(keys[1]),), "groups": ("g",),
              "health_interval": 1.0}  # fmt: skip
    publish_roster(broker, prefix, tmp_path, {"g": ["a", "b"]})
    with (
        serving(broker, [versions["1"]], "a", tmp_path / "a", **common),
        serving(broker, [versions["1"]], "b", tmp_path / "b", **common),
        serving(broker, [versions["1"]], "0-intruder", tmp_path / "i", **common),
    ):
        wait_health(watcher, prefix, ["a", "b", "0-intruder"])
        code, out = deploy_canary(broker, prefix, versions["2"])
        assert code == 0, out
        assert "canary: a first" in out and "a: probes passed" in out, out
        assert "canary passed: deploying to the rest of g" in out
        assert "0-intruder" not in out  # not followed: not the roster's
        for d in "ab":
            assert watcher.ask(prefix, d, f"after-{d}")["version"] == "2"


def test_a_forged_canary_report_does_not_pass_the_canary(
    broker: LocalBroker,
    prefix: str,
    versions: dict[str, Path],
    keys: tuple[Path, Path],
    watcher: Watcher,
    tmp_path: Path,
) -> None:
    """`a` follows no roll-out (no trusted keys) and stays on v1; a client forges its
    deployment document: active v2, probation passed. The probes, answered by v1, fail
    the canary, and the group's desired state is never published."""
    common = {"prefix": prefix, "groups": ("g",), "health_interval": 1.0}
    publish_roster(broker, prefix, tmp_path, {"g": ["a", "b"]})
    pin = f"{prefix}/fleet/devices/a/{MODEL}"

    def forge(msg: object) -> None:
        doc = json.loads(msg.payload or b"null")
        if isinstance(doc, dict) and doc.get("bundle"):
            fake = {"state": "active", "deployment": doc["id"], "version": doc["version"],
                    "probation": "passed"}  # fmt: skip
            topic = f"{prefix}/a/{MODEL}/deployment"
            watcher.client.publish(topic, json.dumps(fake), qos=1, retain=True)

    watcher.client.message_callback_add(pin, lambda c, u, m: forge(m))
    with (
        serving(broker, [versions["1"]], "a", tmp_path / "a", **common),
        serving(
            broker, [versions["1"]], "b", tmp_path / "b", trusted_keys=(str(keys[1]),), **common
        ),  # fmt: skip
    ):
        wait_health(watcher, prefix, "ab")
        code, out = deploy_canary(broker, prefix, versions["2"])
        assert code == 1, out
        assert "a: active (serving v2), probation passed" in out  # the forgery was heard
        assert "a: probes failed: probe answered by v1, not v2" in out, out
        assert "canary failed" in out
        assert f"{prefix}/fleet/groups/g/{MODEL}" not in watcher.latest
        assert watcher.ask(prefix, "b", "b-after")["version"] == "1"
    watcher.clear(f"{prefix}/a/{MODEL}/deployment")


def test_canary_stops_at_a_failing_first_device(
    broker: LocalBroker,
    prefix: str,
    versions: dict[str, Path],
    keys: tuple[Path, Path],
    watcher: Watcher,
    tmp_path: Path,
) -> None:
    common = {"prefix": prefix, "trusted_keys": (str(keys[1]),), "groups": ("g",),
              "health_interval": 1.0}  # fmt: skip
    publish_roster(broker, prefix, tmp_path, {"g": ["a", "b", "c"]})
    with (
        serving(broker, [versions["1"]], "a", tmp_path / "a", max_bundle_bytes=1024, **common),
        serving(broker, [versions["1"]], "b", tmp_path / "b", **common),
        serving(broker, [versions["1"]], "c", tmp_path / "c", **common),
    ):
        wait_health(watcher, prefix, "abc")
        code, out = deploy_canary(broker, prefix, versions["2"])
        assert code == 1, out
        assert "canary: a first" in out and "canary failed" in out
        for d in "bc":
            assert watcher.ask(prefix, d, f"after-{d}")["version"] == "1"
        assert f"{prefix}/fleet/groups/g/{MODEL}" not in watcher.latest  # never published
        assert watcher.latest[f"{prefix}/fleet/devices/a/{MODEL}"] is None  # pin cleared


def test_a_canary_needs_a_roster_the_operator_signed(
    broker: LocalBroker, prefix: str, versions: dict[str, Path], tmp_path: Path
) -> None:
    from edgewise.edge.runtime.signing import generate_keys

    code, out = deploy_canary(broker, prefix, versions["2"])
    assert code == 1 and f"no roster on {prefix}/fleet/roster" in out, out
    other, other_pub = generate_keys(tmp_path / "other")
    publish_roster(broker, prefix, tmp_path, {"g": ["a", "b"]}, "--key", str(other))
    code, out = deploy_canary(broker, prefix, versions["2"])
    assert code == 1 and "roster is signed by key" in out and "not trusted here" in out, out
    assert "Traceback" not in out
    where = ("--broker", broker.url, "--prefix", prefix)
    shown = cli("roster", "show", *where)  # trusts the public half of the operator key
    assert shown.returncode == 1 and "not trusted here" in shown.stderr, shown.stderr
    shown = cli("roster", "show", *where, "--trusted-key", str(other_pub))
    assert shown.returncode == 0 and shown.stdout == "group g: a, b\n", shown.stdout
