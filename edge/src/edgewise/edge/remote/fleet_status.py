"""What the operator's fleet commands read from the broker's retained state: the
``edgewise fleet`` table (desired vs reported per device and model, stale devices, pins),
why a device does not follow a roll-out, and the topics ``fleet forget`` clears.

Every document here came from the broker, so each is read defensively: a field of the
wrong type is shown as ``?``, never a traceback.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from typing import Any

from edgewise.edge.errors import EdgewiseError
from edgewise.edge.runtime.desired import Desired

STALE_AFTER = 3  # health intervals without a report before a device reads "stale"
DEFAULT_INTERVAL_S = 30.0  # the agent's default health interval


def finite_number(value: Any) -> float | None:
    """A JSON number as a float, or None: booleans, strings, NaN, infinities and integers
    too large for a float (a 400-digit one from a hostile document) are not numbers here."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _json(payload: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(payload) if len(payload) <= 1 << 20 else None
    except (ValueError, RecursionError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _text(value: Any, limit: int = 40) -> str:
    return str(value)[:limit] if isinstance(value, (str, int, float)) else "?"


def _desired(payload: bytes | None) -> Desired | None:
    if not payload:
        return None
    try:
        return Desired.parse(payload)
    except EdgewiseError:
        return None


@dataclass
class DeviceView:
    """One device as its retained topics describe it."""

    name: str
    status: str = "?"
    health: dict[str, Any] = field(default_factory=dict)
    deployments: dict[str, dict[str, Any]] = field(default_factory=dict)
    shadows: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def groups(self) -> list[str]:
        groups = self.health.get("groups")
        return [_text(g) for g in groups] if isinstance(groups, list) else []

    def health_age(self, now: float) -> float | None:
        t = finite_number(self.health.get("time"))
        return None if t is None else now - t

    def state(self, now: float, interval: float = DEFAULT_INTERVAL_S) -> str:
        """online / offline / stale (online, but no health for STALE_AFTER intervals)."""
        age = self.health_age(now)
        if self.status == "online" and (age is None or age > STALE_AFTER * interval):
            return "stale"
        return self.status


def devices(retained: dict[str, bytes], prefix: str) -> dict[str, DeviceView]:
    """Every device with a retained status, health, deployment or shadow topic."""
    out: dict[str, DeviceView] = {}
    for topic, payload in retained.items():
        parts = topic.split("/")
        if parts[0] != prefix or len(parts) not in (3, 4) or parts[1] == "fleet":
            continue
        dev = out.setdefault(parts[1], DeviceView(parts[1]))
        if len(parts) == 3 and parts[2] == "status":
            dev.status = payload.decode("utf-8", "replace")[:20] or "?"
        elif len(parts) == 3 and parts[2] == "health":
            dev.health = _json(payload)
        elif len(parts) == 4 and parts[3] == "deployment":
            dev.deployments[parts[2]] = _json(payload)
        elif len(parts) == 4 and parts[3] == "shadow":
            dev.shadows[parts[2]] = _json(payload)
    return out


def desired_for(
    retained: dict[str, bytes], prefix: str, device: str, groups: list[str], model: str
) -> tuple[str, Desired] | None:
    """What the device should run for ``model``, and where that comes from: its own
    desired state (a pin) wins over its groups', in the order the device lists them."""
    own = _desired(retained.get(f"{prefix}/fleet/devices/{device}/{model}"))
    if own is not None:
        return "pin", own
    for group in groups:
        got = _desired(retained.get(f"{prefix}/fleet/groups/{group}/{model}"))
        if got is not None:
            return f"group {group}", got
    return None


def _wanted_text(found: tuple[str, Desired] | None) -> str:
    if found is None:
        return "-"
    source, want = found
    what = "remove" if want.bundle is None else f"v{want.version}"
    return f"{what} {want.mode if want.bundle else ''} ({source})".replace("  ", " ")


def fleet_rows(
    retained: dict[str, bytes], prefix: str, now: float | None = None
) -> list[list[str]]:
    """The ``edgewise fleet`` table: per device and model, the desired state (and whether
    a device-level pin sets it) and what the device reported on its deployment topic,
    which is live (health's model list is up to one interval old and is not mixed in)."""
    now = time.time() if now is None else now
    rows = []
    for name, dev in sorted(devices(retained, prefix).items()):
        models_doc = dev.health.get("models")
        served = set(models_doc) if isinstance(models_doc, dict) else set()
        pinned = {
            t.split("/")[-1]
            for t in retained
            if t.startswith(f"{prefix}/fleet/devices/{name}/") and retained[t]
        }
        models = sorted(set(dev.deployments) | served | pinned) or ["-"]
        age = dev.health_age(now)
        for model in models:
            dep = dev.deployments.get(model, {})
            reported = _text(dep.get("state", "-"))
            if dep.get("version") is not None:
                reported += f" v{_text(dep.get('version'))}"
            if dep.get("state") in ("failed", "rolled_back") and dep.get("reason"):
                reported += f": {_text(dep.get('reason'), 60)}"
            shadow = dev.shadows.get(model, {})
            rows.append([
                name,
                dev.state(now),
                ",".join(dev.groups) or "-",
                model,
                _wanted_text(desired_for(retained, prefix, name, dev.groups, model)),
                reported,
                f"v{_text(shadow.get('version'))} agree {_text(shadow.get('agreement'))}"
                if shadow else "-",
                f"{age:.0f}s ago" if age is not None else "-",
            ])  # fmt: skip
    return rows


FLEET_HEAD = ["DEVICE", "STATUS", "GROUPS", "MODEL", "DESIRED", "REPORTED", "SHADOW", "HEALTH"]


def waiting_reason(
    retained: dict[str, bytes],
    prefix: str,
    device: str,
    model: str,
    deployment: str,
    group: str | None,
) -> tuple[bool, str] | None:
    """Why ``device`` is not following roll-out ``deployment`` (True: it never will
    until the operator acts; False: it may still), from its retained documents."""
    dev = devices(retained, prefix).get(device, DeviceView(device))
    if dev.health.get("remote_deploy") is False:
        return True, (
            "trusts no operator key (its health says remote_deploy false), so it ignores "
            "roll-outs: start its agent with --trusted-key"
        )
    if group is not None:
        own = _desired(retained.get(f"{prefix}/fleet/devices/{device}/{model}"))
        if own is not None and own.id != deployment:
            what = "removal" if own.bundle is None else f"v{own.version}"
            return True, (
                f"a device-level desired state ({what}, deployment {own.id}, left by a deploy "
                f"--device or a rollback) overrides group {group}'s: `edgewise fleet unpin "
                f"{device} --model {model}` lets the group's apply"
            )
    dep = dev.deployments.get(model, {})
    if dep.get("state") == "failed" and dep.get("deployment") in (None, deployment):
        return True, f"failed: {_text(dep.get('reason'), 300)}"
    state = dev.state(time.time())
    if state in ("offline", "stale", "?"):
        seen = dev.health_age(time.time())
        since = f", last health {seen:.0f}s ago" if seen is not None else ""
        return False, f"{state}{since}: it follows the desired state when it is back"
    if dep:
        return False, f"still {_text(dep.get('state'))} (deployment {_text(dep.get('deployment'))})"
    return False, "online, but it has said nothing about this model yet"


def device_topics(retained: dict[str, bytes], prefix: str, device: str) -> list[str]:
    """The retained topics ``fleet forget`` clears: the device's own and its pins."""
    mine = (f"{prefix}/{device}/", f"{prefix}/fleet/devices/{device}/")
    return sorted(t for t, p in retained.items() if p and t.startswith(mine))
