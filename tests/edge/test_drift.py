"""Drift and field data: a really trained bundle's reference, a real agent on a real broker.

The model is logistic regression on 3,000 generated room records (numbers, a category,
missing values). The in-distribution stream is its held-out rows with 1 % noise; the
shift scales one feature.
"""

from __future__ import annotations

import csv
import json
import queue
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgewise.edge.observe.field_data import FieldData
from edgewise.edge.runtime.drift_profile import Binner, fit_distribution, psi
from edgewise.edge.runtime.manifest import Manifest
from tests.agents import new_device, serving
from tests.mqtt_peer import Peer

pytest.importorskip("sklearn")  # the bundle is trained here

MODEL = "rooms-drift"
SHIFTED = "temp c"


@pytest.fixture(scope="module")
def rooms_drift(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[list[Any]], Path]:
    """The bundle, its held-out rows as clients send them, and the training CSV."""
    import pandas as pd

    from edgewise.converters.sklearn_onnx import device_instances, export_sklearn
    from edgewise.trainer.datasets import load_csv
    from edgewise.trainer.examples import rooms
    from edgewise.trainer.train import train

    root = tmp_path_factory.mktemp("drift")
    data = root / "rooms.csv"
    pd.DataFrame(rooms(3000, seed=1)).to_csv(data, index=False)
    host = train(load_csv(data, "status"), "logistic-regression", MODEL, seed=0)
    export_sklearn(host, root / MODEL)
    return root / MODEL, device_instances(host), data


def _noisy(rows: list[list[Any]], n: int, seed: int, scale: float = 1.0) -> list[list[Any]]:
    """``n`` held-out rows drawn with replacement, numbers times (1 + 1 % noise); the
    first feature (temp c) also times ``scale``."""
    rng = np.random.default_rng(seed)
    out = []
    for i in rng.integers(0, len(rows), n):
        row = list(rows[i])
        for j, v in enumerate(row):
            if isinstance(v, float):
                row[j] = round(v * (1 + rng.normal(0, 0.01)) * (scale if j == 0 else 1.0), 4)
        out.append(row)
    return out


class Stream:
    """Sends requests to the agent and keeps every answer count and drift document."""

    def __init__(self, broker_port: int, device: str) -> None:
        self.device = device
        self.peer = Peer(broker_port)
        self.peer.subscribe(f"edgewise/{device}/{MODEL}/out", f"edgewise/{device}/{MODEL}/drift")
        self.answered = 0
        self.drift: list[dict[str, Any]] = []

    def send(self, rows: list[list[Any]], per_request: int) -> None:
        for i in range(0, len(rows), per_request):
            doc = {"id": i, "instances": rows[i : i + per_request]}
            self.peer.request(f"edgewise/{self.device}/{MODEL}/in", doc)

    def drain(self, until: Any, timeout: float = 30.0) -> None:
        """Read messages until ``until(self)`` holds."""
        deadline = time.monotonic() + timeout
        while not until(self):
            assert time.monotonic() < deadline, f"timed out: {self.answered} answers"
            try:
                msg = self.peer.inbox.get(timeout=0.5)
            except queue.Empty:
                continue
            if msg.topic.endswith("/out"):
                self.answered += len(json.loads(msg.payload)["predictions"])
            elif msg.payload:
                self.drift.append(json.loads(msg.payload))

    def close(self) -> None:
        self.peer.close()


def test_the_bundle_carries_its_training_reference(rooms_drift: Any) -> None:
    bundle, _, _ = rooms_drift
    manifest = Manifest.from_json((bundle / "manifest.json").read_text())
    ref = manifest.reference
    assert ref is not None and ref.profile == "tabular" and ref.rows == 2400
    by_name = {d.name: d for d in ref.inputs}
    assert by_name["zone"].kind == "categorical"
    assert set(by_name["zone"].categories) == {"north", "south", "attic", ""}  # "" = missing
    assert by_name["humidity"].proportions[-1] == pytest.approx(0.08, abs=0.02)  # missing bin
    assert len(by_name[SHIFTED].edges) == 9  # ten quantile bins
    assert ref.predictions is not None and ref.predictions.categories == ("alarm", "ok")
    assert ref.confidence is not None and 0.5 < ref.confidence <= 1


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_in_distribution_stream_raises_no_alarm(broker: Any, rooms_drift: Any, seed: int) -> None:
    bundle, heldout, _ = rooms_drift
    device = new_device("drift")
    with serving(broker, [bundle], device, health_interval=1.0):
        stream = Stream(broker.port, device)
        try:
            stream.send(_noisy(heldout, 10_000, seed), per_request=50)
            stream.drain(
                lambda s: s.answered == 10_000 and s.drift and s.drift[-1]["observed"] == 10_000
            )
        finally:
            stream.close()
    statuses = {d["status"] for d in stream.drift}
    assert "alarm" not in statuses, stream.drift[-1]
    last = stream.drift[-1]
    assert last["window"] == 1000 and set(last["features"]) == {
        "temp c",
        "zone",
        "humidity",
        "power",
    }
    assert max(last["features"].values()) < 0.25
    assert last["reference_confidence"] is not None and last["confidence"] is not None


def test_a_shifted_feature_raises_alarm_and_is_named(broker: Any, rooms_drift: Any) -> None:
    bundle, heldout, _ = rooms_drift
    device = new_device("drift")
    with serving(broker, [bundle], device, health_interval=60.0) as agent:
        stream = Stream(broker.port, device)
        try:
            stream.send(_noisy(heldout, 1000, seed=5), per_request=50)
            stream.drain(lambda s: s.answered == 1000)
            assert agent.features.get(FieldData).drift.status(MODEL) == "ok"
            stream.send(_noisy(heldout, 1000, seed=6, scale=1.5), per_request=10)
            stream.drain(lambda s: any(d["status"] == "alarm" for d in s.drift))
        finally:
            stream.close()
        health = agent.health()
    alarm = next(d for d in stream.drift if d["status"] == "alarm")
    assert alarm["observed"] - 1000 <= 500, alarm
    assert alarm["largest"] == SHIFTED
    assert alarm["features"][SHIFTED] == max(alarm["features"].values())
    assert health["drift"][MODEL]["status"] == "alarm"


CAPTURE_ALL = {
    "sample_rate": 1.0,
    "low_confidence": None,
    "anomalies": False,
    "during_drift": False,
}


def _cell(value: Any) -> str:
    return "" if value is None else str(value)


def test_capture_pull_gives_the_rows_in_order_clears_and_trains(
    broker: Any, rooms_drift: Any, tmp_path: Path
) -> None:
    from edgewise.cli import main
    from edgewise.edge.link.endpoint import Endpoint
    from edgewise.edge.remote.capture_client import pull

    bundle, heldout, _ = rooms_drift
    rows = _noisy(heldout, 3000, seed=7)
    device = new_device("capture")
    with serving(broker, [bundle], device, state_dir=tmp_path, capture=CAPTURE_ALL) as agent:
        stream = Stream(broker.port, device)
        try:
            stream.send(rows, per_request=50)
            stream.drain(
                lambda s: (
                    s.answered == len(rows)
                    and agent.features.get(FieldData).capture.captured == len(rows)
                )
            )
        finally:
            stream.close()
        out = tmp_path / "samples.csv"
        result = pull(
            Endpoint.parse(broker.url), "edgewise", device, MODEL, out, clear=True, timeout=5
        )
        assert agent.features.get(FieldData).respond(MODEL, b'{"op": "stats"}')["stored"] == 0
    assert (result.rows, result.first, result.last, result.cleared) == (3000, 1, 3000, 3000)
    assert not out.with_name("samples.csv.partial").exists()
    with out.open(newline="") as fh:
        table = list(csv.reader(fh))
    assert table[0] == ["temp c", "zone", "humidity", "power", "predicted", "confidence",
                        "captured_at", "reason", "label"]  # fmt: skip
    assert [r[:4] for r in table[1:]] == [[_cell(v) for v in row] for row in rows]
    assert {r[7] for r in table[1:]} == {"sample"} and {r[4] for r in table[1:]} <= {"alarm", "ok"}
    # A person labels some rows (here: the rule the generator used); the file trains as is.
    for r in table[1:1001]:
        temp, zone, hum = float(r[0]), r[1], float(r[2] or 0)
        r[8] = "alarm" if temp + (zone == "attic") * 4 + (hum > 55) * 3 > 24 else "ok"
    with out.open("w", newline="") as fh:
        csv.writer(fh).writerows(table)
    retrained = tmp_path / "retrained"
    assert main(["train", "--csv", str(out), "--target", "label", "--model",
                 "logistic-regression", "--out", str(retrained)]) == 0  # fmt: skip
    manifest = Manifest.from_json((retrained / "manifest.json").read_text())
    assert [f.name for f in manifest.input.features] == ["temp c", "zone", "humidity", "power"]
    assert manifest.training_data.rows == 1000


def test_capture_bound_drops_the_oldest_first(
    broker: Any, rooms_drift: Any, tmp_path: Path
) -> None:
    from edgewise.edge.link.endpoint import Endpoint
    from edgewise.edge.remote.capture_client import pull

    bundle, heldout, _ = rooms_drift
    rows = _noisy(heldout, 400, seed=8)
    device = new_device("capture")
    bound = {**CAPTURE_ALL, "max_mb": 0.02}  # about 20 KiB of JSON: some 150 rows
    with serving(broker, [bundle], device, state_dir=tmp_path, capture=bound) as agent:
        stream = Stream(broker.port, device)
        try:
            stream.send(rows, per_request=10)
            stream.drain(
                lambda s: (
                    s.answered == len(rows)
                    and agent.features.get(FieldData).capture.captured == len(rows)
                )
            )
        finally:
            stream.close()
        result = pull(Endpoint.parse(broker.url), "edgewise", device, MODEL, tmp_path / "s.csv")
        assert agent.features.get(FieldData).capture.store.bytes <= 0.02 * (1 << 20)
    kept = result.rows
    assert 0 < kept < len(rows) and result.dropped == len(rows) - kept
    assert (result.first, result.last) == (len(rows) - kept + 1, len(rows))
    with (tmp_path / "s.csv").open(newline="") as fh:
        table = list(csv.reader(fh))[1:]
    assert [r[:4] for r in table] == [[_cell(v) for v in row] for row in rows[-kept:]]


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        (b"not json", "JSON object"),
        (b"[1]", "JSON object"),
        (b'{"op": "drop"}', "op must be"),
        (b'{"op": "pull", "after": -1}', "after must be"),
        (b'{"op": "pull", "limit": 1e9}', "limit must be"),
        (b'{"op": "clear"}', "through must be"),
        (b'{"op": "pull", "path": "/etc"}', "unknown key"),
        (b"{" + b" " * 2000 + b"}", "at most 1024 bytes"),
        (b"[" * 600 + b"]" * 400, "levels deep"),  # before the parser recursed: no answer
    ],
)
def test_bad_capture_requests_are_answered_and_serving_goes_on(
    broker: Any, iris_bundle: Path, tmp_path: Path, payload: bytes, error: str
) -> None:
    device = new_device("capture")
    with serving(broker, [iris_bundle], device, state_dir=tmp_path, capture={}):
        peer = Peer(broker.port)
        reply = f"edgewise/{device}/iris-rf/capture/reply/t"
        peer.subscribe(reply, f"edgewise/{device}/iris-rf/out")
        try:
            peer.publish(f"edgewise/{device}/iris-rf/capture", payload, response_topic=reply)
            assert error in peer.expect_json("/reply/t")["error"]
            peer.request(
                f"edgewise/{device}/iris-rf/in", {"id": 1, "instances": [[5.1, 3.5, 1.4, 0.2]]}
            )
            assert peer.expect_json("/out")["id"] == 1
        finally:
            peer.close()


def test_drift_window_counts_equal_a_recount(rooms_drift: Any) -> None:
    """The monitor's running counts equal counting its last ``window`` instances afresh,
    after uneven requests that wrap the ring many times."""
    from edgewise.edge.core.config import DriftSettings
    from edgewise.edge.observe.drift import DriftMonitor
    from edgewise.edge.runtime.drift_profile import prediction_values
    from edgewise.edge.runtime.loader import load_models

    bundle, heldout, _ = rooms_drift
    model = load_models([str(bundle)])[MODEL]
    monitor = DriftMonitor(model, DriftSettings(window=500, min_instances=100))
    rows = _noisy(heldout, 3000, seed=3, scale=1.0)
    answers: list[dict[str, Any]] = []
    for start in range(0, len(rows), 37):
        chunk = rows[start : start + 37]
        predictions = model.predict(chunk)
        monitor.observe(chunk, None, predictions)
        answers += predictions
    columns = monitor.profiler.columns(rows[-500:], None)
    columns.append(prediction_values("classification", answers[-500:]))
    recount = np.bincount(monitor.binner.bins(columns).ravel(), minlength=monitor.binner.total)
    assert np.array_equal(monitor._counts, recount)
    assert monitor.document()["window"] == 500 and monitor.observed == 3000


@pytest.mark.parametrize(("shift", "low", "high"), [(0.0, 0.0, 0.05), (1.0, 0.5, 10.0)])
def test_psi_of_a_sample_against_its_reference(shift: float, low: float, high: float) -> None:
    rng = np.random.default_rng(1)
    dist = fit_distribution("x", rng.normal(0, 1, 5000))
    binner = Binner([dist])
    counts = np.bincount(binner.bins([rng.normal(shift, 1, 5000)]).ravel(), minlength=binner.total)
    assert low <= psi(counts, np.asarray(dist.proportions)) <= high


@pytest.mark.slow
def test_windows_at_another_shaft_speed_raise_alarm(vibration_int8_bundle: Path) -> None:
    """The 1-D CNN's windows: the generator's own speeds stay ok; a faster machine (60-90 Hz
    shaft instead of 20-50 Hz) raises alarm within 500 windows, on a dominant frequency."""
    from edgewise.edge.core.config import DriftSettings
    from edgewise.edge.observe.drift import DriftMonitor
    from edgewise.edge.runtime.loader import load_models
    from edgewise.trainer.vibration import generate

    model = next(iter(load_models([str(vibration_int8_bundle)]).values()))
    reference = model.bundle.manifest.reference
    assert reference is not None and reference.profile == "window"
    monitor = DriftMonitor(model, DriftSettings())

    def feed(windows: np.ndarray) -> int | None:
        """Windows in requests of 10; the instance count at the first alarm."""
        for start in range(0, len(windows), 10):
            batch = windows[start : start + 10]
            monitor.observe(None, batch, model.predict_tensor(batch))
            if monitor.status == "alarm":
                return monitor.observed
        return None

    usual, _ = generate(per_class=250, seed=11)
    assert feed(usual) is None and monitor.status in ("ok", "warn")
    faster, _ = generate(per_class=125, seed=12, shaft_hz=(60.0, 90.0))
    at = feed(faster)
    assert at is not None and at - len(usual) <= 500
    doc = monitor.document()
    assert "dominant" in doc["largest"], doc


def test_an_interrupted_pull_resumes_after_its_last_row(
    broker: Any, iris_bundle: Path, tmp_path: Path
) -> None:
    from edgewise.edge.link.endpoint import Endpoint
    from edgewise.edge.remote.capture_client import pull

    device = new_device("capture")
    rows = [[5.0 + i / 100, 3.4, 1.5, 0.2] for i in range(60)]
    with serving(broker, [iris_bundle], device, state_dir=tmp_path, capture=CAPTURE_ALL) as agent:
        peer = Peer(broker.port)
        peer.subscribe(f"edgewise/{device}/iris-rf/out")
        try:
            for i, row in enumerate(rows):
                peer.request(f"edgewise/{device}/iris-rf/in", {"id": i, "instances": [row]})
            for _ in rows:
                peer.expect_json("/out")
        finally:
            peer.close()
        deadline = time.monotonic() + 10
        while agent.features.get(FieldData).capture.captured < len(rows):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        # An earlier pull stopped after 25 rows: they are in the partial file.
        first = agent.features.get(FieldData).respond("iris-rf", b'{"op": "pull", "limit": 25}')[
            "rows"
        ]
        out = tmp_path / "iris.csv"
        partial = out.with_name("iris.csv.partial")
        header = json.dumps({"device": device, "model": "iris-rf"})
        partial.write_text("\n".join([header, *(json.dumps(r) for r in first)]) + "\n")
        result = pull(Endpoint.parse(broker.url), "edgewise", device, "iris-rf", out, timeout=5)
    assert (result.rows, result.first, result.last) == (60, 1, 60)
    with out.open(newline="") as fh:
        table = list(csv.reader(fh))[1:]
    assert [[float(v) for v in r[:4]] for r in table] == rows


@pytest.fixture(scope="module")
def iris_drift_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from edgewise.converters.sklearn_onnx import export_sklearn
    from edgewise.trainer.datasets import load_builtin
    from edgewise.trainer.train import train

    host = train(load_builtin("iris"), "random-forest", "iris-drift", seed=0)
    return export_sklearn(host, tmp_path_factory.mktemp("iris") / "iris-drift").path


@pytest.mark.parametrize("seed", range(10))
def test_fixed_resolution_rows_land_in_their_training_bins(
    iris_drift_bundle: Path, seed: int
) -> None:
    """The iris rows themselves (0.1 resolution, many values on a bin edge), shuffled, as
    a client sends them in JSON: no alarm. Edges that were float32 roundings compared with
    float64 JSON values once put 2.2 below an edge of 2.2000000477 (PSI 0.57, alarm)."""
    from sklearn.datasets import load_iris

    from edgewise.edge.core.config import DriftSettings
    from edgewise.edge.observe.drift import DriftMonitor
    from edgewise.edge.runtime.loader import load_models

    model = load_models([str(iris_drift_bundle)])["iris-drift"]
    monitor = DriftMonitor(model, DriftSettings())
    rows = json.loads(json.dumps(load_iris().data.round(1).tolist()))  # as a client sends them
    rng = np.random.default_rng(seed)
    for _ in range(8):
        chunk = [rows[i] for i in rng.permutation(len(rows))]
        monitor.observe(chunk, None, model.predict(chunk))
    doc = monitor.document()
    assert doc["status"] == "ok", doc
    assert max(doc["features"].values()) < 0.1, doc["features"]


def test_the_final_health_reports_the_capture_store(
    broker: Any, iris_bundle: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """SIGTERM's path (Agent.stop): the capture database stays open until the final health
    document is published, and that document counts the rows captured last."""
    device = new_device("capture")
    peer = Peer(broker.port)
    peer.subscribe(
        f"edgewise/{device}/health", f"edgewise/{device}/iris-rf/out", f"edgewise/{device}/status"
    )
    try:
        with serving(
            broker, [iris_bundle], device, state_dir=tmp_path, capture={"sample_rate": 1.0}
        ):
            # `online` comes after the agent's subscriptions: the request is not lost before.
            assert peer.expect("/status", timeout=10).payload == b"online"
            rows = [[5.1, 3.5, 1.4, 0.2]] * 3
            peer.request(f"edgewise/{device}/iris-rf/in", {"id": 1, "instances": rows})
            assert peer.expect_json("/out")["id"] == 1
        final = None
        while True:  # the last health document published, the one sent while stopping
            try:
                final = json.loads(peer.expect("/health", timeout=2.0).payload)
            except AssertionError:
                break
    finally:
        peer.close()
    assert "could not build the health report" not in caplog.text
    assert final is not None and final["capture"]["captured"] == 3, final
