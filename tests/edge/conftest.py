"""Fixtures of the fleet tests (tests/edge/test_fleet.py, test_reconcile.py)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgewise.deploy.broker import LocalBroker
from edgewise.edge.runtime.signing import generate_keys
from tests.edge.test_fleet import Watcher, signed_copy


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return generate_keys(tmp_path_factory.mktemp("fleet-keys"))


@pytest.fixture
def prefix() -> str:
    """A topic prefix of its own: retained fleet state of other tests stays out of sight."""
    return f"t{uuid.uuid4().hex[:8]}"


@pytest.fixture
def versions(
    iris_bundle: Path, keys: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, Path]:
    """v1 and v2 of the iris bundle, signed; the operator commands (and roll_out) sign
    desired states with the same key ($EDGEWISE_SIGNING_KEY)."""
    monkeypatch.setenv("EDGEWISE_SIGNING_KEY", str(keys[0]))
    return {v: signed_copy(iris_bundle, tmp_path / f"v{v}", v, keys[0]) for v in ("1", "2")}


@pytest.fixture
def watcher(broker: LocalBroker, prefix: str) -> Iterator[Watcher]:
    w = Watcher(broker, prefix)
    yield w
    w.close()
