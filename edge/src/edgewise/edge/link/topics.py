"""MQTT topic names (docs/mqtt.md): ``{prefix}/{device}/{model}/{in|out|error|info}``."""

from __future__ import annotations

from dataclasses import dataclass

from edgewise.edge.errors import EdgewiseError

DEFAULT_PREFIX = "edgewise"
DEFAULT_BROKER = "mqtt://127.0.0.1:1883"
_FORBIDDEN = set("/+#\x00")
MAX_DEVICE_LENGTH = 128
MAX_TOPIC_BYTES = 65535  # MQTT: a topic is a UTF-8 string with a two-byte length
# The first level under the prefix that holds fleet roll-outs (edge.link.fleet_topics): no
# device may take it as its id, or its topics would mix with bundles and desired states.
FLEET_LEVEL = "fleet"
# Likewise the level of device pools: edgewise/pool/{pool}/{model}/in is served by every
# member through an MQTT 5 shared subscription (docs/mqtt.md#pools).
POOL_LEVEL = "pool"
# Under a device: the level of sensor streams' predictions (docs/streams.md); one level
# deeper than a model's topics, so no request filter (``+/in``) reaches them.
STREAM_LEVEL = "streams"


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
    if value in (FLEET_LEVEL, POOL_LEVEL):
        raise EdgewiseError(
            f"device {value!r} is reserved ({FLEET_LEVEL}: roll-outs, {POOL_LEVEL}: device "
            "pools); choose another id"
        )
    if not value.isprintable() or len(value) > MAX_DEVICE_LENGTH:
        raise EdgewiseError(
            f"device {value!r} must be printable (no control characters) and at most "
            f"{MAX_DEVICE_LENGTH} characters"
        )
    return value


def check_pool(name: str) -> str:
    """A pool name: one topic level, printable, at most 128 characters (it is also the
    shared subscription's group name)."""
    check_segment("pool", name)
    if not name.isprintable() or len(name) > MAX_DEVICE_LENGTH:
        raise EdgewiseError(f"pool {name!r} must be printable and at most 128 characters")
    return name


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
    """Topic names for one device under one prefix (and the pool it serves in, if any)."""

    prefix: str
    device: str
    pool: str | None = None

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
        if self.pool is not None:
            check_pool(self.pool)

    def model(self, model: str, kind: str) -> str:
        return f"{self.prefix}/{self.device}/{model}/{kind}"

    def stream(self, name: str, kind: str) -> str:
        """A stream's ``events`` (every prediction) or ``state`` (the latest, retained)."""
        return f"{self.prefix}/{self.device}/{STREAM_LEVEL}/{name}/{kind}"

    def pool_model(self, model: str, kind: str) -> str:
        """A pool's topic (``send --pool``; answers go one level below, per member)."""
        return f"{self.prefix}/{POOL_LEVEL}/{self.pool}/{model}/{kind}"

    @property
    def pool_requests(self) -> str | None:
        """The shared subscription to the pool's requests (None without a pool)."""
        if self.pool is None:
            return None
        return f"$share/{self.pool}/{self.pool_model('+', 'in')}"

    @property
    def shared_requests(self) -> str:
        """This device's requests through the shared subscription of its worker processes
        (``workers`` > 1, docs/mqtt.md#workers): the broker deals each to one of them."""
        return f"$share/{self.device}/{self.requests}"

    def answer_topic(self, request_topic: str, model: str, kind: str) -> str:
        """Where the ``out``/``error`` of a request goes: beside its topic for a request
        to this device; for a pool's, the pool's topic with this device's id as one more
        level (``.../out/{device}``), which the broker's ACL lets only this device write, so
        no member can answer in another's name; else this device's topic of ``model``."""
        if self.model_of(request_topic) is not None:
            beside = request_topic[: -len("/in")] + "/" + kind
            if self.pool is not None and not request_topic.startswith(self.own):
                return f"{beside}/{self.device}"
            return beside
        return self.model(model, kind)

    @property
    def own(self) -> str:
        """The start of every topic of this device (``{prefix}/{device}/``)."""
        return f"{self.prefix}/{self.device}/"

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
        if self.pool is not None and kind == "in" and not topic.startswith(head):
            head = f"{self.prefix}/{POOL_LEVEL}/{self.pool}/"
        if not topic.startswith(head) or not topic.endswith(tail):
            return None
        name = topic[len(head) : -len(tail)]
        return name if name and "/" not in name else None
