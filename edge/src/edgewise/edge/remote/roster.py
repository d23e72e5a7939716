"""The operator's roster: which devices are in which groups and pools.

A device's own config says which groups' desired states it follows and which pool it
serves, but what the operator decides from (a canary is chosen among a group's members,
a device may join a pool's shared subscription) comes from the roster, which only the
operator writes: a TOML file in the operator's hands::

    [groups]
    line = ["pi-1", "pi-2", "pi-3"]

    [pools]
    line-3 = ["pi-1", "pi-2"]

``edgewise roster publish`` signs it with the operator key and retains it on
``{prefix}/fleet/roster``; ``deploy --group --canary`` reads it from there and takes it
only when a key it trusts signed it. ``edgewise roster acl`` writes the broker ACL lines
that let exactly the pools' members join their pools' shared subscriptions.
docs/fleet.md#roster.
"""

from __future__ import annotations

import base64
import binascii
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from edgewise.edge.errors import EdgewiseError
from edgewise.edge.link.topics import POOL_LEVEL, check_device, check_pool
from edgewise.edge.runtime.desired import Signature

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

MAX_ROSTER_BYTES = 1 << 20
MAX_MEMBERS = 10_000
Members = Annotated[tuple[str, ...], Field(max_length=MAX_MEMBERS)]


def _names(kind: str, table: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
    for name, members in table.items():
        check_pool(name)  # a group name obeys a pool's rules: one printable topic level
        for device in members:
            check_device(device)
        if len(set(members)) != len(members):
            raise ValueError(f"{kind[:-1]} {name!r} lists a device twice")
    return table


class Roster(BaseModel):
    """Groups and pools, each a list of device ids; unknown keys and bad names refused."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    groups: dict[str, Members] = Field(default_factory=dict, max_length=MAX_MEMBERS)
    pools: dict[str, Members] = Field(default_factory=dict, max_length=MAX_MEMBERS)
    seq: Annotated[int, Field(ge=0, lt=1 << 63)] | None = None
    signature: Signature | None = None

    @field_validator("groups", "pools", mode="before")
    @classmethod
    def _lists(cls, value: Any) -> Any:
        # TOML and JSON give lists; the model keeps tuples (frozen).
        if isinstance(value, dict):
            return {k: tuple(v) if isinstance(v, list) else v for k, v in value.items()}
        return value

    @field_validator("groups", "pools")
    @classmethod
    def _valid_names(
        cls, value: dict[str, tuple[str, ...]], info: ValidationInfo
    ) -> dict[str, tuple[str, ...]]:
        try:
            return _names(str(info.field_name), value)
        except EdgewiseError as exc:
            raise ValueError(str(exc)) from None

    @classmethod
    def load(cls, path: str | Path) -> Roster:
        """The operator's roster file (TOML); EdgewiseError names the file and the problem."""
        p = Path(path)
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except OSError as exc:
            raise EdgewiseError(f"roster {p}: {exc.strerror or exc}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise EdgewiseError(f"roster {p}: not TOML ({exc})") from None
        if "seq" in data or "signature" in data:
            raise EdgewiseError(f"roster {p}: seq and signature are written by `roster publish`")
        return cls._validated(data, f"roster {p}")

    @classmethod
    def parse(cls, payload: bytes) -> Roster:
        """The retained document from the broker; EdgewiseError names the first problem."""
        if len(payload) > MAX_ROSTER_BYTES:
            raise EdgewiseError(f"roster: {len(payload)} bytes; at most {MAX_ROSTER_BYTES}")
        try:
            data = json.loads(payload)
        except (ValueError, RecursionError):
            raise EdgewiseError("roster: not JSON") from None
        return cls._validated(data, "roster")

    @classmethod
    def _validated(cls, data: Any, where: str) -> Roster:
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            at = ".".join(str(p) for p in first["loc"]) or "document"
            raise EdgewiseError(f"{where}: {at}: {first['msg']}") from None

    def _signed_bytes(self) -> bytes:
        doc = self.model_dump(exclude={"signature"})
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()

    def signed(self, seq: int, key: Ed25519PrivateKey) -> Roster:
        """This roster with sequence ``seq``, signed by ``key``."""
        from edgewise.edge.runtime.signing import key_id

        unsigned = self.model_copy(update={"seq": seq, "signature": None})
        sig = base64.b64encode(key.sign(unsigned._signed_bytes())).decode()
        return unsigned.model_copy(
            update={"signature": Signature(kid=key_id(key.public_key()), sig=sig)}
        )

    def to_json(self) -> bytes:
        return json.dumps(self.model_dump(), separators=(",", ":")).encode()

    def verify(self, trusted: Sequence[Ed25519PublicKey]) -> str:
        """The id of the trusted key that signed this roster; EdgewiseError says why not."""
        from cryptography.exceptions import InvalidSignature

        from edgewise.edge.runtime.signing import key_id

        if self.signature is None or self.seq is None:
            raise EdgewiseError("roster is not signed by an operator key")
        key = {key_id(k): k for k in trusted}.get(self.signature.kid)
        if key is None:
            raise EdgewiseError(f"roster is signed by key {self.signature.kid}, not trusted here")
        try:
            key.verify(base64.b64decode(self.signature.sig, validate=True), self._signed_bytes())
        except (InvalidSignature, binascii.Error, ValueError):
            raise EdgewiseError("roster: bad signature (changed after signing?)") from None
        return self.signature.kid

    @classmethod
    def published(
        cls, retained: Mapping[str, bytes], topic: str, trusted: Sequence[Ed25519PublicKey]
    ) -> Roster:
        """The roster retained on ``topic``, verified; EdgewiseError says what is missing
        or wrong."""
        payload = retained.get(topic)
        if not payload:
            raise EdgewiseError(f"no roster on {topic}: edgewise roster publish ROSTER --key KEY")
        roster = cls.parse(payload)
        roster.verify(trusted)
        return roster

    def members(self, group: str) -> list[str]:
        """The devices of ``group``, in the roster's order; EdgewiseError if it has none."""
        found = self.groups.get(group)
        if not found:
            known = ", ".join(sorted(self.groups)) or "none"
            raise EdgewiseError(f"the roster has no group {group!r} (groups: {known})")
        return list(found)

    def acl(self, prefix: str) -> str:
        """Mosquitto ACL lines: each pool member may join its pools' shared subscriptions.

        Appended to the shipped ACL (deploy/mosquitto/acl), which gives no device a pool.
        """
        lines = [
            "# Generated by `edgewise roster acl` from the operator's roster: the pools'",
            "# members, each allowed to read its pools' requests (and so join their MQTT 5",
            "# shared subscriptions). Regenerate it when the roster changes.",
        ]
        by_device: dict[str, list[str]] = {}
        for pool, devices in sorted(self.pools.items()):
            for device in devices:
                by_device.setdefault(device, []).append(pool)
        for device, pools in sorted(by_device.items()):
            lines.append("")
            lines.append(f"user {device}")
            lines.extend(f"topic read {prefix}/{POOL_LEVEL}/{p}/+/in" for p in pools)
        return "\n".join(lines) + "\n"
