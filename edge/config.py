"""Agent configuration: command-line flags and/or a TOML file, unknown keys rejected."""

from __future__ import annotations

import os
import socket
import sys
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from edge.errors import EdgewiseError
from edge.mqtt import PROTOCOLS, BrokerAddress, Session
from edge.outbox import SYNC_MODES
from edge.payload import DEFAULT_MAX_INSTANCES, DEFAULT_MAX_PAYLOAD
from edge.topics import Topics

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


def default_state_dir() -> str:
    """``$XDG_STATE_HOME/edgewise``, else ``~/.local/state/edgewise``."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "state"
    )
    return os.path.join(base, "edgewise")


@dataclass(frozen=True)
class AgentConfig:
    """Everything the agent needs; validated once in ``__post_init__``."""

    bundles: tuple[str, ...] = ()
    broker: str = "mqtt://127.0.0.1:1883"
    device: str = field(default_factory=socket.gethostname)
    prefix: str = "edgewise"
    protocol: str = "auto"
    qos: int = 1
    num_threads: int | None = None
    max_payload: int = DEFAULT_MAX_PAYLOAD
    max_instances: int = DEFAULT_MAX_INSTANCES
    queue_size: int = 10_000
    drain_timeout: float = 10.0
    # Durable delivery (docs/mqtt.md): persistent session + on-disk outbox.
    durable: bool = True
    state_dir: str = field(default_factory=default_state_dir)
    outbox_max_count: int = 100_000
    outbox_max_bytes: int = 64 << 20
    outbox_sync: str = "full"
    session_expiry: int = 7 * 24 * 3600
    receive_maximum: int = 100
    health_interval: float = 30.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "bundles", tuple(str(b) for b in self.bundles))
        BrokerAddress.parse(self.broker)
        Topics(self.prefix, self.device)
        if self.protocol not in ("auto", *PROTOCOLS):
            raise EdgewiseError(f"protocol {self.protocol!r}: use auto, 5 or 3.1.1")
        if self.qos not in (0, 1):
            raise EdgewiseError(f"qos {self.qos!r}: use 0 or 1")
        if self.outbox_sync not in SYNC_MODES:
            raise EdgewiseError(f"outbox_sync {self.outbox_sync!r}: use one of {list(SYNC_MODES)}")
        if not isinstance(self.durable, bool):
            raise EdgewiseError(f"durable must be true or false, got {self.durable!r}")
        if not isinstance(self.state_dir, str) or not self.state_dir:
            raise EdgewiseError(f"state_dir must be a directory path, got {self.state_dir!r}")
        for name in ("drain_timeout", "health_interval"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                raise EdgewiseError(f"{name} must be a positive number of seconds, got {value!r}")
        for name in (
            "max_payload",
            "max_instances",
            "queue_size",
            "outbox_max_count",
            "outbox_max_bytes",
            "session_expiry",
            "receive_maximum",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise EdgewiseError(f"{name} must be a positive integer, got {value!r}")
        if self.receive_maximum > 65535:
            raise EdgewiseError(f"receive_maximum must be 1..65535, got {self.receive_maximum!r}")
        if self.num_threads is not None and (
            not isinstance(self.num_threads, int) or self.num_threads < 1
        ):
            raise EdgewiseError(f"num_threads must be a positive integer, got {self.num_threads!r}")

    @property
    def topics(self) -> Topics:
        return Topics(self.prefix, self.device)

    @property
    def outbox_path(self) -> Path:
        """Where this device's outbox lives under ``state_dir``."""
        return Path(self.state_dir) / f"{self.device}.outbox.sqlite"

    @property
    def session(self) -> Session | None:
        """The persistent MQTT session when durable, else None (clean session)."""
        if not self.durable:
            return None
        return Session(expiry=self.session_expiry, receive_maximum=self.receive_maximum)

    @classmethod
    def from_toml(cls, path: str | Path) -> AgentConfig:
        """Read a TOML file whose top-level keys are this class's fields."""
        p = Path(path)
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise EdgewiseError(f"config file {p}: no such file") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise EdgewiseError(f"config file {p}: not valid TOML ({exc})") from None
        return cls.from_mapping(data, source=str(p))

    @classmethod
    def from_mapping(cls, data: dict[str, Any], source: str = "config") -> AgentConfig:
        """Build from a mapping, rejecting keys that are not fields."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise EdgewiseError(f"{source}: unknown key(s) {unknown}; allowed: {sorted(known)}")
        try:
            return cls(**data)
        except TypeError as exc:
            raise EdgewiseError(f"{source}: {exc}") from None

    def merged(self, **overrides: Any) -> AgentConfig:
        """A copy with the overrides that are not None (command-line flags over the file)."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})
