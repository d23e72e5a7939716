"""Topics of fleet roll-outs (docs/fleet.md), all under ``{prefix}/fleet/``.

- ``{prefix}/fleet/bundles/{sha256}/index``: a bundle's index (``edge.runtime.transfer``), retained.
- ``{prefix}/fleet/bundles/{sha256}/{i}``: its chunk ``i``, retained.
- ``{prefix}/fleet/devices/{device}/{model}``: the desired state of a model on a device.
- ``{prefix}/fleet/groups/{group}/{model}``: the same for every device in a group.
- ``{prefix}/fleet/roster``: the operator's signed roster of groups and pools
  (``edge.remote.roster``), retained.

A device's own desired state wins over its groups'. ``fleet`` is refused as a device id
(``edge.link.topics.check_device``), so none of these mixes with a device's topics.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from edgewise.edge.errors import EdgewiseError
from edgewise.edge.link.topics import FLEET_LEVEL, check_segment

SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Target:
    """Where a desired state applies: one device, or every device of a group."""

    kind: str  # "devices" or "groups"
    name: str
    model: str


@dataclass(frozen=True)
class FleetTopics:
    """Topic names of roll-outs under one prefix."""

    prefix: str

    @property
    def root(self) -> str:
        return f"{self.prefix}/{FLEET_LEVEL}"

    @property
    def roster(self) -> str:
        return f"{self.root}/roster"

    def index(self, sha256: str) -> str:
        return f"{self.root}/bundles/{sha256}/index"

    def chunk(self, sha256: str, i: int) -> str:
        return f"{self.root}/bundles/{sha256}/{i}"

    def bundle_filter(self, sha256: str) -> str:
        """The index and every chunk of one bundle."""
        return f"{self.root}/bundles/{sha256}/+"

    @property
    def all_indexes(self) -> str:
        return f"{self.root}/bundles/+/index"

    def desired(self, target: Target) -> str:
        return f"{self.root}/{target.kind}/{target.name}/{target.model}"

    def desired_filter(self, kind: str, name: str = "+") -> str:
        """Every model's desired state for one device or group (``+``: all of them)."""
        return f"{self.root}/{kind}/{name}/+"

    def parse_desired(self, topic: str) -> Target | None:
        """The target a desired-state topic names, or None for any other topic."""
        head = f"{self.root}/"
        if not topic.startswith(head):
            return None
        parts = topic[len(head) :].split("/")
        if len(parts) != 3 or parts[0] not in ("devices", "groups") or not all(parts):
            return None
        return Target(parts[0], parts[1], parts[2])

    def parse_bundle(self, topic: str) -> tuple[str, int | None] | None:
        """(sha256, chunk number or None for the index) of a bundle topic, else None."""
        head = f"{self.root}/bundles/"
        if not topic.startswith(head):
            return None
        parts = topic[len(head) :].split("/")
        if len(parts) != 2 or not SHA256.fullmatch(parts[0]):
            return None
        if parts[1] == "index":
            return parts[0], None
        if parts[1].isdigit() and len(parts[1]) <= 6:
            return parts[0], int(parts[1])
        return None


def check_group(name: str) -> str:
    """A group name: one topic level, printable, at most 128 characters."""
    check_segment("group", name)
    if not name.isprintable() or len(name) > 128:
        raise EdgewiseError(f"group {name!r} must be printable and at most 128 characters")
    return name
