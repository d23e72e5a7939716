"""The bundles the tests serve: trained and converted on the host, with fixed seeds.

On a device-only install (no scikit-learn, no TensorFlow: the Python matrix and the
aarch64 runs of scripts/test-device), the fixtures read them from ``$EDGEWISE_TEST_BUNDLES``,
where ``python -m tests.bundles DIR`` (run on the host) wrote them with the same code.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

ENV = "EDGEWISE_TEST_BUNDLES"
NAMES = ("iris-rf", "rooms", "vibration", "digits")


def prebuilt(name: str) -> Path | None:
    """The prebuilt bundle ``name`` when ``$EDGEWISE_TEST_BUNDLES`` is set (else None)."""
    root = os.environ.get(ENV)
    if not root:
        return None
    path = Path(root) / name
    if not (path / "manifest.json").is_file():
        raise FileNotFoundError(f"{ENV}={root} has no bundle {name}: run python -m tests.bundles")
    return path


def make_mixed_frame(n: int = 300, seed: int = 0) -> pd.DataFrame:
    """Sensor-like records with a categorical column, spaces in names, missing values."""
    import pandas as pd

    from edgewise.trainer.examples import rooms

    return pd.DataFrame(rooms(n, seed))


def build_iris(out: Path) -> Path:
    """A random forest on iris, as an ONNX bundle."""
    from edgewise.converters.sklearn_onnx import export_sklearn
    from edgewise.trainer.datasets import load_builtin
    from edgewise.trainer.train import train

    export_sklearn(train(load_builtin("iris"), "random-forest", "iris-rf"), out)
    return out


def build_rooms(out: Path, csv_path: Path) -> Path:
    """Gradient boosting on the mixed CSV (strings and missing values), as ONNX."""
    from edgewise.converters.sklearn_onnx import export_sklearn
    from edgewise.trainer.datasets import load_csv
    from edgewise.trainer.train import train

    export_sklearn(train(load_csv(csv_path, "status"), "hist-gradient-boosting", "rooms"), out)
    return out


def train_vibration() -> Any:
    """A 1-D CNN on the built-in vibration windows (100 per class, a few epochs)."""
    from edgewise.trainer.deep import train_deep
    from edgewise.trainer.tensors import load_vibration

    return train_deep(load_vibration(per_class=100, seed=0), "cnn1d", "vibration", epochs=15)


def train_digits() -> Any:
    """A 2-D CNN on scikit-learn's 8x8 digits."""
    from edgewise.trainer.deep import train_deep
    from edgewise.trainer.tensors import load_digits_images

    return train_deep(load_digits_images(), "cnn2d", "digits", epochs=25)


def export_vibration_int8(host: Any, out: Path) -> Path:
    """The vibration CNN as a full-integer TFLite bundle (int8 input and output)."""
    from edgewise.converters.keras_export import KerasExportOptions, export_keras

    export_keras(host, out, KerasExportOptions("tflite", "int8"))
    return out


def export_digits(host: Any, out: Path) -> Path:
    """The digits CNN as a float32 TFLite bundle."""
    from edgewise.converters.keras_export import export_keras

    export_keras(host, out)
    return out


def build_all(root: Path) -> None:
    """Every bundle of ``NAMES`` under ``root`` (what a device-only test run reads), each
    with ``expected.json``: sample inputs and the answers this host's runtimes gave."""
    from sklearn.datasets import load_iris

    root.mkdir(parents=True, exist_ok=True)
    build_iris(root / "iris-rf")
    write_expected(root / "iris-rf", load_iris().data[::15].tolist())
    csv_path = root / "rooms.csv"
    frame = make_mixed_frame()
    frame.to_csv(csv_path, index=False)
    build_rooms(root / "rooms", csv_path)
    records = frame.drop(columns="status").head(12).astype(object)
    write_expected(root / "rooms", records.where(records.notna(), None).to_dict("records"))
    vibration = train_vibration()
    export_vibration_int8(vibration, root / "vibration")
    write_expected(root / "vibration", vibration.X_heldout[::25].tolist())
    digits = train_digits()
    export_digits(digits, root / "digits")
    write_expected(root / "digits", digits.X_heldout[::20].tolist())


def write_expected(bundle: Path, instances: list[Any]) -> None:
    """The host's answers to ``instances`` through the device's own serving code."""
    import json

    from edgewise.edge.runtime.bundle import load_bundle
    from edgewise.edge.runtime.model import ServedModel

    predictions = ServedModel.load(load_bundle(bundle)).predict(instances)
    doc = {"instances": instances, "predictions": predictions}
    (bundle / "expected.json").write_text(json.dumps(doc))


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    build_all(Path(sys.argv[1]))
