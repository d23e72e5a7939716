"""Shared fixtures: a real Mosquitto on a free loopback port, really trained bundles."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pytest

from deploy.broker import LocalBroker, find_mosquitto, start_mosquitto

if TYPE_CHECKING:
    from converters.keras_host import KerasHostModel

ROOT = Path(__file__).resolve().parents[1]
CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(autouse=True)
def state_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test's agents (in process or child processes) keep their outbox in its tmp dir."""
    home = tmp_path / "state"
    monkeypatch.setenv("XDG_STATE_HOME", str(home))
    return home


def require_mosquitto() -> None:
    """Skip without a mosquitto binary; under CI=true that is a failure."""
    if find_mosquitto() is None:
        if CI:
            pytest.fail("mosquitto is not installed, and CI=true requires it")
        pytest.skip("mosquitto is not installed")


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    """One private Mosquitto for the session (tests that stop a broker start their own)."""
    require_mosquitto()
    b = start_mosquitto(tmp_path_factory.mktemp("mosquitto"))
    yield b
    b.stop()


def make_mixed_frame(n: int = 300, seed: int = 0) -> pd.DataFrame:
    """Sensor-like records with a categorical column, spaces in names, missing values."""
    rng = np.random.default_rng(seed)
    temp = rng.normal(21, 4, n).round(2)
    zone = rng.choice(["north", "south", "attic"], n)
    hum = rng.normal(45, 12, n).round(1)
    power = (temp * 3 + (zone == "attic") * 15 + rng.normal(0, 2, n)).round(3)
    status = np.where(temp + (zone == "attic") * 4 + (hum > 55) * 3 > 24, "alarm", "ok")
    df = pd.DataFrame(
        {"temp c": temp, "zone": zone, "humidity": hum, "power": power, "status": status}
    )
    df.loc[rng.random(n) < 0.08, "humidity"] = np.nan
    df.loc[rng.random(n) < 0.05, "zone"] = np.nan
    return df


@pytest.fixture(scope="session")
def mixed_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "rooms.csv"
    make_mixed_frame().to_csv(path, index=False)
    return path


@pytest.fixture(scope="session")
def iris_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random forest on iris, trained, converted and written as a bundle."""
    from converters.sklearn_onnx import export_sklearn
    from trainer.datasets import load_builtin
    from trainer.train import train

    out = tmp_path_factory.mktemp("bundles") / "iris-rf"
    export_sklearn(train(load_builtin("iris"), "random-forest", "iris-rf"), out)
    return out


@pytest.fixture(scope="session")
def rooms_bundle(tmp_path_factory: pytest.TempPathFactory, mixed_csv: Path) -> Path:
    """Gradient boosting on the mixed CSV (column layout: strings and missing values)."""
    from converters.sklearn_onnx import export_sklearn
    from trainer.datasets import load_csv
    from trainer.train import train

    data = load_csv(mixed_csv, "status")
    out = tmp_path_factory.mktemp("bundles") / "rooms"
    export_sklearn(train(data, "hist-gradient-boosting", "rooms"), out)
    return out


# -- deep models: small networks trained once per session with fixed seeds ----------------

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@pytest.fixture(scope="session")
def vibration_host() -> KerasHostModel:
    """A 1-D CNN on the built-in vibration windows (100 per class, a few epochs)."""
    from trainer.deep import train_deep
    from trainer.tensors import load_vibration

    return train_deep(load_vibration(per_class=100, seed=0), "cnn1d", "vibration", epochs=15)


@pytest.fixture(scope="session")
def digits_host() -> KerasHostModel:
    """A 2-D CNN on scikit-learn's 8x8 digits."""
    from trainer.deep import train_deep
    from trainer.tensors import load_digits_images

    return train_deep(load_digits_images(), "cnn2d", "digits", epochs=25)


@pytest.fixture(scope="session")
def vibration_int8_bundle(tmp_path_factory: pytest.TempPathFactory, vibration_host: Any) -> Path:
    """The vibration CNN as a full-integer TFLite bundle (int8 input and output)."""
    from converters.keras_export import KerasExportOptions, export_keras

    out = tmp_path_factory.mktemp("bundles") / "vibration"
    export_keras(vibration_host, out, KerasExportOptions("tflite", "int8"))
    return out


@pytest.fixture(scope="session")
def digits_bundle(tmp_path_factory: pytest.TempPathFactory, digits_host: Any) -> Path:
    """The digits CNN as a float32 TFLite bundle."""
    from converters.keras_export import export_keras

    out = tmp_path_factory.mktemp("bundles") / "digits"
    export_keras(digits_host, out)
    return out
