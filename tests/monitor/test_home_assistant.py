"""Discovery against a real Home Assistant (tests/monitor/home_assistant.py): it boots
with its MQTT integration on a Mosquitto of the test's own, an agent with a classifier and
an anomaly model announces itself, and Home Assistant's own APIs say what it made of it:
the entities and their states, the device, the update entities, and every anomaly
reaching the binary sensor. The entity list is saved to
``.artifacts/home-assistant/entities.json``."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edgewise.deploy.broker import start_mosquitto
from tests.agents import serving
from tests.conftest import ROOT
from tests.edge.test_ha_discovery import FAULT, ROW, anomaly_bundle  # noqa: F401 (fixture)
from tests.monitor.home_assistant import HomeAssistant, available, home_assistant
from tests.mqtt_peer import Peer

pytestmark = pytest.mark.slow
DEVICE = "kitchen"
CONSOLE = "http://console.example:8080"


def _until(what: str, check: Callable[[], Any], timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if got := check():
            return got
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def _entities(ha: HomeAssistant) -> dict[str, str]:
    """unique id -> entity id of the MQTT entities Home Assistant registered."""
    (reply,) = ha.ws({"type": "config/entity_registry/list"})
    return {e["unique_id"]: e["entity_id"] for e in reply["result"] if e["platform"] == "mqtt"}


def test_home_assistant_discovers_the_agent(
    tmp_path: Path,
    iris_bundle: Path,
    anomaly_bundle: Path,  # noqa: F811 (the fixture imported above)
) -> None:
    if not available():
        pytest.fail("no Home Assistant: scripts/setup-home-assistant builds .cache/ha-venv")
    broker = start_mosquitto(tmp_path / "broker")
    try:
        with home_assistant(tmp_path / "ha") as ha:
            ha.add_mqtt(broker.port)
            settings = {"prefix": "edgewise", "ha_discovery": True, "health_interval": 1.0,
                        "console_url": CONSOLE}  # fmt: skip
            with serving(broker, [iris_bundle, anomaly_bundle], DEVICE, **settings):
                _check_entities(ha, broker.port, tmp_path)
            # The agent stopped: its entities go unavailable, connectivity off.
            ids = _entities(ha)
            _until("offline", lambda: ha.states()[ids["edgewise_kitchen_connectivity"]]["state"]
                   == "off")  # fmt: skip
            states = ha.states()
            assert states[ids["edgewise_kitchen_iris-rf_requests"]]["state"] == "unavailable"
    finally:
        broker.stop()


def _check_entities(ha: HomeAssistant, port: int, tmp_path: Path) -> None:
    want = 5 + 8 + 8  # the device; iris-rf (+confidence, drift); iris-odd (+anomaly, drift)
    ids = _until("the entities", lambda: e if len(e := _entities(ha)) == want else None, 60)
    peer = Peer(port)
    try:
        peer.request(f"edgewise/{DEVICE}/iris-rf/in", {"id": "r1", "instances": [ROW]})
        anomaly = ids["edgewise_kitchen_iris-odd_anomaly"]
        topic = f"edgewise/{DEVICE}/iris-odd/in"

        def listening() -> bool:  # events are not retained: wait for HA's subscription
            peer.request(topic, {"id": "probe", "instances": [ROW]})
            return ha.states()[anomaly]["state"] == "off"

        _until("the anomaly sensor", listening)
        with ha.watch(anomaly) as seen:
            for i, rows in enumerate(([ROW, FAULT], [ROW])):  # 50 ms apart
                peer.request(topic, {"id": i, "instances": rows})
                time.sleep(0.05)
            _until(f"two anomaly states {seen}", lambda: len(seen) >= 2 or None, 20)
            time.sleep(0.5)
    finally:
        peer.close()
    # The fault between two normal answers reached the binary sensor: on, then off.
    assert seen == ["on", "off"], seen

    def state(unique: str) -> dict[str, Any]:
        return ha.states()[ids[unique]]

    _until("a prediction", lambda: state("edgewise_kitchen_iris-rf_prediction")["state"]
           in ("setosa", "versicolor", "virginica"))  # fmt: skip
    prediction = state("edgewise_kitchen_iris-rf_prediction")
    assert prediction["attributes"]["options"] == ["setosa", "versicolor", "virginica"]
    assert set(prediction["attributes"]) <= {"options", "device_class", "friendly_name",
                                             "version"}, prediction  # fmt: skip
    confidence = state("edgewise_kitchen_iris-rf_confidence")
    assert confidence["attributes"]["unit_of_measurement"] == "%"
    assert 0 < float(confidence["state"]) <= 100
    assert state("edgewise_kitchen_connectivity")["state"] == "on"
    boot = state("edgewise_kitchen_last_boot")
    assert boot["attributes"]["device_class"] == "timestamp"
    import datetime as dt

    booted = dt.datetime.fromisoformat(boot["state"]).timestamp()
    assert time.time() - 120 < booted <= time.time()
    _until("requests counted", lambda: state("edgewise_kitchen_iris-rf_requests")["state"]
           == "1")  # fmt: skip
    drift = state("edgewise_kitchen_iris-rf_drift")
    assert drift["attributes"]["options"] == ["collecting", "ok", "warn", "alarm"]
    assert drift["state"] in drift["attributes"]["options"]
    update = state("edgewise_kitchen_iris-rf_update")
    assert update["attributes"]["installed_version"] == "1"
    assert update["attributes"]["latest_version"] == "1" and update["state"] == "off"
    rss = state("edgewise_kitchen_rss")
    assert rss["attributes"]["unit_of_measurement"] == "MiB", rss

    (devices,) = ha.ws({"type": "config/device_registry/list"})
    (ours,) = [d for d in devices["result"] if ["mqtt", "edgewise_kitchen"] in d["identifiers"]]
    assert ours["configuration_url"] == f"{CONSOLE}/#device={DEVICE}"
    assert ours["manufacturer"] == "edgewise" and ours["sw_version"]

    states = ha.states()
    listing = [{"entity_id": e, "state": states[e]["state"],
                "attributes": states[e]["attributes"]} for e in sorted(ids.values())]  # fmt: skip
    out = ROOT / ".artifacts" / "home-assistant"
    out.mkdir(parents=True, exist_ok=True)
    (out / "entities.json").write_text(json.dumps(listing, indent=1))
    (tmp_path / "entities.json").write_text(json.dumps(listing, indent=1))
