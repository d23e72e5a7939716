"""One request's way through the core: decode, run, answer, and what failure becomes.

``RequestPath`` is the part of the core (``edge.core.agent.Agent``) that turns one request
message into its answers: a prediction, or an error answer with its code. Each request is
answered inside one containment boundary (``contain``): whatever it raises becomes an
``internal`` error answer and the next request is served. Features hear each answered
request (``Feature.answered``) and each internal failure (``Feature.failed``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from edgewise.edge.core.feature import Answered, Call, Features, Job
from edgewise.edge.errors import RequestError
from edgewise.edge.link.outbox import OutMessage
from edgewise.edge.link.payload import (
    Request,
    compact,
    decode_request,
    encode,
    error_doc,
    peek_id,
)
from edgewise.edge.link.replies import error_replies, reply
from edgewise.edge.link.topics import response_topic_problem

if TYPE_CHECKING:
    from edgewise.edge.core.config import AgentConfig
    from edgewise.edge.core.health import Counters, LatencyWindow, ModelTally
    from edgewise.edge.link.message import Message
    from edgewise.edge.link.topics import Topics
    from edgewise.edge.runtime.model import ServedModel

log = logging.getLogger(__name__)

EXPLAIN_TOP = 3  # features per explanation


class RequestPath:
    """Answers for request messages; the core provides the attributes below."""

    config: AgentConfig
    topics: Topics
    models: dict[str, ServedModel]
    counters: Counters
    tally: ModelTally
    inference_ms: dict[str, LatencyWindow]
    features: Features
    _own: str
    calls: Iterator[int]  # ids of shared backend runs (feature.Call)

    def contain(self, msg: Message) -> list[OutMessage]:
        """One request's containment boundary: its answers, whatever goes wrong inside."""
        try:
            return self.handle(msg)
        except Exception:  # a bug must not kill the worker; it is logged loudly
            log.exception("unexpected error handling a message on %s", msg.topic[:200])
        self.counters.internal_errors += 1
        name = self.topics.model_of(msg.topic) or "unknown"
        self.features.failed(self.models.get(name))
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
        call: Call | None = None,
    ) -> list[OutMessage]:
        """The answer to a served request; its latency; the features hear of it.

        ``elapsed_ms``: the request's share of a shared run (``call``), else its own run."""
        name, rid = model.name, request.id
        self.inference_ms[name].add(elapsed_ms)
        answer: dict[str, Any] = (
            {"id": rid, "version": model.version, "predictions": [compact(p) for p in predictions]}
            if request.compact  # high-rate streams: the label or value, no more
            else {
                "id": rid,
                "model": model.name,
                "version": model.version,
                "predictions": predictions,
                "inference_ms": round(elapsed_ms, 4),
            }
        )
        self.counters.answered += 1
        self.tally.add(name, "answered")
        self.features.answered(
            Answered(model, rid, request.instances, request.tensor, predictions, elapsed_ms, call)
        )
        out = self.topics.answer_topic(msg.topic, name, "out")
        if self.topics.pool is not None and not msg.topic.startswith(self._own):
            answer["device"] = self.config.device  # a pool's answer: which member served
            # (its topic names the member too: .../out/{device}, Topics.answer_topic)
        return [reply(msg, out, encode(answer), self.config.qos)]

    def record(self, answer: Answered) -> None:
        """A job's predictions (worker thread), told to the features like an answer."""
        name = answer.model.name
        window = self.inference_ms.get(name)
        if window is not None:
            window.add(answer.elapsed_ms)
        self.counters.backend_calls += 1
        self.tally.add(name, "answered")
        self.features.answered(answer)

    def _run(self, job: Job) -> list[OutMessage]:
        """A feature's job, contained: what it raises is logged, counted."""
        try:
            return job.run()
        except Exception:
            self.counters.internal_errors += 1
            log.exception("job %s failed; the agent goes on", job.name)
            return []
