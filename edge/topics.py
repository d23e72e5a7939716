"""MQTT topic names (docs/mqtt.md): ``{prefix}/{device}/{model}/{in|out|error|info}``."""

from __future__ import annotations

from dataclasses import dataclass

from edge.errors import EdgewiseError

_FORBIDDEN = set("/+#\x00")


def check_segment(kind: str, value: str) -> str:
    """A device or model name must be one non-empty topic level without wildcards."""
    if not value or _FORBIDDEN & set(value):
        raise EdgewiseError(f"{kind} {value!r} must be non-empty and contain none of / + # NUL")
    return value


@dataclass(frozen=True)
class Topics:
    """Topic names for one device under one prefix."""

    prefix: str
    device: str

    def __post_init__(self) -> None:
        if not self.prefix or "+" in self.prefix or "#" in self.prefix:
            raise EdgewiseError(f"topic prefix {self.prefix!r} must be non-empty, no wildcards")
        check_segment("device", self.device)

    def model(self, model: str, kind: str) -> str:
        return f"{self.prefix}/{self.device}/{model}/{kind}"

    @property
    def requests(self) -> str:
        """Subscription filter for the requests to every model of this device."""
        return f"{self.prefix}/{self.device}/+/in"

    @property
    def status(self) -> str:
        return f"{self.prefix}/{self.device}/status"

    @property
    def health(self) -> str:
        return f"{self.prefix}/{self.device}/health"

    def model_of(self, topic: str) -> str | None:
        """The model name in a request topic of this device, or None."""
        head = f"{self.prefix}/{self.device}/"
        if not topic.startswith(head) or not topic.endswith("/in"):
            return None
        name = topic[len(head) : -len("/in")]
        return name if name and "/" not in name else None
