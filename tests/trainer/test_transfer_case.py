"""The built-in transfer case: a base from many machines pays off on a new machine's few
windows (bench/bench_transfer.py measures it in full; this is a small seeded copy)."""

from __future__ import annotations

import statistics
from pathlib import Path

import numpy as np
import pytest

from edgewise.converters.keras_host import save_keras_host_model
from edgewise.trainer.deep import train_deep
from edgewise.trainer.transfer_case import base_data, target_data, ways
from edgewise.trainer.vibration import Machine, fleet, generate

pytestmark = pytest.mark.slow  # trains Keras networks


def test_machines_differ_and_the_default_is_the_built_in_set() -> None:
    X, y = generate(per_class=3, seed=0)
    X2, y2 = generate(per_class=3, seed=0, machine=Machine())
    assert np.array_equal(X, X2) and np.array_equal(y, y2)
    F, labels = fleet(3, 4, seed=1)
    assert F.shape == (48, 256, 3) and sorted(set(labels)) == sorted(set(y))
    assert not np.array_equal(fleet(3, 4, seed=2)[0], F)


def test_fine_tuning_beats_scratch_with_three_windows_per_class(tmp_path: Path) -> None:
    base = train_deep(base_data(machines=6, per_class=25), "cnn1d", "base", epochs=15)
    assert base.meta.metrics["accuracy"] > 0.6  # noisy, early faults: 0.75 measured
    base_file = save_keras_host_model(tmp_path / "base", base) / "model.keras"
    accs = ways(
        str(base_file), target_data(per_class=40), 3, seeds=2, epochs=60,
        only=("scratch", "fine-tune"),
    )  # fmt: skip
    scratch, fine = statistics.mean(accs["scratch"]), statistics.mean(accs["fine-tune"])
    print(f"3 per class: fine-tune {accs['fine-tune']} vs scratch {accs['scratch']}")
    # The direction bench/bench_transfer.py measured (README: transfer learning).
    assert fine > scratch
