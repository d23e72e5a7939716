"""Which process of a device a serving core is, and the link it makes to the broker.

The main agent process announces (status with a last will, infos, health) and serves the
device's requests; a helper of ``workers`` > 1 only serves, under a client id and outbox
of its own (``edge.app`` decides). ``make_link`` builds the transport and the answers'
way out (the durable outbox, or straight to the link).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edgewise.edge.core.config import AgentConfig
from edgewise.edge.link.delivery import Delivery, DirectDelivery, OutboxDelivery
from edgewise.edge.link.message import Message
from edgewise.edge.link.outbox import Outbox
from edgewise.edge.link.transport import Transport, TransportFactory, TransportSpec
from edgewise.edge.runtime.transfer import CHUNK_SIZE

# Two agents with one device id take each other's session about twice a second for ever:
# after this many connections in a row taken over, one of them stops and says why.
MAX_TAKEOVERS = 6
# Room in a packet beyond its payload: topic (up to 64 KiB) and MQTT 5 properties.
PACKET_HEADROOM = 1 << 17


def receive_limit(max_payload: int) -> int:
    """The Maximum Packet Size the agent announces: its largest request (max_payload) or
    a roll-out chunk, whichever is larger, plus headroom for topic and properties."""
    return max(max_payload, CHUNK_SIZE) + PACKET_HEADROOM


@dataclass(frozen=True)
class Role:
    """The main process (announces) or a helper (serves only)."""

    client_id: str
    outbox_path: Path
    serve: list[tuple[str, int]]  # the request filters it subscribes to
    unsubscriptions: list[str]
    announce: bool = True  # status (with last will), infos, health, the guard of both

    @classmethod
    def main(cls, config: AgentConfig) -> Role:
        """The device's main agent process."""
        plain, shared = config.topics.requests, config.topics.shared_requests
        # Several processes share the requests through one shared subscription; the
        # other filter is dropped from a persistent session an earlier run left.
        requests, stale = (shared, plain) if config.workers > 1 else (plain, shared)
        return cls(
            client_id=f"edgewise-agent-{config.device}",
            outbox_path=config.outbox_path,
            serve=[(requests, config.qos), *pool_requests(config)],
            unsubscriptions=[stale],
        )


def pool_requests(config: AgentConfig) -> list[tuple[str, int]]:
    """The shared subscription to the pool's requests (none without a pool)."""
    pool = config.topics.pool_requests
    return [(pool, config.qos)] if pool else []


def make_link(
    config: AgentConfig,
    role: Role,
    subscriptions: list[tuple[str, int]],
    transport: TransportFactory,
    on_message: Callable[[Message], None],
    on_published: Callable[[int], None],
    on_failure: Callable[[str], None],
) -> tuple[Transport, Delivery, DirectDelivery]:
    """The transport, the answers' way out, and the direct way (for what must not wait)."""
    spec = TransportSpec(
        config.endpoint,
        client_id=role.client_id,
        protocol=config.protocol,
        on_message=on_message,
        subscriptions=subscriptions,
        unsubscriptions=role.unsubscriptions,
        status_topic=config.topics.status if role.announce else None,
        session=config.session,
        on_published=on_published,
        on_failure=on_failure,
        max_takeovers=MAX_TAKEOVERS,
        receive_limit=receive_limit(config.max_payload),
    )
    connection = transport(spec)
    direct = DirectDelivery(connection)
    delivery: Delivery = (
        OutboxDelivery(
            Outbox(
                role.outbox_path,
                max_count=config.outbox_max_count,
                max_bytes=config.outbox_max_bytes,
                sync=config.outbox_sync,
            ),
            connection,
        )
        if config.durable
        else direct
    )
    return connection, delivery, direct
