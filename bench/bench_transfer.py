"""Is transfer learning worth it here? Fine-tuning a base vs training from scratch.

    .venv/bin/python bench/bench_transfer.py [--seeds 3] [--per-class 3 10]

A cnn2d base is trained on scikit-learn's digits 0-4 (all their training rows). Then, for
digits 5-9 with only N training images per class, three ways are trained with the same
seeds and evaluated on the same held-out images of 5-9:
  scratch     a new cnn2d
  fine-tune   --base: the base's layers, all trainable, with a new head
  frozen      --base --freeze-base: only the new head trains
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3, help="seeds per setting")
    ap.add_argument("--per-class", type=int, nargs="+", default=[3, 10])
    ap.add_argument("--epochs", type=int, default=150)
    args = ap.parse_args()

    from edgewise.converters.keras_host import save_keras_host_model
    from edgewise.trainer.deep import train_deep
    from edgewise.trainer.tensors import TensorData, load_digits_images

    digits = load_digits_images()

    def classes(wanted: list[int]) -> TensorData:
        return digits.subset(np.flatnonzero(np.isin(digits.y, wanted)))

    base = train_deep(classes([0, 1, 2, 3, 4]), "cnn2d", "base", epochs=60)
    base_file = save_keras_host_model(Path(tempfile.mkdtemp()) / "base", base) / "model.keras"
    print(f"base on digits 0-4: held-out accuracy {base.meta.metrics['accuracy']:.4f}")
    new = classes([5, 6, 7, 8, 9])
    ways = {
        "scratch": {},
        "fine-tune": {"base": str(base_file)},
        "frozen": {"base": str(base_file), "freeze_base": True},
    }
    print(f"{'per class':>9s} {'way':10s} {'mean acc':>9s} {'min':>7s} {'max':>7s}  seeds")
    for n in args.per_class:
        for way, kwargs in ways.items():
            runs = [
                train_deep(new, "cnn2d", way, seed=s, per_class=n, epochs=args.epochs,
                           patience=20, **kwargs)
                for s in range(args.seeds)
            ]  # fmt: skip
            accs = [r.meta.metrics["accuracy"] for r in runs]
            print(f"{n:9d} {way:10s} {statistics.mean(accs):9.4f} {min(accs):7.4f} "
                  f"{max(accs):7.4f}  {[round(a, 3) for a in accs]}")  # fmt: skip


if __name__ == "__main__":
    main()
