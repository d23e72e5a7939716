"""Drift on the device: false alarms, instances to alarm per shift size, and the cost.

    .venv/bin/python bench/bench_drift.py [--seeds 10]

Logistic regression on 3,000 generated room records (trainer.examples.rooms, seed 1),
converted to an ONNX bundle with its training reference, loaded as the agent loads it.
The monitor is the agent's own (edge.observe.drift.DriftMonitor, default settings: window 1,000,
judged from 200, warn 0.1, alarm 0.25), fed in requests of 10 instances.

- False alarms: per seed, 10,000 held-out rows drawn with replacement, numbers times
  (1 + 1 % noise): the largest PSI seen, and how many times the status went to warn/alarm.
- Detection: per shift (``temp c`` times 1.05 ... 2.0), after 1,000 in-distribution
  instances: instances until warn and until alarm (median over seeds; "-" = not within
  3,000), and the feature the alarm names.
- Cost: microseconds per instance of the monitor's bookkeeping next to the model's
  inference (``ServedModel.predict``), both timed here on the same requests, for requests
  of 1 and of 10 instances.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

SHIFTS = (1.05, 1.1, 1.25, 1.5, 2.0)
PER_REQUEST = 10


def noisy(rows: list[list[Any]], n: int, seed: int, scale: float = 1.0) -> list[list[Any]]:
    rng = np.random.default_rng(seed)
    out = []
    for i in rng.integers(0, len(rows), n):
        row = list(rows[i])
        for j, v in enumerate(row):
            if isinstance(v, float):
                row[j] = v * (1 + rng.normal(0, 0.01)) * (scale if j == 0 else 1.0)
        out.append(row)
    return out


def build(root: Path) -> tuple[Any, list[list[Any]]]:
    import pandas as pd

    from edgewise.converters.sklearn_onnx import device_instances, export_sklearn
    from edgewise.edge.runtime.loader import load_models
    from edgewise.trainer.datasets import load_csv
    from edgewise.trainer.examples import rooms
    from edgewise.trainer.train import train

    pd.DataFrame(rooms(3000, seed=1)).to_csv(root / "rooms.csv", index=False)
    host = train(load_csv(root / "rooms.csv", "status"), "logistic-regression", "rooms", seed=0)
    export_sklearn(host, root / "rooms")
    return load_models([str(root / "rooms")])["rooms"], device_instances(host)


def run(model: Any, rows: list[list[Any]], monitor: Any) -> dict[str, Any]:
    """Feed rows; the instance count at the first warn and alarm, episodes, largest PSI."""
    first: dict[str, int] = {}
    episodes = {"warn": 0, "alarm": 0}
    largest = 0.0
    named = None
    for start in range(0, len(rows), PER_REQUEST):
        chunk = rows[start : start + PER_REQUEST]
        if monitor.observe(chunk, None, model.predict(chunk)) and monitor.status in episodes:
            episodes[monitor.status] += 1
        if monitor.scores:
            largest = max(largest, max(monitor.scores))
        if monitor.status in ("warn", "alarm"):
            first.setdefault("warn", monitor.observed)
        if monitor.status == "alarm" and "alarm" not in first:
            first["alarm"] = monitor.observed
            named = monitor.document()["largest"]
    return {"first": first, "episodes": episodes, "largest": largest, "named": named}


def cost(model: Any, rows: list[list[Any]], size: int) -> tuple[float, float]:
    """Microseconds per instance: inference, and the drift bookkeeping."""
    from edgewise.edge.core.config import DriftSettings
    from edgewise.edge.observe.drift import DriftMonitor

    monitor = DriftMonitor(model, DriftSettings())
    chunks = [rows[i : i + size] for i in range(0, len(rows), size)]
    answers = [model.predict(c) for c in chunks[:50]]  # warm-up
    started = time.perf_counter()
    answers = [model.predict(c) for c in chunks]
    infer = time.perf_counter() - started
    started = time.perf_counter()
    for c, a in zip(chunks, answers):
        monitor.observe(c, None, a)
    keep = time.perf_counter() - started
    return infer / len(rows) * 1e6, keep / len(rows) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    args = parser.parse_args()
    from edgewise.edge.core.config import DriftSettings
    from edgewise.edge.observe.drift import DriftMonitor

    with tempfile.TemporaryDirectory() as tmp:
        model, heldout = build(Path(tmp))
        print(f"held-out rows: {len(heldout)}; settings: {DriftSettings()}")
        print("\nfalse alarms: 10,000 in-distribution instances per seed")
        print(f"{'seed':>5} {'largest PSI':>12} {'warn episodes':>14} {'alarm episodes':>15}")
        for seed in range(args.seeds):
            r = run(model, noisy(heldout, 10_000, seed), DriftMonitor(model, DriftSettings()))
            print(f"{seed:>5} {r['largest']:>12.4f} {r['episodes']['warn']:>14} "
                  f"{r['episodes']['alarm']:>15}")  # fmt: skip
        print("\ndetection: temp c scaled, after 1,000 in-distribution instances")
        print(f"{'scale':>6} {'to warn':>8} {'to alarm':>9} {'named (alarm)':>14}")
        for scale in SHIFTS:
            warn, alarm, names = [], [], set()
            for seed in range(args.seeds):
                monitor = DriftMonitor(model, DriftSettings())
                run(model, noisy(heldout, 1000, 100 + seed), monitor)
                r = run(model, noisy(heldout, 3000, 200 + seed, scale), monitor)
                warn.append(r["first"].get("warn", np.inf) - 1000)
                alarm.append(r["first"].get("alarm", np.inf) - 1000)
                names.add(r["named"])

            def show(xs: list[float]) -> str:
                m = statistics.median(xs)
                return "-" if m == np.inf else str(int(m))

            named = ",".join(sorted(str(n) for n in names if n))
            print(f"{scale:>6} {show(warn):>8} {show(alarm):>9} {named:>14}")
        print("\ncost per instance (us): inference vs drift bookkeeping, same requests")
        rows = noisy(heldout, 5000, 999)
        for size in (1, 10):
            infer, keep = cost(model, rows, size)
            print(f"  {size:>2}-instance requests: inference {infer:8.1f}  drift {keep:8.1f} "
                  f" ({keep / infer:.2f}x)")  # fmt: skip


if __name__ == "__main__":
    main()
