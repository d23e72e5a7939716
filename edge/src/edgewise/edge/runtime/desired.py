"""The desired state of one model on a device or group: what ``edgewise deploy`` publishes.

A retained JSON document on ``{prefix}/fleet/{devices|groups}/{name}/{model}``::

    {"model": "iris", "version": "2", "bundle": "<pack sha256>", "mode": "active",
     "id": "<deployment id>", "at": "2026-11-25T21:00:00+00:00"}

``bundle`` null means the model is to be removed (``edgewise undeploy``); ``mode`` is
``active`` or ``shadow``. ``id`` names one roll-out: a device that refused it does not
try the same id again, a new ``deploy`` (a new id) does.

Every desired state is signed by an operator key (Ed25519, the keys bundles are signed
with) and bound to its topic: ``target`` (``devices/pi-1`` or ``groups/line-3``), a
sequence number ``seq`` that grows per target (the operator's clock in microseconds, above
the last one on the broker), and ``rollback`` when it may go to an older version. The
signature covers every other field (canonical JSON), so a document cannot be replayed on
another topic, edited, or replayed after a newer one (``edge.fleet.reconcile`` keeps the last
sequence applied per target across restarts). docs/fleet.md#threat-model.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edgewise.edge.errors import EdgewiseError
from edgewise.edge.runtime.transfer import Sha256

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

MAX_DESIRED_BYTES = 4096
Name = Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[^/+#\x00]+$")]


class Signature(BaseModel):
    """Who signed a desired state (``kid``: edge.runtime.signing.key_id) and the base64
    signature."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    kid: Annotated[str, Field(min_length=1, max_length=64)]
    sig: Annotated[str, Field(min_length=1, max_length=128)]


class Desired(BaseModel):
    """One desired state; unknown keys and wrong types are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    model: Name
    version: Annotated[str, Field(max_length=256)] | None = None
    bundle: Sha256 | None
    mode: Literal["active", "shadow"] = "active"
    id: Annotated[str, Field(min_length=1, max_length=64)]
    at: Annotated[str, Field(max_length=64)] | None = None
    target: Annotated[str, Field(max_length=300)] | None = None
    seq: Annotated[int, Field(ge=0, lt=1 << 63)] | None = None
    rollback: bool = False
    signature: Signature | None = None

    @classmethod
    def new(
        cls, model: str, bundle: str | None, version: str | None = None, mode: str = "active"
    ) -> Desired:
        """A desired state with a fresh deployment id and the time now."""
        return cls.model_validate(
            {
                "model": model,
                "version": version,
                "bundle": bundle,
                "mode": mode,
                "id": uuid.uuid4().hex[:16],
                "at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            }
        )

    @classmethod
    def parse(cls, payload: bytes) -> Desired:
        """A document from the broker; EdgewiseError names the first problem."""
        if len(payload) > MAX_DESIRED_BYTES:
            raise EdgewiseError(f"desired state: {len(payload)} bytes; at most {MAX_DESIRED_BYTES}")
        try:
            return cls.model_validate_json(payload)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "document"
            raise EdgewiseError(f"desired state: {where}: {first['msg']}") from None

    def _doc(self) -> dict[str, Any]:
        # Unset optional fields are left out; ``bundle: null`` (a removal) is the document.
        return {k: v for k, v in self.model_dump().items() if v is not None or k == "bundle"}

    def to_json(self) -> bytes:
        return json.dumps(self._doc(), separators=(",", ":")).encode()

    def _signed_bytes(self) -> bytes:
        doc = {k: v for k, v in self._doc().items() if k != "signature"}
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()

    def signed(self, target: str, seq: int, key: Ed25519PrivateKey) -> Desired:
        """This desired state for ``target`` (``devices/pi-1``), sequence ``seq``, signed."""
        from edgewise.edge.runtime.signing import key_id

        unsigned = self.model_copy(update={"target": target, "seq": seq, "signature": None})
        sig = key.sign(unsigned._signed_bytes())
        kid = key_id(key.public_key())
        return unsigned.model_copy(
            update={"signature": Signature(kid=kid, sig=base64.b64encode(sig).decode())}
        )

    def verify(self, target: str, trusted: Sequence[Ed25519PublicKey]) -> str:
        """The id of the trusted key that signed this document for ``target``;
        EdgewiseError says why not (unsigned, unknown key, bad signature, other topic)."""
        from cryptography.exceptions import InvalidSignature

        from edgewise.edge.runtime.signing import key_id

        if self.signature is None or self.seq is None:
            raise EdgewiseError("desired state is not signed by an operator key")
        if self.target != target:
            raise EdgewiseError(
                f"desired state was signed for {str(self.target)[:80]!r}, not {target!r}"
            )
        keys = {key_id(k): k for k in trusted}
        key = keys.get(self.signature.kid)
        if key is None:
            raise EdgewiseError(
                f"desired state is signed by key {self.signature.kid}, not trusted here"
            )
        try:
            key.verify(base64.b64decode(self.signature.sig, validate=True), self._signed_bytes())
        except (InvalidSignature, binascii.Error, ValueError):
            raise EdgewiseError("desired state: bad signature (changed after signing?)") from None
        return self.signature.kid


def version_key(version: str | None) -> tuple[int, ...] | None:
    """``"2.10"`` -> ``(2, 10)``; None when a version is not dotted numbers (not ordered)."""
    if not version:
        return None
    parts = version.lstrip("vV").split(".")
    if not all(p.isdigit() for p in parts):
        return None
    return tuple(int(p) for p in parts)


def older(version: str | None, than: str | None) -> bool:
    """Whether ``version`` is known to be older than ``than`` (both dotted numbers)."""
    a, b = version_key(version), version_key(than)
    return a is not None and b is not None and a < b

    def as_doc(self) -> dict[str, Any]:
        return self.model_dump()
