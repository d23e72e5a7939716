"""Sensor streams as a feature of the agent (``[[streams]]``, docs/streams.md).

The feature subscribes to every stream's MQTT topics (its routes) and runs each
program, serial port or camera on a thread of its own; samples become instances in the
stream (``edge.streams.stream``), and predictions run on the core's worker as jobs. A
stream's topic filters may not reach into the agent's own topic space (``{prefix}/...``):
a filter there would take requests or fleet messages away from the core.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from edgewise.edge.core.feature import Feature, Route, matches
from edgewise.edge.errors import EdgewiseError
from edgewise.edge.streams.sources import source_for
from edgewise.edge.streams.stream import Stream

if TYPE_CHECKING:
    from edgewise.edge.core.feature import Host
    from edgewise.edge.link.message import Message
    from edgewise.edge.runtime.model import ServedModel

RESERVED = ("$",)  # $SYS, $share: not a sensor's topic


def check_filter_space(stream: str, flt: str, prefix: str) -> None:
    """Refuse a filter that could match the agent's own topics (or a broker's ``$`` ones)."""
    first = flt.split("/", 1)[0]
    if first in ("+", "#", prefix) or first.startswith(RESERVED):
        raise EdgewiseError(
            f"stream {stream!r}: topic {flt!r} reaches into {prefix}/... (the agent's own "
            "topics) or a broker topic; name the sensor's topics (e.g. zigbee2mqtt/office)"
        )


class Streams(Feature):
    """Every configured stream: routes for MQTT sources, threads for the others."""

    def __init__(self, host: Host) -> None:
        self._host = host
        self.streams = [Stream(settings, host) for settings in host.config.streams]
        self.sources = {s.name: source_for(s) for s in self.streams}
        prefix = host.config.prefix
        self._filters: list[tuple[list[str], str, Stream]] = []
        for stream in self.streams:
            for flt in stream.settings.topics:
                check_filter_space(stream.name, flt, prefix)
                self._filters.append((flt.split("/"), flt, stream))
        self._matched: dict[str, list[tuple[Stream, list[str]]]] = {}

    def routes(self) -> Sequence[Route]:
        unique = dict.fromkeys(flt for _, flt, _ in self._filters)
        return [Route(flt, 1, "inline") for flt in unique]

    def _match(self, topic: str) -> list[tuple[Stream, list[str]]]:
        found = self._matched.get(topic)
        if found is None:
            levels = topic.split("/")
            by_stream: dict[str, tuple[Stream, list[str]]] = {}
            for pattern, flt, stream in self._filters:
                if matches(pattern, levels):
                    by_stream.setdefault(stream.name, (stream, []))[1].append(flt)
            found = list(by_stream.values())
            if len(self._matched) >= 4096:
                self._matched.clear()  # topics under a wildcard: the cache stays bounded
            self._matched[topic] = found
        return found

    def accept(self, msg: Message) -> None:
        """Network thread: a sensor's message read into its streams (small and bounded:
        a payload over ``max_payload`` is refused unread)."""
        now = time.monotonic()
        for stream, filters in self._match(msg.topic):
            stream.on_message(msg.topic, filters, msg.payload, now)

    def threads(self) -> Sequence[tuple[str, Callable[[threading.Event], None]]]:
        return [(f"stream-{name}", src.run) for name, src in self.sources.items() if src]

    def tick(self) -> None:
        now = time.monotonic()
        for stream in self.streams:
            stream.tick(now)

    def swapped(self, old: ServedModel | None, new: ServedModel | None) -> None:
        name = (new or old).name if (new or old) is not None else None  # type: ignore[union-attr]
        for stream in self.streams:
            if stream.settings.model == name:
                stream.swapped(new)

    def health(self, doc: dict[str, Any]) -> None:
        doc["streams"] = {s.name: s.health() for s in self.streams}

    def stopping(self, timeout: float) -> None:
        self.close()

    def close(self) -> None:
        for src in self.sources.values():
            if src is not None:
                src.close()
