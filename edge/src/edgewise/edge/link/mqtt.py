"""The only module that touches paho-mqtt.

``MqttConnection`` runs paho's network loop in one thread of its own, reconnects with
capped, jittered exponential back-off, speaks MQTT 5 where the broker does (3.1.1
otherwise), keeps a retained status with a last will, and hands every received message
to a callback that must only enqueue it. With a ``Session`` it keeps a persistent
session and requests are acknowledged by hand (``ack``), after their answers are stored.

Everything that touches paho (connect, fall-back, refusals, callbacks, packet limits) is
here on purpose, which makes this module longer than most: the rest of the agent sees
``Message``, ``MqttConnection`` and ``PublishRefused`` only.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edgewise.edge.errors import EdgewiseError
from edgewise.edge.link.backoff import Backoff
from edgewise.edge.link.endpoint import Endpoint, describe_tls_error
from edgewise.edge.link.message import Message, PublishRefused, Session, publish_size
from edgewise.edge.link.read_buffer import BufferedSocket, read_buffered, unwrap
from edgewise.edge.link.twin import TwinWatch

log = logging.getLogger(__name__)

SESSION_TAKEN_OVER = 0x8E  # MQTT 5 DISCONNECT reason code
PROTOCOLS = {"5": paho.MQTTv5, "3.1.1": paho.MQTTv311}

# CONNACK reason codes (MQTT 5 values; paho maps 3.1.1 return codes onto them).
UNSUPPORTED_PROTOCOL = 0x84
REFUSALS = {
    0x85: "the client id is not valid",
    0x86: "bad user name or password",
    0x87: "not authorized",
    0x8A: "this client is banned",
    0x8C: "bad authentication method",
}


class ReceivedProperties(Properties):  # type: ignore[misc]
    """paho's ``Properties`` for received PUBLISH packets, without its per-packet cost.

    paho builds each Properties object from scratch (three tables of ~27 entries) and
    ``clear()`` probes every property name with ``str.replace`` and ``hasattr``: about
    25 µs per received MQTT 5 message on this VM, more than the rest of its handling
    (bench/bench_streams.py). Here the tables are shared (paho only reads them) and
    ``clear()`` drops the properties actually set. Decoding is paho's own ``unpack``;
    tests/edge/test_mqtt_properties.py checks it against paho's class on real packets.
    """

    _tables = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    _private = frozenset(("packetType", "types", "names", "properties"))

    def __init__(self, packetType: int) -> None:
        own = self.__dict__
        own["packetType"] = packetType
        own["types"], own["names"] = self._tables.types, self._tables.names
        own["properties"] = self._tables.properties

    def clear(self) -> None:
        for name in [n for n in self.__dict__ if n not in self._private]:
            del self.__dict__[name]


def _install_received_properties() -> None:
    """Decode received PUBLISH properties with ``ReceivedProperties`` (paho >= 2.1 decodes
    them in ``paho.mqtt._packet``; with an older paho nothing changes: slower, same)."""
    try:
        from paho.mqtt import _packet
    except ImportError:  # pragma: no cover - paho 2.0
        return
    if getattr(_packet, "Properties", None) is Properties:
        _packet.Properties = ReceivedProperties  # type: ignore[attr-defined]


_install_received_properties()


class _Client(paho.Client):  # type: ignore[misc]
    """paho's client reading through ``BufferedSocket`` (edge.link.read_buffer says why),
    from paho 2's own hook for the new socket (were it gone: unbuffered, slower, same)."""

    def _create_socket(self) -> Any:
        sock = super()._create_socket()
        return sock if self._transport == "websockets" else BufferedSocket(sock)


def _no_op_socket_hook(client: paho.Client, userdata: Any, sock: Any) -> None:
    """paho's external-loop hook; the network thread's loop() does the writing."""


class MqttConnection:
    """A paho client with its own network thread; see the module docstring."""

    def __init__(
        self,
        broker: Endpoint,
        *,
        client_id: str | None = None,
        protocol: str = "auto",
        on_message: Callable[[Message], None] | None = None,
        subscriptions: list[tuple[str, int]] | None = None,
        unsubscriptions: list[str] | None = None,
        status_topic: str | None = None,
        keepalive: int = 30,
        backoff: Backoff | None = None,
        session: Session | None = None,
        on_published: Callable[[int], None] | None = None,
        on_failure: Callable[[str], None] | None = None,
        quiet: bool = False,
        max_takeovers: int | None = None,
        receive_limit: int | None = None,
    ) -> None:
        if protocol not in ("auto", *PROTOCOLS):
            raise EdgewiseError(f"MQTT protocol {protocol!r}: use auto, 5 or 3.1.1")
        self.broker = broker
        self.client_id = client_id or f"edgewise-{uuid.uuid4().hex[:12]}"
        self._protocols = ["5", "3.1.1"] if protocol == "auto" else [protocol]
        self.protocol = self._protocols[0]
        self._on_message = on_message
        self._subscriptions = list(subscriptions or [])
        self._unsubscriptions = list(unsubscriptions or [])
        self._sub_lock = threading.Lock()
        self._status_topic = status_topic
        self._keepalive = keepalive
        self._backoff = backoff or Backoff()
        self._session = session
        self._on_published = on_published
        self._on_failure = on_failure
        # Short-lived clients (send, watch) report one error line themselves.
        self._log_level = logging.DEBUG if quiet else logging.WARNING
        self.generation = 0
        self.max_packet_size: int | None = None  # from the broker's CONNACK (MQTT 5)
        self.callback_errors = 0  # exceptions caught in our paho callbacks
        self._refusal: int | None = None  # reason code of the last refused CONNECT
        self._got_connack = False
        self._reported: str | None = None  # the last connection problem logged
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._ever_connected = False
        # Connections closed right after CONNACK, or taken over: a twin with our client id.
        self._twin = TwinWatch(self.client_id, str(broker), max_takeovers, on_failure)
        # MQTT 5 Maximum Packet Size announced at CONNECT: the broker drops larger packets
        # for this client instead of delivering them (memory under a burst stays bounded).
        self._receive_limit = receive_limit
        self._last_error = "not connected yet"
        self._thread: threading.Thread | None = None
        self.reconnects = 0
        self._client = self._make_client()

    # -- public API ---------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def last_error(self) -> str:
        return self._last_error

    @property
    def alive(self) -> bool:
        """Whether the network thread is running (False before start and after stop)."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def started(self) -> bool:
        """Whether ``start`` was called."""
        return self._thread is not None

    def start(self) -> None:
        """Start the network thread; it connects and keeps reconnecting until stop()."""
        if self.broker.tls_insecure:
            log.warning(
                "TLS certificate and name checks are OFF for %s (tls_insecure): anyone on "
                "the network path can pose as the broker",
                self.broker,
            )
        self._thread = threading.Thread(target=self._run, name="mqtt-network", daemon=True)
        self._thread.start()

    def wait_connected(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the first successful CONNACK."""
        return self._connected.wait(timeout)

    def publish(
        self,
        topic: str,
        payload: bytes | str,
        qos: int = 0,
        retain: bool = False,
        correlation_data: bytes | None = None,
        response_topic: str | None = None,
    ) -> paho.MQTTMessageInfo:
        """Queue a message; thread-safe. v5 properties are dropped on 3.1.1.

        Raises ``PublishRefused`` for a message that can never go out: a topic paho
        refuses, or a packet larger than the broker's maximum packet size (the broker
        would drop the connection, and paho would resend it after every reconnect).
        """
        props = None
        if self.protocol == "5" and (correlation_data is not None or response_topic):
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            if correlation_data is not None:
                props.CorrelationData = correlation_data
            if response_topic:
                props.ResponseTopic = response_topic
        limit = self.max_packet_size
        if limit is not None:
            size = publish_size(topic, payload, qos, correlation_data)
            if size > limit:
                raise PublishRefused(
                    f"a {size}-byte packet exceeds the broker's maximum packet size ({limit})"
                )
        try:
            return self._client.publish(topic, payload, qos=qos, retain=retain, properties=props)
        except (ValueError, TypeError) as exc:
            raise PublishRefused(f"refused by the MQTT client: {exc}") from None

    def ack(self, msg: Message) -> None:
        """Acknowledge a QoS 1 request (persistent sessions ack by hand; thread-safe).

        A message from an earlier connection is not acked: the broker redelivers it on
        the new one, and that copy is the one to ack.
        """
        if self._session is not None and msg.qos > 0 and msg.generation == self.generation:
            self._client.ack(msg.mid, msg.qos)

    def subscribe(self, topic: str, qos: int = 1) -> None:
        """Add a subscription now and after every reconnect (thread-safe)."""
        with self._sub_lock:
            if any(t == topic for t, _ in self._subscriptions):
                return
            self._subscriptions.append((topic, qos))
        if self.connected:
            self._client.subscribe(topic, qos)

    def unsubscribe(self, topic: str) -> None:
        """Drop a subscription added by ``subscribe`` (thread-safe)."""
        with self._sub_lock:
            self._subscriptions = [(t, q) for t, q in self._subscriptions if t != topic]
        if self.connected:
            self._client.unsubscribe(topic)

    def stop(self, final_status: str | None = "offline", timeout: float = 5.0) -> None:
        """Publish the final status (retained), disconnect cleanly and join the thread."""
        if self._thread is not None and not self._thread.is_alive():
            # The network thread died: nothing would write a status or a DISCONNECT. Drop
            # the socket instead, so that the broker publishes the last will ("offline").
            sock = unwrap(self._client.socket())
            if isinstance(sock, socket.socket):
                sock.close()
            self._connected.clear()
        if self.connected and self._status_topic and final_status is not None:
            info = self.publish(self._status_topic, final_status, qos=1, retain=True)
            try:
                info.wait_for_publish(timeout)
            except (RuntimeError, ValueError):
                log.warning("could not publish final status %r", final_status)
        self._stop.set()  # first, so the network thread does not reconnect after DISCONNECT
        if self.connected:
            self._client.disconnect()  # a clean DISCONNECT: the broker drops the last will
        if self._thread is not None:
            self._thread.join(timeout)
        self._connected.clear()

    # -- network thread -----------------------------------------------------------------

    def _make_client(self) -> paho.Client:
        proto = PROTOCOLS[self.protocol]
        persistent = self._session is not None
        client = _Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=proto,
            clean_session=None if proto == paho.MQTTv5 else not persistent,
            manual_ack=persistent,
            transport=self.broker.transport,  # type: ignore[arg-type]
        )
        if self.broker.transport == "websockets":
            client.ws_set_options(path=self.broker.path)
        if self.broker.tls:
            client.tls_set_context(self.broker.ssl_context())
        if self.broker.username:
            client.username_pw_set(self.broker.username, self.broker.password)
        if self._status_topic:
            client.will_set(self._status_topic, "offline", qos=1, retain=True)
        client.max_inflight_messages_set(100)
        client.on_connect = self._handle_connect
        client.on_disconnect = self._handle_disconnect
        client.on_message = self._handle_message
        if self._on_published is not None:
            client.on_publish = self._handle_publish
        # With a write hook registered, publish() from other threads only queues the packet
        # and wakes our loop() through paho's socket pair; otherwise it would write to the
        # socket itself, racing the network thread on partial writes.
        client.on_socket_register_write = _no_op_socket_hook
        return client

    def _fall_back(self) -> bool:
        """Try the next protocol when the broker refused this one before ever accepting it:
        a CONNACK saying "unsupported protocol version", or a close with no CONNACK at all
        (brokers that do not parse MQTT 5). Credentials or client-id refusals never fall
        back: they would fail the same way, behind a misleading message."""
        idx = self._protocols.index(self.protocol)
        if self._ever_connected or idx + 1 >= len(self._protocols):
            return False
        if self._got_connack and self._refusal != UNSUPPORTED_PROTOCOL:
            return False
        self.protocol = self._protocols[idx + 1]
        log.info("broker did not accept MQTT 5; using MQTT %s", self.protocol)
        self._client = self._make_client()
        return True

    def _connect(self) -> None:
        if self.protocol != "5":
            self._client.connect(self.broker.host, self.broker.port, self._keepalive)
            return
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        clean_start = True
        if self._session is not None:
            clean_start = False
            props.SessionExpiryInterval = self._session.expiry
            props.ReceiveMaximum = self._session.receive_maximum
        if self._receive_limit is not None:
            props.MaximumPacketSize = self._receive_limit
        self._client.connect(
            self.broker.host,
            self.broker.port,
            self._keepalive,
            clean_start=clean_start,
            properties=props,
        )

    def _report(self, problem: str) -> None:
        # One line per distinct problem: a broker that keeps refusing does not flood the log.
        self._last_error = problem
        if problem != self._reported:
            log.log(self._log_level, "%s", problem)
            self._reported = problem

    def _run(self) -> None:
        try:
            self._serve_connection()
        except BaseException as exc:  # the thread must not end silently: the owner stops
            log.critical("MQTT network thread failed", exc_info=True)
            self._connected.clear()
            if self._on_failure is not None:
                self._on_failure(f"mqtt-network: {type(exc).__name__}: {exc}")

    def _serve_connection(self) -> None:
        first = True  # connect() on a new client, reconnect() afterwards
        while not self._stop.is_set():
            self._refusal = None
            self._got_connack = False
            try:
                if first:
                    self._connect()
                else:
                    self._client.reconnect()
            except (OSError, ValueError) as exc:
                tls_problem = describe_tls_error(exc, self.broker)
                detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
                self._report(tls_problem or f"cannot reach broker at {self.broker}: {detail}")
                first = False
                self._stop.wait(self._backoff.next())
                continue
            first = False
            rc = self._loop_connected()
            if self._stop.is_set():
                break
            self._connected.clear()
            if not self._ever_connected and self._fall_back():
                first = True
                continue
            self.reconnects += 1
            delay = self._backoff.next()
            if self._twin.lost():
                return  # no more fighting over the session: the owner stops (on_failure)
            if self._refusal is None:
                log.log(
                    self._log_level,
                    "connection to %s lost (rc %s); retrying in %.1fs",
                    self.broker,
                    rc,
                    delay,
                )
            self._stop.wait(delay)
        # Let the DISCONNECT (or the final status) go out, bounded.
        for _ in range(5):
            try:
                if self._client.loop(timeout=0.05) != paho.MQTT_ERR_SUCCESS:
                    break
            except Exception:
                break

    def _loop_connected(self) -> int:
        """Run paho's loop until the connection ends; its result code."""
        rc = paho.MQTT_ERR_SUCCESS
        started = time.monotonic()
        while not self._stop.is_set() and rc == paho.MQTT_ERR_SUCCESS:
            try:
                rc = self._client.loop(timeout=0.1)
                if rc == paho.MQTT_ERR_SUCCESS:  # what is read ahead, without a select each
                    rc = read_buffered(self._client.socket(), self._client.loop_read, rc)
            except Exception:
                # A packet paho could not handle (e.g. malformed properties): its read
                # state is undefined, so drop this connection and start a fresh one.
                self.callback_errors += 1
                log.exception("MQTT client error; reconnecting")
                return int(paho.MQTT_ERR_PROTOCOL)
            if not self.connected and time.monotonic() - started > 5.0:
                rc = paho.MQTT_ERR_CONN_LOST  # no CONNACK in time
        return int(rc)

    # -- paho callbacks: network thread; they only hand work off -------------------------

    def _handle_connect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: Any,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        try:
            self._on_connack(client, reason, properties)
        except Exception:  # nothing may raise into paho's loop
            self.callback_errors += 1
            log.exception("handling the broker's CONNACK failed")

    def _on_connack(
        self, client: paho.Client, reason: ReasonCode, properties: Properties | None
    ) -> None:
        self._got_connack = True
        if reason.is_failure:
            self._refusal = int(reason.value)
            why = REFUSALS.get(self._refusal, str(reason))
            self._report(f"broker at {self.broker} refused the connection: {why}")
            return
        self._reported = None
        limit = getattr(properties, "MaximumPacketSize", None)
        self.max_packet_size = int(limit) if isinstance(limit, int) and limit > 0 else None
        sock = unwrap(client.socket())
        if isinstance(sock, socket.socket):
            # paho leaves Nagle on: QoS 0 round trips then see a ~40 ms p99 tail.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._ever_connected = True
        self._twin.connected()
        self.generation += 1
        self._backoff.reset()
        with self._sub_lock:
            subscriptions = list(self._subscriptions)
        if self._unsubscriptions:
            client.unsubscribe(self._unsubscriptions)
        if subscriptions:
            client.subscribe(subscriptions)
        if self._status_topic:
            client.publish(self._status_topic, "online", qos=1, retain=True)
        self._connected.set()
        log.info("connected to %s (MQTT %s)", self.broker, self.protocol)

    def _handle_disconnect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: Any,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self._connected.clear()
        if reason.is_failure and int(reason.value) == SESSION_TAKEN_OVER:
            self._twin.taken = True

    def _handle_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        if self._on_message is None:
            return
        # Nothing may raise out of a callback: paho would abort its loop on this thread.
        try:
            props = getattr(msg, "properties", None)
            response_topic = getattr(props, "ResponseTopic", None)
            correlation = getattr(props, "CorrelationData", None)
            try:
                topic = msg.topic  # a topic that is not UTF-8 raises here
            except UnicodeDecodeError:
                topic = msg._topic.decode("utf-8", "replace")
            self._on_message(
                Message(
                    topic=topic,
                    payload=bytes(msg.payload),
                    qos=msg.qos,
                    received_at=time.monotonic(),
                    response_topic=response_topic if isinstance(response_topic, str) else None,
                    correlation_data=bytes(correlation) if correlation is not None else None,
                    mid=msg.mid,
                    dup=bool(msg.dup),
                    retain=bool(msg.retain),
                    generation=self.generation,
                )
            )
        except Exception:
            self.callback_errors += 1
            log.exception("dropped a received message: the message handler failed")

    def _handle_publish(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if self._on_published is None:
            return
        try:
            self._on_published(mid)
        except Exception:
            self.callback_errors += 1
            log.exception("PUBACK handler failed")
