"""The agent's defence of its own retained topics (``status`` and each model's ``info``).

Without broker ACLs any client can overwrite them: a retained ``offline`` that makes
clients give up on a running agent, or an ``info`` that asks for other features. The agent
subscribes to them and, when another client writes something else while it is serving,
publishes its own again at once and logs one warning line (at most one a minute per topic).
"""

from __future__ import annotations

import logging
import time

from edgewise.edge.link.message import Message
from edgewise.edge.link.topics import Topics

log = logging.getLogger(__name__)

LOG_EVERY_S = 60.0


class RetainedGuard:
    """Decides what to publish back when a retained topic of ours is overwritten."""

    def __init__(self, topics: Topics, info_bodies: dict[str, bytes]) -> None:
        self._status = topics.status
        self._info = {topics.model(name, "info"): body for name, body in info_bodies.items()}
        self._topics = topics
        self._logged: dict[str, float] = {}
        self.overwritten = 0

    def set_info(self, topic: str, body: bytes) -> None:
        """The info to restore from now on (a new model version)."""
        self._info[topic] = body

    def owns(self, topic: str) -> bool:
        """Whether a received message is one of our retained topics (not a request)."""
        return topic == self._status or self._topics.model_of(topic, "info") is not None

    def check(self, msg: Message) -> tuple[str, bytes] | None:
        """(topic, payload) to publish again, or None when the message is ours or stale.

        A message flagged retained is the state found when we subscribed (e.g. our own
        last will), not a write happening now: our ``online`` and ``info`` follow anyway.
        """
        if msg.retain:
            return None
        # An info for a model we do not serve is cleared (an empty retained message).
        wanted = b"online" if msg.topic == self._status else self._info.get(msg.topic, b"")
        if msg.payload == wanted:
            return None
        self.overwritten += 1
        now = time.monotonic()
        if now - self._logged.get(msg.topic, -LOG_EVERY_S) >= LOG_EVERY_S:
            self._logged[msg.topic] = now
            log.warning(
                "another client overwrote %s (%d bytes); publishing ours again "
                "(broker ACLs prevent this: docs/mqtt.md#security)",
                msg.topic[:200],
                len(msg.payload),
            )
        return msg.topic, wanted
