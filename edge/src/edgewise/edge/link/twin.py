"""Two clients with one client id: the broker keeps closing one of them.

Mosquitto 2.0 closes the older connection without a DISCONNECT reason when a second
client connects with the same id (a cloned SD card: two agents with one device id). The
link notes each connection the broker closes right after accepting it, says so once after
three in a row, and gives up after ``max_takeovers`` in a row (the twin keeps the session).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

SHORT_CONNECTION_S = 2.0  # a connection lost sooner than this after CONNACK is suspect


class TwinWatch:
    """Counts connections in a row that were taken over or lost right after CONNACK."""

    def __init__(
        self,
        client_id: str,
        broker: str,
        max_takeovers: int | None,
        on_failure: Callable[[str], None] | None,
    ) -> None:
        self._client_id, self._broker = client_id, broker
        self._max = max_takeovers  # None: never give up
        self._on_failure = on_failure
        self._connected_at = 0.0  # time.monotonic() of the last CONNACK
        self._short = 0  # connections in a row lost within SHORT_CONNECTION_S
        self.taken = False  # the broker said SESSION_TAKEN_OVER for this connection

    def connected(self) -> None:
        self._connected_at = time.monotonic()

    def lost(self) -> bool:
        """A connection ended; True when ``max_takeovers`` in a row are reached: the twin
        keeps the session, this client gives up (``on_failure`` says why)."""
        taken, self.taken = self.taken, False
        if not taken and time.monotonic() - self._connected_at >= SHORT_CONNECTION_S:
            self._short = 0
            return False
        self._short += 1
        if self._short == 3:
            log.error(
                "broker at %s keeps closing this client's connection (%s) right after "
                "accepting it: another client has the same client id? With "
                "use_username_as_clientid each process needs its own user name "
                "(docs/mqtt.md#workers)",
                self._broker,
                self._client_id,
            )
        if self._max is None or self._short < self._max:
            return False
        if self._on_failure is not None:
            self._on_failure(
                f"twin: another client keeps taking client id {self._client_id} at "
                f"{self._broker} ({self._short} connections in a row): two agents with one "
                "device id (a cloned SD card?); give each its own --device"
            )
        return True
