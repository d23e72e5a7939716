"""A real Home Assistant for tests: the ``homeassistant`` package in its own virtual
environment (``.cache/ha-venv``, CPython 3.13; ``scripts/setup-home-assistant`` builds it),
booted on a loopback port with a throw-away configuration, a user made with its own
``auth`` script, a token from its login flow, and its MQTT integration added through the
config-flow API on the test's broker, as a user would in the UI.

``--skip-pip``: nothing is installed at run time (no network), so default integrations
whose requirements are not in the environment (the frontend, for one) fail to load and
are logged; MQTT, the API and the websocket API are all a test needs.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from edgewise.deploy.broker import free_port
from tests.conftest import ROOT

VENV = Path(os.environ.get("EDGEWISE_HA_VENV", ROOT / ".cache" / "ha-venv"))
USER, PASSWORD = "edgewise", "edgewise-test-password"
CLIENT_ID = "http://127.0.0.1/"
CONFIG = """\
homeassistant:
  name: edgewise test
  unit_system: metric
  time_zone: UTC
  latitude: 0
  longitude: 0
  elevation: 0
  currency: EUR
  country: DE
http:
  server_host: 127.0.0.1
  server_port: {port}
api:
config:
websocket_api:
logger:
  default: warning
"""


def available() -> bool:
    return (VENV / "bin" / "hass").exists()


class HomeAssistant:
    """A running Home Assistant and an access token for its REST and websocket APIs."""

    def __init__(self, url: str, token: str, log: Path) -> None:
        self.url, self.token, self.log = url, token, log

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        with urllib.request.urlopen(req, timeout=30) as got:
            return json.loads(got.read() or b"null")

    def states(self) -> dict[str, dict[str, Any]]:
        return {s["entity_id"]: s for s in self.call("GET", "/api/states")}

    def ws(self, *messages: dict[str, Any]) -> list[dict[str, Any]]:
        """Send websocket commands (ids added) and return their results in order."""
        from websockets.sync.client import connect

        with connect(self.url.replace("http", "ws", 1) + "/api/websocket") as sock:
            json.loads(sock.recv())  # auth_required
            sock.send(json.dumps({"type": "auth", "access_token": self.token}))
            assert json.loads(sock.recv())["type"] == "auth_ok"
            out = []
            for i, msg in enumerate(messages, 1):
                sock.send(json.dumps({**msg, "id": i}))
                while (got := json.loads(sock.recv())).get("id") != i:
                    pass
                out.append(got)
            return out

    @contextmanager
    def watch(self, entity_id: str) -> Iterator[list[str]]:
        """Every state ``entity_id`` takes while the block runs (websocket state_changed
        events, in order)."""
        import threading

        from websockets.sync.client import connect

        states: list[str] = []
        sock = connect(self.url.replace("http", "ws", 1) + "/api/websocket")
        json.loads(sock.recv())
        sock.send(json.dumps({"type": "auth", "access_token": self.token}))
        assert json.loads(sock.recv())["type"] == "auth_ok"
        sock.send(json.dumps({"id": 1, "type": "subscribe_events", "event_type": "state_changed"}))
        assert json.loads(sock.recv())["success"]

        def read() -> None:
            from websockets.exceptions import ConnectionClosed

            try:
                for raw in sock:
                    data = json.loads(raw).get("event", {}).get("data", {})
                    if data.get("entity_id") == entity_id and data.get("new_state"):
                        states.append(data["new_state"]["state"])
            except ConnectionClosed:
                pass

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            yield states
        finally:
            sock.close()
            reader.join(5)

    def add_mqtt(self, port: int) -> None:
        """The MQTT integration on 127.0.0.1:``port``, through the config flow."""
        flow = self.call("POST", "/api/config/config_entries/flow", {"handler": "mqtt"})
        assert flow.get("step_id") == "broker", flow
        done = self.call("POST", f"/api/config/config_entries/flow/{flow['flow_id']}",
                         {"broker": "127.0.0.1", "port": port})  # fmt: skip
        assert done.get("type") == "create_entry", done


def _post_form(url: str, fields: dict[str, str]) -> Any:
    from urllib.parse import urlencode

    req = urllib.request.Request(url, data=urlencode(fields).encode(), method="POST")
    with urllib.request.urlopen(req, timeout=30) as got:
        return json.loads(got.read())


def _post_json(url: str, body: dict[str, Any]) -> Any:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(req, timeout=30) as got:
        return json.loads(got.read())


def _token(url: str) -> str:
    """The login flow of the ``homeassistant`` auth provider, then the code for a token."""
    start = {"client_id": CLIENT_ID, "handler": ["homeassistant", None],
             "redirect_uri": CLIENT_ID}  # fmt: skip
    flow = _post_json(url + "/auth/login_flow", start)
    login = {"client_id": CLIENT_ID, "username": USER, "password": PASSWORD}
    done = _post_json(url + f"/auth/login_flow/{flow['flow_id']}", login)
    assert done.get("type") == "create_entry", done
    code = {"grant_type": "authorization_code", "code": done["result"], "client_id": CLIENT_ID}
    tokens = _post_form(url + "/auth/token", code)
    return str(tokens["access_token"])


@contextmanager
def home_assistant(config_dir: Path, timeout: float = 180) -> Iterator[HomeAssistant]:
    """Boot Home Assistant with a fresh configuration in ``config_dir``."""
    port = free_port()
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / "configuration.yaml").write_text(CONFIG.format(port=port))
    hass = str(VENV / "bin" / "hass")
    subprocess.run([hass, "--script", "auth", "-c", str(config_dir), "add", USER, PASSWORD],
                   check=True, capture_output=True, timeout=120)  # fmt: skip
    log = config_dir / "hass.out"
    with log.open("wb") as out:
        proc = subprocess.Popen([hass, "-c", str(config_dir), "--skip-pip"],
                                stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"Home Assistant exited: {log.read_text()[-3000:]}")
            try:
                urllib.request.urlopen(url + "/api/", timeout=2).close()
            except urllib.error.HTTPError:
                break  # 401: the API is up
            except OSError:
                if time.monotonic() > deadline:
                    why = f"no Home Assistant on {url}: {log.read_text()[-3000:]}"
                    raise AssertionError(why) from None
                time.sleep(0.5)
        ha = HomeAssistant(url, _token(url), log)
        while ha.call("GET", "/api/config").get("state") != "RUNNING":
            if time.monotonic() > deadline:
                raise AssertionError("Home Assistant did not finish starting")
            time.sleep(0.5)
        yield ha
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
