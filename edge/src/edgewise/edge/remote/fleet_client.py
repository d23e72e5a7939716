"""The operator's side of roll-outs: publish bundles and desired states, follow devices.

Used by ``edgewise deploy / rollback / promote / undeploy / fleet / bundles gc``
(``edge.remote.fleet_cli``). Only paho (``edge.link.mqtt``) and the standard library: it runs where
the edge extra is installed, on a laptop or on a gateway.
"""

from __future__ import annotations

import contextlib
import json
import queue
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from edgewise.edge.errors import EdgewiseError
from edgewise.edge.link.endpoint import Endpoint
from edgewise.edge.link.fleet_topics import FleetTopics, Target
from edgewise.edge.link.message import Message
from edgewise.edge.link.mqtt import MqttConnection
from edgewise.edge.remote.client import connect
from edgewise.edge.runtime.desired import Desired
from edgewise.edge.runtime.transfer import BundleIndex

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

CONNECT_TIMEOUT = 10.0
SETTLE_S = 0.5  # retained messages arrive right after the SUBACK; quiet this long: all came
DONE = {"active", "shadow", "removed"}
FAILED = {"failed", "rolled_back"}


def _json(payload: bytes) -> dict[str, Any] | None:
    try:
        doc = json.loads(payload)
    except (ValueError, RecursionError):
        return None
    return doc if isinstance(doc, dict) else None


class FleetLink:
    """One operator connection: retained state read on demand, publishes confirmed."""

    def __init__(self, endpoint: Endpoint, prefix: str, protocol: str, filters: list[str]) -> None:
        self.prefix = prefix
        self.fleet = FleetTopics(prefix)
        self.conn: MqttConnection
        self.conn, self.inbox = connect(
            endpoint, protocol, [(f, 1) for f in filters], CONNECT_TIMEOUT
        )
        self.retained: dict[str, bytes] = {}

    def close(self) -> None:
        self.conn.stop(final_status=None, timeout=2)

    def settle(self, limit: float = 5.0) -> dict[str, bytes]:
        """Read messages until none came for SETTLE_S (at most ``limit`` seconds)."""
        deadline = time.monotonic() + limit
        while (left := deadline - time.monotonic()) > 0:
            try:
                msg = self.inbox.get(timeout=min(SETTLE_S, left))
            except queue.Empty:
                break
            self._keep(msg)
        return self.retained

    def _keep(self, msg: Message) -> None:
        if msg.payload:
            self.retained[msg.topic] = msg.payload
        else:
            self.retained.pop(msg.topic, None)

    def next(self, timeout: float) -> Message | None:
        try:
            msg = self.inbox.get(timeout=max(timeout, 0.0))
        except queue.Empty:
            return None
        self._keep(msg)
        return msg

    def publish(self, items: Iterable[tuple[str, bytes]], timeout: float = 60.0) -> None:
        """Publish retained at QoS 1 and wait until the broker has every one."""
        handles = [self.conn.publish(t, p, qos=1, retain=True) for t, p in items]
        deadline = time.monotonic() + timeout
        for h in handles:
            h.wait_for_publish(max(0.1, deadline - time.monotonic()))
            if not h.is_published():
                raise EdgewiseError(f"the broker did not take the publishes within {timeout:g}s")

    def members(self, group: str) -> list[str]:
        """Devices whose retained health lists ``group``, sorted: what devices say of
        themselves (``edge.remote.roster`` holds what the operator says)."""
        found = []
        for topic, payload in self.retained.items():
            parts = topic.split("/")
            if len(parts) == 3 and parts[0] == self.prefix and parts[2] == "health":
                doc = _json(payload)
                groups = doc.get("groups") if doc is not None else None
                if isinstance(groups, list) and group in groups:
                    found.append(parts[1])
        return sorted(found)


def publish_bundle(link: FleetLink, index: BundleIndex, blob: bytes) -> None:
    """The chunks, then the index (a device that sees the index finds every chunk)."""
    chunks = (
        (link.fleet.chunk(index.sha256, i), blob[i * index.chunk_size : (i + 1) * index.chunk_size])
        for i in range(len(index.chunks))
    )
    link.publish(chunks)
    link.publish([(link.fleet.index(index.sha256), index.model_dump_json().encode())])


@dataclass
class Progress:
    """What each device said about one deployment id."""

    deployment: str
    model: str
    devices: list[str]
    need_probation: bool = False
    states: dict[str, dict[str, Any]] = field(default_factory=dict)

    def update(self, device: str, doc: dict[str, Any]) -> bool:
        """Record a deployment document; True when it changed what is shown."""
        if device not in self.devices or doc.get("deployment") != self.deployment:
            return False
        changed = self.states.get(device) != doc
        self.states[device] = doc
        return changed

    def done(self, device: str) -> bool:
        doc = self.states.get(device)
        if doc is None:
            return False
        if doc.get("state") in FAILED:
            return True
        if doc.get("state") not in DONE:
            return False
        probation = doc.get("probation")
        return not self.need_probation or probation in (None, "passed")

    def failed(self) -> dict[str, str]:
        return {
            d: f"{doc.get('state')}: {doc.get('reason', '')}"
            for d, doc in self.states.items()
            if doc.get("state") in FAILED
        }


def describe(doc: dict[str, Any]) -> str:
    """One line for a deployment document."""
    state = str(doc.get("state"))
    if state == "downloading" and doc.get("chunks"):
        state += f" {doc.get('received')}/{doc.get('chunks')} chunks"
    if doc.get("version"):
        state += f" (serving v{doc['version']})"
    if doc.get("probation"):
        state += f", probation {doc['probation']}"
    if doc.get("reason"):
        state += f": {doc['reason']}"
    return state


Why = Callable[[str], "tuple[bool, str] | None"]


def follow(
    link: FleetLink,
    progress: Progress,
    timeout: float,
    say: Callable[[str], None],
    why: Why | None = None,
) -> bool:
    """Print each device's state as it changes until all are done; True if none failed.
    ``why(device)``: the device's own reason for not following, from its retained state
    (``fleet_status.waiting_reason``); a reason that needs the operator ends the wait for
    that device at once, and every device still waiting at the timeout gets its reason."""
    topic_model = f"/{progress.model}/deployment"
    for topic, payload in list(link.retained.items()):
        _note(link, progress, topic, payload, topic_model, say)
    blocked: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    while not all(progress.done(d) or d in blocked for d in progress.devices):
        for device in progress.devices:
            if why is None or progress.done(device) or device in blocked:
                continue
            found = why(device)
            if found is not None and found[0]:
                blocked[device] = found[1]
                say(f"{device}: not following: {found[1]}")
        left = deadline - time.monotonic()
        if left <= 0:
            waiting = [d for d in progress.devices if not progress.done(d) and d not in blocked]
            say(f"timed out after {timeout:g}s waiting for {', '.join(waiting)}")
            for device in waiting:
                found = why(device) if why is not None else None
                if found is not None:
                    say(f"{device}: {found[1]}")
            return False
        msg = link.next(min(left, 0.5))
        if msg is not None:
            _note(link, progress, msg.topic, msg.payload, topic_model, say)
    failed = progress.failed()
    for device, reason in failed.items():
        say(f"{device}: {reason}")
    return not failed and not blocked


def _note(
    link: FleetLink,
    progress: Progress,
    topic: str,
    payload: bytes,
    suffix: str,
    say: Callable[[str], None],
) -> None:
    if not topic.startswith(link.prefix + "/") or not topic.endswith(suffix):
        return
    device = topic[len(link.prefix) + 1 : -len(suffix)]
    doc = _json(payload)
    if doc is not None and progress.update(device, doc):
        say(f"{device}: {describe(doc)}")


def desired_targets(model: str, devices: list[str], group: str | None) -> list[Target]:
    """The desired-state targets of a command: the group's, or one per device."""
    if group is not None:
        return [Target("groups", group, model)]
    return [Target("devices", d, model) for d in devices]


def set_desired(
    link: FleetLink, targets: list[Target], want: Desired, key: Ed25519PrivateKey
) -> None:
    """Publish ``want`` on each target, signed with ``key`` for that target, with a
    sequence above the one retained there (and at least the clock in microseconds)."""
    items = []
    for target in targets:
        topic = link.fleet.desired(target)
        last = -1
        # (A document that does not parse says nothing about sequences.)
        with contextlib.suppress(EdgewiseError):
            if topic in link.retained:
                last = Desired.parse(link.retained[topic]).seq or -1
        seq = max(time.time_ns() // 1000, last + 1)
        items.append((topic, want.signed(f"{target.kind}/{target.name}", seq, key).to_json()))
    link.publish(items)


def clear(link: FleetLink, topics: list[str]) -> None:
    link.publish([(t, b"") for t in topics])


def unreferenced_bundles(retained: dict[str, bytes], fleet: FleetTopics) -> list[BundleIndex]:
    """Bundles on the broker that no desired state names (``edgewise bundles gc``)."""
    used: set[str] = set()
    indexes: list[BundleIndex] = []
    for topic, payload in retained.items():
        if fleet.parse_desired(topic) is not None:
            try:
                bundle = Desired.parse(payload).bundle
            except EdgewiseError:
                continue
            if bundle:
                used.add(bundle)
        elif (parsed := fleet.parse_bundle(topic)) is not None and parsed[1] is None:
            try:
                indexes.append(BundleIndex.parse(payload))
            except EdgewiseError:
                continue
    return [i for i in indexes if i.sha256 not in used]
