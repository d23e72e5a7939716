"""Test doubles for fast unit tests of the agent: a fake backend and an in-memory transport.

Next to, never instead of, the real tests: those run real models on a real Mosquitto.
These let ``Agent.handle`` and the answer paths be checked in microseconds, with no
socket and no model file::

    transport = MemoryTransport.factory()
    agent = build_agent(config, models={"m": fake_classifier("m")}, transport=transport)
    agent.start()
    transport.last.deliver("edgewise/dev/m/in", b'{"instances": [[1, 2]]}')
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgewise.edge.link.message import Message
from edgewise.edge.link.transport import PublishRefused, Transport, TransportSpec
from edgewise.edge.runtime.bundle import Bundle
from edgewise.edge.runtime.manifest import (
    ClassificationHead,
    Feature,
    Framework,
    InputSpec,
    Manifest,
    ModelFile,
    Parity,
    Preprocessing,
    TrainingData,
)
from edgewise.edge.runtime.model import ServedModel

Arrays = dict[str, np.ndarray[Any, Any]]


class FakeBackend:
    """A backend whose outputs come from a Python function of the feeds."""

    name = "fake"

    def __init__(
        self,
        inputs: Sequence[str],
        outputs: Sequence[str],
        fn: Callable[[Mapping[str, np.ndarray[Any, Any]]], Arrays],
    ) -> None:
        self._inputs = list(inputs)
        self._outputs = list(outputs)
        self._fn = fn
        self.calls = 0  # backend runs, to check batching and that bad requests never reach it

    @property
    def input_names(self) -> list[str]:
        return self._inputs

    @property
    def output_names(self) -> list[str]:
        return self._outputs

    @property
    def input_dtypes(self) -> dict[str, str]:
        return dict.fromkeys(self._inputs, "float32")

    def run(self, feeds: Mapping[str, np.ndarray[Any, Any]]) -> Arrays:
        self.calls += 1
        return self._fn(feeds)


def fake_classifier(
    name: str = "fake",
    n_features: int = 2,
    version: str = "1",
    fail: bool = False,
    delay_s: float = 0.0,
) -> ServedModel:
    """A two-class model on ``n_features`` floats: class "high" when their sum > 0.

    ``fail``: every run raises (a broken runtime); ``delay_s``: every run takes that long.
    """

    def decide(feeds: Mapping[str, np.ndarray[Any, Any]]) -> Arrays:
        if fail:
            raise RuntimeError("the fake runtime failed")
        if delay_s:
            time.sleep(delay_s)
        total = feeds["X"].sum(axis=1, dtype=np.float64)
        high = 1.0 / (1.0 + np.exp(-total))
        return {"probabilities": np.stack([1.0 - high, high], axis=1).astype(np.float32)}

    manifest = Manifest(
        name=name,
        version=version,
        task="classification",
        created_at="2026-01-01T00:00:00+00:00",
        framework=Framework(name="fake", estimator="sum"),
        model=ModelFile(file="model.onnx", format="onnx", sha256="0" * 64, size_bytes=1),
        input=InputSpec(
            layout="tensor",
            tensor_name="X",
            dtype="float32",
            shape=(None, n_features),
            features=tuple(
                Feature(name=f"x{i}", dtype="float32", nullable=False) for i in range(n_features)
            ),
        ),
        output=ClassificationHead(labels=("low", "high"), probabilities_output="probabilities"),
        preprocessing=Preprocessing(inside_graph=(), outside_graph=()),
        metrics={},
        parity=Parity(rows=1, passed=True),
        versions={},
        training_data=TrainingData(source="fake", sha256="0" * 64, rows=1),
    )
    backend = FakeBackend(["X"], ["probabilities"], decide)
    return ServedModel(Bundle(Path("."), manifest), backend)


@dataclass
class Published:
    """One message the agent handed to the transport."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    correlation_data: bytes | None


@dataclass
class Handle:
    """A publish's receipt: its message id (it is out at once)."""

    mid: int

    def wait_for_publish(self, timeout: float | None = None) -> None:
        return None


@dataclass
class MemoryTransport:
    """A transport that keeps what is published in a list and delivers what a test injects.

    Publishes complete at once (``on_published`` is called for QoS 1 and 2, as a PUBACK
    would); ``refuse`` makes publishes to topics starting with it raise PublishRefused.
    """

    spec: TransportSpec
    published: list[Published] = field(default_factory=list)
    acked: list[int] = field(default_factory=list)
    subscribed: list[str] = field(default_factory=list)
    refuse: str | None = None
    reconnects: int = 0
    callback_errors: int = 0
    generation: int = 0
    _connected: bool = False
    _started: bool = False
    _mid: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _changed: threading.Condition = field(init=False)

    def __post_init__(self) -> None:
        self.broker = self.spec.endpoint
        self.protocol = "3.1.1" if self.spec.protocol == "3.1.1" else "5"
        self._changed = threading.Condition(self._lock)

    @classmethod
    def factory(cls) -> MemoryFactory:
        """A factory to pass as ``build_agent(transport=...)``; ``.last``: the one it made."""
        return MemoryFactory()

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def alive(self) -> bool:
        return self._started and self._connected

    @property
    def started(self) -> bool:
        return self._started

    def start(self) -> None:
        self._started = self._connected = True
        if self.spec.status_topic:  # as the real one does on every CONNACK
            self.publish(self.spec.status_topic, "online", qos=1, retain=True)

    def wait_connected(self, timeout: float) -> bool:
        return self._connected

    def publish(
        self,
        topic: str,
        payload: bytes | str,
        qos: int = 0,
        retain: bool = False,
        correlation_data: bytes | None = None,
    ) -> Handle:
        if self.refuse is not None and topic.startswith(self.refuse):
            raise PublishRefused(f"refused by the test: {topic}")
        body = payload.encode() if isinstance(payload, str) else bytes(payload)
        with self._changed:
            self._mid += 1
            mid = self._mid
            self.published.append(Published(topic, body, qos, retain, correlation_data))
            self._changed.notify_all()
        if qos > 0 and self.spec.on_published is not None:
            self.spec.on_published(mid)
        return Handle(mid)

    def ack(self, msg: Message) -> None:
        self.acked.append(msg.mid)

    def subscribe(self, topic: str, qos: int = 1) -> None:
        self.subscribed.append(topic)

    def unsubscribe(self, topic: str) -> None:
        if topic in self.subscribed:
            self.subscribed.remove(topic)

    def stop(self, final_status: str | None = "offline", timeout: float = 5.0) -> None:
        if self._connected and self.spec.status_topic and final_status is not None:
            self.publish(self.spec.status_topic, final_status, qos=1, retain=True)
        self._connected = False

    def deliver(
        self,
        topic: str,
        payload: bytes,
        qos: int = 1,
        response_topic: str | None = None,
        correlation_data: bytes | None = None,
    ) -> Message:
        """Hand the agent a message as the network thread would."""
        with self._lock:
            self._mid += 1
            mid = self._mid
        msg = Message(
            topic,
            payload,
            qos,
            time.monotonic(),
            response_topic=response_topic,
            correlation_data=correlation_data,
            mid=mid,
        )
        self.spec.on_message(msg)
        return msg

    def wait_for(self, topic_suffix: str, timeout: float = 5.0) -> Published:
        """The first published message whose topic ends with ``topic_suffix``."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for p in self.published:
                    if p.topic.endswith(topic_suffix):
                        return p
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"nothing published on *{topic_suffix} in {timeout} s")
                self._changed.wait(left)


class MemoryFactory:
    """Builds MemoryTransports and remembers the last one."""

    def __init__(self) -> None:
        self.made: list[MemoryTransport] = []

    def __call__(self, spec: TransportSpec) -> Transport:
        transport = MemoryTransport(spec)
        self.made.append(transport)
        return transport

    @property
    def last(self) -> MemoryTransport:
        return self.made[-1]
