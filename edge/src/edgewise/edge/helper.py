"""A helper process of ``edgewise agent --workers N``: ``python -m edgewise.edge.helper
INDEX [--retire]``, its configuration as one JSON line on stdin (``edge.workers``)."""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from collections.abc import Sequence

from edgewise.edge.app import build_helper
from edgewise.edge.core.agent import Agent
from edgewise.edge.core.config import AgentConfig
from edgewise.edge.core.supervision import stop_on_signals
from edgewise.edge.workers import RETIRE_QUIET_S

log = logging.getLogger(__name__)


def _read_config() -> bytes:
    """The configuration line from stdin, read from the raw descriptor: a buffered reader
    would hold a lock that the EOF watcher's thread keeps at interpreter shutdown."""
    line = b""
    while not line.endswith(b"\n"):
        chunk = os.read(0, 65536)
        if not chunk:
            break
        line += chunk
    return line


def _stop_on_eof(stop_requested: threading.Event) -> None:
    try:
        while os.read(0, 4096):
            pass
    finally:
        log.info("the supervisor closed stdin: stopping")
        stop_requested.set()


def _retire(agent: Agent, stop_requested: threading.Event) -> int:
    """Serve what the broker held for this helper's session until idle, then stop."""
    agent.connection.wait_connected(30)
    quiet_since = time.monotonic()
    while not stop_requested.wait(0.2):
        if not agent.idle:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= RETIRE_QUIET_S:
            break
    log.info("retired after answering %d held requests", agent.counters.answered)
    agent.stop()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """A helper process; its exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    index, retiring = int(args[0]), "--retire" in args[1:]
    logging.basicConfig(
        level="INFO", format=f"%(asctime)s %(levelname)s worker {index} %(name)s: %(message)s"
    )
    config = AgentConfig.model_validate(json.loads(_read_config()))
    agent = build_helper(config, index, retiring)
    stop_requested = stop_on_signals()
    if retiring:
        agent.start()
        return _retire(agent, stop_requested)
    threading.Thread(target=_stop_on_eof, args=(stop_requested,), daemon=True).start()
    agent.start()
    return agent.wait(stop_requested)


if __name__ == "__main__":
    sys.exit(main())
