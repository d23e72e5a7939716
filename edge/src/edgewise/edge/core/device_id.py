"""The default device id: unique per machine, and where it came from.

The host name alone is not unique: every SD card cloned from one image comes up as
``raspberrypi``, and two agents with one id take each other's broker session for ever. The
default is the host name plus the last six hex digits of the network card's address
(``uuid.getnode()``: per board, so a cloned card still differs), else of
``/etc/machine-id``. A state directory that already holds this device's files under the
bare host name (an agent from before this default) keeps that id, so an upgrade keeps its
topics, outbox and persistent session.
"""

from __future__ import annotations

import socket
import uuid
from pathlib import Path

from edgewise.edge.link.topics import MAX_DEVICE_LENGTH

MACHINE_ID = Path("/etc/machine-id")
SUFFIX = 6  # hex digits


def _host() -> str:
    return socket.gethostname()[:MAX_DEVICE_LENGTH] or "edgewise"


def _suffix() -> tuple[str, str] | None:
    node = uuid.getnode()
    if not (node >> 40) & 1:  # a real address (a random one has the multicast bit set)
        mac = f"{node:012x}"
        return mac[-SUFFIX:], f"network card address …{mac[-SUFFIX:]}"
    try:
        text = MACHINE_ID.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    if len(text) >= SUFFIX and all(c in "0123456789abcdef" for c in text[:SUFFIX]):
        return text[:SUFFIX], f"{MACHINE_ID}"
    return None


def _has_state(state_dir: str, device: str) -> bool:
    root = Path(state_dir)
    try:
        return (
            any(p.name.startswith(f"{device}.") for p in root.iterdir())
            or (root / "fleet" / device).is_dir()
        )
    except OSError:
        return False


def default_device(state_dir: str) -> tuple[str, str]:
    """``(device id, where it came from)`` for an agent that was given none."""
    host = _host()
    if _has_state(state_dir, host):
        return host, f"the host name, kept because {state_dir} holds this device's state"
    found = _suffix()
    if found is None:
        return host, "the host name only (no network address or machine id): set --device"
    suffix, source = found
    return f"{host[: MAX_DEVICE_LENGTH - SUFFIX - 1]}-{suffix}", f"the host name + {source}"
