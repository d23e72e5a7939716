"""What an explanation costs on the device, per method, against the same answer without one.

    .venv/bin/python bench/bench_explain.py [--n 300]

Each case is trained, converted and loaded as the agent loads it (``ServedModel``); one
instance at a time is answered ``--n`` times without and with ``explain``, and the p50
latencies, their ratio and the extra inferences (``evaluations``) are printed:

  linear      logistic regression on breast_cancer (30 features): exact, no extra run
  occlusion   random forest on breast_cancer; gradient boosting on the mixed rooms table
              (categorical zone); an MLP on the same mixed table (TFLite); the cnn1d on
              vibration windows (3 channels x 8 segments); the cnn2d on 8x8 digits (4x4
              regions)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def p50_us(call: Callable[[], Any], n: int) -> float:
    call()  # warm-up
    times = []
    for _ in range(n):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def cases(work: Path) -> list[tuple[str, Any, list[Any]]]:
    import pandas as pd

    from edgewise.converters.keras_export import export_keras
    from edgewise.converters.sklearn_onnx import device_instances, export_sklearn
    from edgewise.edge.runtime.bundle import load_bundle
    from edgewise.edge.runtime.model import ServedModel
    from edgewise.trainer.datasets import load_builtin, load_csv
    from edgewise.trainer.deep import train_deep
    from edgewise.trainer.examples import rooms
    from edgewise.trainer.tensors import from_tabular, load_digits_images, load_vibration
    from edgewise.trainer.train import train

    def load(bundle: Any) -> Any:
        return ServedModel.load(load_bundle(bundle.path))

    pd.DataFrame(rooms(300)).to_csv(work / "rooms.csv", index=False)
    table = load_csv(work / "rooms.csv", "status")
    out: list[tuple[str, Any, list[Any]]] = []
    for label, data, model in (
        (
            "logistic-regression, breast_cancer",
            load_builtin("breast_cancer"),
            "logistic-regression",
        ),
        ("random-forest, breast_cancer", load_builtin("breast_cancer"), "random-forest"),
        ("hist-gradient-boosting, rooms (mixed)", table, "hist-gradient-boosting"),
    ):
        host = train(data, model, "b")
        out.append(
            (label, load(export_sklearn(host, work / label.split(",")[0])), device_instances(host))
        )
    for label, tensor, model in (
        ("mlp, rooms (mixed), tflite", from_tabular(table), "mlp"),
        ("cnn1d, vibration windows", load_vibration(per_class=60), "cnn1d"),
        ("cnn2d, digits 8x8", load_digits_images(), "cnn2d"),
    ):
        host = train_deep(tensor, model, model, epochs=15)
        inputs = host.client_inputs
        rows = inputs.tolist() if isinstance(inputs, np.ndarray) else inputs
        out.append((label, load(export_keras(host, work / model)), rows))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=300, help="answers timed per case and mode")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        print(f"{'case':40s} {'method':10s} {'runs':>5s} {'plain p50':>10s} "
              f"{'explained p50':>14s} {'ratio':>6s}")  # fmt: skip
        for label, served, rows in cases(Path(tmp)):
            row = rows[:1]
            plain = p50_us(lambda s=served, r=row: s.predict(r), args.n)
            explained = p50_us(lambda s=served, r=row: s.predict(r, explain=True), args.n)
            why = served.predict(row, explain=True)[0]["explanation"]
            runs = why.get("evaluations", 0)
            print(f"{label:40s} {why['method']:10s} {runs:5d} {plain:8.0f} µs "
                  f"{explained:11.0f} µs {explained / plain:5.1f}x")  # fmt: skip


if __name__ == "__main__":
    main()
