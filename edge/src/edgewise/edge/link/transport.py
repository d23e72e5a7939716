"""What the agent needs from its link to a broker, as a Protocol (``edge.link.mqtt`` is the
real one).

The agent builds its transport from a :class:`TransportSpec` through a factory, so tests
can pass :class:`edgewise.edge.testing.MemoryTransport` and exercise ``Agent.handle`` and
the answer paths without a socket, next to the real-broker tests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from edgewise.edge.link.message import PublishRefused

__all__ = ["PublishRefused", "Transport", "TransportFactory", "TransportSpec", "mqtt_transport"]

if TYPE_CHECKING:
    from edgewise.edge.link.endpoint import Endpoint
    from edgewise.edge.link.message import Message, Session


class PublishHandle(Protocol):
    """A queued publish: its message id, and a way to wait until it is out."""

    @property
    def mid(self) -> int: ...

    def wait_for_publish(self, timeout: float | None = None) -> None: ...


class Transport(Protocol):
    """A broker connection with its own thread; every method is thread-safe."""

    broker: Endpoint
    protocol: str  # the MQTT version spoken ("5" or "3.1.1"), settled on connecting
    reconnects: int
    callback_errors: int
    generation: int  # which connection this is: a new one after every reconnect

    @property
    def connected(self) -> bool: ...

    @property
    def alive(self) -> bool: ...

    @property
    def started(self) -> bool: ...

    def start(self) -> None: ...

    def wait_connected(self, timeout: float) -> bool: ...

    def publish(
        self,
        topic: str,
        payload: bytes | str,
        qos: int = 0,
        retain: bool = False,
        correlation_data: bytes | None = None,
    ) -> PublishHandle: ...

    def ack(self, msg: Message) -> None: ...

    def subscribe(self, topic: str, qos: int = 1) -> None: ...

    def unsubscribe(self, topic: str) -> None: ...

    def stop(self, final_status: str | None = "offline", timeout: float = 5.0) -> None: ...


@dataclass(frozen=True)
class TransportSpec:
    """Everything a transport is built from: where, who, what to subscribe, whom to call."""

    endpoint: Endpoint
    client_id: str
    protocol: str
    on_message: Callable[[Message], None]
    subscriptions: list[tuple[str, int]] = field(default_factory=list)
    # Dropped from a persistent session on every connect (a filter an earlier run used).
    unsubscriptions: list[str] = field(default_factory=list)
    status_topic: str | None = None
    session: Session | None = None
    on_published: Callable[[int], None] | None = None
    on_failure: Callable[[str], None] | None = None
    # Connections in a row taken over by a client with the same id before giving up.
    max_takeovers: int | None = None
    # MQTT 5 Maximum Packet Size this client accepts (the broker drops larger ones for it).
    receive_limit: int | None = None


TransportFactory = Callable[[TransportSpec], Transport]


def mqtt_transport(spec: TransportSpec) -> Transport:
    """The real transport: paho-mqtt over TCP, TLS or WebSockets (edge.link.mqtt)."""
    from edgewise.edge.link.mqtt import MqttConnection

    return MqttConnection(
        spec.endpoint,
        client_id=spec.client_id,
        protocol=spec.protocol,
        on_message=spec.on_message,
        subscriptions=spec.subscriptions,
        unsubscriptions=spec.unsubscriptions,
        status_topic=spec.status_topic,
        session=spec.session,
        on_published=spec.on_published,
        on_failure=spec.on_failure,
        max_takeovers=spec.max_takeovers,
        receive_limit=spec.receive_limit,
    )
