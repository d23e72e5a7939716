"""Is transfer learning worth it? Fine-tuning a base vs training from scratch.

    .venv/bin/python bench/bench_transfer.py [--case vibration|digits] [--seeds 3]
                                             [--per-class 3 5 10 30]

vibration (the case built for it, trainer.transfer_case): a cnn1d base is trained on
windows from 12 generated machines (speeds, resonances, sensor placements differ); the
target is a new machine with only N labelled windows per class, tested on 200 of its
windows. digits (the case where it does not help): a cnn2d base on scikit-learn's digits
0-4, the target digits 5-9 with N images per class.

Three ways per N, with the same seeds and rows, and the base as it is (no training) as a
baseline for the vibration case:
  scratch     a new network
  fine-tune   --base: the base's layers, all trainable, with a new head
  frozen      --base --freeze-base: only the new head trains
It prints mean ± standard deviation over the seeds and the fine-tune - scratch gap, and
names the smallest N at which fine-tuning is no better than scratch on the mean.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def digits_case(epochs: int) -> tuple[str, object, float | None]:
    from edgewise.converters.keras_host import save_keras_host_model
    from edgewise.trainer.deep import train_deep
    from edgewise.trainer.tensors import load_digits_images

    digits = load_digits_images()
    base = train_deep(digits.subset(np.flatnonzero(np.isin(digits.y, [0, 1, 2, 3, 4]))),
                      "cnn2d", "base", epochs=60)  # fmt: skip
    base_file = save_keras_host_model(Path(tempfile.mkdtemp()) / "base", base) / "model.keras"
    print(f"base on digits 0-4: held-out accuracy {base.meta.metrics['accuracy']:.4f}")
    return str(base_file), digits.subset(np.flatnonzero(np.isin(digits.y, [5, 6, 7, 8, 9]))), None


def vibration_case() -> tuple[str, object, float | None]:
    from edgewise.converters.keras_host import load_keras_model, save_keras_host_model
    from edgewise.trainer.deep import train_deep
    from edgewise.trainer.transfer_case import base_data, target_data

    started = time.perf_counter()
    base = train_deep(base_data(), "cnn1d", "base", epochs=40)
    base_file = save_keras_host_model(Path(tempfile.mkdtemp()) / "base", base) / "model.keras"
    took = time.perf_counter() - started
    print(f"base on 12 machines ({base.meta.training_data.rows} windows): held-out accuracy "
          f"{base.meta.metrics['accuracy']:.4f}, trained in {took:.0f} s")  # fmt: skip
    target = target_data()
    # The base as it is, on the new machine's windows (its classes are the same).
    net = load_keras_model(base_file)
    labels = np.asarray(base.labels)
    pred = labels[net.predict(target.X, verbose=0).argmax(1)]
    as_is = float((pred == target.y).mean())
    print(f"the base as it is on the new machine ({len(target.y)} windows): {as_is:.4f}")
    return str(base_file), target, as_is


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--case", choices=["vibration", "digits"], default="vibration")
    ap.add_argument("--seeds", type=int, default=3, help="seeds per setting")
    ap.add_argument("--per-class", type=int, nargs="+", default=[3, 5, 10, 30])
    ap.add_argument("--epochs", type=int, default=150)
    args = ap.parse_args()

    from edgewise.trainer.transfer_case import WAYS, ways

    base_file, target, _ = vibration_case() if args.case == "vibration" else digits_case(60)
    print(f"{'per class':>9s} {'way':10s} {'mean ± sd':>15s}  seeds")
    stops = None
    for n in args.per_class:
        accs = ways(base_file, target, n, args.seeds, args.epochs)  # type: ignore[arg-type]
        for way in WAYS:
            a = accs[way]
            print(f"{n:9d} {way:10s} {statistics.mean(a):7.4f} ± {statistics.pstdev(a):.4f}  "
                  f"{[round(x, 3) for x in a]}")  # fmt: skip
        gap = statistics.mean(accs["fine-tune"]) - statistics.mean(accs["scratch"])
        spread = max(statistics.pstdev(accs["fine-tune"]), statistics.pstdev(accs["scratch"]))
        print(f"{n:9d} fine-tune - scratch: {gap:+.4f} (largest sd {spread:.4f})")
        if stops is None and gap <= 0:
            stops = n
    if stops is None:
        print(f"transfer helps at every size measured (up to {max(args.per_class)} per class)")
    else:
        print(f"transfer stops helping at {stops} per class (fine-tune no better than scratch)")


if __name__ == "__main__":
    main()
