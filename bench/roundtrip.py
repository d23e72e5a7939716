"""What every bench script shares: percentiles and a paho client that times round trips."""

from __future__ import annotations

import queue
import socket
import ssl
import time

import numpy as np
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion


def pct(samples: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(samples), q))


class Client:
    """A paho client with Nagle off (as the agent) that publishes and waits for answers."""

    def __init__(self, port: int, ca_file: str | None = None, qos: int = 0) -> None:
        self.inbox: queue.Queue[bytes] = queue.Queue()
        self.qos = qos
        self.c = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-client-{port}")
        if ca_file:
            self.c.tls_set_context(ssl.create_default_context(cafile=ca_file))
        self.c.on_message = lambda c, u, m: self.inbox.put(m.payload)
        self.c.on_connect = lambda c, u, f, rc, p: c.socket().setsockopt(
            socket.IPPROTO_TCP, socket.TCP_NODELAY, 1
        )
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        while not self.c.is_connected():
            time.sleep(0.01)

    def wait_topic(self, topic: str, timeout: float = 60, payload: bytes | None = None) -> None:
        """Wait for a message on ``topic`` (with this payload, if given)."""
        self.c.subscribe(topic)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                got = self.inbox.get(timeout=0.5)
            except queue.Empty:
                continue
            if payload is None or got == payload:
                self.c.unsubscribe(topic)
                time.sleep(0.1)
                return
        raise SystemExit(f"peer never published {topic}")

    def measure(
        self, topic_in: str, topic_out: str, n: int, n_tp: int, body: bytes
    ) -> tuple[list[float], float]:
        """Sequential round-trip latencies (µs) and pipelined throughput (msg/s)."""
        self.c.subscribe(topic_out, qos=self.qos)
        time.sleep(0.2)
        for _ in range(200):  # warm-up
            self.c.publish(topic_in, body, qos=self.qos)
            self.inbox.get(timeout=10)
        lat = []
        for _ in range(n):
            t0 = time.perf_counter()
            self.c.publish(topic_in, body, qos=self.qos)
            self.inbox.get(timeout=10)
            lat.append((time.perf_counter() - t0) * 1e6)
        # Throughput: keep up to 100 requests in flight.
        t0 = time.perf_counter()
        sent = got = 0
        while got < n_tp:
            while sent < n_tp and sent - got < 100:
                self.c.publish(topic_in, body, qos=self.qos)
                sent += 1
            self.inbox.get(timeout=30)
            got += 1
        rate = n_tp / (time.perf_counter() - t0)
        self.c.unsubscribe(topic_out)
        time.sleep(0.1)
        return lat, rate
