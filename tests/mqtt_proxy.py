"""A TCP proxy in front of a real broker that can withhold PUBACKs from its clients and cut
their connections: what a broker that has not yet acknowledged an answer looks like."""

from __future__ import annotations

import contextlib
import socket
import threading

PUBACK = 4


def _exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def _packet(sock: socket.socket) -> tuple[int, bytes]:
    """One MQTT packet: (its type, its bytes)."""
    head = _exact(sock, 1)
    length, shift, raw = 0, 0, b""
    while True:
        byte = _exact(sock, 1)
        raw += byte
        length |= (byte[0] & 0x7F) << shift
        shift += 7
        if not byte[0] & 0x80:
            break
    return head[0] >> 4, head + raw + _exact(sock, length)


class PubackProxy:
    """Listens on ``port``; while ``withhold`` is set, PUBACKs from the broker to a client
    are dropped (counted in ``withheld``); ``cut()`` closes every connection."""

    def __init__(self, broker_port: int) -> None:
        self._broker_port = broker_port
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._server.getsockname()[1])
        self.withhold = threading.Event()
        self.withheld = 0
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self._broker_port))
            with self._lock:
                self._socks += [client, upstream]
            threading.Thread(target=self._copy, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._filter, args=(upstream, client), daemon=True).start()

    def _copy(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        self._close(src, dst)

    def _filter(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                kind, data = _packet(src)
                if kind == PUBACK and self.withhold.is_set():
                    self.withheld += 1
                    continue
                dst.sendall(data)
        except (OSError, ConnectionError):
            pass
        self._close(src, dst)

    def _close(self, *socks: socket.socket) -> None:
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def cut(self) -> None:
        """Close every proxied connection (the clients reconnect through the proxy)."""
        with self._lock:
            socks, self._socks = self._socks, []
        self._close(*socks)

    def close(self) -> None:
        self.cut()
        self._server.close()
