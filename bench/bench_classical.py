"""Round-trip latency and throughput of a classical model served over MQTT, five ways.

    .venv/bin/python bench/bench_classical.py [--n 2000] [--throughput-n 5000]

In one run, on one private Mosquitto, with the same random forest (100 trees, iris):
  (a) bare ONNX Runtime call on the bundle, 1 row (no MQTT)
  (b) bare paho echo peer through the broker (the transport floor)
  (c) the edgewise agent (`edgewise agent --qos 0`: answers at QoS 0 like the others,
      through its on-disk outbox, one fsync per batch)
  (c') the same agent with `--no-outbox` (answers straight to paho)
  (d) a naive peer: paho callback -> json -> scikit-learn predict_proba per message
Every peer is its own process; the client sends 1-row requests at QoS 0.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
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

    from edgewise.converters.host_model import save_host_model
    from edgewise.converters.sklearn_onnx import export_sklearn
    from edgewise.deploy.broker import start_mosquitto
    from edgewise.edge.runtime.bundle import load_bundle
    from edgewise.edge.runtime.model import ServedModel
    from edgewise.trainer.datasets import load_builtin
    from edgewise.trainer.train import train

    work = Path(tempfile.mkdtemp(prefix="edgewise-bench-"))
    host = train(load_builtin("iris"), "random-forest", "iris-rf")
    save_host_model(work / "iris-rf.host", host)
    bundle = export_sklearn(host, work / "iris-rf")
    broker = start_mosquitto(work / "broker")
    rows: list[tuple[str, float, float, float]] = []

    # (a) bare ONNX Runtime, the same session options as the agent's backend
    model = ServedModel.load(load_bundle(bundle.path))
    feeds = model.encode([ROW])
    for _ in range(500):
        model.backend.run(feeds)
    lat = []
    for _ in range(args.n):
        t0 = time.perf_counter()
        model.backend.run(feeds)
        lat.append((time.perf_counter() - t0) * 1e6)
    rows.append(
        ("(a) bare onnxruntime call", pct(lat, 50), pct(lat, 99), 1e6 / statistics.mean(lat))
    )

    procs = []
    body = json.dumps({"id": "b", "instances": [ROW]}).encode()
    client = Client(broker.port)
    try:
        py = sys.executable
        peers = [py, str(ROOT / "bench" / "peers.py")]
        port = str(broker.port)
        agent_cmd = [py, "-m", "edgewise", "agent", "--bundle", str(bundle.path)]
        agent_cmd += ["--broker", broker.url, "--device", "bench", "--qos", "0"]
        agent_cmd += ["--state-dir", str(work / "state")]
        naive_cmd = [*peers, "naive", "--port", port, "--host-model", str(work / "iris-rf.host")]
        topics = "edgewise/bench/iris-rf/"
        cases = [
            ("(b) bare paho echo", [*peers, "echo", "--port", port], "bench/echo/"),
            ("(c) edgewise agent", agent_cmd, topics),
            ("(c') edgewise agent --no-outbox", [*agent_cmd, "--no-outbox"], topics),
            ("(d) naive paho + scikit-learn", naive_cmd, "bench/naive/"),
        ]
        for label, cmd, base in cases:
            t_in, t_out = base + "in", base + "out"
            # An agent is ready when its (retained) status reads online; the echo and
            # naive peers publish on "ready".
            ready, payload = (
                ("edgewise/bench/status", b"online")
                if base == topics
                else (
                    base + "ready",
                    None,
                )
            )
            proc = subprocess.Popen(
                cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            procs.append(proc)
            client.wait_topic(ready, payload=payload)
            n_tp = args.throughput_n if "naive" not in label else max(500, args.throughput_n // 10)
            n = args.n if "naive" not in label else max(200, args.n // 5)
            lat, rate = client.measure(t_in, t_out, n, n_tp, body)
            rows.append((label, pct(lat, 50), pct(lat, 99), rate))
            proc.terminate()
            proc.wait(20)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        broker.stop()

    print(f"random forest (100 trees) on iris, 1-row requests, Mosquitto on loopback, "
          f"{args.n} sequential round trips per case")  # fmt: skip
    print(f"{'case':34s} {'p50 µs':>10s} {'p99 µs':>10s} {'msg/s':>10s}")
    for label, p50, p99, rate in rows:
        print(f"{label:34s} {p50:10.0f} {p99:10.0f} {rate:10.0f}")
    agent, direct, naive = rows[2], rows[3], rows[4]
    print(
        f"agent vs naive peer: p50 {naive[1] / agent[1]:.1f}x lower, "
        f"throughput {agent[3] / naive[3]:.1f}x higher"
    )
    print(f"agent overhead over bare echo: p50 +{agent[1] - rows[1][1]:.0f} µs")
    print(
        f"outbox cost: p50 +{agent[1] - direct[1]:.0f} µs, "
        f"throughput {agent[3] / direct[3]:.2f}x of --no-outbox"
    )


if __name__ == "__main__":
    main()
