"""Client side of the topics: ``edgewise send`` (instances in, answers back) and ``watch``.

Device-side code: the standard library and paho through ``edge.link.mqtt``; NumPy only for
windows and arrays (``edge.remote.send_data``).
"""

from __future__ import annotations

import json
import queue
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from edgewise.edge.errors import EdgewiseError
from edgewise.edge.link.endpoint import Endpoint
from edgewise.edge.link.message import Message
from edgewise.edge.link.mqtt import MqttConnection
from edgewise.edge.link.topics import Topics
from edgewise.edge.remote.send_data import PlanBuilder, SendPlan, csv_rows

CONNECT_TIMEOUT = 10.0  # seconds to reach the broker at most (less with a shorter --timeout)


@dataclass
class SendResult:
    """What came back for the rows sent."""

    sent: int = 0
    answered: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    predictions: dict[int, dict[str, Any]] = field(default_factory=dict)
    correct: int = 0
    scored: int = 0
    seconds: float = 0.0

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.scored if self.scored else None


def connect(
    broker: Endpoint | str, protocol: str, subscriptions: list[tuple[str, int]], timeout: float
) -> tuple[MqttConnection, queue.Queue[Message]]:
    """A started connection whose messages land in the returned queue.

    Fails with one error line (the last connection problem) after ``timeout`` seconds;
    the retries in between are not logged.
    """
    inbox: queue.Queue[Message] = queue.Queue()
    conn = MqttConnection(
        broker if isinstance(broker, Endpoint) else Endpoint.parse(broker),
        protocol=protocol,
        on_message=inbox.put,
        subscriptions=subscriptions,
        quiet=True,
    )
    conn.start()
    if not conn.wait_connected(timeout):
        error = conn.last_error
        conn.stop(final_status=None, timeout=1)
        raise EdgewiseError(f"{error} (gave up after {timeout:g}s)")
    return conn, inbox


def _same(label: Any, target: str) -> bool:
    try:
        return float(label) == float(target)
    except (TypeError, ValueError):
        return str(label) == target


def _messages(inbox: queue.Queue[Message], timeout: float) -> Iterator[Message]:
    """What arrives in ``inbox`` until ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        try:
            yield inbox.get(timeout=left)
        except queue.Empty:
            return


def wait_ready(
    inbox: queue.Queue[Message], topics: Topics, model: str, timeout: float
) -> dict[str, Any] | None:
    """The model's info once its agent is online, or None after ``timeout``.

    All three are retained: a stale info from an agent that has stopped must not count, so
    the device's status must read ``online`` too. The agent publishes ``online`` only after
    it has subscribed to its requests, so requests sent from then on are not lost. The
    info must carry the session of the agent's health report: another client's info (a
    spoof) is not used; the agent restores its own within a second.
    """
    info_topic = topics.model(model, "info")
    info: dict[str, Any] | None = None
    session: str | None = None
    online = False
    for msg in _messages(inbox, timeout):
        if msg.topic == topics.status:
            online = msg.payload == b"online"
            continue
        doc = _json_object(msg.payload)
        if msg.topic == info_topic:
            info = doc
        elif msg.topic == topics.health and doc is not None:
            session = doc.get("session")
        if info is not None and online and _same_session(info, session):
            return info
    if info is not None and online and not _same_session(info, session):
        raise EdgewiseError(
            f"the retained {info_topic} does not come from the agent that is online (its "
            "session differs from the agent's health report): another client may have "
            "overwritten it; see docs/mqtt.md#security"
        )
    return None


def wait_pool_ready(
    inbox: queue.Queue[Message], topics: Topics, model: str, timeout: float
) -> dict[str, Any] | None:
    """The model's info from an online member of ``topics.pool`` (its health names the
    pool, its info carries the session of that health), or None after ``timeout``."""
    seen: dict[str, dict[str, Any]] = {}  # device -> online, pool, session, info
    for msg in _messages(inbox, timeout):
        parts = msg.topic.split("/")
        if len(parts) < 3 or parts[0] != topics.prefix:
            continue
        state = seen.setdefault(parts[1], {})
        if parts[2:] == ["status"]:
            state["online"] = msg.payload == b"online"
        elif parts[2:] == ["health"] and (doc := _json_object(msg.payload)) is not None:
            state["pool"], state["session"] = doc.get("pool"), doc.get("session")
        elif parts[2:] == [model, "info"]:
            state["info"] = _json_object(msg.payload)
        info = state.get("info")
        if (
            state.get("online")
            and state.get("pool") == topics.pool
            and isinstance(info, dict)
            and _same_session(info, state.get("session"))
        ):
            return info
    return None


def _same_session(info: dict[str, Any], session: str | None) -> bool:
    # Agents before session tokens publish none: nothing to compare then.
    return "session" not in info or info.get("session") == session


def _json_object(payload: bytes) -> dict[str, Any] | None:
    try:
        doc = json.loads(payload)
    except (ValueError, RecursionError):
        return None
    return doc if isinstance(doc, dict) else None


def send(
    broker: Endpoint | str,
    topics: Topics,
    model: str,
    plan_for: PlanBuilder,
    batch: int = 1,
    in_flight: int = 256,
    timeout: float = 30.0,
    protocol: str = "auto",
    progress: bool = True,
    info_timeout: float = 3.0,
) -> SendResult:
    """Publish what ``plan_for`` makes of the model's info, collect the answers, score them.

    ``plan_for`` is one of ``edge.remote.send_data``'s sources: ``csv_rows``, ``csv_windows``,
    ``npz_arrays``. ``in_flight`` is how many requests may wait for their answer at once.
    """
    if batch < 1:
        raise EdgewiseError(f"--batch {batch}: send 1 or more instances per request")
    if in_flight < 1:
        raise EdgewiseError(f"in_flight {in_flight}: let 1 or more requests wait at once")
    if topics.pool is not None:  # any member's info; answers on the pool's topics
        topic_of = topics.pool_model
        every = f"{topics.prefix}/+"
        ready = [(f"{every}/{model}/info", 1), (f"{every}/status", 1), (f"{every}/health", 1)]
    else:
        topic_of = topics.model
        ready = [(topics.model(model, "info"), 1), (topics.status, 1), (topics.health, 1)]
    # A pool's members answer one level below, on a topic named after themselves.
    below = "/+" if topics.pool is not None else ""
    subs = [(topic_of(model, "out") + below, 1), (topic_of(model, "error") + below, 1), *ready]
    conn, inbox = connect(broker, protocol, subs, timeout=min(CONNECT_TIMEOUT, timeout))
    try:
        if topics.pool is not None:
            info = wait_pool_ready(inbox, topics, model, timeout=info_timeout)
            where = f"in pool {topics.pool!r}"
        else:
            info = wait_ready(inbox, topics, model, timeout=info_timeout)
            where = f"on device {topics.device!r}"
        if info is None:
            raise EdgewiseError(
                f"no agent serves model {model!r} {where} at {conn.broker} "
                f"(no retained {ready[0][0]} of an online device)"
            )
        plan = plan_for(info)
        return _stream(
            conn, inbox, topic_of(model, "in"), plan, batch, in_flight, timeout, progress
        )
    finally:
        conn.stop(final_status=None, timeout=2)


def send_csv(
    broker: Endpoint | str,
    topics: Topics,
    model: str,
    csv_path: str | Path,
    target: str | None = None,
    **options: Any,
) -> SendResult:
    """Publish the CSV rows as requests, collect the answers, score them against ``target``."""
    return send(broker, topics, model, csv_rows(csv_path, target), **options)


def _stream(
    conn: MqttConnection,
    inbox: queue.Queue[Message],
    in_topic: str,
    plan: SendPlan,
    batch: int,
    in_flight: int,
    timeout: float,
    progress: bool,
) -> SendResult:
    from tqdm import tqdm

    run = uuid.uuid4().hex[:8]
    n = plan.count
    batches = [list(range(i, min(i + batch, n))) for i in range(0, n, batch)]
    pending: dict[str, list[int]] = {}
    result = SendResult()
    bar = tqdm(total=n, disable=not progress, unit=plan.unit, file=sys.stderr)
    started = time.monotonic()
    next_batch = 0
    last_progress = started
    while next_batch < len(batches) or pending:
        while next_batch < len(batches) and len(pending) < in_flight:
            idx = batches[next_batch]
            rid = f"{run}-{next_batch}"
            conn.publish(in_topic, plan.payload(idx, rid), qos=1)
            pending[rid] = idx
            result.sent += len(idx)
            next_batch += 1
        try:
            msg = inbox.get(timeout=0.5)
        except queue.Empty:
            if time.monotonic() - last_progress > timeout:
                break  # nothing came back for `timeout` seconds
            continue
        try:
            doc = json.loads(msg.payload)
        except (ValueError, RecursionError):
            continue  # not an answer (anyone may publish on these topics)
        if not isinstance(doc, dict) or not _signed_by_topic(msg.topic, doc, in_topic):
            continue  # a pool answer in another member's name
        answered = pending.pop(str(doc.get("id")), None)
        if answered is None:
            continue  # not ours (another client, or a duplicate)
        last_progress = time.monotonic()
        if msg.topic[len(in_topic) - len("in") :].startswith("error"):
            result.errors[doc.get("code", "?")] += len(answered)
        else:
            predictions = doc.get("predictions")
            if not isinstance(predictions, list) or not all(
                isinstance(p, dict) for p in predictions
            ):
                result.errors["malformed_answer"] += len(answered)
                continue
            for i, pred in zip(answered, predictions):
                result.predictions[i] = pred
                result.answered += 1
                truth = plan.truth[i]
                if truth is not None and "label" in pred:
                    result.scored += 1
                    result.correct += _same(pred["label"], truth)
        bar.update(len(answered))
    bar.close()
    result.seconds = time.monotonic() - started
    return result


def _signed_by_topic(topic: str, doc: dict[str, Any], in_topic: str) -> bool:
    """Whether an answer claims no other device than its topic names: pool answers come on
    ``.../out/{device}`` (and ``.../error/{device}``), which the shipped ACL lets only that
    device write, so the topic is the evidence and a ``device`` field must agree with it."""
    base = in_topic[: -len("in")]
    rest = topic[len(base) :].split("/") if topic.startswith(base) else []
    if not rest or rest[0] not in ("out", "error"):
        return False
    return len(rest) == 1 or (len(rest) == 2 and doc.get("device", rest[1]) == rest[1])


def watch(
    broker: Endpoint | str,
    prefix: str,
    device: str,
    out: TextIO,
    count: int | None = None,
    timeout: float | None = None,
    as_json: bool = False,
    protocol: str = "auto",
) -> int:
    """Print answers, errors and status changes as they arrive; returns how many."""
    subs = [(topic, 0) for topic in Topics.watch_filters(prefix, device)]
    started = time.monotonic()
    wait = CONNECT_TIMEOUT if timeout is None else min(CONNECT_TIMEOUT, timeout)
    conn, inbox = connect(broker, protocol, subs, timeout=wait)
    seen = 0
    deadline = None if timeout is None else started + timeout
    try:
        while count is None or seen < count:
            left = 0.5 if deadline is None else min(0.5, deadline - time.monotonic())
            if left <= 0:
                break
            try:
                msg = inbox.get(timeout=left)
            except queue.Empty:
                continue
            seen += 1
            print(_format(msg, as_json), file=out, flush=True)
    finally:
        conn.stop(final_status=None, timeout=2)
    return seen


def _format(msg: Message, as_json: bool) -> str:
    text = msg.payload.decode("utf-8", "replace")
    if as_json:
        return json.dumps({"topic": msg.topic, "payload": text})
    if msg.topic.endswith("/status"):
        return f"{msg.topic}: {text}"
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):
        return f"{msg.topic}: {text}"
    if not isinstance(doc, dict):
        return f"{msg.topic}: {text}"
    if msg.topic.endswith("/error"):
        return f"{msg.topic} id={doc.get('id')} ERROR {doc.get('code')}: {doc.get('message')}"
    try:
        preds = ", ".join(_short(p) for p in doc.get("predictions", []))
    except (TypeError, KeyError, ValueError, AttributeError):
        return f"{msg.topic}: {text}"  # not an answer of ours: shown as it came
    return f"{msg.topic} id={doc.get('id')} {preds} ({doc.get('inference_ms')} ms)"


def _short(pred: dict[str, Any]) -> str:
    if "value" in pred:
        return f"{pred['value']:.4g}"
    probs = pred.get("probabilities") or {}
    p = probs.get(str(pred["label"]))
    return f"{pred['label']}" + (f" ({p:.2f})" if p is not None else "")
