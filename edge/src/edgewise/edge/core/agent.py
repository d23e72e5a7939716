"""The serving core: requests from MQTT, inference in a worker thread, answers to MQTT.

Threads: paho's network thread (``edge.link.mqtt``) only routes received messages: a request
goes to the core's bounded queue, a message on a feature's route to that feature
(``edge.core.feature``); one worker thread takes requests in batches, answers each (prediction
or error, ``edge.core.handler``), hands the answers to broker requests straight to paho and
acknowledges each request once the broker acknowledged its answers (``edge.link.forward``),
commits the rest to the outbox (``edge.link.delivery``), which its own thread publishes; a
health thread publishes the retained health. Features run their own threads beside these.

The core imports no feature: roll-outs, shadows, probation, drift and capture, discovery,
answer states and worker processes attach through ``edge.core.feature`` (``edge.app`` builds
and attaches them). What a feature may use of the core is ``feature.Host``.

What the outbox cannot store is not acknowledged: the worker retries with back-off. A
thread that dies stops the agent (``offline``, non-zero exit; ``edge.core.supervision``).
``stop()`` stops taking requests, finishes those queued, flushes, publishes ``offline``
and disconnects, each step bounded by ``drain_timeout``.
"""

from __future__ import annotations

import collections
import functools
import itertools
import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from edgewise.edge.core.batching import answer_together
from edgewise.edge.core.config import AgentConfig
from edgewise.edge.core.feature import Feature, Features, Job, Route, Router
from edgewise.edge.core.flood import FloodMemory, Refusals
from edgewise.edge.core.handler import RequestPath
from edgewise.edge.core.health import (
    Counters,
    LatencyWindow,
    ModelTally,
    health_document,
    publish_health,
    report_health,
)
from edgewise.edge.core.inbox import Inbox
from edgewise.edge.core.retained import RetainedGuard
from edgewise.edge.core.role import Role, make_link
from edgewise.edge.core.supervision import Notifier, Supervisor
from edgewise.edge.link.delivery import Delivery, DirectDelivery, store_until_stopped
from edgewise.edge.link.forward import Forwarder, split
from edgewise.edge.link.message import Message
from edgewise.edge.link.outbox import OutMessage
from edgewise.edge.link.payload import encode, error_doc, peek_id
from edgewise.edge.link.replies import error_replies
from edgewise.edge.link.transport import Transport, TransportFactory, mqtt_transport
from edgewise.edge.runtime.backends import BackendOptions
from edgewise.edge.runtime.loader import load_models
from edgewise.edge.runtime.model import ServedModel

log = logging.getLogger(__name__)

BATCH = 64  # requests answered per outbox commit at most
PEEK_LIMIT = 4096  # an overloaded request's id is read only from a payload this small
RECENT = 4096  # acknowledged requests remembered to skip the broker's redeliveries


class Agent(RequestPath):
    """Serves the loaded models for one device; features attach before ``start``."""

    def __init__(
        self,
        config: AgentConfig,
        models: dict[str, ServedModel] | None = None,
        transport: TransportFactory | None = None,
        role: Role | None = None,
    ) -> None:
        self.config = config
        self.role = role if role is not None else Role.main(config)
        self.topics = config.topics
        options = BackendOptions(config.num_threads, config.providers)
        self.models = (
            models
            if models is not None
            else load_models(config.bundles, options, config.trusted_keys)
        )
        self.features = Features()
        self._router = Router()
        self._core_routes = Feature()  # owner of the core's own routes (status, infos)
        self.counters = Counters()
        self.tally = ModelTally()
        self.calls = itertools.count(1)
        self.inference_ms = {name: LatencyWindow() for name in self.models}
        self.e2e_ms = {name: LatencyWindow() for name in self.models}
        self._queue: Inbox[Message | Job] = Inbox(config.queue_size)
        self._recent: collections.OrderedDict[tuple[int, str, int], None] = (
            collections.OrderedDict()
        )
        self._accepting = threading.Event()
        self._stopped = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self.supervisor = Supervisor(self._stopped)
        self.notifier = Notifier()
        self._heartbeat_at = time.monotonic()
        self._flood = FloodMemory()
        self._refusals = Refusals()
        self.storage_error: str | None = None  # set while the outbox cannot commit
        self._started_at = time.monotonic()
        # Names this run in info and health, so clients can tell a spoofed info apart.
        self.session = uuid.uuid4().hex[:16]
        self._info_bodies = {
            name: encode({**model.info(), "session": self.session})
            for name, model in self.models.items()
        }
        self._guard = RetainedGuard(self.topics, self._info_bodies)
        self._own = self.topics.own
        self._threads: list[str] = []
        self._transport = transport or mqtt_transport
        self._link: tuple[Transport, Delivery, DirectDelivery] | None = None
        self._forwarder: Forwarder | None = None

    # -- assembly -----------------------------------------------------------------------

    def attach(self, *features: Feature) -> None:
        """Attach features, in order: their routes and hooks (before the link is made)."""
        if self._link is not None:
            raise RuntimeError("features attach before the agent's link is made")
        for feature in features:
            self.features.attach(feature)
            for route in feature.routes():
                self._router.add(feature, route)

    @property
    def connection(self) -> Transport:
        """The link to the broker (made on first use: after the features attached)."""
        return (self._link or self._make_link())[0]

    @property
    def delivery(self) -> Delivery:
        """Where answers go: the outbox (durable), or straight to the link."""
        return (self._link or self._make_link())[1]

    @property
    def _direct(self) -> DirectDelivery:
        return (self._link or self._make_link())[2]

    def _make_link(self) -> tuple[Transport, Delivery, DirectDelivery]:
        """The link and the outbox, once every feature's routes are known."""
        subscriptions = list(self.role.serve)
        if self.role.announce:  # its own status and info too: restored when overwritten
            for topic in (self.topics.status, self.topics.model("+", "info")):
                self._router.add(self._core_routes, Route(topic, 1, "inline"))
                subscriptions.append((topic, 1))
        for feature in self.features.all:
            subscriptions += [(r.filter, r.qos) for r in feature.routes() if r.subscribe]
        self._link = make_link(
            self.config,
            self.role,
            subscriptions,
            self._transport,
            on_message=self._enqueue,
            on_published=self._on_published,
            on_failure=self.supervisor.fail,
        )
        if self.config.durable and self.config.qos == 1 and self.config.ack == "forwarded":
            self._forwarder = Forwarder(self._link[0], self._link[1].on_published)
        return self._link

    # -- what features see (feature.Host) -------------------------------------------------

    @property
    def link(self) -> Transport:
        return self.connection

    @property
    def accepting(self) -> threading.Event:
        """Set while the core takes messages (cleared when it stops)."""
        return self._accepting

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Connect (in the background, retrying) and start serving."""
        self._started_at = self._heartbeat_at = time.monotonic()
        self._accepting.set()
        self.delivery.start(self.supervisor.spawn)
        self._spawn(self._work, "inference")
        if self.role.announce:
            self._spawn(lambda: report_health(self, self._stopped), "health")
        for feature in self.features.all:
            for name, target in feature.threads():
                self._spawn(functools.partial(target, self._stopped), name)
        if self.role.announce:
            for name, body in self._info_bodies.items():
                # Retained, so clients (edgewise send, dashboards) learn the input spec.
                self.connection.publish(self.topics.model(name, "info"), body, 1, retain=True)
        self.features.started()
        self.connection.start()
        if not self.role.announce:
            return
        self.notifier.notify("READY=1")
        log.info(
            "serving %s on %s as device %r (%s; %s)",
            ", ".join(f"{m.name} v{m.version}" for m in self.models.values()),
            self.connection.broker,
            self.config.device,
            self.config.device_source,
            f"outbox {self.config.outbox_path}" if self.config.durable else "no outbox",
        )

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        self._threads.append(name)
        self.supervisor.spawn(target, name)

    def stop(self, timeout: float | None = None) -> None:
        """Stop taking requests, finish queued ones, flush, publish offline, disconnect."""
        if self._stopped.is_set():
            return
        timeout = self.config.drain_timeout if timeout is None else timeout
        self.notifier.notify("STOPPING=1")
        self._accepting.clear()
        deadline = time.monotonic() + timeout
        self.features.stopping(timeout)  # e.g. helper processes drain beside this one
        while (
            (not self._queue.empty() or not self._idle.is_set())
            and time.monotonic() < deadline
            and not self.supervisor.failed.is_set()  # a dead worker drains nothing
        ):
            time.sleep(0.01)
        self._stopped.set()
        # The outbox thread goes on: it flushes below, and delivery.close() ends it.
        self.supervisor.join(max(0.1, deadline - time.monotonic()), tuple(self._threads))
        self.features.tick()  # what is due: captured samples, drift documents
        self._notify_refusals(final=True)
        if self._forwarder is not None:
            self._forwarder.flush(max(0.0, deadline - time.monotonic()), final=True)
        if not self.delivery.flush(max(0.0, deadline - time.monotonic())):
            log.warning("%d answers stay in the outbox for the next start", self.delivery.depth)
        if self.role.announce:
            publish_health(self)
        self.features.close()  # after the final health, which reports the capture store
        self.connection.stop(final_status="offline", timeout=max(1.0, deadline - time.monotonic()))
        self.delivery.close()
        self.notifier.close()
        log.info("stopped: %s", self.counters)

    def wait(self, stop_requested: threading.Event) -> int:
        """Serve until ``stop_requested`` or a thread dies; stop; the exit status.

        0 after a requested stop; 1 when a thread of the agent failed (it is named in the
        log, and ``offline`` is published), so the service manager restarts the agent.
        """
        while not stop_requested.wait(0.5):
            network_died = self.connection.started and not self.connection.alive
            if self.supervisor.check(["mqtt-network"] if network_died else []):
                log.critical("stopping: %s", self.supervisor.reason)
                self.stop(timeout=min(self.config.drain_timeout, 5.0))
                return 1
        self.stop()
        return 0

    def activate(self, model: ServedModel) -> None:
        """Serve ``model`` from the next request on (a new model or a new version of one);
        requests already taken finish on the version they started with."""
        name, topic = model.name, self.topics.model(model.name, "info")
        old = self.models.get(name)
        # Latencies are per version: health shows the one serving.
        self.inference_ms[name], self.e2e_ms[name] = LatencyWindow(), LatencyWindow()
        body = encode({**model.info(), "session": self.session})
        self._guard.set_info(topic, body)  # so that a restore never brings the old one back
        self._info_bodies[name] = body
        self.models[name] = model  # one assignment: a request sees the old or the new
        self.connection.publish(topic, body, qos=1, retain=True)
        self.features.swapped(old, model)

    def submit(self, job: Job) -> bool:
        """Run ``job`` on the worker (feature.Job); False when full or stopping."""
        return self._accepting.is_set() and self._queue.put_nowait(job)

    def remove(self, name: str) -> None:
        """Stop serving ``name`` (``edgewise undeploy``) and clear its retained info."""
        model = self.models.pop(name, None)
        topic = self.topics.model(name, "info")
        self._guard.set_info(topic, b"")  # an info written later is cleared, not restored
        self._info_bodies.pop(name, None)
        self.connection.publish(topic, b"", qos=1, retain=True)
        self.features.swapped(model, None)
        log.info("%s removed (undeploy)", name)

    # -- message path -------------------------------------------------------------------

    def _enqueue(self, msg: Message) -> None:
        """paho callback (network thread): hand the message on, nothing more.

        A message on a feature's route goes to that feature; a request to the bounded
        queue. A QoS 0 request beyond it is answered "overloaded". A QoS 1 request waits
        for room: paho stops reading the socket meanwhile, so the broker holds the backlog
        (TCP back-pressure). Its receive-maximum window should do that alone, but
        Mosquitto 2.0.11 overruns it once PUBACKs flow (eclipse-mosquitto#2301). The
        worker never waits on this thread, so the wait is short.
        """
        try:
            found = self._router.find(msg.topic)
            if found is None:
                self._put(msg)
                return
            feature, route = found
            if feature is self._core_routes:
                restore = self._guard.check(msg) if self._accepting.is_set() else None
                if restore is not None:
                    self.connection.publish(*restore, qos=1, retain=True)
            else:
                self.features.accept(feature, msg)
            if route.inbox == "inline":
                self.connection.ack(msg)
        except Exception:  # nothing may raise into paho's loop
            self.counters.internal_errors += 1
            log.exception("could not queue a message on %s", msg.topic[:200])

    def _put(self, msg: Message) -> None:
        while self._accepting.is_set():
            if msg.qos == 0:
                if not self._queue.put_nowait(msg):
                    self._overloaded(msg)
                    return
            elif not self._queue.put(msg, timeout=0.5, first=True):  # before QoS 0 ones
                continue
            waiting = len(self._queue)
            if waiting > self.counters.peak_queued:
                self.counters.peak_queued = waiting
            return
        # Stopping: a QoS 1 request stays unacknowledged and the broker redelivers it later.

    def _overloaded(self, msg: Message, why: str = "agent queue is full; retry later") -> None:
        self.counters.overloaded += 1
        self._flood.hit()
        name = self.topics.model_of(msg.topic) or "unknown"
        if not self._refusals.answer_each(name if name in self.models else "unknown"):
            return  # counted: one notice a second says how many (flood.Refusals)
        rid = peek_id(msg.payload) if len(msg.payload) <= PEEK_LIMIT else None
        doc = error_doc(rid, "overloaded", why, name)
        self._direct.send(error_replies(self.topics, msg, name, encode(doc), self.config.qos))

    def _notify_refusals(self, final: bool = False) -> None:
        for name, count in self._refusals.due(final):
            why = f"{count} requests refused: the agent is overloaded; retry later"
            doc = {**error_doc(None, "overloaded", why, name), "refused": count}
            topic = self.topics.model(name, "error")
            self._direct.send([OutMessage(topic, encode(doc), self.config.qos)])

    def _on_published(self, mid: int) -> None:
        if self._forwarder is None or not self._forwarder.on_published(mid):
            self.delivery.on_published(mid)

    @property
    def forwarding(self) -> int:
        """Requests whose answers are out but not yet acknowledged by the broker."""
        return self._forwarder.pending if self._forwarder is not None else 0

    @property
    def dead_letters(self) -> int:
        """Answers that could never be published, forwarded or from the outbox."""
        forwarded = self._forwarder.dead_letters if self._forwarder is not None else 0
        return self.delivery.dead_letters + forwarded

    def _heartbeat(self) -> None:
        self._heartbeat_at = time.monotonic()
        self.notifier.ping()

    def _work(self) -> None:
        while not self._stopped.is_set():
            self._heartbeat()
            self.features.tick()  # what is due: answer states, shadows, drift, discovery
            self._notify_refusals()
            batch = self._queue.take(BATCH, timeout=0.2)  # what is queued: one hand-off
            if not batch:
                continue
            self._idle.clear()
            # With max_batch_wait_ms, wait that long for more.
            until = time.monotonic() + self.config.max_batch_wait_ms / 1000.0
            while len(batch) < BATCH and (left := until - time.monotonic()) > 0:
                more = self._queue.take(BATCH - len(batch), timeout=left)
                if not more:
                    break
                batch += more
            try:
                self._serve(self._shed(batch))
            finally:
                self._idle.set()
                if self._queue.empty():
                    self._flood.drained()

    def _shed(self, batch: list[Message | Job]) -> list[Message | Job]:
        """The batch without the QoS 0 requests that waited past ``max_wait_ms``: those are
        answered "overloaded" at once (a flood's backlog is cleared, not computed)."""
        limit = self.config.max_wait_ms / 1000.0
        if not limit:
            return batch
        now = time.monotonic()
        keep: list[Message | Job] = []
        for msg in batch:
            if isinstance(msg, Job):
                keep.append(msg)
            elif msg.qos == 0 and now - msg.received_at > limit:
                self._overloaded(msg, "waited too long in the agent's queue; retry later")
            else:
                keep.append(msg)
        return keep

    def _serve(self, items: list[Message | Job]) -> None:
        """Answer a batch; forward the answers to broker requests (acked after their
        PUBACKs), commit the rest to the outbox, then acknowledge what was stored."""
        batch = [m for m in items if not isinstance(m, Job)]
        done = [out for job in items if isinstance(job, Job) for out in self._run(job)]
        keys = [(msg.mid, msg.topic, hash(msg.payload)) for msg in batch]
        fresh = []
        for msg, key in zip(batch, keys, strict=True):
            if msg.dup and key in self._recent:
                self.counters.duplicates += 1
                continue
            fresh.append(msg)
        if self.config.max_batch > 1 and len(fresh) > 1:
            answers = answer_together(self, fresh)  # same-model requests: one backend call
        else:
            answers = [self.contain(msg) for msg in fresh]
        forwarder = self._forwarder
        forwarded, stored = split(forwarder, batch, fresh, answers)
        if (stored or done) and not self._store(stored + done):
            return  # stopping with the outbox failing: unacknowledged, the broker keeps them
        if forwarder is not None and forwarded:
            forwarder.forward(forwarded)
        now = time.monotonic()
        for msg, key in zip(batch, keys, strict=True):
            window = self.e2e_ms.get(self.topics.model_of(msg.topic) or "")
            if window is not None:
                window.add((now - msg.received_at) * 1000.0)
            if forwarder is None or not forwarder.takes(msg):
                self.connection.ack(msg)
            if msg.qos:
                self._recent[key] = None
                if len(self._recent) > RECENT:
                    self._recent.popitem(last=False)

    def _store(self, answers: list[OutMessage]) -> bool:
        """Commit answers; while the outbox cannot, retry with back-off (nothing is acked
        meanwhile). False only when the agent stops before the commit succeeded."""

        def failing(error: str | None) -> None:
            self.storage_error = error
            self._heartbeat()  # waiting on the disk is not a hang

        return store_until_stopped(self.delivery, answers, self._stopped, failing)

    # -- health -------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """The document published (retained) on ``{prefix}/{device}/health``."""
        return health_document(self)

    @property
    def overwritten(self) -> int:
        """Times another client overwrote our status or info (and we restored them)."""
        return self._guard.overwritten

    @property
    def queued(self) -> int:
        """Requests waiting for the worker."""
        return len(self._queue)

    @property
    def heartbeat_age(self) -> float:
        """Seconds since the inference worker last went round its loop."""
        return time.monotonic() - self._heartbeat_at

    @property
    def idle(self) -> bool:
        """Nothing queued, nothing being answered, nothing waiting to be published."""
        return (
            self._queue.empty()
            and self._idle.is_set()
            and self.delivery.depth == 0
            and self.forwarding == 0
        )

    @property
    def uptime(self) -> float:
        return time.monotonic() - self._started_at
