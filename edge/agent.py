"""The edge agent: requests from MQTT, inference in a worker thread, answers to MQTT.

Threads: paho's network thread (``edge.mqtt``) only enqueues received messages; one worker
thread takes them in batches, answers each (prediction or error), commits the batch's
answers to the outbox (``edge.delivery``) and only then acknowledges the requests to the
broker; the outbox thread publishes; a health thread publishes the retained health.

Each message is answered inside one containment boundary: whatever it raises becomes an
error answer (``internal`` if nothing more specific fits) and the next one is served.
When the outbox cannot store answers, nothing is acknowledged: the worker retries with
back-off and the requests wait in the broker. A thread that dies anyway stops the agent
(``offline``, non-zero exit) so that the service manager restarts it (``edge.supervision``).

``stop()`` stops taking requests (those not taken stay unacknowledged in the broker's
session), finishes those queued, flushes the outbox, publishes ``offline`` and
disconnects, each step bounded by ``drain_timeout``.
"""

from __future__ import annotations

import collections
import logging
import queue
import subprocess
import threading
import time
import uuid
from typing import Any

from edgewise.edge.activation import deployment_doc, publish_deployment, reload_bundles
from edgewise.edge.answer_state import AnswerStates
from edgewise.edge.backends import BackendOptions
from edgewise.edge.backoff import Backoff
from edgewise.edge.batching import answer_together
from edgewise.edge.config import AgentConfig
from edgewise.edge.delivery import Delivery, DirectDelivery, OutboxDelivery
from edgewise.edge.errors import RequestError
from edgewise.edge.field_data import FieldData
from edgewise.edge.flood import FloodMemory
from edgewise.edge.ha_discovery import Discovery
from edgewise.edge.health import (
    Counters,
    LatencyWindow,
    ModelTally,
    health_document,
    publish_health,
    report_health,
)
from edgewise.edge.model import ServedModel, load_models
from edgewise.edge.mqtt import Message
from edgewise.edge.outbox import Outbox, OutMessage, StorageError
from edgewise.edge.payload import Request, decode_request, encode, error_doc, peek_id
from edgewise.edge.probation import Probation
from edgewise.edge.reconcile import Fleet
from edgewise.edge.replies import error_replies, reply
from edgewise.edge.retained import RetainedGuard
from edgewise.edge.shadow import Shadows
from edgewise.edge.supervision import (
    Notifier,
    Supervisor,
    reload_on_sighup,
    stop_on_signals,
)
from edgewise.edge.topics import response_topic_problem
from edgewise.edge.transport import TransportFactory, TransportSpec, mqtt_transport
from edgewise.edge.workers import (
    Workers,
    helper_client_id,
    report_to_supervisor,
    retire_stale_helpers,
)

log = logging.getLogger(__name__)

BATCH = 64  # requests answered per outbox commit at most
PEEK_LIMIT = 4096  # an overloaded request's id is read only from a payload this small
# Two agents with one device id take each other's session about twice a second for ever:
# after this many connections in a row taken over, one of them stops and says why.
MAX_TAKEOVERS = 6
# Room in a packet beyond its payload: topic (up to 64 KiB) and MQTT 5 properties.
PACKET_HEADROOM = 1 << 17


def receive_limit(max_payload: int) -> int:
    """The Maximum Packet Size the agent announces: its largest request (max_payload) or
    a roll-out chunk, whichever is larger, plus headroom for topic and properties."""
    from edgewise.edge.transfer import CHUNK_SIZE

    return max(max_payload, CHUNK_SIZE) + PACKET_HEADROOM


RECENT = 4096  # acknowledged requests remembered to skip the broker's redeliveries
EXPLAIN_TOP = 3  # features per explanation


class Agent:
    """Serves the loaded models for one device."""

    def __init__(
        self,
        config: AgentConfig,
        models: dict[str, ServedModel] | None = None,
        transport: TransportFactory | None = None,
        helper: int | None = None,
        retiring: bool = False,
    ) -> None:
        self.config = config
        # A helper process of ``workers`` > 1 (edge.workers): it serves requests only.
        self.helper = helper
        self.topics = config.topics
        self.backend_options = BackendOptions(config.num_threads, config.providers)
        self.models = (
            models
            if models is not None
            else load_models(config.bundles, self.backend_options, config.trusted_keys)
        )
        # Roll-outs (edge.reconcile): what they made active before a restart serves again.
        self.fleet = Fleet(self)
        self.fleet.restore(self.models)
        self.shadows = Shadows(self)
        self.reload_requested = threading.Event()  # set by SIGHUP: edge.activation
        self.probation = Probation(self)
        self.counters = Counters()
        self.tally = ModelTally()
        self.inference_ms = {name: LatencyWindow() for name in self.models}
        self.e2e_ms = {name: LatencyWindow() for name in self.models}
        self._queue: queue.Queue[Message] = queue.Queue(maxsize=config.queue_size)
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
        self.storage_error: str | None = None  # set while the outbox cannot commit
        self._started_at = time.monotonic()
        # Names this run in info and health, so clients can tell a spoofed info apart.
        self.session = uuid.uuid4().hex[:16]
        self._info_bodies = {
            name: encode({**model.info(), "session": self.session})
            for name, model in self.models.items()
        }
        self._guard = RetainedGuard(self.topics, self._info_bodies)
        self.discovery = Discovery(self.topics, config.ha_prefix, config.ha_discovery)
        self._own = f"{config.prefix}/{config.device}/"
        self.field = FieldData(self)  # drift and captured samples (docs/drift.md)
        self.workers = Workers(self) if config.workers > 1 and helper is None else None
        self.retiring: list[subprocess.Popen[bytes]] = []  # helpers of a larger ``workers``
        # Several processes share the requests through one shared subscription; the
        # other filter is dropped from a persistent session an earlier run left.
        plain, shared = self.topics.requests, self.topics.shared_requests
        requests, stale = (shared, plain) if config.workers > 1 else (plain, shared)
        serve: list[tuple[str, int]] = [(requests, config.qos)]
        if self.topics.pool_requests:
            serve.append((self.topics.pool_requests, config.qos))
        spec = TransportSpec(
            config.endpoint,
            client_id=(
                helper_client_id(config.device, helper)
                if helper is not None
                else f"edgewise-agent-{config.device}"
            ),
            protocol=config.protocol,
            on_message=self._enqueue,
            # Its own status and info too: to restore them when another client overwrites.
            subscriptions=(
                ([] if retiring else serve)
                if helper is not None
                else [
                    *serve,
                    (self.topics.status, 1),
                    (self.topics.model("+", "info"), 1),
                    *self.fleet.subscriptions,
                    *self.discovery.subscriptions,
                    *self.field.subscriptions,
                ]
            ),
            unsubscriptions=[stale, shared] if retiring else [stale],
            status_topic=self.topics.status if helper is None else None,
            session=config.session,
            on_published=self._on_published,
            on_failure=self.supervisor.fail,
            max_takeovers=MAX_TAKEOVERS,
            receive_limit=receive_limit(config.max_payload),
        )
        self.connection = (transport or mqtt_transport)(spec)
        self._direct = DirectDelivery(self.connection)  # for what must not wait on disk
        self.delivery: Delivery = (
            OutboxDelivery(
                Outbox(
                    config.outbox_path if helper is None else config.helper_outbox_path(helper),
                    max_count=config.outbox_max_count,
                    max_bytes=config.outbox_max_bytes,
                    sync=config.outbox_sync,
                ),
                self.connection,
            )
            if config.durable
            else self._direct
        )
        self.states = AnswerStates(self.connection, lambda name: self.topics.model(name, "state"))

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Connect (in the background, retrying) and start serving."""
        self._started_at = self._heartbeat_at = time.monotonic()
        self._accepting.set()
        self.delivery.start(self.supervisor.spawn)
        self.supervisor.spawn(self._work, "inference")
        if self.helper is not None:  # counters to the supervisor; the rest is its job
            self.supervisor.spawn(lambda: report_to_supervisor(self, self._stopped), "health")
            self.connection.start()
            return
        self.retiring = retire_stale_helpers(self.config)
        self.supervisor.spawn(lambda: report_health(self, self._stopped), "health")
        self.supervisor.spawn(lambda: self.fleet.run(self._stopped), "fleet")
        self.supervisor.spawn(lambda: self.field.run(self._stopped), "capture")
        if self.workers is not None:
            workers = self.workers
            self.supervisor.spawn(lambda: workers.run(self._stopped), "workers")
        for name, body in self._info_bodies.items():
            # Retained, so clients (edgewise send, dashboards) learn the input spec.
            self.connection.publish(self.topics.model(name, "info"), body, qos=1, retain=True)
            publish_deployment(self, name, deployment_doc("active", self.models[name]))
        self.discovery.publish_all(self.connection, self.models)
        self.connection.start()
        self.notifier.notify("READY=1")
        log.info(
            "serving %s on %s as device %r (%s; %s)",
            ", ".join(f"{m.name} v{m.version}" for m in self.models.values()),
            self.connection.broker,
            self.config.device,
            self.config.device_source,
            f"outbox {self.config.outbox_path}" if self.config.durable else "no outbox",
        )

    def stop(self, timeout: float | None = None) -> None:
        """Stop taking requests, finish queued ones, flush, publish offline, disconnect."""
        if self._stopped.is_set():
            return
        timeout = self.config.drain_timeout if timeout is None else timeout
        self.notifier.notify("STOPPING=1")
        self._accepting.clear()
        deadline = time.monotonic() + timeout
        if self.workers is not None:  # they drain beside this process
            stopping = threading.Thread(target=self.workers.stop, args=(timeout,), daemon=True)
            stopping.start()
        while (
            (not self._queue.empty() or not self._idle.is_set())
            and time.monotonic() < deadline
            and not self.supervisor.failed.is_set()  # a dead worker drains nothing
        ):
            time.sleep(0.01)
        self._stopped.set()
        # The outbox thread goes on: it flushes below, and delivery.close() ends it.
        self.supervisor.join(
            max(0.1, deadline - time.monotonic()),
            ("inference", "health", "fleet", "capture", "workers"),
        )
        if self.workers is not None:
            stopping.join(max(0.1, deadline - time.monotonic()))
        self.field.flush()
        if not self.delivery.flush(max(0.0, deadline - time.monotonic())):
            log.warning("%d answers stay in the outbox for the next start", self.delivery.depth)
        if self.helper is None:
            publish_health(self)
        self.field.close()  # after the final health, which reports the capture store
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
            if self.reload_requested.is_set():
                self.reload_requested.clear()
                try:
                    reload_bundles(self)
                except Exception:  # a reload never stops serving: the old versions stay
                    log.exception("reload failed; the active versions keep serving")
            network_died = self.connection.started and not self.connection.alive
            if self.supervisor.check(["mqtt-network"] if network_died else []):
                log.critical("stopping: %s", self.supervisor.reason)
                self.stop(timeout=min(self.config.drain_timeout, 5.0))
                return 1
        self.stop()
        return 0

    def run_forever(self) -> int:
        """Serve until SIGTERM/SIGINT (exit status 0) or a thread failure (1); a second
        signal exits at once."""
        stop_requested = stop_on_signals()
        reload_on_sighup(self.reload_requested)
        self.start()
        return self.wait(stop_requested)

    def activate(self, model: ServedModel) -> None:
        """Serve ``model`` from the next request on (a new model or a new version of one);
        requests already taken finish on the version they started with."""
        name, topic = model.name, self.topics.model(model.name, "info")
        old = self.models.get(name)
        self.fleet.activated(old, model)  # a restart keeps this version
        # Latencies are per version: health shows the one serving.
        self.inference_ms[name], self.e2e_ms[name] = LatencyWindow(), LatencyWindow()
        body = encode({**model.info(), "session": self.session})
        self._guard.set_info(topic, body)  # so that a restore never brings the old one back
        self._info_bodies[name] = body
        self.models[name] = model  # one assignment: a request sees the old or the new
        self.connection.publish(topic, body, qos=1, retain=True)
        if old is None:
            self.discovery.added(self.connection, model)
        if self.workers is not None:
            self.workers.restart_requested.set()  # the helpers load what is active now

    def remove(self, name: str, deployment: str) -> None:
        """Stop serving ``name`` (``edgewise undeploy``) and clear its retained topics."""
        self.shadows.stop(name)
        model = self.models.pop(name, None)
        topic = self.topics.model(name, "info")
        self._guard.set_info(topic, b"")  # an info written later is cleared, not restored
        self._info_bodies.pop(name, None)
        gone = deployment_doc("removed", model) | {"deployment": deployment}
        publish_deployment(self, name, gone, retain=False)  # seen by those watching now
        for kind in ("info", "deployment"):
            self.connection.publish(self.topics.model(name, kind), b"", qos=1, retain=True)
        self.states.forget(name)
        self.field.drift.forget(name)
        if model is not None:
            self.discovery.removed(self.connection, model)
        if self.workers is not None:
            self.workers.restart_requested.set()
        log.info("%s removed (undeploy)", name)

    # -- message path -------------------------------------------------------------------

    def _enqueue(self, msg: Message) -> None:
        """paho callback (network thread): hand the message to the worker, nothing more.

        The queue is bounded. A QoS 0 request beyond it is answered "overloaded". A QoS 1
        request waits for room: paho stops reading the socket meanwhile, so the broker
        holds the backlog (TCP back-pressure). Its receive-maximum window should do that
        alone, but Mosquitto 2.0.11 overruns it once PUBACKs flow (eclipse-mosquitto#2301).
        The worker never waits on this thread, so the wait is short.
        """
        try:
            if self.discovery.owns(msg.topic):
                self.discovery.on_status(msg.payload)
                self.connection.ack(msg)
                return
            if self.field.owns(msg.topic):
                self.field.put(msg)  # acked by the capture thread
                return
            if self.fleet.owns(msg.topic):
                self.fleet.put(msg, self._accepting)  # acked by the fleet thread
                return
            if self._guard.owns(msg.topic):
                restore = self._guard.check(msg) if self._accepting.is_set() else None
                if restore is not None:
                    self.connection.publish(*restore, qos=1, retain=True)
                self.connection.ack(msg)
                return
            self._put(msg)
        except Exception:  # nothing may raise into paho's loop
            self.counters.internal_errors += 1
            log.exception("could not queue a message on %s", msg.topic[:200])

    def _put(self, msg: Message) -> None:
        while self._accepting.is_set():
            if msg.qos == 0:
                try:
                    self._queue.put_nowait(msg)
                except queue.Full:
                    self._overloaded(msg)
                    return
            else:
                try:
                    self._queue.put(msg, timeout=0.5)
                except queue.Full:
                    continue
            waiting = self._queue.qsize()
            if waiting > self.counters.peak_queued:
                self.counters.peak_queued = waiting
            return
        # Stopping: a QoS 1 request stays unacknowledged and the broker redelivers it later.

    def _overloaded(self, msg: Message, why: str = "agent queue is full; retry later") -> None:
        self.counters.overloaded += 1
        self._flood.hit()
        name = self.topics.model_of(msg.topic) or "unknown"
        rid = peek_id(msg.payload) if len(msg.payload) <= PEEK_LIMIT else None
        doc = error_doc(rid, "overloaded", why, name)
        self._direct.send(error_replies(self.topics, msg, name, encode(doc), self.config.qos))

    def _on_published(self, mid: int) -> None:
        self.delivery.on_published(mid)

    def _heartbeat(self) -> None:
        self._heartbeat_at = time.monotonic()
        self.notifier.ping()

    def _work(self) -> None:
        while not self._stopped.is_set():
            self._heartbeat()
            self.states.flush()  # the last answers held back by the once-a-second limit
            self.shadows.flush()  # likewise the shadows' last figures
            self.field.flush()  # captured samples, due drift documents
            if self.discovery.announced.is_set():
                self.discovery.announced.clear()
                self.discovery.publish_all(self.connection, self.models)
            try:
                first = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            self._idle.clear()
            batch = [first]
            # Take what is queued; with max_batch_wait_ms, wait that long for more.
            until = time.monotonic() + self.config.max_batch_wait_ms / 1000.0
            while len(batch) < BATCH:
                try:
                    left = until - time.monotonic()
                    batch.append(
                        self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait()
                    )
                except queue.Empty:
                    break
            try:
                self._serve(self._shed(batch))
            finally:
                self._idle.set()
                if self._queue.empty():
                    self._flood.drained()

    def _shed(self, batch: list[Message]) -> list[Message]:
        """The batch without the QoS 0 requests that waited past ``max_wait_ms``: those are
        answered "overloaded" at once (a flood's backlog is cleared, not computed)."""
        limit = self.config.max_wait_ms / 1000.0
        if not limit:
            return batch
        now = time.monotonic()
        keep = []
        for msg in batch:
            if msg.qos == 0 and now - msg.received_at > limit:
                self._overloaded(msg, "waited too long in the agent's queue; retry later")
            else:
                keep.append(msg)
        return keep

    def _serve(self, batch: list[Message]) -> None:
        """Answer a batch, commit the answers, then acknowledge the requests."""
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
            answers = [a for msg in fresh for a in self.contain(msg)]
        if not self._store(answers):
            return  # stopping with the outbox failing: unacknowledged, the broker keeps them
        now = time.monotonic()
        for msg, key in zip(batch, keys, strict=True):
            window = self.e2e_ms.get(self.topics.model_of(msg.topic) or "")
            if window is not None:
                window.add((now - msg.received_at) * 1000.0)
            self.connection.ack(msg)
            if msg.qos:
                self._recent[key] = None
                if len(self._recent) > RECENT:
                    self._recent.popitem(last=False)

    def contain(self, msg: Message) -> list[OutMessage]:
        """One request's containment boundary: its answers, whatever goes wrong inside."""
        try:
            return self.handle(msg)
        except Exception:  # a bug must not kill the worker; it is logged loudly
            log.exception("unexpected error handling a message on %s", msg.topic[:200])
        self.counters.internal_errors += 1
        name = self.topics.model_of(msg.topic) or "unknown"
        if (model := self.models.get(name)) is not None:
            self.probation.record(model, None)
        doc = error_doc(peek_id(msg.payload), "internal", "the agent failed", name)
        try:
            return error_replies(self.topics, msg, name, encode(doc), self.config.qos)
        except Exception:  # e.g. a response topic that cannot be used: the error topic only
            log.exception("could not address the error answer; error topic only")
            return [
                OutMessage(
                    self.topics.answer_topic(msg.topic, name, "error"), encode(doc), self.config.qos
                )
            ]

    def _store(self, answers: list[OutMessage]) -> bool:
        """Commit answers; while the outbox cannot, retry with back-off (nothing is acked
        meanwhile). False only when the agent stops before the commit succeeded."""
        backoff = Backoff(initial=0.2, cap=10.0)
        while True:
            try:
                self.delivery.send(answers)
            except StorageError as exc:
                if self.storage_error is None:
                    log.error("%s: not acknowledging requests until it can; retrying", exc)
                self.storage_error = str(exc)
                self._heartbeat()  # waiting on the disk is not a hang
                if self._stopped.wait(backoff.next()):
                    return False
                continue
            if self.storage_error is not None:
                log.warning("the outbox stores answers again; serving resumes")
                self.storage_error = None
            return True

    def handle(self, msg: Message) -> list[OutMessage]:
        """The answer to one request: a prediction, or an error (and its copies)."""
        self.counters.received += 1
        name = self.topics.model_of(msg.topic) or "unknown"
        model = self.models.get(name)
        rid: str | int | None = None
        if msg.response_topic is not None:
            problem = response_topic_problem(msg.response_topic)
            if problem is not None:
                self.counters.errors += 1
                why = f"response topic {problem}"
                doc = error_doc(peek_id(msg.payload), "bad_request", why, name)
                return [
                    OutMessage(
                        self.topics.answer_topic(msg.topic, name, "error"),
                        encode(doc),
                        self.config.qos,
                    )
                ]
        try:
            request = decode_request(
                msg.payload, self.config.max_payload, self.config.max_instances
            )
            rid = request.id
            if model is None:
                raise RequestError(
                    "unknown_model", f"no model {name!r} on this device; have {sorted(self.models)}"
                )
            started = time.perf_counter()
            predictions = (
                model.predict(request.instances, explain=request.explain, top=EXPLAIN_TOP)
                if request.tensor is None
                else model.predict_tensor(request.tensor)
            )
            elapsed_ms = (time.perf_counter() - started) * 1000.0
        except RequestError as exc:
            return self.refused(msg, name, model, rid, exc)
        self.counters.backend_calls += 1
        return self.answered(msg, model, request, predictions, elapsed_ms)

    def refused(
        self,
        msg: Message,
        name: str,
        model: ServedModel | None,
        rid: str | int | None,
        exc: RequestError,
    ) -> list[OutMessage]:
        """The error answer (and its copies) to a request that cannot be served."""
        if rid is None:
            rid = exc.request_id
        if rid is None and exc.code == "bad_json":
            rid = peek_id(msg.payload)
        self.counters.errors += 1
        if model is not None:
            self.tally.add(name, exc.code)
        body = encode(error_doc(rid, exc.code, exc.message, name))
        return error_replies(self.topics, msg, name, body, self.config.qos)

    def answered(
        self,
        msg: Message,
        model: ServedModel,
        request: Request,
        predictions: list[dict[str, Any]],
        elapsed_ms: float,
    ) -> list[OutMessage]:
        """The answer to a served request; its latency, probation, shadow and state."""
        name, rid = model.name, request.id
        self.inference_ms[name].add(elapsed_ms)
        self.probation.record(model, elapsed_ms)
        self.shadows.compare(name, request.instances, request.tensor, predictions)
        answer = {
            "id": rid,
            "model": model.name,
            "version": model.version,
            "predictions": predictions,
            "inference_ms": round(elapsed_ms, 4),
        }
        self.counters.answered += 1
        self.tally.add(name, "answered")
        self.states.record(name, model.version, rid, predictions)
        self.field.observe(model, request.instances, request.tensor, predictions)
        out = self.topics.answer_topic(msg.topic, name, "out")
        if self.topics.pool is not None and not msg.topic.startswith(self._own):
            answer["device"] = self.config.device  # a pool's answer: which member served
            # (its topic names the member too: .../out/{device}, Topics.answer_topic)
        return [reply(msg, out, encode(answer), self.config.qos)]

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
        return self._queue.qsize()

    @property
    def heartbeat_age(self) -> float:
        """Seconds since the inference worker last went round its loop."""
        return time.monotonic() - self._heartbeat_at

    @property
    def idle(self) -> bool:
        """Nothing queued, nothing being answered, nothing waiting to be published."""
        return self._queue.empty() and self._idle.is_set() and self.delivery.depth == 0

    @property
    def uptime(self) -> float:
        return time.monotonic() - self._started_at
