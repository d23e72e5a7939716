"""A device pool when a member dies: what Mosquitto does with the requests it held for it.

    .venv/bin/python bench/bench_pool.py [--requests 6000] [--rate 600]

One private Mosquitto; three agent processes in one pool (durable: persistent sessions,
the default), serving a random forest on iris. A client publishes QoS 1 requests to the
pool at --rate per second. A third of the way through, one member is killed (SIGKILL: no
DISCONNECT, its session stays; with --no-outbox the members use clean sessions). Printed:

- answers per member before and after the kill;
- requests unanswered 5 s after the stream ended (what the broker keeps for the dead
  member's session instead of giving it to the live ones);
- after the member restarts with the same device id (same session), how many of those
  are answered and how long that takes.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import paho.mqtt.client as paho  # noqa: E402

ROW = [5.1, 3.5, 1.4, 0.2]


class Answers:
    """Every pool answer: id -> device, and arrival times."""

    def __init__(self, port: int, pool: str) -> None:
        self.by_id: dict[int, str] = {}
        self.at: dict[int, float] = {}
        self.lock = threading.Lock()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        self.client.on_message = self._on
        self.client.connect("127.0.0.1", port)
        self.client.subscribe(f"edgewise/pool/{pool}/iris-rf/out/+", qos=1)
        self.client.loop_start()

    def _on(self, client: object, userdata: object, msg: paho.MQTTMessage) -> None:
        doc = json.loads(msg.payload)
        with self.lock:
            self.by_id.setdefault(doc["id"], doc["device"])
            self.at.setdefault(doc["id"], time.monotonic())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=6000)
    ap.add_argument("--rate", type=float, default=600.0)
    ap.add_argument("--no-outbox", action="store_true", help="members with clean sessions")
    args = ap.parse_args()

    from edgewise.converters.sklearn_onnx import export_sklearn
    from edgewise.deploy.broker import start_mosquitto
    from edgewise.trainer.datasets import load_builtin
    from edgewise.trainer.train import train

    work = Path(tempfile.mkdtemp(prefix="edgewise-bench-pool-"))
    bundle = export_sklearn(train(load_builtin("iris"), "random-forest", "iris-rf"), work / "b")
    broker = start_mosquitto(work / "broker")
    pool = "line-3"
    procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(device: str) -> None:
        cmd = [sys.executable, "-m", "edgewise", "agent", "--bundle", str(bundle.path),
               "--broker", broker.url, "--device", device, "--pool", pool,
               "--state-dir", str(work / "state" / device),
               *(["--no-outbox"] if args.no_outbox else [])]  # fmt: skip
        procs[device] = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    members = ["m1", "m2", "m3"]
    for m in members:
        start(m)
    answers = Answers(broker.port, pool)
    sender = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    sender.connect("127.0.0.1", broker.port)
    sender.loop_start()
    # Every member is subscribed once each has answered a probe on its own topic... here:
    # wait for the three retained `online` statuses.
    online: set[str] = set()
    probe = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    probe.on_message = lambda c, u, m: (
        online.add(m.topic.split("/")[1]) if m.payload == b"online" else None
    )
    probe.connect("127.0.0.1", broker.port)
    probe.subscribe("edgewise/+/status", qos=1)
    probe.loop_start()
    deadline = time.monotonic() + 60
    while online != set(members):
        assert time.monotonic() < deadline, online
        time.sleep(0.1)
    time.sleep(1.0)
    kill_at = args.requests // 3
    started = time.monotonic()
    killed_at = 0.0
    for i in range(args.requests):
        if i == kill_at:
            procs["m3"].kill()
            killed_at = time.monotonic()
        target = started + i / args.rate
        if (wait := target - time.monotonic()) > 0:
            time.sleep(wait)
        body = json.dumps({"id": i, "instances": [ROW]})
        sender.publish(f"edgewise/pool/{pool}/iris-rf/in", body, qos=1)
    ended = time.monotonic()
    time.sleep(5.0)
    with answers.lock:
        before = Counter(d for i, d in answers.by_id.items() if answers.at[i] < killed_at)
        after = Counter(d for i, d in answers.by_id.items() if answers.at[i] >= killed_at)
        missing = [i for i in range(args.requests) if i not in answers.by_id]
    print(
        f"{args.requests} requests at {args.rate:.0f}/s; m3 killed (SIGKILL) at request {kill_at}"
    )
    print(f"answers before the kill: {dict(sorted(before.items()))}")
    print(f"answers after the kill:  {dict(sorted(after.items()))}")
    sent_after = args.requests - kill_at
    print(f"unanswered 5 s after the stream ended: {len(missing)} "
          f"({len(missing) / sent_after:.1%} of those sent after the kill)")  # fmt: skip
    restart = time.monotonic()
    start("m3")
    deadline = restart + 60
    while time.monotonic() < deadline:
        with answers.lock:
            left = [i for i in missing if i not in answers.by_id]
        if not left:
            break
        time.sleep(0.1)
    with answers.lock:
        recovered = [i for i in missing if i in answers.by_id]
        took = max((answers.at[i] for i in recovered), default=restart) - restart
        by = Counter(answers.by_id[i] for i in recovered)
    print(f"after m3 restarted (same session): {len(recovered)} of them answered, "
          f"by {dict(by)}, the last {took:.1f} s after the restart")  # fmt: skip
    print(f"stream took {ended - started:.1f} s")
    for p in procs.values():
        p.terminate()
    for p in procs.values():
        p.wait(10)
    broker.stop()


if __name__ == "__main__":
    main()
