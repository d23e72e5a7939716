"""paho's read-ahead socket over a real socket pair: small reads from memory, the same
bytes, short reads, end of file and would-block passed through."""

from __future__ import annotations

import socket

import pytest

from edgewise.edge.link.read_buffer import CHUNK, BufferedSocket, read_buffered


def test_small_reads_come_from_one_read_ahead() -> None:
    a, b = socket.socketpair()
    with a, b:
        b.setblocking(False)
        sock = BufferedSocket(b)
        data = bytes(range(256)) * 40  # 10,240 bytes, less than one chunk
        a.sendall(data)
        got = [sock.recv(1), sock.recv(1), sock.recv(100)]
        assert sock.buffered == len(data) - 102 and sock.pending() == sock.buffered
        got.append(sock.recv(len(data)))  # a short read: what is buffered
        assert b"".join(got) == data and sock.buffered == 0
        with pytest.raises(BlockingIOError):  # nothing more: the socket's own error
            sock.recv(1)
        a.shutdown(socket.SHUT_WR)
        assert sock.recv(1) == b""  # end of file, as paho expects it


@pytest.mark.parametrize("size", [1, 7, CHUNK, CHUNK + 3])
def test_any_read_size_returns_the_stream_unchanged(size: int) -> None:
    a, b = socket.socketpair()
    with a, b:
        sock = BufferedSocket(b)
        data = bytes(i % 251 for i in range(3 * CHUNK + 11))
        a.sendall(data)
        a.shutdown(socket.SHUT_WR)
        out = bytearray()
        while chunk := sock.recv(size):
            assert len(chunk) <= size
            out += chunk
        assert bytes(out) == data


def test_everything_else_goes_to_the_socket() -> None:
    a, b = socket.socketpair()
    with a, b:
        sock = BufferedSocket(b)
        assert sock.fileno() == b.fileno() and sock.raw is b
        assert sock.send(b"x") == 1 and a.recv(1) == b"x"


def test_read_buffered_reads_while_bytes_wait_and_stops_on_an_error_or_the_cap() -> None:
    a, b = socket.socketpair()
    with a, b:
        sock = BufferedSocket(b)
        a.sendall(b"abcdefgh")
        sock.recv(1)  # 7 bytes read ahead
        calls: list[bytes] = []

        def read() -> int:  # paho's loop_read: 0 is success
            calls.append(sock.recv(2))
            return 0

        assert read_buffered(sock, read, 0) == 0
        assert b"".join(calls) == b"bcdefgh" and sock.buffered == 0
        a.sendall(b"12345678")
        sock.recv(1)
        calls.clear()
        assert read_buffered(sock, read, 0, most=2) == 0 and len(calls) == 2  # the cap
        assert read_buffered(sock, lambda: 7, 0) == 7  # paho's error code ends it
        assert read_buffered(b, read, 0) == 0  # not a read-ahead socket: nothing read
