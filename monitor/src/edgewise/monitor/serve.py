"""The exporter's MQTT connection and HTTP server, started and stopped together."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from edgewise.edge.errors import EdgewiseError
from edgewise.edge.link.endpoint import Endpoint
from edgewise.edge.link.mqtt import MqttConnection
from edgewise.monitor.exporter import FleetCollector, FleetState


@contextmanager
def serve_exporter(
    broker: Endpoint, prefix: str, bind: str, port: int, protocol: str = "auto"
) -> Iterator[str]:
    """Subscribe to the fleet's topics and serve /metrics; yields the metrics URL."""
    from prometheus_client import CollectorRegistry, start_http_server

    state = FleetState(prefix)
    registry = CollectorRegistry(auto_describe=False)
    # Not quiet: a broker it cannot reach is logged (and edgewise_broker_up says 0).
    conn = MqttConnection(
        broker,
        protocol=protocol,
        on_message=state.on_message,
        subscriptions=state.subscriptions(),
    )
    registry.register(FleetCollector(state, lambda: conn.connected))
    try:
        server, thread = start_http_server(port, addr=bind, registry=registry)
    except OSError as exc:
        raise EdgewiseError(f"cannot listen on {bind}:{port}: {exc.strerror}") from None
    conn.start()
    try:
        yield f"http://{bind}:{server.server_port}/metrics"
    finally:
        conn.stop(final_status=None, timeout=2)
        server.shutdown()
        server.server_close()
        thread.join(5)
