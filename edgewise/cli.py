"""The ``edgewise`` command: a front door that mounts each package's subcommands.

The command modules import only argparse at import time; each subcommand imports its
libraries when it runs, so the device-side commands work with ``edgewise[edge]`` alone.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from converters import cli as converters_cli
from edge import cli as edge_cli
from edge.errors import EdgewiseError
from trainer import cli as trainer_cli

HOST_COMMANDS = {"train", "convert", "demo"}


def build_parser() -> argparse.ArgumentParser:
    """The full parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="edgewise",
        description="Train models on a host, convert them to edge bundles, serve them over MQTT.",
    )
    parser.add_argument("--log-level", default="warning",
                        choices=["debug", "info", "warning", "error"], help="default warning")  # fmt: skip
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    trainer_cli.register(sub)
    converters_cli.register(sub)
    edge_cli.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status. Errors are one line on stderr."""
    parser = build_parser()
    args = parser.parse_args(argv)
    level = "info" if args.command == "agent" and args.log_level == "warning" else args.log_level
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(args.run(args))
    except EdgewiseError as exc:
        print(f"edgewise {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except ModuleNotFoundError as exc:
        if args.command in HOST_COMMANDS:
            print(
                f"edgewise {args.command}: error: needs the host libraries ({exc.name} is missing): "
                "pip install 'edgewise[host]'",
                file=sys.stderr,
            )
            return 1
        raise
    except KeyboardInterrupt:
        return 130
