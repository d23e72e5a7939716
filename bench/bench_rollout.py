"""Roll-outs over MQTT: time from `deploy` to active on N agents, and the answer gap of a swap.

    .venv/bin/python bench/bench_rollout.py [--sizes 1,3,10] [--rate 500]

One private Mosquitto; a random forest on iris as signed bundles; N agent processes
(`edgewise agent --group ...`, probation off so that "active" is the end). Per N: the
seconds from the first chunk published to the last device reporting the new version
active (median of three roll-outs, each a new bundle so that every one is downloaded).
Baseline in the same run: the seconds from starting one agent process with the bundle to
its first answer (what a restart with copied files costs).

The swap under load: one agent, QoS 1 requests at --rate per second for 6 s, a roll-out
after 2 s. Printed: the longest gap between two answers in that run, against the
longest gap in a run of the same length without a roll-out.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import paho.mqtt.client as paho  # noqa: E402

ROW = [5.1, 3.5, 1.4, 0.2]


class Watch:
    """Answers' arrival times and the latest deployment documents."""

    def __init__(self, port: int, prefix: str) -> None:
        self.arrivals: list[float] = []
        self.deployments: dict[str, dict[str, Any]] = {}
        self.health: set[str] = set()
        self.lock = threading.Lock()
        self.c = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        self.c.on_message = self._on
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        time.sleep(0.3)
        self.c.subscribe(f"{prefix}/+/+/out", 1)
        self.c.subscribe(f"{prefix}/+/+/deployment", 1)
        self.c.subscribe(f"{prefix}/+/health", 1)
        time.sleep(0.3)

    def _on(self, c: Any, u: Any, m: paho.MQTTMessage) -> None:
        now = time.monotonic()
        parts = m.topic.split("/")
        with self.lock:
            if m.topic.endswith("/out"):
                self.arrivals.append(now)
            elif m.topic.endswith("/deployment") and m.payload:
                self.deployments[parts[1]] = json.loads(m.payload)
            elif m.topic.endswith("/health"):
                self.health.add(parts[1])

    def wait(self, check: Any, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if check():
                    return time.monotonic()
            time.sleep(0.005)
        raise SystemExit("timed out")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", default="1,3,10")
    ap.add_argument("--rate", type=float, default=500.0, help="requests per second under load")
    args = ap.parse_args()

    from edgewise.converters.sklearn_onnx import export_sklearn
    from edgewise.deploy.broker import start_mosquitto
    from edgewise.edge.link.endpoint import Endpoint
    from edgewise.edge.link.fleet_topics import Target
    from edgewise.edge.remote.fleet_client import FleetLink, publish_bundle, set_desired
    from edgewise.edge.runtime.desired import Desired
    from edgewise.edge.runtime.signing import generate_keys, load_private_key, sign_bundle
    from edgewise.edge.runtime.transfer import pack
    from edgewise.trainer.datasets import load_builtin
    from edgewise.trainer.train import train

    work = Path(tempfile.mkdtemp(prefix="edgewise-bench-rollout-"))
    private, public = generate_keys(work / "keys")
    base = export_sklearn(
        train(load_builtin("iris"), "random-forest", "iris-rf"), work / "base"
    ).path
    serial = iter(range(1, 1000))

    def version() -> Path:
        v = str(next(serial))
        out = Path(shutil.copytree(base, work / f"v{v}"))
        manifest = json.loads((out / "manifest.json").read_text())
        manifest["version"] = v
        (out / "manifest.json").write_text(json.dumps(manifest))
        sign_bundle(out, load_private_key(private))
        return out

    broker = start_mosquitto(work / "broker")
    prefix = "bench"
    watch = Watch(broker.port, prefix)
    first = version()
    size = pack(first)[0].size
    procs: list[subprocess.Popen[bytes]] = []

    def start(device: str, group: str) -> subprocess.Popen[bytes]:
        cmd = [sys.executable, "-m", "edgewise", "agent", "--bundle", str(first), "--broker",
               broker.url, "--device", device, "--prefix", prefix, "--group", group,
               "--trusted-key", str(public), "--state-dir", str(work / "state" / device),
               "--health-interval", "1", "--config", str(work / "agent.toml")]  # fmt: skip
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(p)
        return p

    (work / "agent.toml").write_text("probation_requests = 0\n")

    def roll_out(bundle: Path, target: Target) -> Desired:
        index, blob = pack(bundle)
        link = FleetLink(Endpoint.parse(broker.url), prefix, "5", [])
        try:
            publish_bundle(link, index, blob)
            want = Desired.new(target.model, index.sha256, index.version)
            set_desired(link, [target], want, load_private_key(private))
        finally:
            link.close()
        return want

    def answered(device: str, rid: str) -> float:
        started = time.monotonic()
        n = len(watch.arrivals)
        watch.c.publish(
            f"{prefix}/{device}/iris-rf/in", json.dumps({"id": rid, "instances": [ROW]}), 1
        )
        watch.wait(lambda: len(watch.arrivals) > n, 60)
        return time.monotonic() - started

    try:
        # Baseline: a restart with copied files, start to first answer.
        t0 = time.monotonic()
        start("cold", "none")
        watch.wait(lambda: "cold" in watch.health, 120)
        cold = time.monotonic() - t0 + answered("cold", "cold-1")
        print(f"bundle: {size} bytes; baseline, agent process start to first answer: {cold:.2f} s")
        print(f"{'agents':>6}  {'deploy -> all active (median of 3)':>36}  {'vs restart':>10}")
        for n in [int(x) for x in args.sizes.split(",")]:
            group = f"g{n}"
            devices = [f"{group}-{i}" for i in range(n)]
            for d in devices:
                start(d, group)
            watch.wait(lambda devices=devices: all(d in watch.health for d in devices), 300)
            times = []
            for _ in range(3):
                bundle = version()
                t0 = time.monotonic()
                want = roll_out(bundle, Target("groups", group, "iris-rf"))

                def done(devices: list[str] = devices, want: Desired = want) -> bool:
                    docs = [watch.deployments.get(d, {}) for d in devices]
                    return all(x.get("deployment") == want.id and x.get("state") == "active"
                               for x in docs)  # fmt: skip

                times.append(watch.wait(done, 300) - t0)
            med = statistics.median(times)
            print(f"{n:>6}  {med:>34.2f} s  {med / cold:>9.2f}x")
        # The answer gap of a swap under load.
        start("load", "load")
        watch.wait(lambda: "load" in watch.health, 120)
        for swap in (False, True):
            with watch.lock:
                watch.arrivals.clear()
            stop_at = time.monotonic() + 6.0
            swapped = False
            i = 0
            t_start = time.monotonic()
            while time.monotonic() < stop_at:
                watch.c.publish(
                    f"{prefix}/load/iris-rf/in", json.dumps({"id": i, "instances": [ROW]}), 1
                )
                i += 1
                if swap and not swapped and time.monotonic() - t_start > 2.0:
                    threading.Thread(
                        target=roll_out, args=(version(), Target("devices", "load", "iris-rf"))
                    ).start()
                    swapped = True
                time.sleep(max(0.0, t_start + i / args.rate - time.monotonic()))
            watch.wait(lambda i=i: len(watch.arrivals) >= i, 60)
            gaps = [b - a for a, b in zip(watch.arrivals, watch.arrivals[1:])]
            label = "with a roll-out" if swap else "without (baseline)"
            p99 = statistics.quantiles(gaps, n=100)[98] * 1000
            print(f"{i} requests at {args.rate:.0f}/s, {label}: longest gap between answers "
                  f"{max(gaps) * 1000:.1f} ms, p99 gap {p99:.1f} ms")  # fmt: skip
        print(f"versions now on 'load': {watch.deployments.get('load', {}).get('version')}")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(30)
        watch.c.loop_stop()
        broker.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
