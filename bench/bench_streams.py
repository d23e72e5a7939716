"""Sensor streams: what one agent process sustains, against a hand-written loop.

    .venv/bin/python bench/bench_streams.py [--rows 20000] [--samples 256000]

One private Mosquitto; sensor messages come from Mosquitto's own C client
(``mosquitto_pub -l``, QoS 1, as fast as the broker takes them) and predictions are
counted by ``mosquitto_sub -C N``. Two workloads, each run by three consumers in turn:

- rows: ``sensors/room`` carries ``{"a": .., "b": .., "c": .., "d": ..}``; every update is
  a row for an iris random forest (ONNX); one prediction per message;
- windows: ``sensors/accel`` carries ``{"x": .., "y": .., "z": ..}``, one sample per
  message; windows of 256 samples (stride 256) for a 1-D CNN (Keras -> ONNX); one
  prediction per 256 samples.

Consumers: the agent with a ``[[streams]]`` table (durable outbox, the default), the
agent with ``durable = false``, and a hand-written paho + onnxruntime loop doing the same
assembly (parse, pick the fields, fill a NumPy window, run, publish a JSON event; no
checks, no outbox). Printed: samples/s, predictions/s, CPU seconds of the consumer
process per 1,000 samples, and the ratio to the hand-written loop.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WINDOW = 256
# Nothing dropped: every message must become its prediction for the count to end (the
# default queue of 1,000 drops the oldest when the worker falls behind a burst).
QUEUE = "queue = 1000000\n"
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (/proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def wait_retained(port: int, topic: str, want: bytes, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(["mosquitto_sub", "-p", str(port), "-t", topic, "-C", "1",
                              "-W", "2"], capture_output=True)  # fmt: skip
        if out.stdout.strip() == want:
            return
        time.sleep(0.2)
    raise SystemExit(f"{topic} never read {want!r}")


def drive(
    port: int, topic: str, lines: Path, out_topic: str, expect: int, pid: int
) -> tuple[float, float]:
    """(seconds from the first sample to the last prediction, CPU seconds of ``pid``)."""
    sub = subprocess.Popen(["mosquitto_sub", "-p", str(port), "-q", "1", "-t", out_topic,
                            "-C", str(expect)], stdout=subprocess.DEVNULL)  # fmt: skip
    time.sleep(0.5)
    cpu0, started = cpu_seconds(pid), time.monotonic()
    with lines.open("rb") as fh:
        subprocess.run(["mosquitto_pub", "-p", str(port), "-q", "1", "-t", topic, "-l"],
                       stdin=fh, check=True)  # fmt: skip
    try:
        sub.wait(300)
    except subprocess.TimeoutExpired:
        sub.kill()
        raise SystemExit(f"{expect} predictions did not arrive in 300 s on {out_topic}") from None
    return time.monotonic() - started, cpu_seconds(pid) - cpu0


# -- the hand-written loop ------------------------------------------------------------------


def peer(mode: str, port: int, model_path: str) -> None:
    """paho + onnxruntime, the assembly written by hand; publishes one event per prediction."""
    import numpy as np
    import onnxruntime as ort
    import paho.mqtt.client as paho

    session = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    buf = np.zeros((WINDOW, 3), dtype=np.float32)
    state = {"n": 0, "seq": 0}
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"peer-{mode}")

    def on_connect(c: paho.Client, u: object, f: object, rc: object, p: object) -> None:
        c.subscribe(f"sensors/{'room' if mode == 'rows' else 'accel'}", 1)
        c.publish("bench/peer/ready", b"1", qos=1, retain=True)

    def on_message(c: paho.Client, u: object, msg: paho.MQTTMessage) -> None:
        doc = json.loads(msg.payload)
        if mode == "rows":
            x = np.asarray([[doc["a"], doc["b"], doc["c"], doc["d"]]], dtype=np.float32)
        else:
            buf[state["n"]] = (doc["x"], doc["y"], doc["z"])
            state["n"] += 1
            if state["n"] < WINDOW:
                return
            state["n"] = 0
            x = buf[None]
        out = session.run(None, {name: x})
        proba = np.asarray(out[-1]).reshape(-1)
        state["seq"] += 1
        event = {
            "label": int(proba.argmax()),
            "confidence": float(proba.max()),
            "seq": state["seq"],
        }
        c.publish("bench/peer/events", json.dumps(event), qos=1)

    client.on_connect, client.on_message = on_connect, on_message
    client.connect("127.0.0.1", port)
    client.loop_forever()


# -- the run --------------------------------------------------------------------------------


def build_models(work: Path) -> tuple[Path, Path]:
    from edgewise.converters.keras_export import KerasExportOptions, export_keras
    from edgewise.converters.sklearn_onnx import export_sklearn
    from edgewise.trainer.datasets import load_builtin
    from edgewise.trainer.deep import train_deep
    from edgewise.trainer.tensors import load_vibration
    from edgewise.trainer.train import train

    iris = export_sklearn(train(load_builtin("iris"), "random-forest", "rows"), work / "rows")
    cnn = train_deep(load_vibration(per_class=50, seed=0), "cnn1d", "windows", epochs=3)
    export_keras(cnn, work / "windows", KerasExportOptions("onnx"))
    return iris.path, work / "windows"


def agent_config(work: Path, mode: str, port: int, durable: bool) -> Path:
    if mode == "rows":
        names = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]
        bound = "\n".join(f'"{n}" = {{ topic = "sensors/room", field = "{f}" }}'
                          for n, f in zip(names, "abcd"))  # fmt: skip
        stream = f'[[streams]]\nname = "s"\nmodel = "rows"\n{QUEUE}[streams.features]\n{bound}\n'
    else:
        bound = "\n".join(f'{c} = {{ topic = "sensors/accel", field = "{c}" }}' for c in "xyz")
        stream = ('[[streams]]\nname = "s"\nmodel = "windows"\nassemble = "windows"\n'
                  f"stride = {WINDOW}\nmax_gap = 3600.0\n{QUEUE}"
                  f"[streams.features]\n{bound}\n")  # fmt: skip
    path = work / f"{mode}-{durable}.toml"
    path.write_text(
        f'device = "bench-{mode}"\nbroker = "mqtt://127.0.0.1:{port}"\n'
        f'state_dir = "{work / "state"}"\ndurable = {str(durable).lower()}\n'
        f"health_interval = 3600.0\n{stream}"
    )
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rows", type=int, default=10000, help="row messages")
    # More than ~60,000 lines in one mosquitto_pub -l run: Mosquitto 2.0.11 cut the
    # publisher off here ("disconnected due to out of memory") and the count never ends.
    ap.add_argument("--samples", type=int, default=WINDOW * 200, help="window samples")
    ap.add_argument("--peer", choices=["rows", "windows"], help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.peer:
        peer(args.peer, args.port, args.model)
        return

    from edgewise.deploy.broker import start_mosquitto

    work = Path(tempfile.mkdtemp(prefix="edgewise-bench-streams-"))
    rows_bundle, windows_bundle = build_models(work)
    broker = start_mosquitto(work / "broker", extra=["max_queued_messages 10000000"])
    rng = __import__("numpy").random.default_rng(0)
    data = {
        "rows": ("sensors/room", "".join(
            json.dumps(dict(zip("abcd", map(float, rng.normal(4, 1, 4).round(3))))) + "\n"
            for _ in range(args.rows)), args.rows, args.rows),
        "windows": ("sensors/accel", "".join(
            json.dumps(dict(zip("xyz", map(float, rng.normal(0, 0.3, 3).round(4))))) + "\n"
            for _ in range(args.samples)), args.samples, args.samples // WINDOW),
    }  # fmt: skip
    bundles = {"rows": rows_bundle, "windows": windows_bundle}
    results: list[tuple[str, str, float, float, int, int]] = []
    try:
        for mode, (topic, text, samples, predictions) in data.items():
            lines = work / f"{mode}.txt"
            lines.write_text(text)
            cases = [("hand-written paho + onnxruntime", None), ("agent (durable outbox)", True),
                     ("agent (durable = false)", False)]  # fmt: skip
            for label, durable in cases:
                if durable is None:
                    cmd = [sys.executable, __file__, "--peer", mode, "--port", str(broker.port),
                           "--model", str(bundles[mode] / "model.onnx")]  # fmt: skip
                    ready, out = ("bench/peer/ready", b"1"), "bench/peer/events"
                else:
                    config = agent_config(work, mode, broker.port, durable)
                    cmd = [sys.executable, "-m", "edgewise", "agent", "--config", str(config),
                           "--bundle", str(bundles[mode])]  # fmt: skip
                    ready = (f"edgewise/bench-{mode}/status", b"online")
                    out = f"edgewise/bench-{mode}/streams/s/events"
                proc = subprocess.Popen(cmd, cwd=ROOT)
                try:
                    wait_retained(broker.port, *ready)
                    seconds, cpu = drive(broker.port, topic, lines, out, predictions, proc.pid)
                finally:
                    proc.terminate()
                    proc.wait(60)
                subprocess.run(["mosquitto_pub", "-p", str(broker.port), "-t", ready[0], "-r",
                                "-n"], check=True)  # fmt: skip
                results.append((mode, label, seconds, cpu, samples, predictions))
                print(f"{mode:8} {label:34} {samples / seconds:9.0f} samples/s "
                      f"{predictions / seconds:8.0f} predictions/s "
                      f"{cpu / samples * 1000:6.3f} CPU s/1k samples", flush=True)  # fmt: skip
    finally:
        broker.stop()
    print("\nsamples/s relative to the hand-written loop (same broker, same run):")
    for mode in data:
        base = next(r for r in results if r[0] == mode and r[1].startswith("hand"))
        for r in results:
            if r[0] == mode:
                print(f"  {mode:8} {r[1]:34} {base[2] / r[2]:5.2f}x   CPU {r[3] / base[3]:5.2f}x")


if __name__ == "__main__":
    main()
