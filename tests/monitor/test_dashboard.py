"""The dashboard's HTTP rules: a token off loopback, DNS rebinding and cross-site posts
refused (the page itself in a browser: tests/monitor/test_console.py)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgewise.deploy.broker import LocalBroker, free_port
from tests.conftest import ROOT

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def _edgewise(*args: str, log: Path) -> subprocess.Popen[bytes]:
    out = log.open("ab")
    cmd = [sys.executable, "-m", "edgewise", *args]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except urllib.error.HTTPError:
            return  # it answers (e.g. 401)
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"{url} did not answer within {timeout}s")


@pytest.fixture
def dashboard(broker: LocalBroker, tmp_path: Path) -> Iterator[tuple[str, str]]:
    prefix, port = f"t{uuid.uuid4().hex[:6]}", free_port()
    proc = _edgewise("dashboard", "--broker", broker.url, "--prefix", prefix, "--port",
                     str(port), log=tmp_path / "dashboard.log")  # fmt: skip
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_http(url)
        yield url, prefix
    finally:
        proc.terminate()
        assert proc.wait(20) == 0, (tmp_path / "dashboard.log").read_text()


def test_a_token_is_required_off_loopback(broker: LocalBroker, tmp_path: Path) -> None:
    refused = subprocess.run(
        [sys.executable, "-m", "edgewise", "dashboard", "--broker", broker.url, "--bind",
         "0.0.0.0", "--port", str(free_port())],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert refused.returncode == 1
    assert refused.stderr.strip().count("\n") == 0 and "token" in refused.stderr
    token = tmp_path / "token"
    token.write_text("s3cret-token\n")
    port = free_port()
    proc = _edgewise("dashboard", "--broker", broker.url, "--bind", "0.0.0.0", "--port",
                     str(port), "--token-file", str(token), log=tmp_path / "d.log")  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}/api/state"
        wait_http(url)
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(url, timeout=5)
        assert err.value.code == 401
        with urllib.request.urlopen(url + "?token=s3cret-token", timeout=5) as ok:
            assert json.loads(ok.read())["prefix"] == "edgewise"
        # The page needs the token; its script and stylesheet hold no data (a page cannot
        # add ?token= to them) and are served to anyone under the dashboard's Host names.
        base = f"http://127.0.0.1:{port}/"
        assert _request(base) == 401 and _request(base + "?token=s3cret-token") == 200
        assert _request(base + "console.js") == 200 and _request(base + "console.css") == 200
        assert _request(base + "console.js", Host=f"attacker.example:{port}") == 401
    finally:
        proc.terminate()
        proc.wait(20)
    assert "s3cret" not in (tmp_path / "d.log").read_text()


def _request(url: str, data: bytes | None = None, **headers: str) -> int:
    req = urllib.request.Request(url, data=data, headers=headers, method="POST" if data else "GET")
    try:
        with urllib.request.urlopen(req, timeout=5) as got:
            return int(got.status)
    except urllib.error.HTTPError as err:
        return int(err.code)


def test_rebinding_hosts_and_cross_site_posts_are_refused(dashboard: tuple[str, str]) -> None:
    """A page on attacker.example whose name now resolves to 127.0.0.1 sends its own Host;
    a cross-site form can POST text/plain without a preflight. Neither gets through."""
    url, _ = dashboard
    port = url.rsplit(":", 1)[1].rstrip("/")
    assert _request(url + "api/state") == 200
    assert _request(url + "api/state", Host=f"attacker.example:{port}") == 401
    body = json.dumps({"device": "nope", "model": "m", "instances": [[1]]}).encode()
    try_url = url + "api/try"
    assert _request(try_url, body, **{"Content-Type": "text/plain"}) == 403
    cross = {"Content-Type": "application/json", "Origin": "http://attacker.example"}
    assert _request(try_url, body, **cross) == 403
    same = {"Content-Type": "application/json", "Origin": f"http://127.0.0.1:{port}"}
    assert _request(try_url, body, **same) == 404  # through the checks: no such device
