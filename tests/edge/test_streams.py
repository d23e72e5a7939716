"""Sensor streams on a real broker with really trained models: the shipped recipes under
deploy/streams/ run as they are (only the agent's own keys are set: bundle, broker,
device), fed by publishers shaped like Zigbee2MQTT, Tasmota and ESPHome, and their
predictions compared with ``ServedModel`` on the same rows."""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgewise.deploy.broker import LocalBroker
from edgewise.edge.app import build_agent
from edgewise.edge.core.agent import Agent
from edgewise.edge.core.config import AgentConfig
from edgewise.edge.errors import EdgewiseError
from edgewise.edge.runtime.bundle import load_bundle
from edgewise.edge.runtime.model import ServedModel
from tests.conftest import ROOT
from tests.mqtt_peer import Peer

RECIPES = ROOT / "deploy" / "streams"


def recipe_agent(recipe: str, bundle: Path, broker: LocalBroker, **keys: Any) -> Agent:
    """An agent running a shipped recipe as it is; the agent's own keys set."""
    config = AgentConfig.from_toml(RECIPES / recipe).merged(
        bundles=(str(bundle),),
        broker=broker.url,
        device=keys.pop("device", f"st-{uuid.uuid4().hex[:6]}"),
        health_interval=1.0,
        **keys,
    )
    return build_agent(config)


def stream_agent(bundle: Path, broker: LocalBroker, stream: dict[str, Any], **keys: Any) -> Agent:
    """An agent serving ``bundle`` with one ``[[streams]]`` table (not started)."""
    keys.setdefault("device", f"st-{uuid.uuid4().hex[:6]}")
    return build_agent(
        AgentConfig(bundles=(str(bundle),), broker=broker.url, streams=[stream], **keys)
    )


def rows_of(zone: str, n: int, seed: int) -> list[dict[str, Any]]:
    """Complete rooms rows (no missing value) in the recipe's zone, labels alternating."""
    from edgewise.trainer.examples import rooms

    found: dict[str, list[dict[str, Any]]] = {"alarm": [], "ok": []}
    for r in rooms(400, seed):
        if r["humidity"] is not None:
            found[str(r["status"])].append({**r, "zone": zone})
    return [found[("alarm", "ok")[i % 2]][i // 2] for i in range(n)]


def expected(model: ServedModel, row: dict[str, Any]) -> dict[str, Any]:
    pred = model.predict([{k: row[k] for k in ("temp c", "zone", "humidity", "power")}])[0]
    return {"label": pred["label"], "confidence": pred["probabilities"][pred["label"]]}


def collect(peer: Peer, n: int, timeout: float = 20.0) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        try:
            out.append(peer.expect_json("/events", timeout=deadline - time.monotonic()))
        except AssertionError:
            break
    return out


@pytest.fixture
def rooms_model(rooms_bundle: Path) -> ServedModel:
    return ServedModel.load(load_bundle(rooms_bundle))


@pytest.fixture
def started(request: pytest.FixtureRequest) -> Iterator[list[Agent]]:
    agents: list[Agent] = []
    yield agents
    for a in agents:
        a.stop(timeout=5)


def start(agent: Agent, agents: list[Agent], peer: Peer, stream: str) -> None:
    """Start, and wait for ``online`` (its subscriptions are in place by then)."""
    topics = agent.topics
    peer.subscribe(topics.status, topics.stream(stream, "events"), topics.stream(stream, "state"))
    agent.start()
    agents.append(agent)
    while peer.expect("/status", timeout=10).payload != b"online":
        pass


def test_zigbee2mqtt_recipe_publishes_each_change(
    broker: LocalBroker, rooms_bundle: Path, rooms_model: ServedModel, started: list[Agent]
) -> None:
    agent = recipe_agent("zigbee2mqtt.toml", rooms_bundle, broker)
    peer = Peer(broker.port)
    start(agent, started, peer, "office")
    rows = rows_of("north", 6, seed=3)
    full: list[dict[str, Any]] = []  # every prediction the updates make, as the model gives it
    for i, r in enumerate(rows):
        plug = {"power": r["power"], "energy": 1.25, "state": "ON"}
        peer.publish("zigbee2mqtt/office-plug", json.dumps(plug))
        if i:  # the plug's update with the room's last values
            full.append(expected(rooms_model, {**rows[i - 1], "power": r["power"]}))
        climate = {"temperature": r["temp c"], "humidity": r["humidity"], "battery": 97,
                   "linkquality": 120}  # fmt: skip
        peer.publish("zigbee2mqtt/office", json.dumps(climate))
        full.append(expected(rooms_model, r))
    # publish = "change": only a prediction whose label differs from the last published
    changes = [
        (i + 1, p) for i, p in enumerate(full) if i == 0 or p["label"] != full[i - 1]["label"]
    ]
    events = collect(peer, len(changes))
    assert [e["seq"] for e in events] == [seq for seq, _ in changes]
    for event, (_, want) in zip(events, changes):
        assert event["label"] == want["label"] and event["model"] == "rooms"
        assert event["confidence"] == pytest.approx(want["confidence"], abs=1e-5)
        assert event["anomaly"] == (want["label"] != "ok")
    with pytest.raises(AssertionError):
        peer.expect("/events", timeout=0.5)  # nothing more
    health = agent.health()["streams"]["office"]
    assert health["predictions"] == len(full) and health["published"] == len(changes)
    assert health["waiting"] == 1  # the first plug update: no climate reading yet


def test_tasmota_recipe_predicts_on_its_trigger_topic(
    broker: LocalBroker, rooms_bundle: Path, rooms_model: ServedModel, started: list[Agent]
) -> None:
    agent = recipe_agent("tasmota.toml", rooms_bundle, broker)
    peer = Peer(broker.port)
    start(agent, started, peer, "workshop")
    rows = rows_of("attic", 8, seed=4)
    for r in rows:
        peer.publish("tele/workshop-plug/SENSOR", json.dumps({"ENERGY": {"Power": r["power"]}}))
        sensor = {"Time": "2026-12-05T10:00:00", "TempUnit": "C",
                  "BME280": {"Temperature": r["temp c"], "Humidity": r["humidity"],
                             "Pressure": 1013.2}}  # fmt: skip
        peer.publish("tele/workshop/SENSOR", json.dumps(sensor))
    events = collect(peer, len(rows))
    assert [e["seq"] for e in events] == list(range(1, len(rows) + 1))
    for event, r in zip(events, rows):
        want = expected(rooms_model, r)
        assert event["label"] == want["label"]
        assert event["confidence"] == pytest.approx(want["confidence"], abs=1e-5)
    state = Peer(broker.port)  # the latest prediction is retained
    try:
        state.subscribe(agent.topics.stream("workshop", "state"))
        msg = state.expect("/state")
        assert msg.retain
        # The last event may reach us before its state reaches the broker (they leave the
        # agent one after the other): the retained one is the newest, or the next is.
        seq = json.loads(msg.payload)["seq"]
        while seq < len(rows):
            seq = json.loads(state.expect("/state", timeout=5).payload)["seq"]
        assert seq == len(rows)
    finally:
        state.close()


def test_esphome_recipe_predicts_every_interval(
    broker: LocalBroker, rooms_bundle: Path, rooms_model: ServedModel, started: list[Agent]
) -> None:
    agent = recipe_agent("esphome.toml", rooms_bundle, broker)
    interval = agent.config.streams[0].interval
    assert interval is not None
    peer = Peer(broker.port)
    start(agent, started, peer, "lab")
    (row,) = rows_of("south", 1, seed=5)
    for key, sensor in (("temp c", "temperature"), ("humidity", "humidity"), ("power", "power")):
        peer.publish(f"lab-node/sensor/{sensor}/state", str(row[key]))  # plain values
    event = peer.expect_json("/events", timeout=interval + 5)
    want = expected(rooms_model, row)
    assert event["label"] == want["label"]
    assert event["confidence"] == pytest.approx(want["confidence"], abs=1e-5)


def test_bad_samples_are_counted_and_the_stream_goes_on(
    broker: LocalBroker, rooms_bundle: Path, rooms_model: ServedModel, started: list[Agent]
) -> None:
    agent = recipe_agent("zigbee2mqtt.toml", rooms_bundle, broker, max_payload=4096)
    peer = Peer(broker.port)
    start(agent, started, peer, "office")
    bad = [
        b'{"humidity": 40}',  # no temperature: missing (humidity is still taken)
        b'{"temperature": "warm", "humidity": 40}',  # not_a_number
        b'{"temperature": NaN, "humidity": 40}',  # not_finite
        b'{"temperature": 1e999, "humidity": 40}',  # not_finite (infinity)
        b"not json at all",  # plain text: no field in it (missing x2)
        b"\xff\xfe\x00",  # bad_payload
        b'{"temperature": 21, "humidity": 40, "pad": "' + b"x" * 5000 + b'"}',  # too_large
    ]
    for payload in bad:
        peer.publish("zigbee2mqtt/office", payload)
    (row,) = rows_of("north", 1, seed=6)
    peer.publish("zigbee2mqtt/office-plug", json.dumps({"power": row["power"]}))
    peer.publish("zigbee2mqtt/office", json.dumps({"temperature": row["temp c"],
                                                   "humidity": row["humidity"]}))  # fmt: skip
    events = collect(peer, 1)
    assert events and events[-1]["label"] == expected(rooms_model, row)["label"]
    assert agent.health()["streams"]["office"]["bad"] == {
        "missing": 3, "not_a_number": 1, "not_finite": 2, "bad_payload": 1, "too_large": 1,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model": "nope"}, "no model 'nope' on this device"),
        ({"features": {"temp c": {"topic": "x/y"}}}, "unbound ['zone', 'humidity', 'power']"),
        ({"features": {"t": {"topic": "edgewise/+/x"}}}, "reaches into edgewise/"),
    ],
)
def test_a_stream_that_cannot_work_is_refused_at_start(
    broker: LocalBroker, rooms_bundle: Path, change: dict[str, Any], message: str
) -> None:
    stream = {"name": "s", "model": "rooms", "features": {"temp c": {"topic": "a/b"}}} | change
    if "features" in change and "t" in change["features"]:
        stream["features"] = {**change["features"]}
        stream["features"].update({k: {"topic": "a/b"} for k in ("temp c", "zone", "humidity",
                                                                 "power")})  # fmt: skip
        del stream["features"]["t"]
        stream["features"]["temp c"] = {"topic": "edgewise/+/x"}
    config = AgentConfig(bundles=(str(rooms_bundle),), broker=broker.url, device="d",
                         streams=[stream])  # fmt: skip
    with pytest.raises(EdgewiseError) as exc:
        build_agent(config)
    assert message in str(exc.value) and "\n" not in str(exc.value)


# -- a local program: the accelerometer recipe into the vibration CNN ---------------------


@pytest.mark.slow
def test_accelerometer_program_turns_the_anomaly_sensor_on_within_one_window(
    broker: LocalBroker,
    vibration_int8_bundle: Path,
    started: list[Agent],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fault_at = 3.0  # seconds of signal: the simulator adds an imbalance from then on
    monkeypatch.setenv("ACCEL_FAULT_AFTER", str(fault_at))
    agent = recipe_agent("accelerometer.toml", vibration_int8_bundle, broker, ha_discovery=True)
    peer = Peer(broker.port)
    ha = Peer(broker.port)
    ha.subscribe(f"homeassistant/device/edgewise_{agent.config.device}/config")
    start(agent, started, peer, "pump")
    events = collect(peer, 55, timeout=30)  # 0.1 s windows: 5.5 s of signal
    assert len(events) == 55 and [e["seq"] for e in events] == list(range(1, 56))
    before = [e for e in events if e["t"] < fault_at]
    after = [e for e in events if e["t"] - 0.1 >= fault_at]  # windows wholly after the fault
    assert sum(not e["anomaly"] for e in before) >= 0.9 * len(before), before
    # The first window wholly after the fault, and every one after it, is an anomaly.
    assert after and all(e["anomaly"] and e["label"] != "normal" for e in after), after[:3]
    # Home Assistant's anomaly binary sensor reads every event: ON from that window on.
    import jinja2

    config = json.loads(ha.expect("/config").payload)["components"]["stream_pump_anomaly"]
    assert config["p"] == "binary_sensor" and config["state_topic"] == agent.topics.stream(
        "pump", "events"
    )
    template = jinja2.Environment().from_string(config["value_template"])
    assert template.render(value_json=after[0]) == "ON"
    assert template.render(value_json=before[0]) == "OFF"
    health = agent.health()["streams"]["pump"]
    assert health["source"]["state"] == "running" and health["source"]["restarts"] == 0
    assert health["gaps"] == 0 and health["bad"] == {}
    ha.close()


def test_a_program_that_exits_is_restarted_and_reported(
    broker: LocalBroker, rooms_bundle: Path, rooms_model: ServedModel, started: list[Agent],
    tmp_path: Path,
) -> None:  # fmt: skip
    (row,) = rows_of("north", 1, seed=7)
    script = tmp_path / "once.py"  # a CSV sensor that prints a header, a row and exits
    script.write_text(
        "print('temp,hum,power')\n"
        f"print('{row['temp c']},{row['humidity']},{row['power']}', flush=True)\n"
    )
    stream = {
        "name": "csv", "model": "rooms", "source": "program", "format": "csv",
        "command": ["python3", script.name], "cwd": str(tmp_path),
        "features": {"temp c": {"column": 0}, "humidity": {"column": 1},
                     "power": {"column": 2}, "zone": {"value": "north"}},
    }  # fmt: skip
    agent = stream_agent(rooms_bundle, broker, stream)
    peer = Peer(broker.port)
    start(agent, started, peer, "csv")
    first, second = collect(peer, 2, timeout=15)  # once per run: it was started again
    assert first["label"] == second["label"] == expected(rooms_model, row)["label"]
    health = agent.health()["streams"]["csv"]
    assert health["source"]["restarts"] >= 1 and health["source"]["last_exit"] == 0
    assert health["bad"]["not_a_number"] >= 2  # each run's header line


def test_a_flooding_program_drops_the_oldest_and_counts_them(
    broker: LocalBroker, rooms_bundle: Path, started: list[Agent], tmp_path: Path
) -> None:
    script = tmp_path / "flood.py"
    script.write_text(
        "import sys\n"
        'line = b\'{"t": 21.0, "h": 40.0, "p": 60.0}\\n\' * 1000\n'
        "for _ in range(200):\n    sys.stdout.buffer.write(line)\n"
        "sys.stdout.flush()\nimport time; time.sleep(60)\n"
    )
    stream = {
        "name": "flood", "model": "rooms", "source": "program", "queue": 10,
        "command": [sys.executable, str(script)],
        "features": {"temp c": {"field": "t"}, "humidity": {"field": "h"},
                     "power": {"field": "p"}, "zone": {"value": "north"}},
    }  # fmt: skip
    agent = stream_agent(rooms_bundle, broker, stream)
    peer = Peer(broker.port)
    start(agent, started, peer, "flood")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        h = agent.health()["streams"]["flood"]
        if h["samples"] == 200_000 and h["queued"] == 0:
            break
        time.sleep(0.2)
    assert h["samples"] == 200_000 and h["instances"] == 200_000
    assert h["dropped"] > 0 and h["predictions"] + h["dropped"] == 200_000, h


class EventLog:
    """A plain paho subscriber with a persistent session: what it misses while the broker
    is down waits for it there (Mosquitto with persistence)."""

    def __init__(self, port: int, topic: str) -> None:
        import paho.mqtt.client as paho
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        self.seqs: list[int] = []
        self.client = paho.Client(
            paho.CallbackAPIVersion.VERSION2, client_id=f"events-{uuid.uuid4().hex[:6]}",
            protocol=paho.MQTTv5,
        )  # fmt: skip
        self.client.on_message = lambda c, u, m: self.seqs.append(json.loads(m.payload)["seq"])
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.client.reconnect_delay_set(0.05, 0.5)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        self.client.connect("127.0.0.1", port, clean_start=False, properties=props)
        self.client.loop_start()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.mark.slow
def test_a_broker_restart_loses_no_prediction_from_a_local_source(
    tmp_path: Path, vibration_int8_bundle: Path, started: list[Agent]
) -> None:
    from edgewise.deploy.broker import start_mosquitto
    from tests.conftest import require_mosquitto

    require_mosquitto()
    broker = start_mosquitto(tmp_path / "broker", persistence=True)
    agent = recipe_agent("accelerometer.toml", vibration_int8_bundle, broker)
    log = EventLog(broker.port, agent.topics.stream("pump", "events"))
    try:
        time.sleep(0.5)  # subscribed
        agent.start()
        started.append(agent)
        deadline = time.monotonic() + 20
        while len(log.seqs) < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(log.seqs) >= 20, "no predictions before the outage"
        broker.stop()
        time.sleep(2.0)  # ~20 windows made while the broker is away: into the outbox
        broker.restart()
        time.sleep(2.0)
        agent.stop(timeout=10)  # what is left in the outbox is flushed
        made = agent.health()["streams"]["pump"]["predictions"]
        deadline = time.monotonic() + 20
        while len(set(log.seqs)) < made and time.monotonic() < deadline:
            time.sleep(0.1)
        assert made >= 50
        assert set(log.seqs) == set(range(1, made + 1)), sorted(
            set(range(1, made + 1)) - set(log.seqs)
        )
    finally:
        log.close()
        broker.stop()


# -- a serial port (a pseudo-terminal) and a camera (a video file the test writes) ---------


def test_a_serial_port_feeds_a_stream(
    broker: LocalBroker, rooms_bundle: Path, rooms_model: ServedModel, started: list[Agent]
) -> None:
    import os

    pytest.importorskip("serial")
    master, slave = os.openpty()  # the agent opens the terminal end, as it would /dev/ttyUSB0
    stream = {
        "name": "uart", "model": "rooms", "source": "serial", "port": os.ttyname(slave),
        "baud": 9600, "features": {"temp c": {"field": "T"}, "humidity": {"field": "H"},
                                   "power": {"field": "P"}, "zone": {"value": "attic"}},
    }  # fmt: skip
    agent = stream_agent(rooms_bundle, broker, stream)
    peer = Peer(broker.port)
    try:
        start(agent, started, peer, "uart")
        rows = rows_of("attic", 4, seed=8)
        deadline = time.monotonic() + 10
        while agent.health()["streams"]["uart"]["source"].get("state") != "running":
            assert time.monotonic() < deadline, agent.health()["streams"]["uart"]
            time.sleep(0.05)
        os.write(master, b"\x00garbage\r\n")  # line noise on the wire: one bad line
        for r in rows:
            os.write(master, json.dumps({"T": r["temp c"], "H": r["humidity"],
                                         "P": r["power"]}).encode() + b"\r\n")  # fmt: skip
        events = collect(peer, len(rows))
        assert [e["label"] for e in events] == [expected(rooms_model, r)["label"] for r in rows]
        assert agent.health()["streams"]["uart"]["bad"] == {"bad_line": 1}
    finally:
        agent.stop(timeout=5)
        os.close(master)
        os.close(slave)


def write_video(path: Path, frames: list[Any], fps: float) -> None:
    import cv2

    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (width, height))
    for frame in frames:
        writer.write(frame)
    writer.release()


@pytest.mark.slow
def test_the_camera_recipe_on_a_video_file(
    broker: LocalBroker, digits_bundle: Path, started: list[Agent], tmp_path: Path
) -> None:
    cv2 = pytest.importorskip("cv2")
    import numpy as np
    from sklearn.datasets import load_digits

    digits = load_digits().images[:20]  # 0..16: as the model learnt them, drawn 8x larger
    frames = [np.repeat(np.repeat(d, 8, 0), 8, 1)[..., None].repeat(3, 2).astype(np.uint8)
              for d in digits]  # fmt: skip
    video = tmp_path / "door.avi"
    write_video(video, frames, fps=10.0)
    decoded = []  # what OpenCV gives back (MJPG is lossy): the frames the stream sees
    cap = cv2.VideoCapture(str(video))
    while (got := cap.read())[0]:
        decoded.append(got[1][..., ::-1])
    cap.release()
    assert len(decoded) == 20
    base = AgentConfig.from_toml(RECIPES / "camera.toml")
    stream = base.streams[0].model_copy(update={"camera": str(video)})  # no /dev/video0 here
    config = base.merged(bundles=(str(digits_bundle),), broker=broker.url,
                         device=f"st-{uuid.uuid4().hex[:6]}", streams=(stream,))  # fmt: skip
    agent = build_agent(config)
    model = ServedModel.load(load_bundle(digits_bundle))
    peer = Peer(broker.port)
    start(agent, started, peer, "door")
    events = collect(peer, 3, timeout=15)
    assert len(events) == 3
    for event in events:
        frame = decoded[(event["frame"] - 1) % len(decoded)]
        gray = frame.mean(axis=2, keepdims=True)[::8, ::8].astype(np.float32)
        want = model.predict_tensor(gray[None])[0]
        assert event["label"] == want["label"]
        assert event["confidence"] == pytest.approx(
            want["probabilities"][str(want["label"])], abs=1e-5
        )
    health = agent.health()["streams"]["door"]
    assert health["source"]["state"] in ("running", "ended") and health["source"]["camera"] == str(
        video
    )
    kept = health["predictions"] / max(1, health["samples"])
    assert kept <= 0.5  # at most 2 of the file's 10 frames a second


def test_stream_predictions_feed_drift_and_capture(
    broker: LocalBroker, iris_bundle: Path, started: list[Agent]
) -> None:
    names = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]
    device = f"st-{uuid.uuid4().hex[:6]}"
    topic = f"lab/{device}/iris"
    stream = {
        "name": "iris",
        "model": "iris-rf",
        "features": {n: {"topic": topic, "field": f"v[{i}]"} for i, n in enumerate(names)},
    }
    agent = stream_agent(iris_bundle, broker, stream, device=device, capture={"sample_rate": 1.0})
    peer = Peer(broker.port)
    start(agent, started, peer, "iris")
    from sklearn.datasets import load_iris

    rows = load_iris().data[::5].tolist()  # 30 rows
    for row in rows:
        peer.publish(topic, json.dumps({"v": row}))
    assert len(collect(peer, len(rows))) == len(rows)
    deadline = time.monotonic() + 10  # captured rows are written on the worker's next round
    while True:
        health = agent.health()
        seen = (health["drift"]["iris-rf"]["window"], health["capture"]["captured"])
        if seen == (len(rows), len(rows)) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert seen == (len(rows), len(rows))


@pytest.mark.slow
def test_a_window_length_the_model_does_not_take_is_refused(
    broker: LocalBroker, vibration_int8_bundle: Path
) -> None:
    base = AgentConfig.from_toml(RECIPES / "accelerometer.toml")
    stream = base.streams[0].model_copy(update={"window": 128})
    config = base.merged(bundles=(str(vibration_int8_bundle),), broker=broker.url,
                         device="d", streams=(stream,))  # fmt: skip
    with pytest.raises(EdgewiseError, match="window = 128, but the model takes windows of 256"):
        build_agent(config)


def test_agent_check_validates_streams_and_writes_nothing(
    rooms_bundle: Path, tmp_path: Path, state_home: Path
) -> None:
    import subprocess

    def check(config: Path) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "edgewise", "agent", "--config", str(config), "--bundle",
               str(rooms_bundle), "--device", "chk", "--check"]  # fmt: skip
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT)

    ok = check(RECIPES / "zigbee2mqtt.toml")
    assert ok.returncode == 0, ok.stderr
    assert "stream office: mqtt -> rows -> rooms" in ok.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text(
        (RECIPES / "zigbee2mqtt.toml").read_text().replace('model = "rooms"', 'model = "roms"')
    )
    refused = check(bad)
    errors = [line for line in refused.stderr.splitlines() if " INFO " not in line]
    assert refused.returncode != 0 and len(errors) == 1 and "no model 'roms'" in errors[0]
    assert not state_home.exists() or not any(state_home.rglob("*.sqlite"))
