"""``edgewise deploy --group G --canary N``: a few of the group's devices first.

The canaries are the first N members of the group in the operator's signed roster
(``edge.remote.roster``) that report health, never devices that merely say they are in the group.
A canary passes on evidence the device cannot make up alone: besides its own deployment
document (active, not rolled back), the operator sends the bundle's self-test inputs as
ordinary requests on the device's request topic, and every answer must come from the new
version and match the answers the bundle gave on the host. Only then does the group's
desired state change. docs/fleet.md#canaries.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from edgewise.edge.errors import EdgewiseError
from edgewise.edge.link.fleet_topics import Target
from edgewise.edge.remote.fleet_client import FleetLink, Progress, clear, follow, set_desired
from edgewise.edge.runtime.desired import Desired

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from edgewise.edge.remote.roster import Roster
    from edgewise.edge.runtime.bundle import Bundle

PROBE_TIMEOUT_S = 30.0
MAX_PROBES = 64


def probes(bundle: Bundle) -> tuple[list[Any], list[dict[str, Any]], float] | None:
    """The bundle's self-test inputs, expected answers and tolerance (None without one)."""
    spec = bundle.manifest.selftest
    if spec is None:
        return None
    try:
        doc = json.loads((bundle.path / spec.file).read_bytes())
        instances, expected = doc["instances"][:MAX_PROBES], doc["expected"][:MAX_PROBES]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise EdgewiseError(
            f"{bundle.path}: self-test file {spec.file} is unusable ({exc})"
        ) from None
    return instances, expected, float(spec.tolerance)


def probe(
    link: FleetLink,
    device: str,
    want: Desired,
    check: tuple[list[Any], list[dict[str, Any]], float],
    timeout: float = PROBE_TIMEOUT_S,
) -> str | None:
    """Ask ``device`` the probes on its own request topic; None when every answer came from
    ``want``'s version and matches, else what was wrong."""
    from edgewise.edge.runtime.selftest import compare

    instances, expected, tol = check
    base = f"{link.prefix}/{device}/{want.model}"
    for kind in ("out", "error"):
        link.conn.subscribe(f"{base}/{kind}", 1)
    rid = f"canary-{want.id}"
    time.sleep(0.2)  # the SUBACK before the request (paho sends in order; the broker too)
    body = json.dumps({"id": rid, "instances": instances}).encode()
    link.conn.publish(f"{base}/in", body, qos=1).wait_for_publish(10)
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        msg = link.next(min(left, 0.5))
        if msg is None or msg.topic not in (f"{base}/out", f"{base}/error"):
            continue
        try:
            doc = json.loads(msg.payload)
        except (ValueError, RecursionError):
            continue
        if not isinstance(doc, dict) or doc.get("id") != rid:
            continue
        if msg.topic.endswith("/error"):
            return f"probe refused: {str(doc.get('code'))[:40]}: {str(doc.get('message'))[:120]}"
        if doc.get("version") != want.version:
            return f"probe answered by v{str(doc.get('version'))[:40]}, not v{want.version}"
        got = doc.get("predictions")
        if not isinstance(got, list) or len(got) != len(expected):
            return "probe answer does not hold one prediction per input"
        misses = sum(
            1
            for e, g in zip(expected, got)
            if not isinstance(g, dict) or compare(e, g, tol) is None
        )
        if misses:
            return f"{misses} of {len(expected)} probe answers differ from the host's"
        return None
    return f"no answer to the probe requests within {timeout:g}s"


def run_canary(
    link: FleetLink,
    roster: Roster,
    group: str,
    count: int,
    want: Desired,
    key: Ed25519PrivateKey,
    bundle: Bundle,
    timeout: float,
    say: Callable[[str], None],
) -> int:
    """Deploy to ``count`` roster members of ``group`` first, probe them, then the group."""
    members = roster.members(group)
    reporting = [d for d in members if link.retained.get(f"{link.prefix}/{d}/health")]
    if len(reporting) <= count:
        raise EdgewiseError(
            f"group {group!r} has {len(reporting)} of {len(members)} roster member(s) "
            f"reporting health; --canary {count} needs more"
        )
    check = probes(bundle)
    first = reporting[:count]
    pins = [Target("devices", d, want.model) for d in first]
    say(f"canary: {', '.join(first)} first")
    set_desired(link, pins, want, key)
    # Done when serving (probation goes on on the device, which rolls back by itself);
    # whether it serves the new version right is the probes' to say, not its report's.
    canary = Progress(want.id, want.model, first)
    ok = follow(link, canary, timeout, say)
    if ok and want.mode == "active":
        if check is None:
            say("canary: the bundle holds no self-test inputs to probe with; judged by the "
                "devices' own reports")  # fmt: skip
        for device in first:
            if check is None:
                break
            wrong = probe(link, device, want, check)
            say(f"{device}: probes {'passed' if wrong is None else 'failed: ' + wrong}")
            ok = ok and wrong is None
        for device in first:  # a roll-back during the probes fails the canary too
            raw = link.retained.get(f"{link.prefix}/{device}/{want.model}/deployment", b"")
            with contextlib.suppress(ValueError, RecursionError):
                doc = json.loads(raw)
                if isinstance(doc, dict):
                    canary.update(device, doc)
        ok = ok and not canary.failed()
    clear(link, [link.fleet.desired(t) for t in pins])  # the canaries follow the group again
    if not ok:
        say(f"canary failed: the rest of {group} stays on its version")
        return 1
    set_desired(link, [Target("groups", group, want.model)], want, key)
    say(f"canary passed: deploying to the rest of {group}")
    rest = Progress(want.id, want.model, reporting)
    rest.states = dict(canary.states)
    return 0 if follow(link, rest, timeout, say) else 1
