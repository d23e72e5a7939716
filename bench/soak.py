"""Soak: a long stream of QoS 1 requests through one agent process; does its memory hold?

    .venv/bin/python bench/soak.py [--messages 200000] [--window 200]

One private Mosquitto (persistence on, as shipped); the agent is `edgewise agent` in its
own process serving the iris random forest. A paho client keeps `--window` requests
outstanding, every one with a unique id, and counts answers per id. Printed per run:
throughput, RSS of the agent at start / peak / end (from /proc), answers missing and
duplicated, and the agent's own last health report. Two runs in one go: the default
durable agent (outbox + persistent session) and, as the baseline, `--no-outbox`.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ROW = [5.1, 3.5, 1.4, 0.2]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


class Counter:
    """Answers per id, and the agent's retained health, from one paho client."""

    def __init__(self, port: int, device: str) -> None:
        self.got = 0
        self.seen = bytearray()
        self.duplicates = 0
        self.health: dict[str, Any] = {}
        self.status = ""
        self.cond = threading.Condition()
        self.c = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"soak-{device}")
        self.c.on_connect = self._on_connect
        self.c.on_message = self._on_message
        self.c.max_inflight_messages_set(1000)
        self.base = f"edgewise/{device}"
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()

    def _on_connect(self, c: paho.Client, *_: Any) -> None:
        c.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c.subscribe([(f"{self.base}/+/out", 1), (f"{self.base}/health", 0)])
        c.subscribe(f"{self.base}/status", 1)

    def _on_message(self, c: paho.Client, u: Any, m: paho.MQTTMessage) -> None:
        if m.topic.endswith("/health"):
            self.health = json.loads(m.payload)
            return
        if m.topic.endswith("/status"):
            self.status = m.payload.decode()
            return
        rid = int(json.loads(m.payload)["id"])
        with self.cond:
            if self.seen[rid]:
                self.duplicates += 1
            else:
                self.seen[rid] = 1
                self.got += 1
            self.cond.notify()

    def run(self, n: int, window: int, pid: int) -> tuple[float, list[float]]:
        self.seen = bytearray(n)
        topic = f"{self.base}/iris-rf/in"
        rss = [rss_mib(pid)]
        t0 = time.perf_counter()
        for i in range(n):
            with self.cond:
                while i - self.got >= window:
                    if not self.cond.wait(30):
                        raise SystemExit(f"stalled at {self.got} answers")
            self.c.publish(topic, json.dumps({"id": i, "instances": [ROW]}), qos=1)
            if i % 10_000 == 0:
                rss.append(rss_mib(pid))
        with self.cond:
            while self.got < n:
                if not self.cond.wait(30):
                    raise SystemExit(f"stalled at {self.got} answers")
        elapsed = time.perf_counter() - t0
        rss.append(rss_mib(pid))
        return elapsed, rss


def soak(port: int, bundle: Path, n: int, window: int, durable: bool, state: Path) -> None:
    device = "soak-durable" if durable else "soak-direct"
    cmd = [sys.executable, "-m", "edgewise", "agent", "--bundle", str(bundle)]
    cmd += ["--broker", f"mqtt://127.0.0.1:{port}", "--device", device]
    cmd += ["--state-dir", str(state), "--health-interval", "1"]
    if not durable:
        cmd.append("--no-outbox")
    agent = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    counter = Counter(port, device)
    try:
        deadline = time.monotonic() + 60
        while counter.status != "online":
            if time.monotonic() > deadline:
                raise SystemExit("the agent did not come online")
            time.sleep(0.05)
        elapsed, rss = counter.run(n, window, agent.pid)
        time.sleep(1.5)  # one more health report
    finally:
        agent.terminate()
        agent.wait(30)
        counter.c.disconnect()
        counter.c.loop_stop()
    h = counter.health.get("counters", {})
    e2e = counter.health.get("models", {}).get("iris-rf", {}).get("e2e_ms", {})
    label = "durable (outbox, fsync)" if durable else "--no-outbox (baseline)"
    print(
        f"{label:26s} {n:>8,d} msgs {n / elapsed:8,.0f} msg/s | agent RSS start "
        f"{rss[0]:6.1f} MiB, peak {max(rss):6.1f}, end {rss[-1]:6.1f} | missing "
        f"{n - counter.got}, duplicates {counter.duplicates} | health: outbox_depth "
        f"{h.get('outbox_depth')}, dropped {h.get('dropped')}, peak_queued "
        f"{h.get('peak_queued')}, e2e p50/p99 {e2e.get('p50_ms')}/{e2e.get('p99_ms')} ms"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--messages", type=int, default=200_000)
    ap.add_argument("--window", type=int, default=200, help="requests outstanding at once")
    args = ap.parse_args()

    from edgewise.converters.sklearn_onnx import export_sklearn
    from edgewise.deploy.broker import start_mosquitto
    from edgewise.trainer.datasets import load_builtin
    from edgewise.trainer.train import train

    work = Path(tempfile.mkdtemp(prefix="edgewise-soak-"))
    bundle = export_sklearn(
        train(load_builtin("iris"), "random-forest", "iris-rf"), work / "iris-rf"
    ).path
    broker = start_mosquitto(work / "broker", persistence=True)
    print(f"{args.messages:,d} QoS 1 requests, {args.window} outstanding, Mosquitto on loopback")
    try:
        for durable in (True, False):
            soak(broker.port, bundle, args.messages, args.window, durable, work / "state")
    finally:
        broker.stop()


if __name__ == "__main__":
    main()
