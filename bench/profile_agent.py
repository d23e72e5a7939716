"""Where one agent process spends its time under a stream of requests (py-spy samples).

    .venv/bin/python -m pip install py-spy   # on the package index; not a dependency
    .venv/bin/python bench/profile_agent.py [--n 30000] [--seconds 8]

One private Mosquitto, one agent (durable, max_batch 1) serving the iris forest, 1-row
QoS 1 requests from `mosquitto_pub -l`. py-spy samples every thread of the agent (idle
waits left out) while the stream runs. Printed: the share of samples per area (the
innermost frame that is in a known module decides) and the top functions by own time.
This is the profile behind the throughput figures in docs/mqtt.md#workers.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ROW = [5.1, 3.5, 1.4, 0.2]
# Innermost matching frame decides the area (order matters: most specific first).
AREAS = [
    ("paho (MQTT packets, socket)", ("paho/", "edge/src/edgewise/edge/link/read_buffer.py")),
    ("onnxruntime (the model)", ("onnxruntime/",)),
    ("sqlite outbox", ("edge/src/edgewise/edge/link/outbox.py",)),
    (
        "json + payload checks",
        (
            "json/",
            "edge/src/edgewise/edge/link/payload.py",
            "edge/src/edgewise/edge/runtime/decode.py",
        ),
    ),
    ("numpy", ("numpy/",)),
    ("agent: answers, batching, health", ("edge/",)),
    ("threading, queue", ("threading.py", "queue.py")),
]


def area_of(stack: list[str]) -> str:
    for frame in reversed(stack):
        for name, keys in AREAS:
            if any(k in frame for k in keys):
                return name
    return "other"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=30000)
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument(
        "--ack",
        default="forwarded",
        choices=["forwarded", "stored"],
        help="the agent's ack setting (stored: the outbox on the hot path, as before)",
    )
    args = ap.parse_args()
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        sys.exit("py-spy is not installed: .venv/bin/python -m pip install py-spy")

    from edgewise.converters.sklearn_onnx import export_sklearn
    from edgewise.deploy.broker import start_mosquitto
    from edgewise.trainer.datasets import load_builtin
    from edgewise.trainer.train import train

    work = Path(tempfile.mkdtemp(prefix="edgewise-bench-profile-"))
    bundle = export_sklearn(train(load_builtin("iris"), "random-forest", "iris-rf"), work / "b")
    broker = start_mosquitto(work / "broker", extra=["max_queued_messages 1000000"])
    lines = work / "rows.txt"
    lines.write_text("".join(json.dumps({"id": i, "instances": [ROW]}) + "\n"
                             for i in range(args.n)))  # fmt: skip
    raw = work / "profile.txt"
    (work / "agent.toml").write_text(f'ack = "{args.ack}"\n')
    try:
        agent = subprocess.Popen([sys.executable, "-m", "edgewise", "agent", "--bundle",
                                  str(bundle.path), "--broker", broker.url, "--device", "p",
                                  "--prefix", "bench", "--state-dir", str(work / "state"),
                                  "--config", str(work / "agent.toml")],
                                 stderr=subprocess.DEVNULL)  # fmt: skip
        time.sleep(4)
        sub = subprocess.Popen(["mosquitto_sub", "-p", str(broker.port), "-q", "1", "-t",
                                "bench/p/iris-rf/out", "-C", str(args.n)],
                               stdout=subprocess.DEVNULL)  # fmt: skip
        with lines.open("rb") as fh:
            pub = subprocess.Popen(["mosquitto_pub", "-p", str(broker.port), "-q", "1", "-t",
                                    "bench/p/iris-rf/in", "-l"], stdin=fh)  # fmt: skip
            time.sleep(1)
            subprocess.run([spy, "record", "--pid", str(agent.pid), "--duration",
                            str(args.seconds), "--rate", "200", "--format", "raw",
                            "--output", str(raw), "--nonblocking"],
                           check=True, capture_output=True)  # fmt: skip
            pub.wait(600)
        sub.wait(600)
        agent.terminate()
        agent.wait(30)
        areas: Counter[str] = Counter()
        functions: Counter[str] = Counter()
        for line in raw.read_text().splitlines():
            stack_text, _, count = line.rpartition(" ")
            stack = stack_text.split(";")
            leaf = stack[-1]
            # Waiting is not work: threads blocked in a wait or a select.
            if any(w in leaf for w in ("wait (threading", "select (", "get (queue", "_wait_for")):
                continue
            areas[area_of(stack)] += int(count)
            functions[leaf] += int(count)
    finally:
        broker.stop()
        shutil.rmtree(work, ignore_errors=True)
    total = sum(areas.values()) or 1
    print(f"agent process (ack {args.ack}), {args.seconds} s of a {args.n}-request QoS 1 stream; "
          f"{total} busy samples at 200 Hz (all threads)")  # fmt: skip
    for name, count in areas.most_common():
        print(f"  {name:<36} {100 * count / total:5.1f} %")
    print("top functions by own samples:")
    for name, count in functions.most_common(12):
        print(f"  {100 * count / total:5.1f} %  {name[:110]}")


if __name__ == "__main__":
    main()
