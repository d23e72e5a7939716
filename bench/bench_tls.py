"""The cost of TLS: the agent over plain TCP vs over TLS, in one run, on one Mosquitto.

    .venv/bin/python bench/bench_tls.py [--n 2000] [--throughput-n 5000]

One Mosquitto with two loopback listeners (plain and TLS 1.2+, certificates from
deploy/mosquitto/make-certs), the same random forest on iris, the agent (durable, QoS 1
answers) as a child process. Per transport: sequential 1-row round trips (p50/p99) and
pipelined throughput (100 in flight), requests at QoS 1 from a paho client over the same
transport. Also the bare paho echo peer over each transport, the transport floor.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.roundtrip import Client, pct  # noqa: E402

ROW = [5.1, 3.5, 1.4, 0.2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=2000, help="sequential round trips per case")
    ap.add_argument("--throughput-n", type=int, default=5000, help="messages for throughput")
    args = ap.parse_args()

    from edgewise.converters.sklearn_onnx import export_sklearn
    from edgewise.deploy.broker import free_port, start_mosquitto
    from edgewise.trainer.datasets import load_builtin
    from edgewise.trainer.train import train

    work = Path(tempfile.mkdtemp(prefix="edgewise-bench-tls-"))
    certs = work / "certs"
    subprocess.run([str(ROOT / "deploy/mosquitto/make-certs"), str(certs)], check=True)
    bundle = export_sklearn(train(load_builtin("iris"), "random-forest", "iris-rf"), work / "b")
    plain, tls = free_port(), free_port()
    config = [
        f"listener {plain} 127.0.0.1",
        f"listener {tls} 127.0.0.1",
        f"cafile {certs}/ca.crt",
        f"certfile {certs}/server.crt",
        f"keyfile {certs}/server.key",
        "allow_anonymous true",
        "set_tcp_nodelay true",
        "max_queued_messages 100000",
        "log_dest stderr",
        "log_type error",
    ]
    if os.geteuid() == 0:
        config.append("user root")
    broker = start_mosquitto(work / "broker", port=plain, config="\n".join(config) + "\n")
    body = json.dumps({"id": "b", "instances": [ROW]}).encode()
    rows: list[tuple[str, float, float, float]] = []
    py = sys.executable
    transports = [
        ("TCP", plain, f"mqtt://127.0.0.1:{plain}", [], None),
        (
            "TLS",
            tls,
            f"mqtts://127.0.0.1:{tls}",
            ["--ca-file", f"{certs}/ca.crt"],
            f"{certs}/ca.crt",
        ),
    ]
    try:
        for name, port, url, flags, ca in transports:
            client = Client(port, ca_file=ca, qos=1)
            cases = [
                (
                    f"bare paho echo, {name}",
                    [
                        py,
                        str(ROOT / "bench/peers.py"),
                        "echo",
                        "--port",
                        str(port),
                        "--qos",
                        "1",
                        "--base",
                        f"bench/echo-{name}",
                        *(["--ca-file", ca] if ca else []),
                    ],
                    f"bench/echo-{name}/",
                ),
                (
                    f"edgewise agent, {name}",
                    [
                        py,
                        "-m",
                        "edgewise",
                        "agent",
                        "--bundle",
                        str(bundle.path),
                        "--broker",
                        url,
                        *flags,
                        "--device",
                        f"tls-{name}",
                        "--state-dir",
                        str(work / "state"),
                    ],
                    f"edgewise/tls-{name}/iris-rf/",
                ),
            ]
            for label, cmd, base in cases:
                proc = subprocess.Popen(
                    cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
                )
                try:
                    if base.startswith("edgewise/"):
                        client.wait_topic(base.rsplit("/", 2)[0] + "/status", payload=b"online")
                    else:
                        client.wait_topic(base + "ready")
                    lat, rate = client.measure(
                        base + "in", base + "out", args.n, args.throughput_n, body
                    )
                    rows.append((label, pct(lat, 50), pct(lat, 99), rate))
                finally:
                    proc.terminate()
                    proc.wait(20)
            client.c.loop_stop()
            client.c.disconnect()
    finally:
        broker.stop()

    print(
        "random forest on iris, 1-row QoS 1 requests, durable agent, Mosquitto on loopback, "
        f"{args.n} sequential round trips and {args.throughput_n} pipelined per case"
    )
    print(f"{'case':28s} {'p50 µs':>9s} {'p99 µs':>9s} {'msg/s':>9s}")
    for label, p50, p99, rate in rows:
        print(f"{label:28s} {p50:9.0f} {p99:9.0f} {rate:9.0f}")
    tcp, tls_row = rows[1], rows[3]
    print(
        f"TLS cost for the agent: p50 {tls_row[1] - tcp[1]:+.0f} µs, p99 "
        f"{tls_row[2] - tcp[2]:+.0f} µs, throughput {tls_row[3] / tcp[3]:.2f}x of TCP; "
        f"for the bare echo: p50 {rows[2][1] - rows[0][1]:+.0f} µs"
    )


if __name__ == "__main__":
    main()
