"""``edgewise fleet``: the table of desired vs reported state, ``fleet unpin`` and
``fleet forget`` (docs/fleet.md). Needs only ``edgewise[edge]``; the reading of the
retained state is ``edge.remote.fleet_status``.
"""

from __future__ import annotations

import argparse
import sys

from edgewise.edge.link.topics import DEFAULT_PREFIX
from edgewise.edge.remote.args import add_broker_arguments
from edgewise.edge.remote.fleet_cli import fleet_link, say


def configure_fleet(p: argparse.ArgumentParser) -> None:
    """Arguments of ``edgewise fleet``."""
    p.add_argument(
        "action", nargs="?", default="show", choices=["show", "unpin", "forget"],
        help="show (default): desired vs reported per device and model; unpin DEVICE "
        "--model M: clear a device-level desired state so its groups' applies; forget "
        "DEVICE: clear a decommissioned device's retained topics",
    )  # fmt: skip
    p.add_argument("device", nargs="?", metavar="DEVICE", help="with unpin and forget")
    p.add_argument("--model", help="with unpin: the model whose pin goes")
    p.add_argument("--force", action="store_true", help="forget a device that reads online")
    add_broker_arguments(p, with_device=False)
    p.set_defaults(run=run_fleet)


def run_fleet(args: argparse.Namespace) -> int:
    from edgewise.edge.errors import EdgewiseError
    from edgewise.edge.remote.fleet_status import FLEET_HEAD, fleet_rows

    if args.action != "show" and not args.device:
        raise EdgewiseError(f"fleet {args.action} needs a DEVICE")
    if args.action == "unpin" and not args.model:
        raise EdgewiseError("fleet unpin DEVICE needs --model NAME")
    prefix = args.prefix or DEFAULT_PREFIX
    if args.action == "unpin":
        return _unpin(args, prefix)
    if args.action == "forget":
        return _forget(args, prefix)
    filters = [f"{prefix}/+/status", f"{prefix}/+/health", f"{prefix}/+/+/deployment",
               f"{prefix}/+/+/shadow", f"{prefix}/fleet/devices/+/+",
               f"{prefix}/fleet/groups/+/+"]  # fmt: skip
    link = fleet_link(args, filters)
    try:
        rows = fleet_rows(link.settle(), prefix)
    finally:
        link.close()
    widths = [max(len(r[i]) for r in [FLEET_HEAD, *rows]) for i in range(len(FLEET_HEAD))]
    for row in [FLEET_HEAD, *rows]:
        sys.stdout.write("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() + "\n")
    if not rows:
        print(f"no device has reported under {prefix}/")
    return 0


def _unpin(args: argparse.Namespace, prefix: str) -> int:
    from edgewise.edge.errors import EdgewiseError
    from edgewise.edge.link.fleet_topics import Target
    from edgewise.edge.remote.fleet_client import clear

    link = fleet_link(args, [f"{prefix}/fleet/devices/{args.device}/{args.model}"])
    try:
        topic = link.fleet.desired(Target("devices", args.device, args.model))
        if topic not in link.settle():
            raise EdgewiseError(f"{args.device} has no device-level desired state for {args.model}")
        clear(link, [topic])
    finally:
        link.close()
    say(f"{args.device}: {args.model} follows its groups' desired state again")
    return 0


def _forget(args: argparse.Namespace, prefix: str) -> int:
    from edgewise.edge.errors import EdgewiseError
    from edgewise.edge.remote.fleet_client import clear
    from edgewise.edge.remote.fleet_status import device_topics

    link = fleet_link(
        args, [f"{prefix}/{args.device}/#", f"{prefix}/fleet/devices/{args.device}/+"]
    )
    try:
        retained = link.settle()
        status = retained.get(f"{prefix}/{args.device}/status", b"").decode("utf-8", "replace")
        if status == "online" and not args.force:
            raise EdgewiseError(
                f"{args.device} reads online: stop its agent first (it would publish its "
                "topics again), or pass --force"
            )
        topics = device_topics(retained, prefix, args.device)
        if not topics:
            raise EdgewiseError(f"nothing is retained for {args.device} under {prefix}/")
        clear(link, topics)
    finally:
        link.close()
    say(f"{args.device}: cleared {len(topics)} retained topic(s); monitors drop it")
    return 0
