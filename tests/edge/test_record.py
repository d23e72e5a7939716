"""``edgewise record`` -> ``edgewise train`` -> the stream: data recorded from a shipped
recipe's bindings trains a model that the same recipe then serves."""

from __future__ import annotations

import csv
import io
import json
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from edgewise.deploy.broker import LocalBroker
from edgewise.edge.app import build_agent
from edgewise.edge.core.config import AgentConfig
from edgewise.edge.runtime.bundle import load_bundle
from edgewise.edge.runtime.model import ServedModel
from edgewise.edge.streams.record import record
from tests.conftest import ROOT, needs_host
from tests.mqtt_peer import Peer

RECIPE = ROOT / "deploy" / "streams" / "tasmota.toml"


def publish_row(peer: Peer, r: dict[str, Any]) -> None:
    peer.publish("tele/workshop-plug/SENSOR", json.dumps({"ENERGY": {"Power": r["power"]}}))
    sensor = {"BME280": {"Temperature": r["temp c"], "Humidity": r["humidity"]}}
    peer.publish("tele/workshop/SENSOR", json.dumps(sensor))


@needs_host
@pytest.mark.slow
def test_record_train_stream_round_trip(broker: LocalBroker, tmp_path: Path) -> None:
    from edgewise.trainer.examples import rooms

    rows = [r for r in rooms(300, seed=11) if r["humidity"] is not None][:160]
    config = AgentConfig.from_toml(RECIPE).merged(broker=broker.url, device="rec")
    out = tmp_path / "workshop.csv"
    progress = io.StringIO()
    label_topic = f"lab/{uuid.uuid4().hex[:6]}/label"
    done = threading.Thread(
        target=record,
        args=(config, "workshop", out, None, label_topic, "state", len(rows), 60.0, progress),
    )
    done.start()
    peer = Peer(broker.port)
    try:
        time.sleep(1.0)  # the recorder has subscribed
        publish_row(peer, rows[0])  # before any annotation: not recorded, counted
        for r in rows:  # the annotation says what is happening now, then the sensors report
            peer.publish(label_topic, json.dumps({"state": r["status"]}))
            publish_row(peer, r)
        done.join(30)
    finally:
        peer.close()
    assert not done.is_alive()
    with out.open(newline="") as fh:
        table = list(csv.reader(fh))
    assert table[0] == ["temp c", "humidity", "power", "zone", "label"]
    assert len(table) == 1 + len(rows)
    assert [t[4] for t in table[1:]] == [r["status"] for r in rows]
    assert {t[3] for t in table[1:]} == {"attic"}  # the recipe's constant
    assert "recorded 160 rows" in progress.getvalue()
    assert "without a label" in progress.getvalue()  # the report before any annotation

    bundle = tmp_path / "rooms"
    train = subprocess.run(
        [sys.executable, "-m", "edgewise", "train", "--csv", str(out), "--target", "label",
         "--model", "random-forest", "--out", str(bundle), "--name", "rooms"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert train.returncode == 0, train.stderr[-2000:]
    model = ServedModel.load(load_bundle(bundle))
    agent = build_agent(config.merged(bundles=(str(bundle),), device=f"rt-{uuid.uuid4().hex[:6]}"))
    peer = Peer(broker.port)
    try:
        peer.subscribe(agent.topics.status, agent.topics.stream("workshop", "events"))
        agent.start()
        while peer.expect("/status", timeout=10).payload != b"online":
            pass
        fresh = [r for r in rooms(60, seed=12) if r["humidity"] is not None][:10]
        for r in fresh:
            publish_row(peer, r)
        for r in fresh:
            event = peer.expect_json("/events")
            want = model.predict([{"temp c": r["temp c"], "humidity": r["humidity"],
                                   "power": r["power"], "zone": "attic"}])[0]  # fmt: skip
            assert event["label"] == want["label"]
    finally:
        agent.stop(timeout=5)
        peer.close()


def test_ctrl_c_leaves_a_valid_csv(tmp_path: Path) -> None:
    script = tmp_path / "sensor.py"
    script.write_text(
        "import time\n"
        "while True:\n"
        '    print(\'{"t": 21.5, "h": 40.1, "p": 63.0, "state": "ON"}\', flush=True)\n'
        "    time.sleep(0.005)\n"
    )
    config = tmp_path / "edge.toml"
    config.write_text(
        '[[streams]]\nname = "bench"\nmodel = "rooms"\nsource = "program"\n'
        f'command = ["{sys.executable}", "sensor.py"]\n'
        "[streams.features]\n"
        '"temp c" = { field = "t" }\nhumidity = { field = "h" }\npower = { field = "p" }\n'
        'relay = { field = "state" }\nzone = { value = "north" }\n'
    )
    out = tmp_path / "idle.csv"
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgewise", "record", "--config", str(config), "--stream",
         "bench", "--out", str(out), "--label", "idle"],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    time.sleep(3.0)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    with out.open(newline="") as fh:
        table = list(csv.reader(fh))
    assert table[0] == ["temp c", "humidity", "power", "relay", "zone", "label"]
    assert len(table) > 20 and all(
        row == ["21.5", "40.1", "63.0", "ON", "north", "idle"] for row in table[1:]
    )
    assert "Traceback" not in err and f"recorded {len(table) - 1} rows" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--stream", "nope", "--out", "x.csv", "--label", "a"], "no stream 'nope'"),
        (["--stream", "bench", "--out", "x.txt", "--label", "a"], "into a .csv file"),
        (["--stream", "bench", "--out", "x.csv", "--label", "a/b"], "no /"),
        (["--stream", "bench", "--out", "x.csv", "--label-topic", "a/#/b"], "'#' must be"),
    ],
)
def test_record_refuses_bad_options_in_one_line(
    tmp_path: Path, args: list[str], message: str
) -> None:
    config = tmp_path / "edge.toml"
    config.write_text(
        '[[streams]]\nname = "bench"\nmodel = "rooms"\n'
        '[streams.features]\n"temp c" = { topic = "a/b" }\n'
    )
    run = subprocess.run(
        [sys.executable, "-m", "edgewise", "record", "--config", str(config), *args],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode != 0 and message in run.stderr, run.stderr
    assert len(run.stderr.strip().splitlines()) == 1, run.stderr


def test_record_a_window_stream_as_samples(tmp_path: Path) -> None:
    """The accelerometer recipe's program, recorded as the CSV of samples that
    ``edgewise train --csv FILE --target label --window 256`` cuts into windows."""
    config = AgentConfig.from_toml(ROOT / "deploy" / "streams" / "accelerometer.toml")
    out = tmp_path / "pump.csv"
    counts = record(config, "pump", out, "normal", None, "", 600, 30.0, io.StringIO())
    assert counts["recorded"] >= 600
    with out.open(newline="") as fh:
        table = list(csv.reader(fh))
    assert table[0] == ["x", "y", "z", "label"]
    assert len(table) - 1 == counts["recorded"]
    assert all(len(r) == 4 and r[3] == "normal" for r in table[1:])
    assert all(abs(float(v)) < 5 for r in table[1:] for v in r[:3])


@pytest.mark.slow
def test_record_a_camera_into_an_image_folder(tmp_path: Path) -> None:
    cv2 = pytest.importorskip("cv2")
    import numpy as np

    video = tmp_path / "door.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (32, 24))
    for i in range(20):
        writer.write(np.full((24, 32, 3), i * 10, dtype=np.uint8))
    writer.release()
    base = AgentConfig.from_toml(ROOT / "deploy" / "streams" / "camera.toml")
    stream = base.streams[0].model_copy(update={"camera": str(video)})
    config = base.merged(streams=(stream,))
    counts = record(config, "door", tmp_path / "images", "closed", None, "", 3, 20.0, io.StringIO())
    images = sorted((tmp_path / "images" / "closed").glob("*.png"))
    assert counts["recorded"] == len(images) >= 3
    assert cv2.imread(str(images[0])).shape == (24, 32, 3)
