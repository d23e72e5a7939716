"""The edge agent: requests from MQTT, inference in a worker thread, answers to MQTT.

Threads: paho's network thread (``edge.mqtt``) only enqueues received messages; one worker
thread decodes, runs and answers them. ``stop()`` stops taking requests, finishes those in
the queue (bounded by ``drain_timeout``), publishes ``offline`` and disconnects.
"""

from __future__ import annotations

import logging
import queue
import signal
import threading
import time
from dataclasses import dataclass
from types import FrameType
from typing import Any

from edge.backends import BackendOptions
from edge.bundle import load_bundle
from edge.config import AgentConfig
from edge.errors import EdgewiseError, RequestError
from edge.model import ServedModel
from edge.mqtt import BrokerAddress, Message, MqttConnection
from edge.payload import decode_request, encode, error_doc, peek_id

log = logging.getLogger(__name__)


@dataclass
class Counters:
    """What the agent has done since it started (read by health reporting and tests)."""

    received: int = 0
    answered: int = 0
    errors: int = 0
    overloaded: int = 0


def load_models(config: AgentConfig) -> dict[str, ServedModel]:
    """Load every bundle of the config; names must be unique."""
    if not config.bundles:
        raise EdgewiseError("no bundle given: pass --bundle DIR (or bundles = [...] in the config)")
    options = BackendOptions(num_threads=config.num_threads)
    models: dict[str, ServedModel] = {}
    for path in config.bundles:
        model = ServedModel.load(load_bundle(path), options)
        if model.name in models:
            raise EdgewiseError(f"two bundles are named {model.name!r}; model names must be unique")
        models[model.name] = model
    return models


class Agent:
    """Serves the loaded models for one device."""

    def __init__(self, config: AgentConfig, models: dict[str, ServedModel] | None = None) -> None:
        self.config = config
        self.topics = config.topics
        self.models = models if models is not None else load_models(config)
        self.counters = Counters()
        self._queue: queue.Queue[Message] = queue.Queue(maxsize=config.queue_size)
        self._accepting = threading.Event()
        self._stopped = threading.Event()
        self._worker: threading.Thread | None = None
        self.connection = MqttConnection(
            BrokerAddress.parse(config.broker),
            client_id=f"edgewise-agent-{config.device}",
            protocol=config.protocol,
            on_message=self._enqueue,
            subscriptions=[(self.topics.requests, config.qos)],
            status_topic=self.topics.status,
        )

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Connect (in the background, retrying) and start serving."""
        self._accepting.set()
        self._worker = threading.Thread(target=self._work, name="inference", daemon=True)
        self._worker.start()
        for model in self.models.values():
            # Retained, so clients (edgewise send, dashboards) learn the input spec.
            self.connection.publish(
                self.topics.model(model.name, "info"), encode(self._info(model)), qos=1, retain=True
            )
        self.connection.start()
        log.info(
            "serving %s on %s as device %r",
            ", ".join(f"{m.name} v{m.version}" for m in self.models.values()),
            self.connection.broker,
            self.config.device,
        )

    def stop(self, timeout: float | None = None) -> None:
        """Stop taking requests, finish queued ones, publish offline, disconnect."""
        if self._stopped.is_set():
            return
        timeout = self.config.drain_timeout if timeout is None else timeout
        self._accepting.clear()
        deadline = time.monotonic() + timeout
        while not self._queue.empty() and time.monotonic() < deadline:
            time.sleep(0.01)
        self._stopped.set()
        if self._worker is not None:
            self._worker.join(max(0.1, deadline - time.monotonic()))
        self.connection.stop(final_status="offline", timeout=max(1.0, deadline - time.monotonic()))
        log.info("stopped: %s", self.counters)

    def run_forever(self) -> None:
        """Serve until SIGTERM/SIGINT; a second signal exits at once."""
        stop_requested = threading.Event()

        def on_signal(signum: int, frame: FrameType | None) -> None:
            if stop_requested.is_set():
                raise SystemExit(1)
            log.info("signal %d: finishing in-flight requests", signum)
            stop_requested.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        self.start()
        while not stop_requested.wait(0.5):
            pass
        self.stop()

    # -- message path -------------------------------------------------------------------

    def _enqueue(self, msg: Message) -> None:
        """paho callback (network thread): hand the message to the worker, nothing more."""
        if not self._accepting.is_set():
            return
        try:
            self._queue.put_nowait(msg)
        except queue.Full:
            self.counters.overloaded += 1
            model = self.topics.model_of(msg.topic) or "unknown"
            self._publish_error(msg, model, None, "overloaded", "agent queue is full; retry later")

    def _work(self) -> None:
        while not self._stopped.is_set():
            try:
                msg = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                self.handle(msg)
            except Exception:  # a bug must not kill the worker; it is logged loudly
                log.exception("unexpected error handling a message on %s", msg.topic)

    def handle(self, msg: Message) -> None:
        """Answer one request message (prediction or error)."""
        self.counters.received += 1
        name = self.topics.model_of(msg.topic) or "unknown"
        model = self.models.get(name)
        rid: str | int | None = None
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
                model.predict(request.instances)
                if request.tensor is None
                else model.predict_tensor(request.tensor)
            )
            elapsed_ms = (time.perf_counter() - started) * 1000.0
        except RequestError as exc:
            if rid is None:
                rid = exc.request_id
            if rid is None and exc.code == "bad_json":
                rid = peek_id(msg.payload)
            self._publish_error(msg, name, rid, exc.code, exc.message)
            return
        answer = {
            "id": rid,
            "model": model.name,
            "version": model.version,
            "predictions": predictions,
            "inference_ms": round(elapsed_ms, 4),
        }
        self._answer(msg, self.topics.model(name, "out"), encode(answer))
        self.counters.answered += 1

    def _answer(self, msg: Message, topic: str, body: bytes) -> None:
        # MQTT 5 request/response: answer where the requester asked, with its correlation data.
        if msg.response_topic:
            self.connection.publish(
                msg.response_topic,
                body,
                qos=self.config.qos,
                correlation_data=msg.correlation_data,
            )
        else:
            self.connection.publish(topic, body, qos=self.config.qos)

    def _publish_error(
        self, msg: Message, model: str, rid: str | int | None, code: str, message: str
    ) -> None:
        self.counters.errors += 1
        body = encode(error_doc(rid, code, message, model))
        error_topic = self.topics.model(model, "error")
        # Errors always go to the error topic (the monitoring channel), and also to the
        # requester's response topic when it gave one.
        self.connection.publish(error_topic, body, qos=self.config.qos)
        if msg.response_topic:
            self._answer(msg, error_topic, body)

    @staticmethod
    def _info(model: ServedModel) -> dict[str, Any]:
        manifest = model.bundle.manifest
        return {
            "name": model.name,
            "version": model.version,
            "task": manifest["task"],
            "sha256": manifest["model"]["sha256"],
            "features": [{"name": f.name, "dtype": f.dtype} for f in model.features],
            "labels": model.bundle.labels,
            "backend": model.backend.name,
        }
