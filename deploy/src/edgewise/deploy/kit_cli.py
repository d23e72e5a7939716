"""``edgewise kit`` and ``edgewise identity``: a device's offline install kit, and the
operator's store of device identities (issue, re-issue, revoke, list, broker files).

Only argparse is imported at module level; docs/devices.md walks through both.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

_STORE_HELP = (
    "the operator's identity store "
    "(default $EDGEWISE_IDENTITY_STORE or ~/.local/share/edgewise/identities)"
)


def _default_store() -> str:
    return os.environ.get("EDGEWISE_IDENTITY_STORE") or str(
        Path.home() / ".local" / "share" / "edgewise" / "identities"
    )


def _default_source() -> str | None:
    """The checkout this code runs from, if it runs from one (an editable install)."""
    root = Path(__file__).resolve().parents[4]
    return str(root) if (root / "pyproject.toml").is_file() and (root / "edge").is_dir() else None


def configure_kit(p: argparse.ArgumentParser) -> None:
    """Arguments of ``edgewise kit``."""
    p.add_argument(
        "--platform", required=True, metavar="P", help="linux-x86_64, linux-aarch64 or linux-armv7l"
    )
    p.add_argument(
        "--python", required=True, metavar="X.Y", help="the device's CPython (3.10 .. 3.13)"
    )
    p.add_argument(
        "--device", default="", metavar="ID", help="the device's id (its MQTT user name)"
    )
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write the kit into")
    p.add_argument(
        "--broker", default="", metavar="URL", help="mqtts://HOST[:PORT] or wss://HOST/PATH"
    )
    p.add_argument(
        "--auth",
        default="password",
        choices=["password", "cert"],
        help="the device's identity (default password)",
    )
    p.add_argument("--reissue", action="store_true", help="the device has an identity: replace it")
    p.add_argument(
        "--bundle", action="append", default=[], metavar="DIR", help="a bundle to serve (repeat)"
    )
    p.add_argument(
        "--trusted-key",
        action="append",
        default=[],
        metavar="PUB",
        help="an operator public key the device trusts (repeat)",
    )
    p.add_argument(
        "--config", metavar="FILE", help="more agent settings (TOML; not the keys the kit writes)"
    )
    p.add_argument(
        "--extra", action="append", default=[], metavar="NAME", help="camera or serial (repeat)"
    )
    p.add_argument("--store", default=None, metavar="DIR", help=_STORE_HELP)
    p.add_argument(
        "--source",
        default=None,
        metavar="DIR",
        help="the edgewise checkout to build wheels from (default: this one)",
    )
    p.add_argument("--force", action="store_true", help="replace a non-empty --out")
    p.add_argument(
        "--sign-key",
        metavar="KEY",
        help="the operator's private key (edgewise keys new): sign the kit; install.sh checks "
        "it against the keys the device trusts",
    )
    p.add_argument(
        "--wheels-only",
        action="store_true",
        help="only the wheels and install.sh (for an image: config and identity are volumes)",
    )
    p.set_defaults(run=run_kit)


def run_kit(args: argparse.Namespace) -> int:
    from edgewise.deploy.kit import KitRequest, build, kit_size
    from edgewise.edge.errors import EdgewiseError

    source = args.source or _default_source()
    if source is None:
        raise EdgewiseError("--source: give the edgewise checkout to build the wheels from")
    req = KitRequest(
        platform=args.platform,
        python=args.python,
        device=args.device,
        out=Path(args.out),
        broker=args.broker,
        store=Path(args.store or _default_store()),
        source=Path(source),
        auth=args.auth,
        reissue=args.reissue,
        bundles=[Path(b) for b in args.bundle],
        trusted_keys=[Path(k) for k in args.trusted_key],
        config=Path(args.config) if args.config else None,
        extras=tuple(args.extra),
        force=args.force,
        wheels_only=args.wheels_only,
        sign_key=Path(args.sign_key) if args.sign_key else None,
    )
    started = time.monotonic()
    doc = build(req)
    size = kit_size(req.out) / 1e6
    print(
        f"kit for {doc['device'] or 'an image'} ({doc['platform']}, CPython {doc['python']}) "
        f"in {req.out}: "
        f"{len(doc['wheels'])} wheels, {size:.1f} MB, {time.monotonic() - started:.0f} s"
    )
    system = doc["system_packages"]
    if system:
        debs = " ".join(system.values())
        print(f"the device needs Debian's {debs} first (apt-get install {debs})")
    print(f"on the device: sudo sh {Path(args.out).name}/install.sh")
    return 0


def configure_identity(p: argparse.ArgumentParser) -> None:
    """Arguments of ``edgewise identity``."""
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    init = sub.add_parser("init", help="make the fleet CA and the broker's certificate")
    init.add_argument(
        "--server",
        action="append",
        default=[],
        metavar="NAME",
        help="the broker's host name or IP (repeat)",
    )
    issue = sub.add_parser(
        "issue", help="a new identity for a device (or operator, dashboard, exporter)"
    )
    reissue = sub.add_parser("reissue", help="replace an identity (the old one stops working)")
    for q in (issue, reissue):
        q.add_argument("name", metavar="ID")
        q.add_argument("--auth", default="password", choices=["password", "cert"])
        q.add_argument(
            "--out", required=True, metavar="DIR", help="where to write the secret (0600)"
        )
    revoke = sub.add_parser(
        "revoke", help="lock a device out (then: broker-files, reload the broker)"
    )
    revoke.add_argument("name", metavar="ID")
    sub.add_parser("list", help="the identities and their state")
    files = sub.add_parser(
        "broker-files", help="write passwd, acl, crl.pem and certificates for Mosquitto"
    )
    files.add_argument("--out", required=True, metavar="DIR")
    files.add_argument(
        "--acl",
        default=None,
        metavar="FILE",
        help="the base ACL (default deploy/mosquitto/acl of the checkout)",
    )
    for q in sub.choices.values():
        q.add_argument("--store", default=None, metavar="DIR", help=_STORE_HELP)
    p.set_defaults(run=run_identity)


def run_identity(args: argparse.Namespace) -> int:
    from edgewise.deploy.identity import IdentityStore, write_private
    from edgewise.edge.errors import EdgewiseError

    store = IdentityStore(args.store or _default_store())
    if args.action == "init":
        made = store.init(args.server)
        what = "made" if made else "kept"
        print(f"{what} the CA and broker certificate in {store.dir} (ca.key 0600: keep it here)")
    elif args.action in ("issue", "reissue"):
        issued = store.issue(args.name, args.auth, reissue=args.action == "reissue")
        out = Path(args.out)
        if issued.password is not None:
            write_private(out / f"{args.name}.password", issued.password.encode())
            written = out / f"{args.name}.password"
        else:
            assert issued.cert_pem is not None and issued.key_pem is not None
            out.mkdir(parents=True, exist_ok=True)
            (out / f"{args.name}.crt").write_bytes(issued.cert_pem)
            write_private(out / f"{args.name}.key", issued.key_pem)
            written = out / f"{args.name}.key"
        print(f"{args.action}d {args.auth} identity of {args.name}: {written} (0600)")
        print("then: edgewise identity broker-files --out DIR, and reload the broker")
    elif args.action == "revoke":
        store.revoke(args.name)
        print(f"revoked {args.name}: run `edgewise identity broker-files` and reload the broker")
    elif args.action == "list":
        for identity in store.load().values():
            state = f"revoked {identity.revoked}" if identity.revoked else "active"
            print(f"{identity.name}\t{identity.kind}\tissued {identity.issued}\t{state}")
    else:
        acl = args.acl
        if acl is None:
            source = _default_source()
            if source is None:
                raise EdgewiseError("--acl: give the base ACL (deploy/mosquitto/acl of edgewise)")
            acl = str(Path(source) / "deploy" / "mosquitto" / "acl")
        files = store.broker_files(args.out, acl)
        print(f"wrote {', '.join(p.name for p in files)} and server.key (0600) to {args.out}")
    return 0
