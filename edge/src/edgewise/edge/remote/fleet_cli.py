"""Fleet commands: ``deploy``, ``rollback``, ``promote``, ``undeploy``, ``fleet``, ``bundles``.

They need only ``edgewise[edge]``; each imports what it runs when it runs (docs/fleet.md).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from edgewise.edge.link.topics import DEFAULT_PREFIX
from edgewise.edge.remote.args import add_broker_arguments, endpoint_from_args

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from edgewise.edge.remote.fleet_client import FleetLink, Why


def signing_key_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--key", metavar="FILE", help="the operator's private key that signs desired states "
        "(edgewise keys new; default $EDGEWISE_SIGNING_KEY): devices take signed ones only",
    )  # fmt: skip


def signing_key(args: argparse.Namespace) -> Ed25519PrivateKey:
    import os

    from edgewise.edge.errors import EdgewiseError
    from edgewise.edge.runtime.signing import load_private_key

    path = args.key or os.environ.get("EDGEWISE_SIGNING_KEY")
    if not path:
        raise EdgewiseError(
            f"{args.command} needs --key FILE (the operator's private key, from edgewise keys "
            "new) or $EDGEWISE_SIGNING_KEY: devices take signed desired states only"
        )
    return load_private_key(path)


def _targets(p: argparse.ArgumentParser) -> None:
    add_broker_arguments(p, with_device=False)
    signing_key_argument(p)
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--device", action="append", metavar="ID", help="a device (repeatable)")
    where.add_argument("--group", metavar="NAME", help="every device of a group")
    p.add_argument("--wait", action="store_true", help="follow the devices until done")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds --wait waits")


def configure_deploy(p: argparse.ArgumentParser) -> None:
    """Arguments of ``edgewise deploy``."""
    p.add_argument("bundle", metavar="BUNDLE", help="a signed bundle directory")
    _targets(p)
    p.add_argument("--canary", type=int, metavar="N", help="with --group: N devices first")
    p.add_argument("--shadow", action="store_true", help="run beside the active version")
    p.set_defaults(run=run_deploy)


def configure_rollback(p: argparse.ArgumentParser) -> None:
    """Arguments of ``edgewise rollback``."""
    add_broker_arguments(p, with_device=False)
    signing_key_argument(p)
    p.add_argument("--device", required=True, metavar="ID")
    p.add_argument("--model", required=True)
    p.add_argument("--to", metavar="VERSION", help="default: the version before the active")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the device")
    p.set_defaults(run=run_rollback)


def configure_promote(p: argparse.ArgumentParser) -> None:
    """Arguments of ``edgewise promote``."""
    p.add_argument("--model", required=True)
    _targets(p)
    p.set_defaults(run=run_promote)


def configure_undeploy(p: argparse.ArgumentParser) -> None:
    """Arguments of ``edgewise undeploy``."""
    p.add_argument("--model", required=True)
    _targets(p)
    p.set_defaults(run=run_undeploy)


def configure_bundles(p: argparse.ArgumentParser) -> None:
    """Arguments of ``edgewise bundles``."""
    p.add_argument("action", choices=["gc"], help="gc: clear bundles no desired state names")
    add_broker_arguments(p, with_device=False)
    p.add_argument("--dry-run", action="store_true", help="list them, clear nothing")
    p.set_defaults(run=run_bundles)


def say(line: str) -> None:
    """One line of a fleet command's progress, on stdout at once."""
    print(line, flush=True)


def fleet_link(args: argparse.Namespace, filters: list[str]) -> FleetLink:
    """An operator connection from the broker flags, subscribed to ``filters``."""
    from edgewise.edge.remote.fleet_client import FleetLink

    prefix = args.prefix or DEFAULT_PREFIX
    return FleetLink(endpoint_from_args(args), prefix, args.protocol or "auto", filters)


def _watch_filters(prefix: str, model: str) -> list[str]:
    # Status, health and pins too: to say why a device does not follow.
    return [f"{prefix}/+/health", f"{prefix}/+/status", f"{prefix}/+/{model}/deployment",
            f"{prefix}/fleet/+/+/{model}", f"{prefix}/fleet/roster"]  # fmt: skip


def _why(link: FleetLink, model: str, deployment: str, group: str | None) -> Why:
    from edgewise.edge.remote.fleet_status import waiting_reason

    return lambda device: waiting_reason(
        link.retained, link.prefix, device, model, deployment, group
    )


def _devices(link: FleetLink, args: argparse.Namespace) -> list[str]:
    """The devices to follow: those named, or the group's members that report health,
    from the signed roster when there is one (else from what devices say of themselves)."""
    from edgewise.edge.errors import EdgewiseError
    from edgewise.edge.remote.roster import Roster

    if args.device:
        return list(args.device)
    claimed = link.members(args.group)
    if link.retained.get(link.fleet.roster):
        roster = Roster.published(
            link.retained, link.fleet.roster, [signing_key(args).public_key()]
        )
        members = [d for d in roster.members(args.group) if d in claimed]
    else:
        members = claimed
    if not members and args.wait:
        raise EdgewiseError(
            f"no device of group {args.group!r} has reported health; the desired state is "
            "retained and devices that join converge when they come online"
        )
    return members


def _follow_if_asked(link: FleetLink, args: argparse.Namespace, deployment: str, model: str) -> int:
    """With --wait: follow the targets until done; the exit status (1: a device failed)."""
    from edgewise.edge.remote.fleet_client import Progress, follow

    if not args.wait:
        return 0
    progress = Progress(deployment, model, _devices(link, args))
    why = _why(link, model, deployment, args.group)
    return 0 if follow(link, progress, args.timeout, say, why) else 1


def run_deploy(args: argparse.Namespace) -> int:
    from edgewise.edge.errors import EdgewiseError
    from edgewise.edge.remote.fleet_client import (
        desired_targets,
        publish_bundle,
        set_desired,
    )
    from edgewise.edge.runtime.bundle import load_bundle
    from edgewise.edge.runtime.desired import Desired
    from edgewise.edge.runtime.signing import SIGNATURE_NAME
    from edgewise.edge.runtime.transfer import pack

    if args.canary is not None and (args.group is None or args.canary < 1):
        raise EdgewiseError("--canary N takes N >= 1 and goes with --group")
    key = signing_key(args)
    bundle = load_bundle(args.bundle)  # a bundle that does not load goes nowhere
    if not (bundle.path / SIGNATURE_NAME).is_file():
        raise EdgewiseError(
            f"{args.bundle} is not signed; devices take signed bundles only: "
            f"edgewise sign {args.bundle} --key KEY"
        )
    index, blob = pack(bundle.path)
    model = index.model
    prefix = args.prefix or DEFAULT_PREFIX
    link = fleet_link(args, _watch_filters(prefix, model))
    try:
        link.settle()
        publish_bundle(link, index, blob)
        mode = "shadow" if args.shadow else "active"
        want = Desired.new(model, index.sha256, index.version, mode)
        say(f"published {model} v{index.version} ({index.size} bytes, {len(index.chunks)} "
             f"chunks) as {index.sha256[:16]}; deployment {want.id}")  # fmt: skip
        if args.canary is not None:
            from edgewise.edge.remote.canary import run_canary
            from edgewise.edge.remote.roster import Roster

            roster = Roster.published(link.retained, link.fleet.roster, [key.public_key()])
            return run_canary(
                link, roster, args.group, args.canary, want, key, bundle, args.timeout, say
            )
        set_desired(link, desired_targets(model, args.device or [], args.group), want, key)
        return _follow_if_asked(link, args, want.id, model)
    finally:
        link.close()


def _current_desired(link: FleetLink, args: argparse.Namespace) -> list[tuple[Any, bytes]]:
    from edgewise.edge.remote.fleet_client import desired_targets

    targets = desired_targets(args.model, args.device or [], args.group)
    return [(t, link.retained.get(link.fleet.desired(t), b"")) for t in targets]


def run_promote(args: argparse.Namespace) -> int:
    from edgewise.edge.errors import EdgewiseError
    from edgewise.edge.remote.fleet_client import set_desired
    from edgewise.edge.runtime.desired import Desired

    key = signing_key(args)
    prefix = args.prefix or DEFAULT_PREFIX
    link = fleet_link(args, _watch_filters(prefix, args.model))
    try:
        link.settle()
        items = []
        for target, payload in _current_desired(link, args):
            topic = link.fleet.desired(target)
            if not payload:
                raise EdgewiseError(f"{topic}: no desired state to promote")
            old = Desired.parse(payload)
            if old.mode != "shadow" or old.bundle is None:
                raise EdgewiseError(f"{topic}: v{old.version} is not in shadow mode")
            items.append((target, old))
        want = Desired.new(args.model, items[0][1].bundle, items[0][1].version, "active")
        for target, old in items:  # each its own target and sequence, signed afresh
            set_desired(
                link, [target], old.model_copy(update={"mode": "active", "id": want.id}), key
            )
        say(f"promoting {args.model}: deployment {want.id}")
        return _follow_if_asked(link, args, want.id, args.model)
    finally:
        link.close()


def run_undeploy(args: argparse.Namespace) -> int:
    from edgewise.edge.remote.fleet_client import desired_targets, set_desired
    from edgewise.edge.runtime.desired import Desired

    key = signing_key(args)
    prefix = args.prefix or DEFAULT_PREFIX
    link = fleet_link(args, _watch_filters(prefix, args.model))
    try:
        link.settle()
        want = Desired.new(args.model, None)
        targets = desired_targets(args.model, args.device or [], args.group)
        set_desired(link, targets, want, key)
        say(f"undeploying {args.model}: deployment {want.id}")
        return _follow_if_asked(link, args, want.id, args.model)
    finally:
        link.close()


def run_rollback(args: argparse.Namespace) -> int:
    import json

    from edgewise.edge.errors import EdgewiseError
    from edgewise.edge.link.fleet_topics import Target
    from edgewise.edge.remote.fleet_client import Progress, follow, set_desired
    from edgewise.edge.runtime.desired import Desired

    key = signing_key(args)
    prefix = args.prefix or DEFAULT_PREFIX
    device = args.device[0] if isinstance(args.device, list) else args.device
    link = fleet_link(args, _watch_filters(prefix, args.model))
    try:
        link.settle()
        raw = link.retained.get(f"{prefix}/{device}/{args.model}/deployment")
        try:
            doc = json.loads(raw) if raw else {}
        except (ValueError, RecursionError):
            doc = {}
        # The device's own document: kept versions with a version and a bundle hash only.
        history = doc.get("history") if isinstance(doc, dict) else None
        kept = [
            h for h in (history if isinstance(history, list) else [])[:20]
            if isinstance(h, dict) and isinstance(h.get("version"), str)
            and isinstance(h.get("bundle"), str) and len(h["bundle"]) == 64
        ]  # fmt: skip
        history = kept
        pick = [h for h in history if args.to is None or h.get("version") == args.to]
        if not pick:
            have = ", ".join(f"v{h.get('version')}" for h in history) or "none"
            raise EdgewiseError(
                f"{device} keeps no {'earlier version' if args.to is None else 'v' + args.to} "
                f"of {args.model} to roll back to (kept: {have})"
            )
        want = Desired.new(args.model, pick[0]["bundle"], pick[0]["version"])
        want = want.model_copy(update={"rollback": True})  # an older version, on purpose
        set_desired(link, [Target("devices", device, args.model)], want, key)
        say(f"{device}: rolling {args.model} back to v{want.version}; deployment {want.id}")
        progress = Progress(want.id, args.model, [device])
        ok = follow(link, progress, args.timeout, say, _why(link, args.model, want.id, None))
        return 0 if ok else 1
    finally:
        link.close()


def run_bundles(args: argparse.Namespace) -> int:
    from edgewise.edge.remote.fleet_client import clear, unreferenced_bundles

    prefix = args.prefix or DEFAULT_PREFIX
    # Desired states and indexes only: the chunks themselves are not read.
    filters = [f"{prefix}/fleet/devices/+/+", f"{prefix}/fleet/groups/+/+",
               f"{prefix}/fleet/bundles/+/index"]  # fmt: skip
    link = fleet_link(args, filters)
    try:
        stale = unreferenced_bundles(link.settle(limit=30.0), link.fleet)
        for index in stale:
            topics = [link.fleet.chunk(index.sha256, i) for i in range(len(index.chunks))]
            say(f"{'would clear' if args.dry_run else 'clearing'} {index.model} "
                 f"v{index.version} {index.sha256[:16]} ({len(topics)} chunks)")  # fmt: skip
            if not args.dry_run:
                clear(link, [*topics, link.fleet.index(index.sha256)])
        say(f"{len(stale)} bundle(s) no desired state names")
    finally:
        link.close()
    return 0
