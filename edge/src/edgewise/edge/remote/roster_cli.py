"""``edgewise roster publish | show | acl``: the operator's roster of groups and pools.

Only the edge extra: paho (through ``edge.remote.fleet_client``) and cryptography.
docs/fleet.md#roster.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from edgewise.edge.link.topics import DEFAULT_PREFIX
from edgewise.edge.remote.args import add_broker_arguments

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


def configure_roster(p: argparse.ArgumentParser) -> None:
    """Arguments of ``edgewise roster``."""
    from edgewise.edge.remote.fleet_cli import signing_key_argument

    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    publish = sub.add_parser("publish", help="sign the roster file and retain it on the broker")
    publish.add_argument("file", metavar="ROSTER", help="the roster (TOML: [groups], [pools])")
    add_broker_arguments(publish, with_device=False)
    signing_key_argument(publish)
    show = sub.add_parser("show", help="the roster on the broker, if a trusted key signed it")
    add_broker_arguments(show, with_device=False)
    show.add_argument(
        "--trusted-key", action="append", metavar="FILE", help="an operator public key "
        "(repeatable; default: the public half of --key or $EDGEWISE_SIGNING_KEY)",
    )  # fmt: skip
    signing_key_argument(show)
    acl = sub.add_parser("acl", help="print the broker ACL lines of the roster's pools")
    acl.add_argument("file", metavar="ROSTER")
    acl.add_argument("--prefix", default=None, help="topic prefix (default edgewise)")
    acl.add_argument(
        "--base", metavar="ACL", help="print this ACL file first (e.g. deploy/mosquitto/acl)"
    )
    acl.add_argument("--out", metavar="FILE", help="write it here (default: standard output)")
    p.set_defaults(run=run_roster)


def run_roster(args: argparse.Namespace) -> int:
    import contextlib
    import time
    from pathlib import Path

    from edgewise.edge.errors import EdgewiseError
    from edgewise.edge.remote.fleet_cli import fleet_link, say, signing_key
    from edgewise.edge.remote.roster import Roster

    prefix = args.prefix or DEFAULT_PREFIX
    if args.action == "acl":
        roster = Roster.load(args.file)
        text = roster.acl(prefix)
        if args.base:
            try:
                text = Path(args.base).read_text(encoding="utf-8").rstrip("\n") + "\n\n" + text
            except OSError as exc:
                raise EdgewiseError(f"--base {args.base}: {exc.strerror or exc}") from None
        if args.out is None:
            print(text, end="")
            return 0
        out = Path(args.out)
        try:  # whole or not at all: the broker may read it at any time
            out.with_name(out.name + ".tmp").write_text(text, encoding="utf-8")
            out.with_name(out.name + ".tmp").replace(out)
        except OSError as exc:
            raise EdgewiseError(f"--out {args.out}: {exc.strerror or exc}") from None
        say(f"wrote {out}: {sum(len(m) for m in roster.pools.values())} pool membership(s)")
        return 0
    if args.action == "publish":
        roster = Roster.load(args.file)  # a bad file goes nowhere, before any connection
        key = signing_key(args)
        link = fleet_link(args, [f"{prefix}/fleet/roster"])
        try:
            link.settle()
            last = -1
            if payload := link.retained.get(link.fleet.roster):
                # (An unreadable roster says nothing about sequences.)
                with contextlib.suppress(EdgewiseError):
                    last = Roster.parse(payload).seq or -1
            doc = roster.signed(max(time.time_ns() // 1000, last + 1), key)
            link.publish([(link.fleet.roster, doc.to_json())])
        finally:
            link.close()
        say(f"roster published: {len(roster.groups)} group(s), {len(roster.pools)} pool(s)")
        return 0
    trusted = _trusted(args)
    link = fleet_link(args, [f"{prefix}/fleet/roster"])
    try:
        link.settle()
        roster = Roster.published(link.retained, link.fleet.roster, trusted)
    finally:
        link.close()
    for kind, table in (("group", roster.groups), ("pool", roster.pools)):
        for name, devices in sorted(table.items()):
            say(f"{kind} {name}: {', '.join(devices)}")
    return 0


def _trusted(args: argparse.Namespace) -> list[Ed25519PublicKey]:
    from edgewise.edge.remote.fleet_cli import signing_key
    from edgewise.edge.runtime.signing import load_public_key

    if args.trusted_key:
        return [load_public_key(p) for p in args.trusted_key]
    return [signing_key(args).public_key()]
