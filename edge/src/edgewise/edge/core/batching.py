"""Micro-batching across requests: queued requests for one model run as one backend call.

On by default (``max_batch`` 64; 1 turns it off): see docs/mqtt.md for what it changes in
latency figures and how probation counts a shared run.

The worker takes what is queued (``edge.core.agent``; up to 64 messages, waiting at most
``max_batch_wait_ms`` for more, 0 by default: never wait when idle). Here the JSON
requests among them for the same model, without explanations, are validated and encoded
one by one (a bad one is answered with its own error and leaves the others alone), their
feeds concatenated up to ``max_batch`` instances, run once, and the outputs split back
along the batch axis. Everything else takes the one-request path;
a group whose backend call fails unexpectedly is answered one request at a time, each in
its own containment boundary, so a batch never fails as a whole.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from edgewise.edge.core.feature import Call
from edgewise.edge.errors import RequestError
from edgewise.edge.link.payload import Request, decode_request
from edgewise.edge.link.topics import response_topic_problem

if TYPE_CHECKING:
    from edgewise.edge.core.handler import RequestPath
    from edgewise.edge.link.message import Message
    from edgewise.edge.link.outbox import OutMessage
    from edgewise.edge.runtime.model import ServedModel

log = logging.getLogger(__name__)


@dataclass
class Pending:
    """A request that may join a batch: decoded, for a model this device serves."""

    msg: Message
    model: ServedModel
    request: Request


def _batchable(agent: RequestPath, msg: Message) -> Pending | None:
    name = agent.topics.model_of(msg.topic)
    model = agent.models.get(name or "")
    if model is None or (
        msg.response_topic is not None and response_topic_problem(msg.response_topic)
    ):
        return None
    try:
        request = decode_request(msg.payload, agent.config.max_payload, agent.config.max_instances)
    except RequestError:
        return None  # the one-request path answers it with its error
    if request.tensor is not None or request.explain:
        return None
    return Pending(msg, model, request)


def run_together(
    model: ServedModel, matrices: list[np.ndarray[Any, Any]]
) -> tuple[list[list[dict[str, Any]]], float]:
    """One backend call for several requests' validated instances (``model.matrix``):
    each one's predictions, and the ms. Encoded, run and decoded once for all of them;
    the predictions are split back by request (every step works row by row)."""
    joined = matrices[0] if len(matrices) == 1 else np.concatenate(matrices)
    started = time.perf_counter()
    feeds = model.feeds(joined)
    outputs = model.backend.run(feeds)
    total = len(joined)
    if any(len(v) != total for v in outputs.values()):
        raise ValueError("an output's first axis is not the batch")
    predictions = model.decode(outputs)
    elapsed_ms = (time.perf_counter() - started) * 1000.0
    if len(predictions) != total:
        raise ValueError("the decoded predictions are not one per instance")
    out, at = [], 0
    for m in matrices:
        out.append(predictions[at : at + len(m)])
        at += len(m)
    return out, elapsed_ms


def _groups(items: list[tuple[int, Pending]], max_batch: int) -> list[list[tuple[int, Pending]]]:
    # Consecutive runs of at most max_batch instances (a request larger than that is alone).
    groups: list[list[tuple[int, Pending]]] = [[]]
    size = 0
    for item in items:
        n = len(item[1].request.instances)
        if groups[-1] and size + n > max_batch:
            groups.append([])
            size = 0
        groups[-1].append(item)
        size += n
    return groups


def _answer_group(agent: RequestPath, group: list[tuple[int, Pending]]) -> list[list[OutMessage]]:
    model = group[0][1].model
    results: dict[int, list[OutMessage]] = {}
    matrices, ok = [], []
    for k, (_, p) in enumerate(group):
        try:
            matrices.append(model.matrix(p.request.instances))
            ok.append(k)
        except RequestError as exc:
            agent.counters.received += 1
            results[k] = agent.refused(p.msg, model.name, model, p.request.id, exc)
    if ok:
        try:
            predictions, elapsed_ms = run_together(model, matrices)
        except Exception:  # answered one by one below, each inside its own boundary
            log.exception("a batched run of %s failed; answering one request at a time", model.name)
            for k in ok:
                results[k] = agent.contain(group[k][1].msg)
        else:
            counters = agent.counters
            counters.backend_calls += 1
            total = sum(len(preds) for preds in predictions)
            call = None
            if len(ok) > 1:
                counters.batched_requests += len(ok)
                counters.largest_batch = max(counters.largest_batch, total)
                call = Call(next(agent.calls), elapsed_ms, len(ok))  # counted once (probation)
            for k, preds in zip(ok, predictions):
                counters.received += 1
                p = group[k][1]
                # Each request's share of the shared run: its answer's inference_ms and
                # health's latencies stay per request, batched or not.
                share_ms = elapsed_ms * len(preds) / total
                results[k] = agent.answered(p.msg, model, p.request, preds, share_ms, call)
    return [results[k] for k in range(len(group))]


def answer_together(agent: RequestPath, msgs: list[Message]) -> list[list[OutMessage]]:
    """Each of ``msgs``' answers, in their order, same-model JSON requests batched."""
    out: list[list[OutMessage] | None] = [None] * len(msgs)
    by_model: dict[str, list[tuple[int, Pending]]] = {}
    for i, msg in enumerate(msgs):
        pending = _batchable(agent, msg)
        if pending is None:
            out[i] = agent.contain(msg)
        else:
            by_model.setdefault(pending.model.name, []).append((i, pending))
    for items in by_model.values():
        for group in _groups(items, agent.config.max_batch):
            try:
                answers = _answer_group(agent, group)
            except Exception:  # a bug outside the backend call: one by one, contained
                log.exception("batching failed; answering one request at a time")
                answers = [agent.contain(p.msg) for _, p in group]
            for (i, _), a in zip(group, answers):
                out[i] = a
    return [answers if answers is not None else [] for answers in out]
