"""The broker's socket as paho reads it: 64 KiB per system call instead of a few bytes.

paho reads each packet with several ``recv`` calls (its type byte, each byte of its
length, then its body): three or four system calls for a one-row request. Each one also
lets go of the GIL, and under load the inference worker takes it, so paho's thread waits
for it to come back once per call (the GIL's convoy effect). After a flood that is what
bounded how fast the agent read the broker's backlog (docs/mqtt.md#overload).

``BufferedSocket`` reads up to ``CHUNK`` bytes at a time and serves paho's small reads
from memory. ``pending()`` tells paho's loop that bytes are waiting, so that it reads them
before it waits in ``select`` (paho does the same for TLS). Everything else goes to the
socket it wraps (``raw``). ``edge.link.mqtt`` wraps plain and TLS sockets; a WebSocket
connection buffers by itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

CHUNK = 65536
READ_AHEAD = 256  # packets read from memory per network-loop round at most

R = TypeVar("R")


class BufferedSocket:
    """A socket-like object whose ``recv`` is served from a read-ahead buffer."""

    def __init__(self, raw: Any) -> None:
        self.raw = raw
        self._buf = b""
        self._pos = 0

    def recv(self, size: int) -> bytes:
        """Up to ``size`` bytes: from the buffer, else one read of up to ``CHUNK``.

        The socket's own exceptions (would block, TLS wants read) and its end of file
        (``b""``) come through unchanged, as paho expects them."""
        buf, pos = self._buf, self._pos
        if pos >= len(buf):
            buf = self.raw.recv(max(size, CHUNK))
            if len(buf) <= size:
                self._buf, self._pos = b"", 0
                return bytes(buf)
            pos = 0
            self._buf = buf
        end = min(pos + size, len(buf))
        self._pos = end
        return buf[pos:end]

    @property
    def buffered(self) -> int:
        """Bytes read ahead and not handed to paho yet."""
        return len(self._buf) - self._pos

    def pending(self) -> int:
        """Bytes readable without a system call (the buffer's, and TLS's own)."""
        inner = getattr(self.raw, "pending", None)
        return len(self._buf) - self._pos + (inner() if inner is not None else 0)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.raw, name)


def unwrap(sock: Any) -> Any:
    """The socket under a ``BufferedSocket``; any other as it is."""
    return sock.raw if isinstance(sock, BufferedSocket) else sock


def read_buffered(sock: Any, read: Callable[[], R], ok: R, most: int = READ_AHEAD) -> R:
    """Call ``read`` (paho's ``loop_read``) while ``sock`` holds read-ahead bytes and
    ``read`` returns ``ok``, at most ``most`` times; its last result (``ok`` if none).

    paho's ``loop()`` reads one packet per call when none of ours is in flight (a stream
    of QoS 0 requests, a flood's backlog), each after a ``select``. Capped, so that writes
    and keep-alives still go out between rounds."""
    rc = ok
    for _ in range(most):
        if not isinstance(sock, BufferedSocket) or not sock.buffered or rc != ok:
            break
        rc = read()
    return rc
