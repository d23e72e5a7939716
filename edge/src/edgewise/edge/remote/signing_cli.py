"""``edgewise keys new`` and ``edgewise sign``: signing keys and signed bundles.

They need only the edge extra (``cryptography`` is in it), so a release machine without
the host libraries can sign. Only argparse is imported here.
"""

from __future__ import annotations

import argparse


def configure_keys(p: argparse.ArgumentParser) -> None:
    """Arguments of ``edgewise keys``."""
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    new = sub.add_parser("new", help="write a new Ed25519 key pair (private key mode 0600)")
    new.add_argument("--out", required=True, metavar="DIR", help="directory for the key files")
    p.set_defaults(run=run_keys)


def configure_sign(p: argparse.ArgumentParser) -> None:
    """Arguments of ``edgewise sign``."""
    p.add_argument("bundle", metavar="BUNDLE", help="bundle directory to sign")
    p.add_argument("--key", required=True, metavar="FILE", help="private key (edgewise keys new)")
    p.set_defaults(run=run_sign)


def run_keys(args: argparse.Namespace) -> int:
    from edgewise.edge.runtime.signing import generate_keys, key_id, load_public_key

    private, public = generate_keys(args.out)
    print(f"private key {private} (mode 0600: keep it off devices)")
    print(f"public key  {public} (key id {key_id(load_public_key(public))}: give it to agents)")
    return 0


def run_sign(args: argparse.Namespace) -> int:
    from edgewise.edge.runtime.bundle import load_bundle
    from edgewise.edge.runtime.signing import key_id, load_private_key, sign_bundle

    bundle = load_bundle(args.bundle)  # only a valid bundle is signed
    key = load_private_key(args.key)
    path = sign_bundle(bundle.path, key)
    print(f"signed {bundle.name} v{bundle.version} with key {key_id(key.public_key())}: {path}")
    return 0
