"""Shared fixtures: a real Mosquitto on a free loopback port, really trained bundles."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from edgewise.deploy.broker import LocalBroker, find_mosquitto, start_mosquitto
from tests.bundles import (
    build_iris,
    build_rooms,
    export_digits,
    export_vibration_int8,
    make_mixed_frame,
    prebuilt,
    train_digits,
    train_vibration,
)

if TYPE_CHECKING:
    from edgewise.converters.keras_host import KerasHostModel

ROOT = Path(__file__).resolve().parents[1]
# Tests that train, convert or compare against the host model skip on a device-only
# install (scripts/test-device); everything else runs there against prebuilt bundles.
HOST = all(importlib.util.find_spec(m) is not None for m in ("sklearn", "tensorflow", "pandas"))
needs_host = pytest.mark.skipif(not HOST, reason="needs the host libraries (edgewise[host])")
CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
# 32-bit Raspberry Pi OS (armv7l) has no ONNX Runtime: its device subset serves the TFLite
# bundles, and tests of the ONNX bundles skip there (scripts/test-device armhf).
ONNX = importlib.util.find_spec("onnxruntime") is not None


def require_onnx() -> None:
    """Skip where no ONNX Runtime exists for the platform; everywhere else it must be there."""
    if not ONNX:
        if os.uname().machine != "armv7l":
            pytest.fail("onnxruntime is missing (it is part of edgewise[edge] on this platform)")
        pytest.skip("no ONNX Runtime for armv7l: TFLite bundles only")


@pytest.fixture(scope="session", autouse=True)
def session_state_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Session- and module-scoped agents, which start before ``state_home``, keep their
    outbox in a temporary directory too: no test writes to ~/.local/state."""
    home = tmp_path_factory.mktemp("session-state")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_STATE_HOME", str(home))
        yield home


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


@pytest.fixture(scope="session")
def mixed_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "rooms.csv"
    make_mixed_frame().to_csv(path, index=False)
    return path


@pytest.fixture(scope="session")
def iris_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random forest on iris, trained, converted and written as a bundle."""
    require_onnx()
    return prebuilt("iris-rf") or build_iris(tmp_path_factory.mktemp("bundles") / "iris-rf")


@pytest.fixture(scope="session")
def rooms_bundle(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    """Gradient boosting on the mixed CSV (column layout: strings and missing values)."""
    require_onnx()
    return prebuilt("rooms") or build_rooms(
        tmp_path_factory.mktemp("bundles") / "rooms", request.getfixturevalue("mixed_csv")
    )


# -- deep models: small networks trained once per session with fixed seeds ----------------

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@pytest.fixture(scope="session")
def vibration_host() -> KerasHostModel:
    """A 1-D CNN on the built-in vibration windows (100 per class, a few epochs)."""
    return train_vibration()  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
def digits_host() -> KerasHostModel:
    """A 2-D CNN on scikit-learn's 8x8 digits."""
    return train_digits()  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
def vibration_int8_bundle(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Path:
    """The vibration CNN as a full-integer TFLite bundle (int8 input and output)."""
    return prebuilt("vibration") or export_vibration_int8(
        request.getfixturevalue("vibration_host"), tmp_path_factory.mktemp("bundles") / "vibration"
    )


@pytest.fixture(scope="session")
def digits_bundle(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    """The digits CNN as a float32 TFLite bundle."""
    return prebuilt("digits") or export_digits(
        request.getfixturevalue("digits_host"), tmp_path_factory.mktemp("bundles") / "digits"
    )
