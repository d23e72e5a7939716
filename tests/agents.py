"""Agents for tests: one started against the test broker, and a peer that hears its answers."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from edgewise.deploy.broker import LocalBroker
from edgewise.edge.app import build_agent
from edgewise.edge.core.agent import Agent
from edgewise.edge.core.config import AgentConfig
from tests.mqtt_peer import Peer


def new_device(kind: str = "dev") -> str:
    """A device id no other test uses."""
    return f"{kind}-{uuid.uuid4().hex[:6]}"


@contextmanager
def serving(
    broker: LocalBroker,
    bundles: Sequence[Path | str],
    device: str,
    state_dir: Path | None = None,
    **settings: Any,
) -> Iterator[Agent]:
    """An agent serving ``bundles`` as ``device``, connected; stopped on exit.

    Module-scoped fixtures start before the per-test ``XDG_STATE_HOME``: they pass
    ``state_dir`` so that no outbox lands outside the test's temporary directories.
    """
    if state_dir is not None:
        settings["state_dir"] = str(state_dir)
    config = AgentConfig(
        bundles=tuple(str(b) for b in bundles), broker=broker.url, device=device, **settings
    )
    agent = build_agent(config)
    agent.start()
    try:
        assert agent.connection.wait_connected(10)
        yield agent
    finally:
        agent.stop(timeout=5)


@contextmanager
def answers_peer(broker: LocalBroker, device: str) -> Iterator[Peer]:
    """A peer subscribed to every answer and error of ``device``."""
    peer = Peer(broker.port)
    peer.subscribe(f"edgewise/{device}/+/out", f"edgewise/{device}/+/error")
    try:
        yield peer
    finally:
        peer.close()
