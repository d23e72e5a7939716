"""The ``edgewise`` command: a front door that mounts each package's subcommands lazily.

Only the module of the command being run is imported (``edge.cli`` for ``agent``), and
the command modules import their libraries when they run, so the device-side commands
work with ``edgewise[edge]`` alone and never load the host packages.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

# command -> (module, help); the module has configure_<command>(parser).
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("edgewise.trainer.cli", "train a model and write its edge bundle"),
    "convert": ("edgewise.converters.cli", "convert a saved host model into an edge bundle"),
    "compare": (
        "edgewise.trainer.compare_cli",
        "classical vs deep candidates measured on your data",
    ),
    "demo": (
        "edgewise.trainer.cli",
        "train, convert, serve and query a model over MQTT, end to end",
    ),
    "examples": ("edgewise.trainer.cli", "write the example data the README's commands use"),
    "agent": ("edgewise.edge.cli", "serve bundles over MQTT on this device"),
    "send": ("edgewise.edge.cli", "publish rows, windows or arrays as requests; collect answers"),
    "watch": ("edgewise.edge.cli", "print predictions and errors as they arrive"),
    "record": (
        "edgewise.edge.cli",
        "write a stream's samples as labelled training data (CSV or image folder)",
    ),
    "exporter": ("edgewise.monitor.cli", "serve the fleet's health as Prometheus metrics"),
    "dashboard": ("edgewise.monitor.cli", "a live web page of the fleet"),
    "keys": ("edgewise.edge.remote.signing_cli", "make an Ed25519 key pair for signing bundles"),
    "sign": (
        "edgewise.edge.remote.signing_cli",
        "sign a bundle (agents with --trusted-key check it)",
    ),
    "deploy": ("edgewise.edge.remote.fleet_cli", "roll a signed bundle out to devices over MQTT"),
    "rollback": ("edgewise.edge.remote.fleet_cli", "put a device back on an earlier version"),
    "promote": ("edgewise.edge.remote.fleet_cli", "make a shadow version the active one"),
    "undeploy": ("edgewise.edge.remote.fleet_cli", "remove a model from devices"),
    "fleet": (
        "edgewise.edge.remote.fleet_status_cli",
        "devices and models: desired vs reported state; unpin, forget",
    ),
    "kit": (
        "edgewise.deploy.kit_cli",
        "an offline install kit for one device: wheels, config, identity, install.sh",
    ),
    "identity": (
        "edgewise.deploy.kit_cli",
        "device identities (passwords, client certificates): issue, revoke, broker files",
    ),
    "roster": (
        "edgewise.edge.remote.roster_cli",
        "the operator's signed roster of groups and pools",
    ),
    "bundles": ("edgewise.edge.remote.fleet_cli", "bundles on the broker (gc: clear unused ones)"),
    "capture": (
        "edgewise.edge.remote.capture_cli",
        "pull a device's captured samples to label them",
    ),
}
HOST_COMMANDS = {"train", "convert", "compare", "demo", "examples"}
# The extra each command needs beyond `edgewise[edge]`, named when its library is missing.
EXTRAS = dict.fromkeys(HOST_COMMANDS, "host") | {"exporter": "monitor", "dashboard": "monitor"}
# The parts each extra installs: distributions of their own, not on a package index yet.
PARTS = {
    "host": "./edge ./deploy ./converters ./trainer",
    "monitor": "./edge ./monitor",
    "edge": "./edge ./deploy",
}


def _command_in(argv: Sequence[str]) -> str | None:
    """The subcommand named in argv, skipping the global options."""
    skip = False
    for token in argv:
        if skip:
            skip = False
        elif token == "--log-level":
            skip = True
        elif not token.startswith("-"):
            return token if token in COMMANDS else None
    return None


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("edgewise")
    except PackageNotFoundError:  # run from a checkout that is not installed
        return "unknown (not installed)"


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only ``command``'s arguments are loaded (all names are listed)."""
    parser = argparse.ArgumentParser(
        prog="edgewise",
        description="Train models on a host, convert them to edge bundles, serve them over MQTT.",
    )
    parser.add_argument("--version", action="version", version=f"edgewise {_version()}")
    parser.add_argument(
        "--log-level",
        default="warning",
        choices=["debug", "info", "warning", "error"],
        help="default warning",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:
            getattr(importlib.import_module(module), f"configure_{name}")(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status. Errors are one line on stderr."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # TensorFlow reads its C++ log level once, at import, and a command's parser may import
    # it: set it before any parser is built. `--verbose` / `--log-level debug` keep its
    # banners (absl, oneDNN, XLA) for whoever is chasing a problem in them.
    command = _command_in(argv)
    if command in HOST_COMMANDS and not {"-v", "--verbose", "debug"} & set(argv):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        from edgewise.edge.runtime.native_stderr import without_native_banners

        with without_native_banners():
            return _run(argv, command)
    return _run(argv, command)


def _run(argv: list[str], command: str | None) -> int:
    args = build_parser(command).parse_args(argv)
    level = "info" if args.command == "agent" and args.log_level == "warning" else args.log_level
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    from edgewise.edge.errors import EdgewiseError

    _warn_password_in_url(args)
    try:
        return int(args.run(args))
    except EdgewiseError as exc:  # library options are named as the flags the user typed
        print(f"edgewise {args.command}: error: {exc.cli_message()}", file=sys.stderr)
        return 1
    except ModuleNotFoundError as exc:
        if args.command in EXTRAS:
            extra = EXTRAS[args.command]
            print(
                f"edgewise {args.command}: error: needs the {extra} libraries "
                f"({exc.name} is missing): from the checkout, pip install -c "
                f"constraints.txt {PARTS[extra]} '.[{extra}]' (docs/devices.md)",
                file=sys.stderr,
            )
            return 1
        raise
    except KeyboardInterrupt:
        return 130


def _warn_password_in_url(args: argparse.Namespace) -> None:
    """A password in --broker is on the command line, which every user of the machine
    reads in `ps` and which lands in shell history: one warning line (never the password)."""
    from urllib.parse import urlsplit

    url = getattr(args, "broker", None)
    try:
        has_password = bool(isinstance(url, str) and urlsplit(url).password)
    except ValueError:
        return  # a malformed URL gets its own error later
    if has_password:
        print(
            f"edgewise {args.command}: warning: the --broker URL holds a password, which "
            "other users of this machine see in `ps`; use --password-file FILE or "
            "EDGEWISE_MQTT_PASSWORD instead",
            file=sys.stderr,
        )
