"""Agent configuration: TOML, flags over file, unknown keys and bad values rejected."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgewise.edge.core.config import AgentConfig
from edgewise.edge.errors import EdgewiseError


def test_toml_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text('bundles = ["a", "b"]\ndevice = "pi-1"\nqos = 0\nnum_threads = 2\n')
    config = AgentConfig.from_toml(path)
    assert config.bundles == ("a", "b") and config.device == "pi-1" and config.qos == 0
    merged = config.merged(device="pi-2", broker=None)
    assert merged.device == "pi-2" and merged.broker == config.broker


def test_shipped_example_config_is_valid() -> None:
    example = Path(__file__).resolve().parents[2] / "deploy" / "agent.example.toml"
    assert AgentConfig.from_toml(example).device == "pi-kitchen"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("devise = 'x'\n", "unknown key 'devise'; allowed: bundles, broker"),
        ("device = 'a/b'\n", "device = 'a/b': device 'a/b' must be"),
        ("qos = 2\n", "qos = 2: Input should be 0 or 1"),
        ("broker = 'http://x'\n", "scheme must be one of mqtt://, mqtts://, ws://, wss://"),
        ("queue_size = 0\n", "queue_size = 0: Input should be greater than or equal to 1"),
        ("protocol = '4'\n", "protocol = '4': Input should be 'auto', '5' or '3.1.1'"),
        ("device = \n", "not valid TOML"),
        ("outbox_sync = 'off'\n", "outbox_sync = 'off'"),
        ("durable = 'yes'\n", "durable = 'yes': Input should be a valid boolean"),
        ("outbox_max_count = 0\n", "outbox_max_count = 0"),
        ("receive_maximum = 70000\n", "receive_maximum = 70000: .* less than or equal to 65535"),
        ("health_interval = 0\n", "health_interval = 0: .* greater than or equal to 1"),
        ("session_expiry = true\n", "session_expiry = True: Input should be a valid integer"),
        # Settings that once made a zombie agent (issue 10).
        ("session_expiry = 99999999999\n", "less than or equal to 4294967295"),
        ("broker = 'mqtt://127.0.0.1:0'\n", "port must be 1..65535"),
        ("broker = 'mqtt://127.0.0.1:65536'\n", "port must be 1..65535"),
        ("num_threads = 100000\n", "num_threads = 100000: allowed: 1..[0-9]+ "),
        ("health_interval = 1e-9\n", "health_interval = 1e-09"),
        ("health_interval = nan\n", "health_interval = nan: Input should be a finite number"),
        ("drain_timeout = inf\n", "drain_timeout = inf: Input should be a finite number"),
        ("broker = 18931\n", "broker = 18931: Input should be a valid string"),
        ('device = "a\\u0001b"\n', "must be printable"),
        (f"device = '{'d' * 129}'\n", "at most 128 characters"),
        ("bundles = 7\n", "bundles = 7"),
    ],
)
def test_bad_config_is_one_clear_error(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    with pytest.raises(EdgewiseError, match=message):
        AgentConfig.from_toml(path)


def test_state_dir_follows_xdg_state_home(state_home: Path) -> None:
    config = AgentConfig(device="pi-3")
    assert config.outbox_path == state_home / "edgewise" / "pi-3.outbox.sqlite"
    assert config.session is not None and config.session.receive_maximum == 100
    assert AgentConfig(device="pi-3", durable=False).session is None


def test_single_bundle_string_is_one_path(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text('bundles = "models/iris"\n')
    assert AgentConfig.from_toml(path).bundles == ("models/iris",)


def test_password_never_shown_in_an_error() -> None:
    with pytest.raises(EdgewiseError) as info:
        AgentConfig(broker="mqtt://user:hunter2@broker:0")
    assert "hunter2" not in str(info.value) and "user:***@broker" in str(info.value)


def test_flags_are_validated_like_the_file() -> None:
    with pytest.raises(EdgewiseError, match="num_threads = 0"):
        AgentConfig().merged(num_threads=0)
    with pytest.raises(EdgewiseError, match="unknown key 'colour'"):
        AgentConfig().merged(colour="red")
