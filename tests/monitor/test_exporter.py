"""edgewise exporter: real agents' health over a real broker, scraped over HTTP."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from edgewise.deploy.broker import LocalBroker
from edgewise.edge.link.endpoint import Endpoint
from edgewise.monitor.serve import serve_exporter
from tests.agents import new_device, serving
from tests.conftest import ROOT
from tests.mqtt_peer import Peer

ROW = [5.1, 3.5, 1.4, 0.2]
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> Samples:
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def wait_for(url: str, name: str, want: float, timeout: float = 20, **labels: str) -> Samples:
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(url)
        if value(samples, name, **labels) == want or time.monotonic() > deadline:
            return samples
        time.sleep(0.2)


@pytest.fixture
def exporter(broker: LocalBroker) -> Iterator[str]:
    with serve_exporter(Endpoint.parse(broker.url), "edgewise", "127.0.0.1", 0) as url:
        yield url


def test_health_becomes_metrics(broker: LocalBroker, iris_bundle: Path, exporter: str) -> None:
    device = new_device("prom")
    with serving(broker, [iris_bundle], device, health_interval=1.0):
        peer = Peer(broker.port)
        try:
            for i in range(5):
                peer.request(f"edgewise/{device}/iris-rf/in", {"id": i, "instances": [ROW]})
            for i in range(2):
                peer.request(f"edgewise/{device}/iris-rf/in", {"id": i, "instances": [[1, 2]]})
        finally:
            peer.close()
        model = {"device": device, "model": "iris-rf"}
        got = wait_for(exporter, "edgewise_answers_total", 5, **model)
        assert value(got, "edgewise_answers_total", **model) == 5
        assert value(got, "edgewise_errors_total", **model, code="bad_shape") == 2
        assert value(got, "edgewise_requests_received_total", device=device) == 7
        assert value(got, "edgewise_up", device=device) == 1
        p99 = value(got, "edgewise_inference_latency_seconds", **model, quantile="0.99")
        assert p99 is not None and 0 < p99 < 1
        count = value(got, "edgewise_inference_latency_seconds_count", **model)
        total = value(got, "edgewise_inference_latency_seconds_sum", **model)
        assert count == 5 and total is not None and 0 < total < 5
        assert value(got, "edgewise_deploy_state", **model, state="active") == 1
        assert value(got, "edgewise_deploy_state", **model, state="failed") == 0  # a 0 series
        assert value(got, "edgewise_deployment_info", **model, version="1") == 1
        assert value(got, "edgewise_broker_up") == 1
        assert value(got, "edgewise_request_errors_total", device=device) == 2
        assert value(got, "edgewise_durable", device=device) == 1
        assert value(got, "edgewise_connected", device=device) == 1
        age = value(got, "edgewise_worker_heartbeat_age_seconds", device=device)
        assert age is not None and 0 <= age < 5
        info = [k for k in got if k[0] == "edgewise_model_info" and ("device", device) in k[1]]
        assert len(info) == 1 and ("version", "1") in info[0][1]
    # The agent stopped: its retained status says offline.
    got = wait_for(exporter, "edgewise_up", 0, device=device)
    assert value(got, "edgewise_up", device=device) == 0


def test_stream_counters_become_metrics(
    broker: LocalBroker, iris_bundle: Path, exporter: str
) -> None:
    device = new_device("promst")
    names = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]
    topic = f"lab/{device}/iris"
    stream = {
        "name": "bench",
        "model": "iris-rf",
        "features": {n: {"topic": topic, "field": f"v[{i}]"} for i, n in enumerate(names)},
    }
    with serving(broker, [iris_bundle], device, health_interval=1.0, streams=[stream]):
        peer = Peer(broker.port)
        try:
            for _ in range(4):
                peer.publish(topic, json.dumps({"v": ROW}))
            peer.publish(topic, json.dumps({"v": ["a", 1, 2, 3]}))
        finally:
            peer.close()
        labels = {"device": device, "stream": "bench", "model": "iris-rf"}
        # The last sample still updates three fields: a row with the first one kept.
        got = wait_for(exporter, "edgewise_stream_predictions_total", 5, **labels)
        assert value(got, "edgewise_stream_predictions_total", **labels) == 5
        assert value(got, "edgewise_stream_samples_total", **labels) == 5
        assert value(got, "edgewise_stream_bad_samples_total", **labels, reason="not_a_number") == 1
        assert value(got, "edgewise_stream_dropped_total", **labels) == 0


def test_hostile_documents_do_not_break_it(broker: LocalBroker, exporter: str) -> None:
    peer = Peer(broker.port)
    try:
        peer.publish("edgewise/evil/health", b"\xff not json")
        health = {"counters": {"received": "NaN", "queued": 1e999}, "models": {"m": 5}}
        peer.publish("edgewise/evil/health", json.dumps(health).replace("Infinity", "1e999"))
        peer.publish("edgewise/evil/m/deployment", json.dumps({"state": "x" * 5000}))
        peer.publish("edgewise/evil/status", "online")
    finally:
        peer.close()
    got = wait_for(exporter, "edgewise_up", 1, device="evil")
    assert value(got, "edgewise_up", device="evil") == 1
    assert value(got, "edgewise_requests_received_total", device="evil") is None
    states = [dict(k[1])["state"] for k in got if k[0] == "edgewise_deploy_state"]
    assert states and max(len(s) for s in states) <= 200


def test_a_400_digit_number_blinds_nothing(broker: LocalBroker, exporter: str) -> None:
    """One non-retained health document with a 400-digit integer once made /metrics answer
    HTTP 500 for the whole fleet until a restart."""
    import uuid

    good, bad = f"good-{uuid.uuid4().hex[:6]}", f"big-{uuid.uuid4().hex[:6]}"
    peer = Peer(broker.port)
    big = "9" * 400

    def status(device: str, body: bytes) -> None:  # retained, as agents publish it
        peer.client.publish(f"edgewise/{device}/status", body, qos=1, retain=True).wait_for_publish(
            5
        )

    try:
        status(good, b"online")
        got = wait_for(exporter, "edgewise_up", 1, device=good)  # subscribed by now
        assert value(got, "edgewise_up", device=good) == 1
        doc = f'{{"time": {big}, "uptime_s": {big}, "counters": {{"received": {big}}}}}'
        peer.client.publish(f"edgewise/{bad}/health", doc.encode(), qos=1).wait_for_publish(5)
        status(bad, b"online")  # after the health, in order: once up, the health is stored
        got = wait_for(exporter, "edgewise_up", 1, device=bad)  # the scrape answers (200)
        assert value(got, "edgewise_up", device=bad) == 1
        assert value(got, "edgewise_up", device=good) == 1
        assert value(got, "edgewise_uptime_seconds", device=bad) is None
    finally:
        status(good, b"")
        status(bad, b"")
        peer.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_cli_serves_until_stopped(broker: LocalBroker) -> None:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgewise", "exporter", "--broker", broker.url, "--port", str(port)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert f"serving http://127.0.0.1:{port}/metrics" in line, proc.stderr
        assert "edgewise_up" in urllib.request.urlopen(line.split()[1], timeout=5).read().decode()
    finally:
        proc.terminate()
        proc.communicate(timeout=20)
    assert proc.returncode == 0
    busy = subprocess.run(
        [sys.executable, "-m", "edgewise", "exporter", "--broker", broker.url, "--port", "0"],
        cwd=ROOT, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert busy.returncode == 1 and "--port 0: use 1..65535" in busy.stderr


@pytest.mark.parametrize("which", ["exporter", "dashboard"])
def test_invented_model_names_and_huge_documents_stay_bounded(which: str) -> None:
    """50,000 model topics under one device id, or 1 MB health documents, once grew the
    monitors without bound: each device keeps at most 64 models, large documents go."""
    from edgewise.edge.link.message import Message

    if which == "exporter":
        from edgewise.monitor.exporter import MAX_MODELS, FleetState

        state: Any = FleetState("p")
    else:
        from edgewise.monitor.dashboard_state import MAX_MODELS, FleetView

        state = FleetView("p")
    for i in range(5000):
        doc = json.dumps({"state": "active", "version": "1"}).encode()
        state.on_message(Message(f"p/pi/m{i}/deployment", doc, 1, 0.0, retain=True))
    big = json.dumps({"time": 1.0, "pad": "x" * (1 << 20)}).encode()
    state.on_message(Message("p/pi/health", big, 1, 0.0, retain=True))
    if which == "exporter":
        _status, health, deployments = state.snapshot()
        assert len(deployments) == MAX_MODELS and "pi" not in health
    else:
        models = state.snapshot()["devices"]["pi"]["models"]
        assert len(models) == MAX_MODELS


def test_promtool_accepts_the_metrics(
    broker: LocalBroker, iris_bundle: Path, exporter: str
) -> None:
    """`promtool check metrics` on a scrape with a real agent's families in it (the Debian
    prometheus package's promtool; scripts/setup-system installs it)."""
    import shutil

    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is missing: scripts/setup-system --with-mosquitto installs it")
    device = new_device("lint")
    with serving(broker, [iris_bundle], device, health_interval=1.0):
        peer = Peer(broker.port)
        try:
            peer.request(f"edgewise/{device}/iris-rf/in", {"id": 1, "instances": [ROW]})
        finally:
            peer.close()
        wait_for(exporter, "edgewise_answers_total", 1, device=device, model="iris-rf")
        text = urllib.request.urlopen(exporter, timeout=5).read()
    checked = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True)
    assert checked.returncode == 0, (checked.stdout + checked.stderr).decode()
    assert b"# TYPE edgewise_inference_latency_seconds summary" in text


def test_broker_down_is_a_metric_and_a_log_line(caplog: pytest.LogCaptureFixture) -> None:
    """An exporter whose broker cannot be reached says so: edgewise_broker_up 0, and a
    warning naming the broker (it used to serve empty families and log nothing)."""
    import logging

    from edgewise.deploy.broker import free_port

    port = free_port()
    dead = Endpoint.parse(f"mqtt://127.0.0.1:{port}")
    with caplog.at_level(logging.WARNING), serve_exporter(dead, "edgewise", "127.0.0.1", 0) as url:
        time.sleep(1.0)
        assert value(scrape(url), "edgewise_broker_up") == 0
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any(f"127.0.0.1:{port}" in w for w in warned), warned
