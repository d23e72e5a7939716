"""Throughput of one agent, with and without micro-batching, against a bare paho echo.

    .venv/bin/python bench/throughput.py [--n 20000]

One private Mosquitto; load from Mosquitto's own C clients (`mosquitto_pub -l` publishes
one request per line, `mosquitto_sub -C N` exits after N answers), QoS 1 both ways, so
the load generator is not the bottleneck. Cases, in one run on the same broker:

- echo: bench/peers.py republishes each request (the broker + paho floor);
- ort: bench/peers.py's hand-written paho + onnxruntime peer (parse, run, answer);
- the agent acknowledging requests once their answers are in the outbox (ack = "stored",
  the way before forward-then-ack), max_batch = 1, 1-row requests: the baseline;
- the agent (forward-then-ack, the default) with max_batch = 1 (no micro-batching);
- the same with --workers 2 (two processes on one shared subscription);
- the agent with its defaults (micro-batching on, max_batch = 64), 1-row requests;
- the same with 8-row requests (instances/s);
- the same with compact answers ("answer": "compact": each prediction's label only).

Printed: messages/s, instances/s, the ratio to echo's messages/s and to the onnxruntime
peer's, the agent's backend runs per answered request (from its health), and the CPU time
of the serving process per request (user + system, all threads; the main process only
with --workers): on a busy 2-core machine the steadier figure of the two.
`--inflight N` sets Mosquitto's max_inflight_messages (its default is 20). Under qemu:
`QEMU_LD_PREFIX=.cache/arm64/sysroot .venv/bin/python bench/throughput.py --python
.cache/arm64/venv/bin/python --n 3000 --settle 20` (the venv of scripts/test-device arm64);
emulated rates say nothing about a Pi, only the ratios between the cases mean something.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ROW = [5.1, 3.5, 1.4, 0.2]


def load(port: int, topic_in: str, topic_out: str, lines: Path, n: int) -> float:
    """Seconds from the first request published to the n-th answer received."""
    sub = subprocess.Popen(["mosquitto_sub", "-p", str(port), "-q", "1", "-t", topic_out,
                            "-C", str(n)], stdout=subprocess.DEVNULL)  # fmt: skip
    time.sleep(0.5)
    started = time.monotonic()
    with lines.open("rb") as fh:
        subprocess.run(["mosquitto_pub", "-p", str(port), "-q", "1", "-t", topic_in, "-l"],
                       stdin=fh, check=True)  # fmt: skip
    sub.wait(600)
    return time.monotonic() - started


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads) so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def health(port: int, device: str) -> dict:  # type: ignore[type-arg]
    out = subprocess.run(["mosquitto_sub", "-p", str(port), "-t", f"bench/{device}/health",
                          "-C", "1", "-W", "5"], capture_output=True, check=True)  # fmt: skip
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=20000, help="requests per case")
    ap.add_argument("--inflight", type=int, default=None, help="Mosquitto max_inflight_messages")
    ap.add_argument(
        "--python",
        default=sys.executable,
        help="the interpreter of the agent and the peers, e.g. an aarch64 venv's under qemu "
        "(QEMU_LD_PREFIX in the environment; docs/devices.md)",
    )
    ap.add_argument("--settle", type=float, default=3.0, help="seconds for a process to start")
    ap.add_argument(
        "--only", default=None, help="run only the agent cases whose label contains this"
    )
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an extra line of every agent's TOML config, e.g. --set num_threads=1",
    )
    args = ap.parse_args()

    from edgewise.converters.sklearn_onnx import export_sklearn
    from edgewise.deploy.broker import start_mosquitto
    from edgewise.trainer.datasets import load_builtin
    from edgewise.trainer.train import train

    work = Path(tempfile.mkdtemp(prefix="edgewise-bench-throughput-"))
    bundle = export_sklearn(train(load_builtin("iris"), "random-forest", "iris-rf"), work / "b")
    extra = ["max_queued_messages 1000000"]
    if args.inflight is not None:
        extra.append(f"max_inflight_messages {args.inflight}")
    broker = start_mosquitto(work / "broker", extra=extra)
    lines: dict[tuple[int, str], Path] = {}
    for rows, form in ((1, "full"), (8, "full"), (8, "compact")):
        path = work / f"rows{rows}{form}.txt"
        extra_field = {"answer": "compact"} if form == "compact" else {}
        path.write_text("".join(json.dumps({"id": i, "instances": [ROW] * rows, **extra_field})
                                + "\n" for i in range(args.n)))  # fmt: skip
        lines[(rows, form)] = path
    results = []
    try:
        ort_peer = ["ort", "--bundle", str(bundle.path)]
        for label, peer in [("bare paho echo", ["echo"]), ("paho + onnxruntime peer", ort_peer)]:
            proc = subprocess.Popen([args.python, str(ROOT / "bench" / "peers.py"), *peer,
                                     "--port", str(broker.port), "--qos", "1"])  # fmt: skip
            time.sleep(args.settle)
            base = f"bench/{peer[0]}"
            cpu = cpu_seconds(proc.pid)
            secs = load(broker.port, f"{base}/in", f"{base}/out", lines[(1, "full")], args.n)
            cpu = cpu_seconds(proc.pid) - cpu
            proc.terminate()
            proc.wait(10)
            results.append((label, args.n / secs, args.n / secs, None, cpu / args.n))
        for label, max_batch, rows, workers, ack, form in [
                ("agent, ack stored (before), 1-row", 1, 1, 1, "stored", "full"),
                ("agent, max_batch 1, 1-row requests", 1, 1, 1, "forwarded", "full"),
                ("agent --workers 2, max_batch 1, 1-row", 1, 1, 2, "forwarded", "full"),
                ("agent defaults (max_batch 64), 1-row", 64, 1, 1, "forwarded", "full"),
                ("agent defaults (max_batch 64), 8-row", 64, 8, 1, "forwarded", "full"),
                ("  the same, compact answers", 64, 8, 1, "forwarded", "compact"),
        ]:  # fmt: skip
            if args.only is not None and args.only not in label:
                continue
            device = f"b{max_batch}r{rows}w{workers}{ack[0]}{form[0]}"
            toml = work / f"{device}.toml"
            toml.write_text(f"max_batch = {max_batch}\nhealth_interval = 1.0\n"
                            f"workers = {workers}\nack = \"{ack}\"\n"
                            + "".join(f"{line}\n" for line in args.set))  # fmt: skip
            agent = subprocess.Popen([args.python, "-m", "edgewise", "agent", "--bundle",
                                      str(bundle.path), "--broker", broker.url, "--device",
                                      device, "--prefix", "bench", "--config", str(toml),
                                      "--state-dir", str(work / device)],
                                     stderr=subprocess.DEVNULL)  # fmt: skip
            time.sleep(args.settle + 1)
            cpu = cpu_seconds(agent.pid)
            secs = load(broker.port, f"bench/{device}/iris-rf/in",
                        f"bench/{device}/iris-rf/out", lines[(rows, form)], args.n)  # fmt: skip
            cpu = cpu_seconds(agent.pid) - cpu
            time.sleep(1.5)
            counters = health(broker.port, device)["counters"]
            agent.terminate()
            agent.wait(30)
            runs = counters["backend_calls"] / max(counters["answered"], 1)
            # The main process only: helper processes (--workers) are not counted.
            per_msg = cpu / args.n if workers == 1 else None
            results.append((label, args.n / secs, args.n * rows / secs, runs, per_msg))
    finally:
        broker.stop()
        shutil.rmtree(work, ignore_errors=True)
    base, peer = results[0][1], results[1][2]
    inflight = args.inflight if args.inflight is not None else "default (20)"
    print(f"{args.n} requests per case, QoS 1 both ways, C load clients, inflight {inflight}")
    print(f"{'case':<38} {'msg/s':>8} {'inst/s':>9} {'vs echo':>8} {'inst vs peer':>13} "
          f"{'runs/answer':>12} {'CPU us/msg':>11}")  # fmt: skip
    for label, msgs, inst, runs, per_msg in results:
        r = f"{runs:.2f}" if runs is not None else "-"
        c = f"{per_msg * 1e6:.0f}" if per_msg is not None else "-"
        print(f"{label:<38} {msgs:>8.0f} {inst:>9.0f} {msgs / base:>7.2f}x "
              f"{inst / peer:>12.2f}x {r:>12} {c:>11}")  # fmt: skip


if __name__ == "__main__":
    main()
