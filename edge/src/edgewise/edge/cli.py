"""Device-side commands: ``agent``, ``send``, ``watch``. They need only ``edgewise[edge]``.

Only argparse is imported here; each command imports what it runs when it runs.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edgewise.edge.core.config import AgentConfig

# Light (no NumPy, no paho): the defaults are defined once, with the topics.
from edgewise.edge.link.topics import DEFAULT_PREFIX
from edgewise.edge.remote.args import add_broker_arguments, connection_settings, endpoint_from_args


def _workers(value: str) -> int:
    if value == "auto":
        return max(1, os.cpu_count() or 1)
    try:
        count = int(value)
    except ValueError:
        count = 0
    if not 1 <= count <= 64:
        raise argparse.ArgumentTypeError(f"{value!r}: a number from 1 to 64, or auto")
    return count


def configure_agent(p: argparse.ArgumentParser) -> None:
    """Arguments of ``edgewise agent``."""
    p.add_argument(
        "--bundle",
        action="append",
        default=None,
        metavar="DIR",
        help="bundle directory to serve (repeat for several models)",
    )
    p.add_argument("--config", metavar="FILE", help="TOML config file (flags override it)")
    p.add_argument(
        "--trusted-key",
        action="append",
        default=None,
        metavar="FILE",
        help="serve only bundles signed by this Ed25519 public key (repeatable)",
    )
    p.add_argument(
        "--group",
        action="append",
        default=None,
        metavar="NAME",
        help="follow the roll-outs of this device group (repeatable; docs/fleet.md)",
    )
    p.add_argument(
        "--pool", default=None, metavar="NAME", help="also serve this device pool's requests"
    )
    p.add_argument(
        "--workers",
        type=_workers,
        default=None,
        metavar="N|auto",
        help="processes serving this device's requests (auto: one per CPU; MQTT 5)",
    )
    add_broker_arguments(p)
    p.add_argument(
        "--qos", type=int, choices=[0, 1], default=None, help="QoS of requests, answers (default 1)"
    )
    p.add_argument("--num-threads", type=int, default=None, help="runtime threads per model")
    p.add_argument("--queue-size", type=int, default=None, help="QoS 0 requests waiting at most")
    p.add_argument(
        "--state-dir",
        default=None,
        metavar="DIR",
        help="where the outbox lives (default $XDG_STATE_HOME/edgewise or ~/.local/state/edgewise)",
    )
    p.add_argument(
        "--no-outbox",
        dest="durable",
        action="store_false",
        default=None,
        help="no persistent session or on-disk outbox (lower latency; answers can be lost)",
    )
    p.add_argument(
        "--health-interval", type=float, default=None, help="seconds between health reports"
    )
    p.add_argument(
        "--check",
        action="store_true",
        help="validate the config (bundles loaded, streams checked against their models) "
        "and exit without connecting",
    )
    p.add_argument(
        "--probe",
        action="store_true",
        help="exit 0 when the agent running with this config is alive and connected, else 1 "
        "(a container's health check; it reads STATE_DIR/DEVICE.alive.json)",
    )
    p.set_defaults(run=run_agent)


def configure_send(p: argparse.ArgumentParser) -> None:
    """Arguments of ``edgewise send``."""
    add_broker_arguments(p)
    p.add_argument("--model", required=True, help="model name (as in its manifest)")
    p.add_argument("--pool", metavar="NAME", help="send to a device pool instead of --device")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--csv", metavar="FILE", help="rows to send, with a header")
    src.add_argument(
        "--npz",
        metavar="FILE",
        help="array x (instances, batch axis first) and optional labels y, sent as tensors",
    )
    p.add_argument(
        "--window",
        type=int,
        metavar="N",
        help="--csv of raw samples (a column per channel): cut into windows of N rows",
    )
    p.add_argument("--target", help="column with the true label, to print the accuracy")
    p.add_argument("--batch", type=int, default=1, help="rows per request (default 1)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for answers")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=run_send)


def configure_record(p: argparse.ArgumentParser) -> None:
    """Arguments of ``edgewise record``."""
    p.add_argument("--config", required=True, metavar="FILE", help="config with [[streams]]")
    p.add_argument("--stream", required=True, metavar="NAME", help="the stream to record")
    p.add_argument(
        "--out", required=True, metavar="PATH", help="a .csv (rows, samples) or a folder (images)"
    )
    label = p.add_mutually_exclusive_group(required=True)
    label.add_argument("--label", help="the label of everything recorded in this run")
    label.add_argument(
        "--label-topic", metavar="TOPIC", help="the label is the latest message on this topic"
    )
    p.add_argument(
        "--label-field", default="", metavar="PATH", help="where the label is in that message"
    )
    p.add_argument("--count", type=int, help="stop after this many records")
    p.add_argument("--duration", type=float, help="stop after this many seconds")
    add_broker_arguments(p, with_device=False)
    p.set_defaults(run=run_record)


def run_record(args: argparse.Namespace) -> int:
    from pathlib import Path

    from edgewise.edge.core.config import AgentConfig
    from edgewise.edge.errors import EdgewiseError
    from edgewise.edge.streams.record import record

    if args.count is not None and args.count < 1:
        raise EdgewiseError(f"--count {args.count}: use 1 or more")
    if args.duration is not None and not 0 < args.duration < 1e9:
        raise EdgewiseError(f"--duration {args.duration}: use a positive number of seconds")
    config = AgentConfig.from_toml(args.config).merged(
        broker=args.broker, prefix=args.prefix, protocol=args.protocol, **connection_settings(args)
    )
    record(
        config, args.stream, Path(args.out), args.label, args.label_topic, args.label_field,
        args.count, args.duration,
    )  # fmt: skip
    return 0


def configure_watch(p: argparse.ArgumentParser) -> None:
    """Arguments of ``edgewise watch``."""
    add_broker_arguments(p)
    p.add_argument("--count", type=int, help="exit after this many messages")
    p.add_argument("--timeout", type=float, help="exit after this many seconds")
    p.add_argument("--json", action="store_true", help="print raw JSON lines")
    p.set_defaults(run=run_watch)


def run_agent(args: argparse.Namespace) -> int:
    from edgewise.edge.app import run_agent as serve
    from edgewise.edge.core.config import AgentConfig

    base = AgentConfig.from_toml(args.config) if args.config else AgentConfig()
    config = base.merged(
        bundles=tuple(args.bundle) if args.bundle else None,
        trusted_keys=tuple(args.trusted_key) if args.trusted_key else None,
        groups=tuple(args.group) if args.group else None,
        pool=args.pool,
        workers=args.workers,
        broker=args.broker,
        **connection_settings(args),
        device=args.device,
        prefix=args.prefix,
        protocol=args.protocol,
        qos=args.qos,
        num_threads=args.num_threads,
        queue_size=args.queue_size,
        state_dir=args.state_dir,
        durable=args.durable,
        health_interval=args.health_interval,
    )
    if args.check:
        return check_agent(config)
    if args.probe:
        from edgewise.edge.core.health import probe

        problem = probe(config)
        print(f"unhealthy: {problem}" if problem else f"healthy: {config.device}")
        return 1 if problem else 0
    return serve(config)


def check_agent(config: AgentConfig) -> int:
    """``edgewise agent --check``: build the agent as it would start (bundles loaded and
    self-tested, streams checked against their models, programs found), print what it
    would serve, and exit 0; a problem is the usual one line (exit 2)."""
    from edgewise.edge.app import build_agent
    from edgewise.edge.link.endpoint import redact_url

    agent = build_agent(config)  # the link (and its outbox file) is made only on start
    models = ", ".join(f"{m.name} v{m.version}" for m in agent.models.values()) or "none"
    broker = redact_url(config.broker)
    print(f"config ok: device {config.device}, broker {broker}, models {models}")
    for s in config.streams:
        print(f"  stream {s.name}: {s.source} -> {s.assemble} -> {s.model} (publish {s.publish})")
    return 0


def run_send(args: argparse.Namespace) -> int:
    from edgewise.edge.errors import EdgewiseError
    from edgewise.edge.link.topics import Topics
    from edgewise.edge.remote.client import send
    from edgewise.edge.remote.send_data import csv_rows, csv_windows, npz_arrays

    if args.window is not None and not args.csv:
        raise EdgewiseError("--window goes with --csv FILE (raw samples, a column per channel)")
    if args.npz:
        plan = npz_arrays(args.npz)
    elif args.window is not None:
        plan = csv_windows(args.csv, args.window, args.target)
    else:
        plan = csv_rows(args.csv, args.target)
    if args.pool and args.device:
        raise EdgewiseError("--pool and --device: send to one or the other")
    from edgewise.edge.core.config import default_state_dir
    from edgewise.edge.core.device_id import default_device

    device = args.device or default_device(default_state_dir())[0]  # the local agent's default
    topics = Topics(args.prefix or DEFAULT_PREFIX, device, args.pool)
    result = send(
        endpoint_from_args(args),
        topics,
        args.model,
        plan,
        batch=args.batch,
        timeout=args.timeout,
        protocol=args.protocol or "auto",
        progress=not args.no_progress,
    )
    unit = "instances" if args.npz else "windows" if args.window else "rows"
    rate = result.answered / result.seconds if result.seconds else 0.0
    print(
        f"sent {result.sent} {unit}, {result.answered} answered "
        f"in {result.seconds:.2f}s ({rate:.0f} {unit}/s)"
    )
    if result.errors:
        print("errors: " + ", ".join(f"{code} x{n}" for code, n in result.errors.items()))
    if result.accuracy is not None:
        # Over what was sent: a held-out score only when the data was held out in training.
        print(
            f"accuracy on device over the {result.scored} labelled {unit} sent: "
            f"{result.accuracy:.4f} ({result.correct}/{result.scored})"
        )
    if result.answered + sum(result.errors.values()) < result.sent:
        print(f"{result.sent - result.answered - sum(result.errors.values())} {unit} unanswered")
    # Any error answer is a failure for scripts: the counts by code are printed above.
    return 0 if result.answered == result.sent else 1


def run_watch(args: argparse.Namespace) -> int:
    from edgewise.edge.remote.client import watch

    watch(
        endpoint_from_args(args),
        args.prefix or DEFAULT_PREFIX,
        args.device or "+",
        sys.stdout,
        count=args.count,
        timeout=args.timeout,
        as_json=args.json,
        protocol=args.protocol or "auto",
    )
    return 0
