"""edgewise send for window and image models: --npz arrays and --csv --window raw samples."""

from __future__ import annotations

import csv
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgewise.deploy.broker import LocalBroker
from edgewise.edge.core.agent import Agent
from edgewise.edge.errors import EdgewiseError
from edgewise.edge.link.topics import Topics
from edgewise.edge.remote.client import send
from edgewise.edge.remote.send_data import csv_rows, csv_windows, npz_arrays
from edgewise.edge.runtime.bundle import load_bundle
from edgewise.edge.runtime.model import ServedModel
from tests.agents import new_device, serving
from tests.conftest import ROOT

INFO = {
    "name": "vib",
    "features": [{"name": c, "dtype": "float32"} for c in ("x", "y", "z")],
    "input": {"kind": "window", "shape": [4, 3]},
    "labels": ["a", "b"],
}


@pytest.fixture(scope="module")
def windows(vibration_int8_bundle: Path) -> tuple[np.ndarray, list[str], list[str]]:
    """Windows of the bundle's input shape with labels, sorted into runs of one label."""
    bundle = load_bundle(vibration_int8_bundle)
    served = ServedModel.load(bundle)
    rng = np.random.default_rng(0)
    X = rng.normal(0, 1, size=(24, *served.instance_shape)).astype(np.float32)  # type: ignore[misc]
    labels = [str(p["label"]) for p in served.predict_tensor(X)]  # what the device answers
    truth = [str(bundle.labels[i % len(bundle.labels)]) for i in range(len(X))]
    order = np.argsort(truth, kind="stable")
    return X[order], [labels[i] for i in order], [truth[i] for i in order]


@pytest.fixture(scope="module")
def agent(
    broker: LocalBroker, vibration_int8_bundle: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Agent, str]]:
    device = new_device("send")
    state = tmp_path_factory.mktemp("state")
    with serving(broker, [vibration_int8_bundle], device, state_dir=state) as a:
        yield a, device


def _expected_accuracy(labels: list[str], truth: list[str]) -> float:
    return sum(a == b for a, b in zip(labels, truth)) / len(truth)


def test_npz_arrays_are_sent_as_tensors(
    broker: LocalBroker, agent: tuple[Agent, str], windows: Any, tmp_path: Path
) -> None:
    X, labels, truth = windows
    name = next(iter(agent[0].models))
    path = tmp_path / "w.npz"
    np.savez(path, x=X, y=np.asarray(truth))
    result = send(broker.url, Topics("edgewise", agent[1]), name, npz_arrays(path), batch=5)
    assert result.answered == result.sent == len(X) and not result.errors
    assert [result.predictions[i]["label"] for i in range(len(X))] == labels
    assert result.accuracy == pytest.approx(_expected_accuracy(labels, truth))


def test_raw_samples_are_cut_into_windows(
    broker: LocalBroker, agent: tuple[Agent, str], windows: Any, tmp_path: Path
) -> None:
    X, labels, truth = windows
    model = next(iter(agent[0].models.values()))
    channels = [f.name for f in model.features]
    path = tmp_path / "samples.csv"
    with path.open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["timestamp", *channels, "label"])
        for w, label in zip(X, truth):
            for row in w:
                out.writerow([0, *(float(v) for v in row), label])
    plan = csv_windows(path, int(X.shape[1]), "label")
    result = send(broker.url, Topics("edgewise", agent[1]), model.name, plan, batch=4)
    assert result.answered == len(X)
    assert [result.predictions[i]["label"] for i in range(len(X))] == labels
    assert result.accuracy == pytest.approx(_expected_accuracy(labels, truth))


def test_cli_send_npz_exits_nonzero_on_error_answers(
    broker: LocalBroker, agent: tuple[Agent, str], windows: Any, tmp_path: Path
) -> None:
    X, *_ = windows
    name = next(iter(agent[0].models))
    bad = X.copy()
    bad[0, 0, 0] = np.nan  # refused by the agent as bad_value; the others are answered
    path = tmp_path / "bad.npz"
    np.savez(path, x=bad)
    args = ["send", "--broker", broker.url, "--device", agent[1], "--model", name]
    run = subprocess.run(
        [sys.executable, "-m", "edgewise", *args, "--npz", str(path), "--no-progress"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert run.returncode == 1, run.stdout + run.stderr
    assert f"sent {len(X)} instances, {len(X) - 1} answered" in run.stdout
    assert "errors: bad_value x1" in run.stdout


# -- the plans alone (pure logic, no broker) ------------------------------------------


def test_windows_never_span_two_labels(tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    rows = [[i, i, i, "a" if i < 10 else "b"] for i in range(19)]
    path.write_text("x,y,z,label\n" + "\n".join(",".join(map(str, r)) for r in rows) + "\n")
    plan = csv_windows(path, 4)(INFO)
    # run a: rows 0-9 -> windows at 0 and 4; run b: rows 10-18 -> windows at 10 and 14
    assert plan.count == 4 and plan.truth == ["a", "a", "b", "b"]


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda p: csv_rows(p), "send --csv FILE --window 4 for raw samples, or --npz FILE"),
        (lambda p: csv_windows(p, 8), "--window 8: model vib takes 4"),
        (lambda p: npz_arrays(p.with_suffix(".npz")), r"x has instances of shape \[5, 3\]"),
    ],
)
def test_a_mismatch_is_one_clear_line(build: Any, message: str, tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    path.write_text("x,y,z\n1,2,3\n")
    np.savez(path.with_suffix(".npz"), x=np.zeros((2, 5, 3), np.float32))
    with pytest.raises(EdgewiseError, match=message):
        build(path)(INFO)


def test_npz_with_object_arrays_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "o.npz"
    np.savez(path, x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(EdgewiseError, match=r"not an \.npz edgewise reads"):
        npz_arrays(path)(INFO)
