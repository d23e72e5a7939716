"""Size, accuracy and latency of the deep models in every edge format, and through the agent.

    .venv/bin/python bench/bench_deep.py [--n 2000] [--epochs 40]

For the vibration windows (cnn1d) and the 8x8 digits (cnn2d), trained here with seed 0:
  table 1: Keras vs TFLite float32 / float16 / dynamic / int8 vs ONNX float32 / dynamic /
           int8: file size, held-out accuracy (run through the edge backend, with the
           agent's int8 quantize/dequantize), per-sample latency of one bare call (batch 1).
           Keras is timed as a tf.function (model.predict per sample is ~50 ms).
  table 2: round trips through Mosquitto to the edgewise agent serving the float32 and
           the int8 TFLite bundle, binary requests (and JSON for comparison), QoS 0,
           sequential; compare with the bare interpreter call of table 1.
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
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.roundtrip import Client, pct  # noqa: E402
from edgewise.converters.keras_convert import QUANTIZE_MODES  # noqa: E402

MODES = [(fmt, q) for fmt, modes in QUANTIZE_MODES.items() for q in modes]


def time_calls(fn: Any, n: int) -> list[float]:
    for _ in range(min(200, n)):
        fn()
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1e6)
    return out


def formats_table(name: str, host: Any, work: Path, n: int) -> dict[str, Path]:
    import tensorflow as tf

    from edgewise.converters.keras_export import KerasExportOptions, export_keras
    from edgewise.edge.runtime.model import ServedModel

    rows = []
    keras_file = work / f"{name}.keras"
    host.model.save(keras_file)
    X, y = host.X_heldout, host.y_heldout
    acc = float((host.model.predict(X, verbose=0).argmax(1) == y).mean())
    serve = tf.function(lambda x: host.model(x, training=False))
    one = tf.constant(X[:1])
    lat = time_calls(lambda: serve(one), n)
    rows.append(("Keras (tf.function)", keras_file.stat().st_size, acc, pct(lat, 50), pct(lat, 99)))
    bundles = {}
    for fmt, q in MODES:
        out = work / f"{name}-{fmt}-{q}"
        bundle = export_keras(host, out, KerasExportOptions(fmt, q, max_accuracy_drop=100))
        bundles[f"{fmt}-{q}"] = out
        served = ServedModel.load(bundle)
        preds = served.predict_tensor(X)
        acc = float(np.mean([p["label"] == host.labels[t] for p, t in zip(preds, y)]))
        feeds = served.encode_tensor(X[:1])
        lat = time_calls(lambda s=served, f=feeds: s.backend.run(f), n)
        label = f"{'TFLite' if fmt == 'tflite' else 'ONNX'} {q if q != 'none' else 'float32'}"
        rows.append((f"{label} ({served.backend.name})", bundle.manifest.model.size_bytes,
                     acc, pct(lat, 50), pct(lat, 99)))  # fmt: skip
    print(f"\n{name}: {len(y)} held-out samples of shape {list(X.shape[1:])}, batch 1, {n} calls")
    print(f"{'format':36s} {'bytes':>9s} {'accuracy':>9s} {'p50 µs':>8s} {'p99 µs':>8s}")
    for label, size, a, p50, p99 in rows:
        print(f"{label:36s} {size:9d} {a:9.4f} {p50:8.1f} {p99:8.1f}")
    return bundles


def agent_table(name: str, host: Any, bundles: dict[str, Path], n: int) -> None:
    from edgewise.deploy.broker import start_mosquitto
    from edgewise.edge.link.payload import encode_tensor_request

    window = host.X_heldout[:1]
    binary = encode_tensor_request(window, "b")
    as_json = json.dumps({"id": "j", "instances": window.tolist()}).encode()
    broker = start_mosquitto(Path(tempfile.mkdtemp(prefix="edgewise-bench-broker-")))
    client = Client(broker.port)
    rows = []
    try:
        cases = [("float32", "tflite-none", binary, "binary"),
                 ("int8", "tflite-int8", binary, "binary"),
                 ("int8", "tflite-int8", as_json, "JSON")]  # fmt: skip
        for kind, key, body, enc in cases:
            device = f"bench-{kind}-{enc}".lower()
            cmd = [sys.executable, "-m", "edgewise", "agent", "--bundle", str(bundles[key])]
            cmd += ["--broker", broker.url, "--device", device, "--qos", "0"]
            cmd += ["--state-dir", str(broker.workdir / "state")]
            proc = subprocess.Popen(
                cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            try:
                base = f"edgewise/{device}/{name}/"
                client.wait_topic(base + "info")
                lat, rate = client.measure(base + "in", base + "out", n, n, body)
                rows.append((f"agent, TFLite {kind}, {enc} ({len(body)} B)", lat, rate))
            finally:
                proc.terminate()
                proc.wait(20)
    finally:
        broker.stop()
    print(f"\n{name} through the agent (Mosquitto on loopback, QoS 0, {n} sequential requests)")
    print(f"{'case':44s} {'p50 µs':>8s} {'p99 µs':>8s} {'msg/s':>8s}")
    for label, lat, rate in rows:
        print(f"{label:44s} {pct(lat, 50):8.0f} {pct(lat, 99):8.0f} {rate:8.0f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=2000, help="calls / round trips per case")
    ap.add_argument("--epochs", type=int, default=40, help="most training epochs")
    args = ap.parse_args()

    from edgewise.trainer.deep import train_deep
    from edgewise.trainer.tensors import load_digits_images, load_vibration

    work = Path(tempfile.mkdtemp(prefix="edgewise-bench-deep-"))
    for name, data, model in (
        ("vibration", load_vibration(seed=0), "cnn1d"),
        ("digits", load_digits_images(), "cnn2d"),
    ):
        t0 = time.perf_counter()
        host = train_deep(data, model, name, epochs=args.epochs)
        print(f"\ntrained {model} on {data.source} in {time.perf_counter() - t0:.1f} s: "
              f"{ {k: round(v, 4) for k, v in host.meta.metrics.items()} }")  # fmt: skip
        bundles = formats_table(name, host, work, args.n)
        agent_table(name, host, bundles, args.n)


if __name__ == "__main__":
    main()
