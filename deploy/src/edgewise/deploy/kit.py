"""``edgewise kit``: everything one device needs to install and join the fleet, offline.

The kit is a folder (tar it to carry it)::

    install.sh              builds the venv from wheels/, installs config and the unit
    kit.json                platform, Python, device, wheels, Debian packages it expects
    SHA256SUMS              of every other file; install.sh checks them first
    wheels/                 every wheel `edgewise[edge]` needs there, pip's own included
    etc/agent.toml          the agent's config (paths filled in by install.sh)
    etc/ca.crt              the fleet CA, to check the broker's certificate
    etc/mqtt-password       (0600) or etc/device.crt + etc/device.key (0600): its identity
    etc/trusted/*.pub       the operator keys it trusts for bundles and roll-outs
    bundles/NAME/           bundles to serve from the first start
    systemd/edgewise-agent.service

Paths on the device: /opt/edgewise (venv), /etc/edgewise, /var/lib/edgewise (state and
bundles); ``install.sh --prefix DIR`` puts all three under DIR.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from edgewise.deploy.identity import IdentityStore, Issued, write_private
from edgewise.deploy.wheelhouse import (
    build_own,
    check_target,
    download,
    pip_wheel,
    requirements,
)
from edgewise.edge.errors import EdgewiseError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

# Keys the kit writes itself: a --config file may not set them.
KIT_KEYS = frozenset(
    {
        "device",
        "broker",
        "username",
        "password_file",
        "ca_file",
        "cert_file",
        "key_file",
        "trusted_keys",
        "bundles",
        "state_dir",
    }
)
EXTRAS = ("camera", "serial")
_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
# Placeholders install.sh fills in (with --prefix DIR, under DIR).
ETC, STATE = "@ETC@", "@STATE@"


@dataclass
class KitRequest:
    """What to build; checked by ``check`` before any work."""

    platform: str
    python: str
    device: str
    out: Path
    broker: str
    store: Path
    source: Path
    auth: str = "password"
    reissue: bool = False
    bundles: list[Path] = field(default_factory=list)
    trusted_keys: list[Path] = field(default_factory=list)
    config: Path | None = None
    extras: tuple[str, ...] = ()
    force: bool = False
    # Only the wheels and install.sh: for an image, whose config and identity are volumes.
    wheels_only: bool = False
    # The operator's Ed25519 private key: SHA256SUMS.sig, which install.sh checks against
    # the keys the device already trusts (or install.sh --trust PUB).
    sign_key: Path | None = None


def check(req: KitRequest) -> None:
    """Every option, before a wheel is fetched: one line naming what is wrong."""
    from edgewise.deploy.identity import check_name
    from edgewise.edge.runtime.bundle import load_bundle
    from edgewise.edge.runtime.signing import load_private_key, load_public_key

    check_target(req.platform, req.python)
    if req.sign_key is not None:
        load_private_key(req.sign_key)
    for extra in req.extras:
        if extra not in EXTRAS:
            raise EdgewiseError(f"--extra {extra!r}: use one of {', '.join(EXTRAS)}")
    if req.out.exists() and any(req.out.iterdir()) and not req.force:
        raise EdgewiseError(f"--out {req.out} exists and is not empty (--force replaces it)")
    if req.wheels_only:
        return
    for name, value in (("--device", req.device), ("--broker", req.broker)):
        if not value:
            raise EdgewiseError(f"{name} is required (or --wheels-only, for an image)")
    check_name(req.device)
    if req.auth not in ("password", "cert"):
        raise EdgewiseError(f"--auth {req.auth!r}: use password or cert")
    scheme = urlsplit(req.broker).scheme
    if scheme not in ("mqtts", "wss"):
        raise EdgewiseError(
            f"--broker {req.broker!r}: a kit carries credentials, so it connects with TLS: "
            "use mqtts://HOST[:PORT] or wss://HOST/PATH"
        )
    if not req.bundles:
        raise EdgewiseError("--bundle: give at least one bundle for the agent to serve")
    for bundle in req.bundles:
        load_bundle(bundle)  # a bundle that does not load is refused here, not on the device
    names = [b.name for b in req.bundles]
    if len(set(names)) != len(names):
        raise EdgewiseError(f"--bundle: two bundles share a folder name ({', '.join(names)})")
    for key in req.trusted_keys:
        if not _FILE_NAME.fullmatch(key.name):
            raise EdgewiseError(f"--trusted-key {key}: name the file with A-Z a-z 0-9 . _ - only")
        load_public_key(key)
    if req.sign_key is not None:
        load_private_key(req.sign_key)
    if req.config is not None:
        try:
            doc = tomllib.loads(req.config.read_text())
        except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise EdgewiseError(f"--config {req.config}: {exc}") from None
        clash = sorted(KIT_KEYS & doc.keys())
        if clash:
            raise EdgewiseError(
                f"--config {req.config}: the kit sets {', '.join(clash)} itself; remove "
                f"{'it' if len(clash) == 1 else 'them'} from the file"
            )
    IdentityStore(req.store).load()  # the store exists and reads


def build(req: KitRequest) -> dict[str, Any]:
    """Build the kit; returns its kit.json document."""
    check(req)
    target = check_target(req.platform, req.python)
    store = IdentityStore(req.store)
    if req.out.exists():
        shutil.rmtree(req.out)
    wheels = req.out / "wheels"
    own = build_own(req.source, ("edge", "deploy"), wheels)
    download(
        target, req.python, requirements(target, req.python, req.extras),
        req.source / "constraints.txt", wheels,
    )  # fmt: skip
    pip_wheel(wheels)
    if not req.wheels_only:
        _device_files(req, store)
    (req.out / "systemd").mkdir()
    shutil.copy2(req.source / "deploy" / "systemd" / "edgewise-agent.service", req.out / "systemd")
    shutil.copy2(req.source / "deploy" / "kit" / "install.sh", req.out / "install.sh")
    os.chmod(req.out / "install.sh", 0o755)
    doc: dict[str, Any] = {
        "kit": 1,
        "device": "" if req.wheels_only else req.device,
        "platform": req.platform,
        "machine": target.machine,
        "python": req.python,
        "auth": req.auth,
        "extras": list(req.extras),
        "install": f"edgewise[{','.join(('edge', *req.extras))}]",
        "made": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "wheels": sorted(p.name for p in wheels.glob("*.whl")),
        "own_wheels": sorted(p.name for p in own),
        "system_packages": {name: deb for name, deb in target.system},
        "bundles": sorted(b.name for b in req.bundles),
    }
    (req.out / "kit.json").write_text(json.dumps(doc, indent=1) + "\n")
    _checksums(req.out)
    if req.sign_key is not None:
        _sign(req.out, req.sign_key)
    return doc


SIGNATURE = "SHA256SUMS.sig"


def _sign(root: Path, key_path: Path) -> None:
    """Sign SHA256SUMS (which names every other file) with the operator's key."""
    import base64

    from edgewise.edge.runtime.signing import key_id, load_private_key

    key = load_private_key(key_path)
    signature = key.sign((root / "SHA256SUMS").read_bytes())
    doc = {"key_id": key_id(key.public_key()), "signature": base64.b64encode(signature).decode()}
    (root / SIGNATURE).write_text(json.dumps(doc) + "\n")


def verify(root: Path, trusted: list[Path]) -> str:
    """The id of the trusted key that signed the kit's SHA256SUMS; EdgewiseError if none."""
    import base64
    import binascii

    from cryptography.exceptions import InvalidSignature

    from edgewise.edge.runtime.signing import key_id, load_public_key

    try:
        doc = json.loads((root / SIGNATURE).read_text())
        signature = base64.b64decode(doc["signature"], validate=True)
        signer = str(doc["key_id"])
    except (OSError, ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise EdgewiseError(f"{root / SIGNATURE}: unreadable ({exc})") from None
    sums = (root / "SHA256SUMS").read_bytes()
    for path in trusted:
        public = load_public_key(path)
        try:
            public.verify(signature, sums)
        except InvalidSignature:
            continue
        return key_id(public)
    raise EdgewiseError(
        f"the kit is signed by key {signer}, which is none of the {len(trusted)} keys this "
        "device trusts: it was not made by this fleet's operator"
    )


def verify_main(argv: list[str]) -> int:
    """``python -c ... verify_main`` from install.sh: KIT_DIR PUB...; one line, exit 0/1."""
    try:
        kid = verify(Path(argv[0]), [Path(p) for p in argv[1:]])
    except EdgewiseError as exc:
        print(f"install.sh: {exc}", file=sys.stderr)
        return 1
    print(f"the kit's signature checks out: operator key {kid}")
    return 0


def _device_files(req: KitRequest, store: IdentityStore) -> None:
    """Config, identity, trusted keys and bundles; the identity is issued last of all the
    kit's work, so that a kit that failed earlier has not used up a secret."""
    issued = store.issue(req.device, req.auth, reissue=req.reissue)
    etc = req.out / "etc"
    _identity_files(issued, store, etc)
    trusted = []
    for key in req.trusted_keys:
        (etc / "trusted").mkdir(parents=True, exist_ok=True)
        shutil.copy2(key, etc / "trusted" / key.name)
        trusted.append(f"{ETC}/trusted/{key.name}")
    for bundle in req.bundles:
        shutil.copytree(bundle, req.out / "bundles" / bundle.name)
    (etc / "agent.toml").write_text(_agent_toml(req, issued, trusted))


def _identity_files(issued: Issued, store: IdentityStore, etc: Path) -> None:
    etc.mkdir(parents=True, exist_ok=True)
    shutil.copy2(store.ca_cert_path, etc / "ca.crt")
    if issued.password is not None:
        write_private(etc / "mqtt-password", issued.password.encode())
    else:
        assert issued.cert_pem is not None and issued.key_pem is not None
        (etc / "device.crt").write_bytes(issued.cert_pem)
        write_private(etc / "device.key", issued.key_pem)


def _agent_toml(req: KitRequest, issued: Issued, trusted: list[str]) -> str:
    q = json.dumps  # a TOML basic string is a JSON string for these characters
    lines = [
        f"# Written by `edgewise kit` for {req.device} ({req.platform}, CPython {req.python}).",
        "# install.sh fills in the folders. Keys below the kit's come from --config.",
        f"device = {q(req.device)}",
        f"broker = {q(req.broker)}",
        f"ca_file = {q(ETC + '/ca.crt')}",
    ]
    if issued.password is not None:
        lines += [f"username = {q(req.device)}", f"password_file = {q(ETC + '/mqtt-password')}"]
    else:
        lines += [f"cert_file = {q(ETC + '/device.crt')}", f"key_file = {q(ETC + '/device.key')}"]
    lines.append(f"trusted_keys = [{', '.join(q(t) for t in trusted)}]")
    bundles = [q(f"{STATE}/bundles/{b.name}") for b in req.bundles]
    lines += [f"bundles = [{', '.join(bundles)}]", f"state_dir = {q(STATE)}", ""]
    text = "\n".join(lines)
    if req.config is not None:
        text += f"# from {req.config.name}\n" + req.config.read_text()
    return text


def _checksums(root: Path) -> None:
    lines = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        lines.append(f"{digest}  {path.relative_to(root).as_posix()}")
    (root / "SHA256SUMS").write_text("\n".join(lines) + "\n")


def kit_size(root: Path) -> int:
    """Bytes of the kit's files."""
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
