"""``edgewise exporter``: serve the fleet's health on /metrics. Only argparse at import."""

from __future__ import annotations

import argparse
from contextlib import AbstractContextManager

from edgewise.edge.link.topics import DEFAULT_PREFIX
from edgewise.edge.remote.args import add_broker_arguments, endpoint_from_args

DEFAULT_PORT = 9108


def configure_exporter(p: argparse.ArgumentParser) -> None:
    """Arguments of ``edgewise exporter``."""
    add_broker_arguments(p, with_device=False)
    p.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"HTTP port (default {DEFAULT_PORT})"
    )
    p.add_argument("--bind", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.set_defaults(run=run_exporter)


def _check_port(port: int) -> None:
    from edgewise.edge.errors import EdgewiseError

    if not 1 <= port <= 65535:
        raise EdgewiseError(f"--port {port}: use 1..65535")


def _serve_until_stopped(server: AbstractContextManager[str]) -> int:
    """Enter a server (it yields its URL) and serve until SIGTERM/SIGINT."""
    from edgewise.edge.core.supervision import stop_on_signals

    stop = stop_on_signals()
    with server as url:
        print(f"serving {url} (Ctrl-C stops)", flush=True)
        while not stop.wait(1.0):
            pass
    return 0


def run_exporter(args: argparse.Namespace) -> int:
    from edgewise.monitor.serve import serve_exporter

    _check_port(args.port)
    return _serve_until_stopped(serve_exporter(
        endpoint_from_args(args), args.prefix or DEFAULT_PREFIX, args.bind, args.port,
        args.protocol or "auto",
    ))  # fmt: skip


def configure_dashboard(p: argparse.ArgumentParser) -> None:
    """Arguments of ``edgewise dashboard``."""
    add_broker_arguments(p, with_device=False)
    p.add_argument("--port", type=int, default=8080, help="HTTP port (default 8080)")
    p.add_argument("--bind", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument(
        "--token-file",
        metavar="FILE",
        help="token required from browsers (also $EDGEWISE_DASHBOARD_TOKEN); needed with --bind "
        "other than loopback",
    )
    p.add_argument(
        "--allow-host", action="append", default=[], metavar="NAME",
        help="a Host name browsers use to reach it besides --bind (repeatable), e.g. the "
        "machine's DNS name; other Host headers are refused (DNS rebinding)",
    )  # fmt: skip
    p.set_defaults(run=run_dashboard)


def run_dashboard(args: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    from edgewise.edge.errors import EdgewiseError
    from edgewise.monitor.dashboard import serve_dashboard

    _check_port(args.port)
    token = os.environ.get("EDGEWISE_DASHBOARD_TOKEN") or None
    if args.token_file:
        try:
            token = Path(args.token_file).read_text(encoding="utf-8").strip() or None
        except OSError as exc:
            raise EdgewiseError(f"--token-file {args.token_file}: {exc.strerror}") from None
    return _serve_until_stopped(serve_dashboard(
        endpoint_from_args(args), args.prefix or DEFAULT_PREFIX, args.bind, args.port, token,
        args.protocol or "auto", tuple(args.allow_host),
    ))  # fmt: skip
