"""How features attach to the serving core: a few fixed points, called through a fan-out.

The core (``edge.core.agent``) serves requests and knows no feature. A feature (roll-outs,
shadows, probation, drift and capture, Home Assistant discovery, answer states, worker
processes, ...) overrides the points it needs of ``Feature``; the composition root
(``edge.app``) builds each with only what it uses (the ``Host``, and other features it
needs, injected) and attaches them in order. ``Features`` calls a point on every
feature that overrides it, each call contained: an exception is logged and counted
(health ``counters.feature_errors``), never raised into the core, so a broken feature
cannot stop requests being answered.

The fixed points, and the thread each is called on:

=================  ===============  ===================================================
point              thread           when
=================  ===============  ===================================================
``routes``         (at assembly)    the topic filters it subscribes to or receives
``accept``         network          a message on one of its routes: enqueue, no work
``started``        caller of start  the core has started; the link is about to connect
``answered``       worker           a request was answered (after its answer was built)
``failed``         worker           a request failed inside the agent (``internal``)
``tick``           worker           each round of the worker's loop (about 5 per second)
``swapped``        any              a model version came in, went out, or both
``threads``        (at start)       its own threads, run and joined by the core
``health``         health           its section of the health document
``stopping``       caller of stop   the core stops taking requests
``close``          caller of stop   after the final health report
=================  ===============  ===================================================
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    import numpy as np

    from edgewise.edge.core.config import AgentConfig
    from edgewise.edge.link.message import Message
    from edgewise.edge.link.outbox import OutMessage
    from edgewise.edge.link.topics import Topics
    from edgewise.edge.link.transport import Transport
    from edgewise.edge.runtime.model import ServedModel

log = logging.getLogger(__name__)

LOG_EVERY_S = 60.0  # one log line per feature and point at most this often


@dataclass(frozen=True)
class Route:
    """A topic filter a feature receives.

    ``inbox`` says what the core does once ``accept`` returns: ``inline`` acknowledges
    the message (the feature is done with it); ``wait`` and ``drop`` leave that to the
    feature (``wait``: it holds the network thread until its inbox has room, so the broker
    keeps the rest; ``drop``: it drops what does not fit and acknowledges). With
    ``subscribe`` False the filter only routes (the feature subscribes to parts of it at
    run time, e.g. one bundle's chunks)."""

    filter: str
    qos: int = 1
    inbox: Literal["wait", "drop", "inline"] = "inline"
    subscribe: bool = True


class Host(Protocol):
    """All a feature may use of the core."""

    @property
    def config(self) -> AgentConfig: ...
    @property
    def topics(self) -> Topics: ...
    @property
    def link(self) -> Transport: ...
    @property
    def models(self) -> Mapping[str, ServedModel]: ...
    @property
    def accepting(self) -> threading.Event: ...

    def activate(self, model: ServedModel) -> None: ...
    def remove(self, name: str) -> None: ...
    def submit(self, job: Job) -> bool: ...
    def record(self, answer: Answered) -> None: ...


@dataclass(frozen=True)
class Job:
    """Work a feature hands the core's worker (``Host.submit``): run there, between
    requests, inside a containment boundary; the messages it returns are committed to the
    outbox with the batch's answers (durable, like answers). A stream's predictions are
    jobs: one backend call for what its source assembled since the last one."""

    run: Callable[[], list[OutMessage]]
    name: str = "job"


@dataclass(frozen=True)
class Call:
    """One backend run shared by several requests (micro-batching): each of their
    ``Answered`` carries the same one, so that a feature can count the run once."""

    id: int  # unique per run in one agent
    ms: float  # the whole run
    requests: int  # the requests it answered


@dataclass(frozen=True)
class Answered:
    """One answered request, as features see it (worker thread; do not keep ``tensor``).

    ``elapsed_ms`` is the request's inference time: its share of a shared run (``call``),
    else its own run's time (``call`` None)."""

    model: ServedModel
    request_id: str | int | None
    instances: list[Any] | None
    tensor: np.ndarray[Any, Any] | None
    predictions: list[dict[str, Any]]
    elapsed_ms: float
    call: Call | None = None


class Feature:
    """A no-op base: override the points you use."""

    def routes(self) -> Sequence[Route]:
        return ()

    def accept(self, msg: Message) -> None:
        """A message on one of ``routes`` (network thread: hand it off, do no work)."""

    def started(self) -> None:
        """The core has started (its infos are queued; the link connects next)."""

    def answered(self, answer: Answered) -> None:
        """A request was answered (worker thread, after its answer was built)."""

    def failed(self, model: ServedModel | None) -> None:
        """A request to ``model`` failed inside the agent (worker thread)."""

    def tick(self) -> None:
        """Each round of the worker loop: publish what is due (worker thread)."""

    def swapped(self, old: ServedModel | None, new: ServedModel | None) -> None:
        """``new`` serves from the next request on instead of ``old`` (None: none)."""

    def threads(self) -> Sequence[tuple[str, Callable[[threading.Event], None]]]:
        """(name, target): threads the core runs until the stop event is set."""
        return ()

    def health(self, doc: dict[str, Any]) -> None:
        """Fill in this feature's keys of the health document."""

    def stopping(self, timeout: float) -> None:
        """The core stops taking requests and drains within ``timeout`` seconds."""

    def close(self) -> None:
        """After the final health report: release files and the like."""


POINTS = ("accept", "started", "answered", "failed", "tick", "swapped", "health",
          "stopping", "close")  # fmt: skip


class Features:
    """The attached features, in order; calls a point on each that overrides it."""

    def __init__(self) -> None:
        self.all: list[Feature] = []
        self._by_point: dict[str, list[Feature]] = {p: [] for p in POINTS}
        self.errors = 0  # hook calls that raised (health: counters.feature_errors)
        self._logged: dict[tuple[str, str], float] = {}

    def attach(self, feature: Feature) -> None:
        self.all.append(feature)
        for point in POINTS:
            if getattr(type(feature), point) is not getattr(Feature, point):
                self._by_point[point].append(feature)

    def get(self, kind: type[Any]) -> Any:
        """The attached feature of type ``kind`` (None when not attached)."""
        return next((f for f in self.all if isinstance(f, kind)), None)

    def _raised(self, feature: Feature, point: str) -> None:
        # Inside an except block: log.exception shows the hook's traceback.
        self.errors += 1
        key = (type(feature).__name__, point)
        now = time.monotonic()
        if now - self._logged.get(key, -LOG_EVERY_S) >= LOG_EVERY_S:
            self._logged[key] = now
            log.exception("feature %s failed in %s; the agent goes on", key[0], point)

    def _each(self, point: str, *args: Any) -> None:
        for feature in self._by_point[point]:
            try:
                getattr(feature, point)(*args)
            except Exception:
                self._raised(feature, point)

    def accept(self, feature: Feature, msg: Message) -> None:
        try:
            feature.accept(msg)
        except Exception:
            self._raised(feature, "accept")

    def started(self) -> None:
        self._each("started")

    def answered(self, answer: Answered) -> None:
        for feature in self._by_point["answered"]:  # the hot path: a plain loop
            try:
                feature.answered(answer)
            except Exception:
                self._raised(feature, "answered")

    def failed(self, model: ServedModel | None) -> None:
        self._each("failed", model)

    def tick(self) -> None:
        self._each("tick")

    def swapped(self, old: ServedModel | None, new: ServedModel | None) -> None:
        self._each("swapped", old, new)

    def health(self, doc: dict[str, Any]) -> None:
        self._each("health", doc)

    def stopping(self, timeout: float) -> None:
        self._each("stopping", timeout)

    def close(self) -> None:
        self._each("close")


class Router:
    """Which feature receives a topic: exact filters first, then wildcards in order."""

    def __init__(self) -> None:
        self._exact: dict[str, tuple[Feature, Route]] = {}
        self._wild: list[tuple[list[str], Feature, Route]] = []
        self._cache: dict[str, tuple[Feature, Route] | None] = {}

    def add(self, feature: Feature, route: Route) -> None:
        if "+" in route.filter or "#" in route.filter:
            self._wild.append((route.filter.split("/"), feature, route))
        else:
            self._exact.setdefault(route.filter, (feature, route))
        self._cache.clear()

    def find(self, topic: str) -> tuple[Feature, Route] | None:
        """The feature and route of ``topic``, or None (a request for the core)."""
        try:
            return self._cache[topic]
        except KeyError:
            pass
        found = self._exact.get(topic)
        if found is None:
            levels = topic.split("/")
            for pattern, feature, route in self._wild:
                if matches(pattern, levels):
                    found = (feature, route)
                    break
        if len(self._cache) >= 4096:
            self._cache.clear()  # topics named by clients: the cache stays bounded
        self._cache[topic] = found
        return found


def matches(pattern: list[str], levels: list[str]) -> bool:
    """MQTT filter matching on split levels (``+`` one level, ``#`` the rest)."""
    for i, part in enumerate(pattern):
        if part == "#":
            return True
        if i >= len(levels) or (part != "+" and part != levels[i]):
            return False
    return len(pattern) == len(levels)
