"""MQTT topic names (docs/mqtt.md): ``{prefix}/{device}/{model}/{in|out|error|info}``."""

from __future__ import annotations

from dataclasses import dataclass

from edgewise.edge.errors import EdgewiseError

DEFAULT_PREFIX = "edgewise"
DEFAULT_BROKER = "mqtt://127.0.0.1:1883"
_FORBIDDEN = set("/+#\x00")
MAX_DEVICE_LENGTH = 128
MAX_TOPIC_BYTES = 65535  # MQTT: a topic is a UTF-8 string with a two-byte length
# The first level under the prefix that holds fleet roll-outs (edge.fleet_topics): no
# device may take it as its id, or its topics would mix with bundles and desired states.
FLEET_LEVEL = "fleet"


def check_segment(kind: str, value: str) -> str:
    """A device or model name must be one non-empty topic level without wildcards."""
    if not isinstance(value, str) or not value or _FORBIDDEN & set(value):
        raise EdgewiseError(f"{kind} {value!r} must be non-empty and contain none of / + # NUL")
    return value


def check_device(value: str) -> str:
    """A device id: one topic level, printable (no control characters), at most 128 chars.

    It is also part of the MQTT client id, which brokers refuse with control characters.
    """
    check_segment("device", value)
    if value == FLEET_LEVEL:
        raise EdgewiseError(f"device {value!r} is reserved for fleet roll-outs; choose another id")
    if not value.isprintable() or len(value) > MAX_DEVICE_LENGTH:
        raise EdgewiseError(
            f"device {value!r} must be printable (no control characters) and at most "
            f"{MAX_DEVICE_LENGTH} characters"
        )
    return value


def response_topic_problem(topic: str) -> str | None:
    """Why a client-supplied MQTT 5 response topic cannot be published to, or None.

    Checked before anything is stored: an answer committed for a topic the client library
    refuses would otherwise block the outbox.
    """
    if not topic:
        return "is empty"
    if "+" in topic or "#" in topic:
        return "contains a wildcard (+ or #)"
    if topic.startswith("$"):
        return "starts with $ (reserved for the broker)"
    if "\x00" in topic:
        return "contains NUL"
    try:
        size = len(topic.encode("utf-8"))
    except UnicodeEncodeError:
        return "is not valid UTF-8"
    if size > MAX_TOPIC_BYTES:
        return f"is {size} bytes; at most {MAX_TOPIC_BYTES} are allowed"
    return None


@dataclass(frozen=True)
class Topics:
    """Topic names for one device under one prefix."""

    prefix: str
    device: str

    def __post_init__(self) -> None:
        if (
            not isinstance(self.prefix, str)
            or not self.prefix
            or not self.prefix.isprintable()
            or "+" in self.prefix
            or "#" in self.prefix
        ):
            raise EdgewiseError(
                f"topic prefix {self.prefix!r} must be non-empty and printable, no wildcards"
            )
        check_device(self.device)

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

    @staticmethod
    def watch_filters(prefix: str, device: str | None = None) -> list[str]:
        """Subscription filters for every answer, error and status (of one device or all)."""
        dev = device or "+"
        return [f"{prefix}/{dev}/+/out", f"{prefix}/{dev}/+/error", f"{prefix}/{dev}/status"]

    def model_of(self, topic: str, kind: str = "in") -> str | None:
        """The model name in this device's ``kind`` topic (a request by default), or None."""
        head, tail = f"{self.prefix}/{self.device}/", f"/{kind}"
        if not topic.startswith(head) or not topic.endswith(tail):
            return None
        name = topic[len(head) : -len(tail)]
        return name if name and "/" not in name else None
