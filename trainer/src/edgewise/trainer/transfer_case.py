"""The built-in transfer-learning case: a base from many machines, a new machine's few windows.

The base network (``cnn1d``) is trained on vibration windows from many generated machines
(``trainer.vibration.fleet``: shaft speeds, housing resonances, sensor placements and
gains all differ). The target is a machine none of them was, with only a few labelled
windows per class. ``ways`` trains the target from scratch, by fine-tuning the base and
with the base frozen (only a new head trains), on the same seeds and rows, and scores
each on the same held-out windows of the new machine; ``bench/bench_transfer.py`` prints
the table.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from edgewise.trainer.tensors import TensorData
from edgewise.trainer.vibration import (
    CHANNELS,
    SAMPLE_RATE_HZ,
    Machine,
    fleet,
    generate,
    random_machine,
)

WAYS = ("scratch", "fine-tune", "frozen")
TARGET_SEED = 10_007  # the new machine: a draw the base's fleet does not make


def base_data(machines: int = 12, per_class: int = 60, seed: int = 0) -> TensorData:
    """Windows of ``machines`` random machines: the base network's training data."""
    X, y = fleet(machines, per_class, seed)
    source = f"edgewise:vibration-fleet(machines={machines},per_class={per_class},seed={seed})"
    return TensorData(X, y, "window", list(CHANNELS), source)


def target_machine(seed: int = TARGET_SEED) -> Machine:
    """The new machine: a random one, with early faults (severity 0.3) in strong noise."""
    drawn = random_machine(np.random.default_rng(seed))
    return replace(drawn, noise=0.3, severity=0.3)


def target_data(per_class: int = 100, seed: int = TARGET_SEED) -> TensorData:
    """Windows of one new machine (``per_class`` per class; train on a few, test on many)."""
    machine = target_machine(seed)
    X, y = generate(per_class, machine=machine, seed=seed + 1)
    source = f"edgewise:vibration-machine(seed={seed},fs={SAMPLE_RATE_HZ:g}Hz)"
    return TensorData(X, y, "window", list(CHANNELS), source)


def ways(
    base_file: str,
    target: TensorData,
    per_class: int,
    seeds: int,
    epochs: int = 150,
    test_size: float = 0.5,
    only: tuple[str, ...] = WAYS,
) -> dict[str, list[float]]:
    """Held-out accuracy on the new machine of each way, one figure per seed."""
    from edgewise.trainer.deep import train_deep

    options = {
        "scratch": {},
        "fine-tune": {"base": base_file},
        "frozen": {"base": base_file, "freeze_base": True},
    }
    return {
        way: [
            float(
                train_deep(
                    target, "cnn1d", way, seed=seed, per_class=per_class, epochs=epochs,
                    patience=20, test_size=test_size, **options[way],  # type: ignore[arg-type]
                ).meta.metrics["accuracy"]
            )
            for seed in range(seeds)
        ]
        for way in only
    }  # fmt: skip
