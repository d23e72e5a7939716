"""Agent configuration: command-line flags and/or a TOML file, unknown keys rejected."""

from __future__ import annotations

import socket
import sys
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from edge.errors import EdgewiseError
from edge.mqtt import PROTOCOLS, BrokerAddress
from edge.payload import DEFAULT_MAX_INSTANCES, DEFAULT_MAX_PAYLOAD
from edge.topics import Topics

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


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

    def __post_init__(self) -> None:
        object.__setattr__(self, "bundles", tuple(str(b) for b in self.bundles))
        BrokerAddress.parse(self.broker)
        Topics(self.prefix, self.device)
        if self.protocol not in ("auto", *PROTOCOLS):
            raise EdgewiseError(f"protocol {self.protocol!r}: use auto, 5 or 3.1.1")
        if self.qos not in (0, 1):
            raise EdgewiseError(f"qos {self.qos!r}: use 0 or 1")
        for name in ("max_payload", "max_instances", "queue_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise EdgewiseError(f"{name} must be a positive integer, got {value!r}")
        if self.num_threads is not None and (
            not isinstance(self.num_threads, int) or self.num_threads < 1
        ):
            raise EdgewiseError(f"num_threads must be a positive integer, got {self.num_threads!r}")

    @property
    def topics(self) -> Topics:
        return Topics(self.prefix, self.device)

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
