"""Ed25519 signatures over a bundle: who made it, and that nothing in it changed since.

``signature.json`` next to the manifest lists the sha256 of every other file in the
bundle (manifest, model, self-test data) and an Ed25519 signature over that list. The
manifest holds the model's sha256 too, so the model is covered twice. An agent given
``trusted_keys`` serves only bundles signed by one of them, and says why it refuses one:
unsigned, signed by an unknown key, a bad signature, a changed, missing or extra file.

Keys are PEM files (PKCS#8 private, SubjectPublicKeyInfo public) from
``edgewise keys new``; private keys are written with mode 0600 and never logged.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgewise.edge.errors import BundleError, EdgewiseError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

SIGNATURE_NAME = "signature.json"
ALGORITHM = "ed25519"
PRIVATE_NAME = "edgewise-signing.key"
PUBLIC_NAME = "edgewise-signing.pub"
MAX_SIGNATURE_BYTES = 1 << 20  # a signature file is a few hundred bytes


def key_id(public_key: Ed25519PublicKey) -> str:
    """A short, stable name of a public key: the first 16 hex digits of its sha256."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    raw = public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def generate_keys(out_dir: str | Path) -> tuple[Path, Path]:
    """Write a new key pair into ``out_dir``: (private key file, public key file)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
        PublicFormat,
    )

    root = Path(out_dir)
    private, public = root / PRIVATE_NAME, root / PUBLIC_NAME
    taken = [p for p in (private, public) if p.exists()]
    if taken:
        raise EdgewiseError(f"{taken[0]} exists; keys are never overwritten")
    root.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    # 0600 from the first byte: the file is never readable by others, not even briefly.
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    public.write_bytes(
        key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    )
    return private, public


def load_private_key(path: str | Path) -> Ed25519PrivateKey:
    """An Ed25519 private key from a PEM file (the message never shows its content)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    p = Path(path)
    try:
        key = load_pem_private_key(p.read_bytes(), password=None)
    except FileNotFoundError:
        raise EdgewiseError(f"signing key {p}: no such file") from None
    except (ValueError, TypeError, OSError):
        raise EdgewiseError(
            f"signing key {p} is not an unencrypted PEM private key (edgewise keys new makes one)"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise EdgewiseError(f"signing key {p} is not an Ed25519 key")
    return key


def load_public_key(path: str | Path) -> Ed25519PublicKey:
    """An Ed25519 public key from a PEM file."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    p = Path(path)
    try:
        key = load_pem_public_key(p.read_bytes())
    except FileNotFoundError:
        raise EdgewiseError(f"trusted key {p}: no such file") from None
    except (ValueError, TypeError, OSError):
        raise EdgewiseError(f"trusted key {p} is not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise EdgewiseError(f"trusted key {p} is not an Ed25519 public key")
    return key


def _file_hashes(root: Path) -> dict[str, str]:
    files: dict[str, str] = {}
    for path in sorted(root.iterdir()):
        if path.name == SIGNATURE_NAME:
            continue
        if not path.is_file() or path.is_symlink():
            raise BundleError(f"bundle {root}: {path.name} is not a plain file")
        files[path.name] = hashlib.sha256(path.read_bytes()).hexdigest()
    return files


def _payload(algorithm: str, kid: str, files: dict[str, str]) -> bytes:
    # Canonical JSON: the same bytes whoever writes them.
    body = {"algorithm": algorithm, "key_id": kid, "files": files}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def sign_bundle(bundle_dir: str | Path, private_key: Ed25519PrivateKey) -> Path:
    """Sign every file of the bundle; writes (or replaces) ``signature.json``."""
    root = Path(bundle_dir)
    if not (root / "manifest.json").is_file():
        raise EdgewiseError(f"{root}: not a bundle (no manifest.json)")
    kid = key_id(private_key.public_key())
    files = _file_hashes(root)
    signature = private_key.sign(_payload(ALGORITHM, kid, files))
    doc = {
        "algorithm": ALGORITHM,
        "key_id": kid,
        "files": files,
        "signature": base64.b64encode(signature).decode(),
    }
    out = root / SIGNATURE_NAME
    out.write_text(json.dumps(doc, indent=2) + "\n")
    return out


def verify_bundle(bundle_dir: str | Path, trusted: Sequence[Ed25519PublicKey]) -> str:
    """The id of the trusted key that signed the bundle; BundleError saying why not."""
    from cryptography.exceptions import InvalidSignature

    root = Path(bundle_dir)
    path = root / SIGNATURE_NAME
    if not path.is_file():
        raise BundleError(
            f"bundle {root} is not signed (no {SIGNATURE_NAME}); "
            "this agent serves signed bundles only"
        )
    try:
        raw = path.read_bytes()
        if len(raw) > MAX_SIGNATURE_BYTES:
            raise ValueError("too large")
        doc: Any = json.loads(raw)
        algorithm, kid, files = doc["algorithm"], doc["key_id"], doc["files"]
        signature = base64.b64decode(doc["signature"], validate=True)
        if not isinstance(files, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in files.items()
        ):
            raise ValueError("files")
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeDecodeError):
        raise BundleError(f"bundle {root}: {SIGNATURE_NAME} is malformed") from None
    if algorithm != ALGORITHM:
        raise BundleError(f"bundle {root}: signature algorithm {algorithm!r}; only ed25519")
    keys = {key_id(k): k for k in trusted}
    if kid not in keys:
        raise BundleError(
            f"bundle {root} is signed by key {str(kid)[:16]!r}, which is not trusted here "
            f"(trusted: {', '.join(sorted(keys)) or 'none'})"
        )
    try:
        keys[kid].verify(signature, _payload(algorithm, kid, files))
    except InvalidSignature:
        raise BundleError(f"bundle {root}: the signature does not verify") from None
    actual = _file_hashes(root)
    for name in sorted(set(files) | set(actual)):
        if name not in actual:
            raise BundleError(f"bundle {root}: signed file {name} is missing")
        if name not in files:
            raise BundleError(f"bundle {root}: {name} is not covered by the signature")
        if actual[name] != files[name]:
            raise BundleError(f"bundle {root}: {name} changed after signing")
    return str(kid)
