"""Start a local MQTT broker for a run: Mosquitto when installed, else amqtt (pure Python).

Used by ``edgewise demo`` when no broker is reachable, and by the tests, which need their
own broker on a free loopback port (some of them stop and restart it).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from edgewise.edge.errors import EdgewiseError

# Mosquitto drops QoS 1 messages for an offline or slow client beyond this many (default
# 1000), silently; a bigger queue is what lets requests wait for a restarting agent.
MAX_QUEUED_MESSAGES = 100_000


def find_mosquitto() -> str | None:
    """Path of the mosquitto binary (Debian puts it in /usr/sbin, often not on PATH)."""
    return shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def reachable(host: str, port: int, timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections at host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


@dataclass
class LocalBroker:
    """A broker process this run started (and must stop)."""

    kind: str
    port: int
    process: subprocess.Popen[bytes]
    workdir: Path
    command: list[str]

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.kind}.log"

    def wait_ready(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            if reachable("127.0.0.1", self.port, 0.2):
                return
            time.sleep(0.05)
        tail = self.log_path.read_text(errors="replace")[-500:] if self.log_path.exists() else ""
        self.stop()
        raise EdgewiseError(f"{self.kind} did not start on port {self.port}: {tail.strip()}")

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate the broker (SIGTERM, then SIGKILL after ``timeout``)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)

    def restart(self) -> None:
        """Start the same broker again on the same port (after stop())."""
        self.stop()
        self.process = _spawn(self.command, self.log_path)
        self.wait_ready()


def _spawn(command: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log:
        return subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )


def mosquitto_config(
    port: int, workdir: Path, persistence: bool = False, extra: Sequence[str] = ()
) -> str:
    """A Mosquitto config for a loopback listener (anonymous, for tests and demos);
    ``extra`` lines come last (Mosquitto: the last of a repeated option wins)."""
    lines = [
        f"listener {port} 127.0.0.1",
        "allow_anonymous true",
        # Nagle off towards clients too: QoS 1 exchanges otherwise stall ~40 ms on delayed ACKs.
        "set_tcp_nodelay true",
        f"persistence {'true' if persistence else 'false'}",
        f"max_queued_messages {MAX_QUEUED_MESSAGES}",
        "log_dest stderr",
        "log_type error",
        "log_type warning",
    ]
    if persistence:
        lines.append(f"persistence_location {workdir}/")
        lines.append("autosave_interval 1")
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        lines.append("user root")  # else it drops to `mosquitto`, who cannot write workdir
    lines.extend(extra)
    return "\n".join(lines) + "\n"


def start_mosquitto(
    workdir: str | Path,
    port: int | None = None,
    persistence: bool = False,
    extra: Sequence[str] = (),
    config: str | None = None,
) -> LocalBroker:
    """Start ``mosquitto`` on 127.0.0.1 and wait until it accepts connections."""
    binary = find_mosquitto()
    if binary is None:
        raise EdgewiseError("mosquitto is not installed (apt-get install mosquitto)")
    root = Path(workdir)
    root.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    conf = root / "mosquitto.conf"
    # A whole config of the caller's (e.g. the shipped TLS one, rewritten for a test) must
    # listen on `port`: readiness is checked there.
    conf.write_text(
        config if config is not None else mosquitto_config(port, root, persistence, extra)
    )
    command = [binary, "-c", str(conf)]
    broker = LocalBroker("mosquitto", port, _spawn(command, root / "mosquitto.log"), root, command)
    broker.wait_ready()
    return broker


def start_amqtt(workdir: str | Path, port: int | None = None) -> LocalBroker:
    """Start the pure-Python amqtt broker (MQTT 3.1.1 only) in a child process."""
    try:
        import amqtt  # noqa: F401
    except ImportError:
        raise EdgewiseError(
            "no MQTT broker available: install mosquitto, or from the checkout: "
            "pip install '.[broker]'"
        ) from None
    root = Path(workdir)
    root.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    conf = root / "amqtt.yaml"
    conf.write_text(
        "listeners:\n  default:\n    type: tcp\n"
        f"    bind: 127.0.0.1:{port}\n"
        "plugins:\n  amqtt.plugins.authentication.AnonymousAuthPlugin:\n    allow_anonymous: true\n"
    )
    script = (
        "import sys; from amqtt.scripts.broker_script import main; "
        f"sys.argv = ['amqtt', '-c', {str(conf)!r}]; main()"
    )
    command = [sys.executable, "-c", script]
    broker = LocalBroker("amqtt", port, _spawn(command, root / "amqtt.log"), root, command)
    broker.wait_ready(timeout=20)
    return broker


def start_local_broker(workdir: str | Path) -> LocalBroker:
    """Mosquitto if installed, else amqtt."""
    if find_mosquitto():
        return start_mosquitto(workdir)
    return start_amqtt(workdir)
