"""Agent configuration: TOML, flags over file, unknown keys and bad values rejected."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.config import AgentConfig
from edge.errors import EdgewiseError


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
        ("devise = 'x'\n", "unknown key"),
        ("device = 'a/b'\n", "device 'a/b'"),
        ("qos = 2\n", "qos 2"),
        ("broker = 'http://x'\n", "scheme must be mqtt"),
        ("queue_size = 0\n", "queue_size must be a positive integer"),
        ("protocol = '4'\n", "protocol '4'"),
        ("device = \n", "not valid TOML"),
        ("outbox_sync = 'off'\n", "outbox_sync 'off'"),
        ("durable = 'yes'\n", "durable must be true or false"),
        ("outbox_max_count = 0\n", "outbox_max_count must be a positive integer"),
        ("receive_maximum = 70000\n", "receive_maximum must be 1..65535"),
        ("health_interval = 0\n", "health_interval must be a positive number"),
        ("session_expiry = true\n", "session_expiry must be a positive integer"),
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
