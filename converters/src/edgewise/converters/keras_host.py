"""The host-side copy of a trained Keras model: what ``edgewise convert`` reads.

A deep host model directory holds ``model.keras`` (Keras 3's zip of JSON config and
weights, loaded with ``safe_mode``), ``meta.json`` (input spec, labels, metrics,
provenance), ``heldout.npz`` (held-out inputs and label indices for the parity gate),
``calibration.npz`` (training inputs for int8 calibration), ``history.json`` and, for a
network on a mixed table, ``heldout.json`` (the held-out rows as clients send them, with
strings and nulls). No pickle: the .npz files are read with ``allow_pickle=False``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgewise.converters.host_meta import HostMeta
from edgewise.edge.errors import EdgewiseError

KERAS_FILE = "model.keras"
META_FILE = "meta.json"
HELDOUT_FILE = "heldout.npz"
CALIBRATION_FILE = "calibration.npz"
HISTORY_FILE = "history.json"
INSTANCES_FILE = "heldout.json"


@dataclass
class KerasHostModel:
    """A trained network with what conversion and its checks need."""

    model: Any  # keras.Model
    meta: HostMeta
    X_heldout: np.ndarray
    y_heldout: np.ndarray  # label indices into meta.labels
    X_calibration: np.ndarray
    history: dict[str, list[float]] = field(default_factory=dict)
    # Mixed tables: X_heldout is one-hot encoded; these are the raw rows a client sends.
    heldout_instances: list[list[Any]] | None = None

    @property
    def client_inputs(self) -> list[Any] | np.ndarray:
        """The held-out inputs as a client sends them (parity and self-test feed these)."""
        return self.heldout_instances if self.heldout_instances is not None else self.X_heldout

    @property
    def labels(self) -> list[Any]:
        return list(self.meta.labels)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one instance (no batch axis)."""
        return self.meta.input_shape

    def calibration_sha256(self, n: int) -> str:
        """Hash of the first ``n`` calibration rows (recorded in the manifest)."""
        return hashlib.sha256(np.ascontiguousarray(self.X_calibration[:n]).tobytes()).hexdigest()


def is_keras_host_model(path: str | Path) -> bool:
    """True for a deep host directory or a .keras file."""
    p = Path(path)
    return p.suffix == ".keras" or (p / KERAS_FILE).is_file()


def save_keras_host_model(path: str | Path, host: KerasHostModel) -> Path:
    """Write the host model directory; returns its path."""
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    host.model.save(root / KERAS_FILE)
    (root / META_FILE).write_text(host.meta.to_json())
    np.savez_compressed(root / HELDOUT_FILE, X=host.X_heldout, y=host.y_heldout)
    np.savez_compressed(root / CALIBRATION_FILE, X=host.X_calibration)
    (root / HISTORY_FILE).write_text(json.dumps(host.history) + "\n")
    if host.heldout_instances is not None:
        (root / INSTANCES_FILE).write_text(json.dumps(host.heldout_instances) + "\n")
    return root


def load_keras_model(path: str | Path) -> Any:
    """A .keras file, loaded in safe mode (no Python code from the file runs)."""
    import keras

    p = Path(path)
    if not p.is_file():
        raise EdgewiseError(f"{p}: no such Keras model file")
    try:
        return keras.models.load_model(p, safe_mode=True, compile=False)
    except (ValueError, OSError, KeyError) as exc:
        raise EdgewiseError(f"{p}: not a Keras model edgewise can load ({exc})") from None


def load_keras_host_model(path: str | Path) -> KerasHostModel:
    """Read a deep host directory (or the model.keras inside it)."""
    root = Path(path)
    if root.suffix == ".keras":
        root = root.parent
    if not (root / KERAS_FILE).is_file():
        raise EdgewiseError(f"{path}: not a deep host model (no {KERAS_FILE})")
    try:
        meta = HostMeta.from_json((root / META_FILE).read_text(), root)
        with np.load(root / HELDOUT_FILE, allow_pickle=False) as heldout:
            X_test, y_test = heldout["X"], heldout["y"]
        with np.load(root / CALIBRATION_FILE, allow_pickle=False) as cal:
            X_cal = cal["X"]
        history = json.loads((root / HISTORY_FILE).read_text())
        instances_file = root / INSTANCES_FILE
        instances = json.loads(instances_file.read_text()) if instances_file.is_file() else None
    except (OSError, ValueError, KeyError) as exc:
        raise EdgewiseError(
            f"{root}: host model files are missing or unreadable ({exc}); "
            "a bare .keras file needs the folder `edgewise train` writes"
        ) from None
    model = load_keras_model(root / KERAS_FILE)
    return KerasHostModel(model, meta, X_test, y_test, X_cal, history, instances)
