"""The desired state of one model on a device or group: what ``edgewise deploy`` publishes.

A retained JSON document on ``{prefix}/fleet/{devices|groups}/{name}/{model}``::

    {"model": "iris", "version": "2", "bundle": "<pack sha256>", "mode": "active",
     "id": "<deployment id>", "at": "2026-11-25T21:00:00+00:00"}

``bundle`` null means the model is to be removed (``edgewise undeploy``); ``mode`` is
``active`` or ``shadow``. ``id`` names one roll-out: a device that refused it does not
try the same id again, a new ``deploy`` (a new id) does.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edgewise.edge.errors import EdgewiseError
from edgewise.edge.transfer import Sha256

MAX_DESIRED_BYTES = 4096
Name = Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[^/+#\x00]+$")]


class Desired(BaseModel):
    """One desired state; unknown keys and wrong types are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    model: Name
    version: Annotated[str, Field(max_length=256)] | None = None
    bundle: Sha256 | None
    mode: Literal["active", "shadow"] = "active"
    id: Annotated[str, Field(min_length=1, max_length=64)]
    at: Annotated[str, Field(max_length=64)] | None = None

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

    def to_json(self) -> bytes:
        return json.dumps(self.model_dump(), separators=(",", ":")).encode()

    def as_doc(self) -> dict[str, Any]:
        return self.model_dump()
