"""Every command in README.md's Usage section runs as written (slow: it trains them all).

The commands run in a scratch directory after `edgewise examples`, in README order; the
agent runs in the background for the `send` lines. Two changes only: the private test
broker's URL replaces the default one (or is added where a command relies on the default),
and commands that need infrastructure we do not have (a TLS broker on the internet, a
config file naming another broker, a long-running `watch`) are listed, not run.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgewise.deploy.broker import LocalBroker
from tests.conftest import ROOT, needs_host

pytestmark = [pytest.mark.slow, needs_host]
DEFAULT_BROKER = "mqtt://127.0.0.1:1883"
NOT_RUN = ("broker.example.org", "--config deploy/", "edgewise watch")


def usage_commands() -> list[str]:
    """The `edgewise ...` lines of the sh blocks in README's Usage section."""
    text = (ROOT / "README.md").read_text()
    usage = text[text.index("## Usage") : text.index("## Benchmark")]
    commands: list[str] = []
    for block in re.findall(r"```sh\n(.*?)```", usage, flags=re.S):
        joined = block.replace("\\\n", " ")
        for line in joined.splitlines():
            line = line.split("  #")[0].split(" # ")[0].strip()
            if line.startswith("edgewise "):
                commands.append(" ".join(line.split()))
    return commands


def library_snippets() -> list[str]:
    """The python blocks of README's "As a library" section."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## As a library") :]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_the_readme_lists_commands() -> None:
    commands = usage_commands()
    assert commands[0] == "edgewise examples"
    assert any(c.startswith("edgewise send") and "--npz" in c for c in commands)
    assert len(commands) >= 20
    assert "export(" in library_snippets()[0]


def _argv(command: str, broker: LocalBroker) -> list[str]:
    words = shlex.split(command.replace(DEFAULT_BROKER, broker.url))
    talks = ("agent", "send", "deploy", "fleet", "bundles", "rollback", "promote", "undeploy")
    if words[1] in talks and "--broker" not in words:
        words += ["--broker", broker.url]
    return [sys.executable, "-m", "edgewise", *words[1:]]


def test_every_usage_command_runs(broker: LocalBroker, tmp_path: Path) -> None:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    agent: subprocess.Popen[bytes] | None = None
    ran, failures = [], []
    try:
        for command in usage_commands():
            if any(marker in command for marker in NOT_RUN):
                continue
            argv = _argv(command, broker)
            if command.startswith("edgewise agent"):
                agent = subprocess.Popen(
                    [*argv, "--state-dir", str(tmp_path / "state")],
                    cwd=tmp_path,
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                )
                time.sleep(1)
                continue
            if command.startswith("edgewise send"):
                argv.append("--no-progress")
            started = time.monotonic()
            result = subprocess.run(
                argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900
            )
            ran.append(f"{time.monotonic() - started:6.1f} s  {command}")
            if result.returncode != 0:
                failures.append(f"{command}\n{result.stdout[-800:]}{result.stderr[-800:]}")
    finally:
        if agent is not None:
            agent.terminate()
            out = agent.communicate(timeout=30)[0].decode()
            if agent.returncode != 0:
                failures.append(f"agent exited {agent.returncode}\n{out[-800:]}")
    # The library example, on the bundles the commands wrote.
    for snippet in library_snippets():
        result = subprocess.run(
            [sys.executable, "-c", snippet], cwd=tmp_path, env=env, capture_output=True, text=True
        )
        ran.append(f"python snippet: exit {result.returncode}")
        if result.returncode != 0:
            failures.append(f"README python snippet\n{result.stderr[-1500:]}")
    print("\n".join(ran))
    assert not failures, "\n\n".join(failures)
    assert any("send" in line for line in ran) and any("compare" in line for line in ran)
