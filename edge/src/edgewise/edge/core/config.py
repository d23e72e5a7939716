"""Agent configuration: one declarative, range-checked schema for the TOML file and flags.

Every setting is validated once, when the config is built: unknown keys are refused, types
are strict (``"yes"`` is not a boolean, ``true`` is not a number), numbers are finite and
within range. A refusal is one line naming the key, the value and what is allowed.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from edgewise.edge.core.device_id import default_device
from edgewise.edge.core.stream_settings import Binding, StreamSettings, check_streams
from edgewise.edge.errors import EdgewiseError
from edgewise.edge.link.endpoint import Endpoint, redact_url
from edgewise.edge.link.fleet_topics import check_group
from edgewise.edge.link.message import Session
from edgewise.edge.link.payload import DEFAULT_MAX_INSTANCES, DEFAULT_MAX_PAYLOAD
from edgewise.edge.link.topics import (
    DEFAULT_BROKER,
    DEFAULT_PREFIX,
    Topics,
    check_device,
    check_pool,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

MQTT_MAX_PAYLOAD = 268_435_455  # the largest MQTT packet's remaining length
SESSION_EXPIRY_MAX = 4_294_967_295  # MQTT 5: a four-byte integer
THREADS_PER_CPU = 4  # num_threads beyond this many per CPU only costs memory


def default_state_dir() -> str:
    """``$XDG_STATE_HOME/edgewise``, else ``~/.local/state/edgewise``."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "state"
    )
    return os.path.join(base, "edgewise")


def _path_list(value: Any) -> Any:
    # `bundles = "models/iris"` is one path, not a list of characters.
    if isinstance(value, (str, os.PathLike)):
        return (os.fspath(value),)
    if isinstance(value, list):
        return tuple(os.fspath(v) if isinstance(v, os.PathLike) else v for v in value)
    return value


Seconds = Annotated[float, Field(allow_inf_nan=False)]
Share = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]


class DriftSettings(BaseModel):
    """``[drift]``: the sliding window and the PSI thresholds (edge.observe.drift)."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    enabled: bool = True
    window: int = Field(1000, ge=10, le=1_000_000)
    min_instances: int = Field(200, ge=1, le=1_000_000)
    warn: float = Field(0.1, gt=0, le=100, allow_inf_nan=False)
    alarm: float = Field(0.25, gt=0, le=100, allow_inf_nan=False)

    @model_validator(mode="after")
    def _order(self) -> DriftSettings:
        if self.min_instances > self.window:
            raise ValueError("drift.min_instances must not exceed drift.window")
        if self.warn >= self.alarm:
            raise ValueError("drift.warn must be below drift.alarm")
        return self


class CaptureSettings(BaseModel):
    """``[capture]``: which answered instances the device keeps (edge.observe.capture_store)."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    low_confidence: Share | None = 0.6
    anomalies: bool = True
    during_drift: bool = True
    sample_rate: Share = 0.0
    max_mb: float = Field(50.0, gt=0, le=1 << 20, allow_inf_nan=False)


class AgentConfig(BaseModel):
    """Everything the agent needs; validated once, immutable afterwards."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)
    _device_source: str = PrivateAttr("given")

    bundles: Annotated[
        tuple[Annotated[str, Field(min_length=1)], ...], BeforeValidator(_path_list)
    ] = ()
    broker: str = DEFAULT_BROKER
    # Credentials and TLS beyond the URL (edge.link.endpoint, docs/mqtt.md#security).
    username: str | None = None
    password_file: str | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    tls_server_name: str | None = None
    tls_insecure: bool = False
    # Ed25519 public keys (PEM files): when any is given, only bundles signed by one of
    # them are served (edge.runtime.signing, docs/fleet.md).
    trusted_keys: Annotated[
        tuple[Annotated[str, Field(min_length=1)], ...], BeforeValidator(_path_list)
    ] = ()
    # Empty: the default, unique per machine (edge.core.device_id), set once validated.
    device: str = ""
    prefix: str = DEFAULT_PREFIX
    protocol: Literal["auto", "5", "3.1.1"] = "auto"
    qos: Literal[0, 1] = 1
    num_threads: int | None = None
    # ONNX Runtime execution providers, in order (Jetson: TensorRT, CUDA; docs/devices.md).
    providers: tuple[Annotated[str, Field(min_length=1)], ...] = ("CPUExecutionProvider",)
    max_payload: int = Field(DEFAULT_MAX_PAYLOAD, ge=1, le=MQTT_MAX_PAYLOAD)
    max_instances: int = Field(DEFAULT_MAX_INSTANCES, ge=1, le=1_000_000)
    queue_size: int = Field(10_000, ge=1, le=1_000_000)
    # A QoS 0 request that waited longer than this in the queue is answered "overloaded"
    # without running (0: never): after a flood, fresh requests are answered at once.
    max_wait_ms: float = Field(1000.0, ge=0, le=3_600_000, allow_inf_nan=False)
    # Micro-batching (edge.core.batching): instances per shared backend run (1: off), and
    # how long the worker waits for more requests once one is there (0: take what is
    # queued, never wait when idle; so a lone request runs alone, at once).
    max_batch: int = Field(64, ge=1, le=100_000)
    max_batch_wait_ms: float = Field(0.0, ge=0, le=1000, allow_inf_nan=False)
    drain_timeout: Seconds = Field(10.0, gt=0, le=3600)
    # Durable delivery (docs/mqtt.md): persistent session + on-disk outbox.
    durable: bool = True
    # When a QoS 1 request from the broker is acknowledged: once the broker acknowledged its
    # answers ("forwarded", edge.link.forward), or once they are in the outbox ("stored").
    ack: Literal["forwarded", "stored"] = "forwarded"
    state_dir: str = Field(default_factory=default_state_dir, min_length=1)
    outbox_max_count: int = Field(100_000, ge=1, le=1_000_000_000)
    outbox_max_bytes: int = Field(64 << 20, ge=1, le=1 << 40)
    outbox_sync: Literal["full", "normal"] = "full"
    session_expiry: int = Field(7 * 24 * 3600, ge=1, le=SESSION_EXPIRY_MAX)
    receive_maximum: int = Field(100, ge=1, le=65535)
    health_interval: Seconds = Field(30.0, ge=1, le=86400)
    # After a reload swaps in a new version (edge.fleet.probation): requests watched (0: no
    # probation), the internal-error rate and the p99 ratio to the old one that roll back.
    probation_requests: int = Field(200, ge=0, le=1_000_000)
    probation_max_error_rate: float = Field(0.05, ge=0, le=1, allow_inf_nan=False)
    probation_max_p99_ratio: float = Field(3.0, ge=1, le=1000, allow_inf_nan=False)
    # Fleet roll-outs (docs/fleet.md): the groups whose desired states this device follows,
    # the largest bundle it downloads, and how many versions before the active one it keeps.
    groups: Annotated[
        tuple[Annotated[str, Field(min_length=1)], ...], BeforeValidator(_path_list)
    ] = ()
    # Home Assistant MQTT discovery (edge.observe.ha_discovery): off unless asked for.
    ha_discovery: bool = False
    # A device pool (docs/mqtt.md#pools): also serve edgewise/pool/{pool}/+/in, shared
    # with the pool's other members through an MQTT 5 shared subscription.
    pool: str | None = None
    # Processes serving this device's requests (docs/mqtt.md#workers): this one and
    # workers - 1 helpers, sharing one MQTT 5 shared subscription.
    workers: int = Field(1, ge=1, le=64)
    ha_prefix: str = "homeassistant"
    # The console's URL (edgewise dashboard), Home Assistant's link from the device page.
    console_url: str | None = Field(None, pattern=r"^https?://[^\s]+$", max_length=500)
    max_bundle_bytes: int = Field(256 << 20, ge=1024, le=1 << 40)
    keep_versions: int = Field(3, ge=1, le=100)
    # Drift of inputs and answers against each bundle's reference (docs/drift.md), and
    # field data capture: off unless a [capture] table is given.
    drift: DriftSettings = DriftSettings.model_validate({})
    capture: CaptureSettings | None = None
    # The user's own sensors bound to models (edge.streams, docs/streams.md).
    streams: tuple[StreamSettings, ...] = ()

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise EdgewiseError(describe(exc, data)) from None

    @field_validator("broker")
    @classmethod
    def _broker(cls, value: str) -> str:
        try:
            Endpoint.parse(value)
        except EdgewiseError as exc:
            raise ValueError(str(exc)) from None
        return value

    @model_validator(mode="after")
    def _default_device(self) -> AgentConfig:
        if not self.device:
            device, source = default_device(self.state_dir)
            object.__setattr__(
                self, "device", self._device(device)
            )  # frozen: set once, while validating
            self._device_source = f"default: {source}"
        return self

    @property
    def device_source(self) -> str:
        """Where the device id came from: the config or flags, or how the default was made."""
        return self._device_source

    @field_validator("streams", mode="before")
    @classmethod
    def _stream_list(cls, value: Any) -> Any:
        return tuple(value) if isinstance(value, list) else value

    @model_validator(mode="after")
    def _streams(self) -> AgentConfig:
        check_streams(self.streams)
        return self

    @model_validator(mode="after")
    def _workers(self) -> AgentConfig:
        if self.workers > 1 and self.protocol == "3.1.1":
            raise ValueError(
                f"workers = {self.workers} needs MQTT 5 (shared subscriptions); "
                "protocol is 3.1.1: use protocol auto or 5, or workers = 1"
            )
        return self

    @model_validator(mode="after")
    def _connection(self) -> AgentConfig:
        # Files readable, password file private, TLS settings only with a TLS URL.
        try:
            self.endpoint  # noqa: B018 - built once here to check it
        except EdgewiseError as exc:
            raise ValueError(f"connection settings: {exc}") from None
        return self

    @property
    def endpoint(self) -> Endpoint:
        """How to reach the broker (reads the password file)."""
        return Endpoint.from_settings(
            self.broker,
            username=self.username,
            password_file=self.password_file,
            ca_file=self.ca_file,
            cert_file=self.cert_file,
            key_file=self.key_file,
            tls_server_name=self.tls_server_name,
            tls_insecure=self.tls_insecure,
        )

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        try:
            return check_device(value)
        except EdgewiseError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("groups")
    @classmethod
    def _groups(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        try:
            for group in value:
                check_group(group)
        except EdgewiseError as exc:
            raise ValueError(str(exc)) from None
        if len(set(value)) != len(value):
            raise ValueError("a group is listed twice")
        return value

    @field_validator("pool")
    @classmethod
    def _pool(cls, value: str | None) -> str | None:
        try:
            return check_pool(value) if value is not None else None
        except EdgewiseError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("ha_prefix")
    @classmethod
    def _ha_prefix(cls, value: str) -> str:
        if not value or not value.isprintable() or set(value) & set("+#\x00"):
            raise ValueError("must be non-empty and printable, no wildcards")
        return value

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        try:
            Topics(value, "x")
        except EdgewiseError as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("providers", mode="before")
    @classmethod
    def _providers(cls, value: Any) -> Any:
        return tuple(value) if isinstance(value, list) else value

    @field_validator("num_threads")
    @classmethod
    def _num_threads(cls, value: int | None) -> int | None:
        most = THREADS_PER_CPU * (os.cpu_count() or 1)
        if value is not None and not 1 <= value <= most:
            raise ValueError(f"allowed: 1..{most} ({THREADS_PER_CPU} x the CPU count)")
        return value

    @property
    def topics(self) -> Topics:
        return Topics(self.prefix, self.device, self.pool)

    @property
    def outbox_path(self) -> Path:
        """Where this device's outbox lives under ``state_dir``."""
        return Path(self.state_dir) / f"{self.device}.outbox.sqlite"

    def helper_outbox_path(self, index: int) -> Path:
        """The outbox of helper process ``index`` (``workers`` > 1)."""
        return Path(self.state_dir) / f"{self.device}.w{index}.outbox.sqlite"

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
        except OSError as exc:
            raise EdgewiseError(f"config file {p}: {exc.strerror or exc}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise EdgewiseError(f"config file {p}: not valid TOML ({exc})") from None
        for stream in data.get("streams", []) if isinstance(data.get("streams"), list) else []:
            # A program's relative paths are the config file's (recipes ship beside theirs).
            if isinstance(stream, dict) and "cwd" not in stream and "command" in stream:
                stream["cwd"] = str(p.resolve().parent)
        return cls.from_mapping(data, source=str(p))

    @classmethod
    def from_mapping(cls, data: dict[str, Any], source: str = "config") -> AgentConfig:
        """Build from a mapping (unknown keys rejected); errors name ``source``."""
        try:
            return cls(**data)
        except EdgewiseError as exc:
            raise EdgewiseError(f"{source}: {exc}") from None

    def merged(self, **overrides: Any) -> AgentConfig:
        """A copy with the overrides that are not None (command-line flags over the file),
        validated like the file."""
        data = {name: getattr(self, name) for name in type(self).model_fields}
        data.update({k: v for k, v in overrides.items() if v is not None})
        return type(self)(**data)


def describe(exc: ValidationError, data: dict[str, Any]) -> str:
    """The first validation error as one line: key, value given, what is allowed."""
    error = exc.errors(include_url=False)[0]
    key = ".".join(str(part) for part in error["loc"]) or "config"
    message = str(error["msg"]).removeprefix("Value error, ")
    if not error["loc"]:  # a check across keys: its message names them
        return message
    if error["loc"][0] == "streams":
        key = _stream_key(error["loc"], data)
        if error["type"] == "value_error" and len(error["loc"]) == 2:
            return f"{key}: {message}"  # a check across the stream's keys names them
    if error["type"] == "extra_forbidden":
        tables: dict[str, type[BaseModel]] = {"drift": DriftSettings, "capture": CaptureSettings}
        nested = len(error["loc"]) > 1
        owner = tables.get(str(error["loc"][0]), AgentConfig) if nested else AgentConfig
        if error["loc"][0] == "streams":
            owner = Binding if "features" in error["loc"][2:3] else StreamSettings
        allowed = ", ".join(owner.model_fields)
        return f"unknown key {key!r}; allowed: {allowed}"
    if error["type"] == "missing":
        return f"{key} is required"
    value = error.get("input")
    if key == "broker" and isinstance(value, str):
        value = redact_url(value)  # a password in the URL never reaches a log line
    return f"{key} = {_show(value)}: {message}"


def _stream_key(loc: tuple[Any, ...], data: dict[str, Any]) -> str:
    """``streams[office].features.x.topic``: the stream named, not only numbered."""
    if len(loc) < 2 or not isinstance(loc[1], int):
        return ".".join(str(p) for p in loc)
    streams = data.get("streams")
    named = None
    if isinstance(streams, (list, tuple)) and loc[1] < len(streams):
        item = streams[loc[1]]
        raw = item.get("name") if isinstance(item, dict) else getattr(item, "name", None)
        named = raw if isinstance(raw, str) and raw.isprintable() and len(raw) <= 64 else None
    head = f"streams[{named!r}]" if named else f"streams[{loc[1]}]"
    rest = ".".join(str(p) for p in loc[2:] if p != "function-after[_consistent()]")
    return f"{head}.{rest}" if rest else head


def _show(value: Any) -> str:
    # Long or odd values are shown clipped and escaped: a config line must stay one line.
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
