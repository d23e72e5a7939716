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
NOT_RUN = ("broker.example.org", "edgewise watch")


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


DOCS = ["README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))]
PLACEHOLDER = re.compile(r"\.\.\.|\[|^[A-Z][A-Z_]*$")  # ID..., [--opt], URL, NAME, N


def _sh_lines(text: str) -> list[str]:
    """The lines of the sh blocks of a markdown text, continuation lines joined."""
    lines, lang = [], None
    for raw in text.replace("\\\n", " ").splitlines():
        if raw.startswith("```"):
            lang = raw[3:].strip() if lang is None else None
        elif lang in ("sh", "bash"):
            lines.append(raw.split("  #")[0].split(" # ")[0].strip())
    return lines


def doc_commands() -> list[tuple[str, str]]:
    """(file, command) for every `edgewise` command the docs give: each line of an sh
    block, and each inline one that names options and no placeholder."""
    found = []
    for name in DOCS:
        text = (ROOT / name).read_text()
        found += [(name, ln) for ln in _sh_lines(text) if ln.startswith("edgewise ")]
        for span in re.findall(r"`(edgewise [^`]+)`", text):
            words = span.split()
            if "--" in span and not any(PLACEHOLDER.search(w) for w in words):
                found.append((name, " ".join(words)))
    return found


@pytest.mark.parametrize(("doc", "command"), doc_commands())
def test_every_documented_command_is_accepted_as_written(doc: str, command: str) -> None:
    """Each documented command parses with the real CLI: required options present, no
    bracketed or `ID...` placeholders in a runnable line (README's Usage also runs)."""
    from edgewise.cli import _command_in, build_parser

    argv = shlex.split(command)[1:]
    assert not [w for w in argv if PLACEHOLDER.search(w)], f"{doc}: placeholder in {command}"
    try:
        build_parser(_command_in(argv)).parse_args(argv)
    except SystemExit as exc:
        assert not exc.code, f"{doc}: `{command}` is refused by the CLI"


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


def _starts_serving(argv: list[str], cwd: Path, env: dict[str, str]) -> str | None:
    """Start an agent, wait for its "serving" line, stop it: None, or what went wrong."""
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip
    assert proc.stdout is not None
    lines = []
    deadline = time.monotonic() + 30
    for line in proc.stdout:
        lines.append(line)
        if " serving " in line or time.monotonic() > deadline:
            break
    proc.terminate()
    rest = proc.communicate(timeout=30)[0]
    out = "".join(lines) + rest
    return None if proc.returncode == 0 and " serving " in out else out[-1500:]


def test_every_usage_command_runs(broker: LocalBroker, tmp_path: Path) -> None:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    agent: subprocess.Popen[bytes] | None = None
    ran, failures = [], []
    try:
        for command in usage_commands():
            if any(marker in command for marker in NOT_RUN):
                continue
            argv = _argv(command, broker)
            if command.startswith("edgewise agent --config"):
                # A second agent beside the background one: it must start and serve. The
                # config is the repository's (the scratch directory has no deploy/).
                argv = [str(ROOT / a) if a.startswith("deploy/") else a for a in argv]
                failure = _starts_serving([*argv, "--device", "readme-config"], tmp_path, env)
                ran.append(f"{'started' if failure is None else 'FAILED'}  {command}")
                if failure is not None:
                    failures.append(f"{command}\n{failure}")
                continue
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
