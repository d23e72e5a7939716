"""The operator's store of device identities: who may reach the broker, and as whom.

A folder in the operator's hands (``edgewise identity init``), never copied to a device::

    ca.crt, ca.key          the fleet's CA (ca.key 0600): signs the broker's certificate,
                            devices' client certificates and the revocation list
    server.crt, server.key  the broker's certificate (names given at init)
    devices.json            the roster of identities: name, kind (password | cert), when
                            issued, certificate serials, revoked or not; password *hashes*
                            only (PBKDF2-SHA512, Mosquitto's format), never a password

A device's identity is a generated password (user name = device id) or a client
certificate whose common name is the device id (Mosquitto ``use_identity_as_username``).
The secret is handed out once, to the kit that carries it to the device; re-issuing makes a
new one and retires the old; revoking removes the device's password entry and ACL entry
and puts its certificates on the CRL. ``broker_files`` writes what the broker reads:
``passwd``, ``acl`` (the shipped ACL with the enrolled devices' entries) and ``crl.pem``.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
import re
import secrets
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edgewise.edge.errors import EdgewiseError
from edgewise.edge.link.topics import check_device

Kind = Literal["password", "cert"]
KINDS: tuple[str, ...] = ("password", "cert")
# Users the shipped ACL names; a device may not take one of their names.
SERVICE_USERS = ("operator", "dashboard", "exporter")
# A name that is safe as a file name, a certificate's common name and an ACL user line.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
CERT_DAYS = 825
# Mosquitto 2.0's mosquitto_passwd: PBKDF2-SHA512, 101 rounds, 12-byte salt ("$7$").
_PBKDF2_ROUNDS = 101


def check_name(name: str) -> str:
    """A device id (or service user) that an identity may carry."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise EdgewiseError(
            f"identity name {name!r}: use 1 to 128 of A-Z a-z 0-9 . _ - (starting with a "
            "letter or digit)"
        )
    return check_device(name) if name not in SERVICE_USERS else name


def password_hash(password: str, salt: bytes | None = None) -> str:
    """The line Mosquitto's password file holds for ``password`` (after ``user:``)."""
    salt = salt or secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, _PBKDF2_ROUNDS)
    b64 = base64.b64encode
    return f"$7${_PBKDF2_ROUNDS}${b64(salt).decode()}${b64(digest).decode()}"


@dataclass
class Identity:
    """One name's entry in the roster of identities."""

    name: str
    kind: Kind
    issued: str
    password_hash: str | None = None
    serial: int | None = None  # the current certificate's
    retired_serials: list[int] = field(default_factory=list)  # re-issued: on the CRL
    revoked: str | None = None  # when

    @property
    def active(self) -> bool:
        return self.revoked is None


@dataclass(frozen=True)
class Issued:
    """A fresh secret, handed out once: a password, or a certificate and its key (PEM)."""

    identity: Identity
    password: str | None = None
    cert_pem: bytes | None = None
    key_pem: bytes | None = None

    def __repr__(self) -> str:  # never the secret
        return f"Issued({self.identity.name!r}, kind={self.identity.kind!r})"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def write_private(path: Path, data: bytes) -> None:
    """Write a secret 0600 from the first byte (never briefly world-readable)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


class IdentityStore:
    """The operator's CA and roster of identities in one folder."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.dir = Path(folder)

    # -- files -------------------------------------------------------------------------
    @property
    def ca_cert_path(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def roster_path(self) -> Path:
        return self.dir / "devices.json"

    def _require(self) -> None:
        if not self.ca_cert_path.is_file() or not (self.dir / "ca.key").is_file():
            raise EdgewiseError(
                f"{self.dir} is no identity store (no ca.crt / ca.key): run "
                f"`edgewise identity init --store {self.dir} --server BROKER_NAME` first"
            )

    def load(self) -> dict[str, Identity]:
        """The roster of identities, by name."""
        self._require()
        if not self.roster_path.exists():
            return {}
        try:
            raw = json.loads(self.roster_path.read_text())
            return {name: Identity(**entry) for name, entry in raw["identities"].items()}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise EdgewiseError(f"{self.roster_path}: not a roster of identities ({exc})") from None

    def _save(self, roster: dict[str, Identity]) -> None:
        data = {"identities": {name: asdict(roster[name]) for name in sorted(roster)}}
        tmp = self.roster_path.with_suffix(".tmp")
        write_private(tmp, (json.dumps(data, indent=1) + "\n").encode())
        os.replace(tmp, self.roster_path)

    def _ca(self) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        self._require()
        cert = x509.load_pem_x509_certificate(self.ca_cert_path.read_bytes())
        key = serialization.load_pem_private_key((self.dir / "ca.key").read_bytes(), None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise EdgewiseError(f"{self.dir / 'ca.key'}: expected the store's EC key")
        return cert, key

    # -- the CA ------------------------------------------------------------------------
    def init(self, servers: list[str]) -> bool:
        """Make the CA and the broker's certificate unless they exist; True if made."""
        if self.ca_cert_path.exists():
            return False
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edgewise fleet CA")])
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                critical=True,
            )
            .sign(key, hashes.SHA256())
        )
        self.dir.mkdir(parents=True, exist_ok=True)
        write_private(self.dir / "ca.key", _key_pem(key))
        self.ca_cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        server_cert, server_key = self._sign(servers[0] if servers else "localhost", servers)
        (self.dir / "server.crt").write_bytes(server_cert)
        write_private(self.dir / "server.key", server_key)
        self._save({})
        return True

    def _sign(self, common_name: str, servers: list[str] | None = None) -> tuple[bytes, bytes]:
        """A certificate (PEM) and its new key: a server's when ``servers`` is given."""
        import ipaddress

        ca_cert, ca_key = self._ca()
        key = ec.generate_private_key(ec.SECP256R1())
        now = _now()
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=CERT_DAYS))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        )
        if servers is not None:
            names: list[x509.GeneralName] = [x509.DNSName("localhost")]
            names.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
            for s in servers:
                try:
                    names.append(x509.IPAddress(ipaddress.ip_address(s)))
                except ValueError:
                    names.append(x509.DNSName(s))
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
            usage = ExtendedKeyUsageOID.SERVER_AUTH
        else:
            usage = ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)

    # -- identities --------------------------------------------------------------------
    def issue(self, name: str, kind: str = "password", *, reissue: bool = False) -> Issued:
        """A new secret for ``name``: refused when it has one (unless ``reissue``)."""
        check_name(name)
        if kind not in KINDS:
            raise EdgewiseError(f"identity kind {kind!r}: use one of {', '.join(KINDS)}")
        roster = self.load()
        old = roster.get(name)
        if old is not None and old.active and not reissue:
            raise EdgewiseError(
                f"{name!r} already has an identity (issued {old.issued}): "
                f"`edgewise identity reissue {name}` replaces it"
            )
        if reissue and (old is None or not old.active):
            raise EdgewiseError(f"{name!r} has no active identity to re-issue: issue one")
        retired = list(old.retired_serials) if old else []
        if old is not None and old.serial is not None:
            retired.append(old.serial)  # an earlier certificate stops working
        identity = Identity(name, kind, _now().isoformat(timespec="seconds"))  # type: ignore[arg-type]
        identity.retired_serials = retired
        if kind == "password":
            password = secrets.token_urlsafe(24)
            identity.password_hash = password_hash(password)
            issued = Issued(identity, password=password)
        else:
            cert_pem, key_pem = self._sign(name)
            identity.serial = x509.load_pem_x509_certificate(cert_pem).serial_number
            issued = Issued(identity, cert_pem=cert_pem, key_pem=key_pem)
        roster[name] = identity
        self._save(roster)
        return issued

    def revoke(self, name: str) -> Identity:
        """Lock ``name`` out: no password entry, no ACL entry, its certificates on the CRL."""
        roster = self.load()
        identity = roster.get(name)
        if identity is None or not identity.active:
            raise EdgewiseError(f"{name!r} has no active identity (see `edgewise identity list`)")
        identity.revoked = _now().isoformat(timespec="seconds")
        self._save(roster)
        return identity

    # -- what the broker reads ---------------------------------------------------------
    def broker_files(
        self, out: str | os.PathLike[str], base_acl: str | os.PathLike[str]
    ) -> list[Path]:
        """Write passwd, acl, crl.pem, ca.crt, server.crt and server.key into ``out``."""
        roster = self.load()
        target = Path(out)
        target.mkdir(parents=True, exist_ok=True)
        active = [i for i in roster.values() if i.active]
        passwd = "".join(f"{i.name}:{i.password_hash}\n" for i in active if i.password_hash)
        write_private(target / "passwd", passwd.encode())
        devices = [i.name for i in active if i.name not in SERVICE_USERS]
        (target / "acl").write_text(render_acl(Path(base_acl).read_text(), devices))
        (target / "crl.pem").write_bytes(self.crl(roster))
        for name in ("ca.crt", "server.crt"):
            (target / name).write_bytes((self.dir / name).read_bytes())
        write_private(target / "server.key", (self.dir / "server.key").read_bytes())
        return [target / n for n in ("passwd", "acl", "crl.pem", "ca.crt", "server.crt")]

    def crl(self, roster: dict[str, Identity] | None = None) -> bytes:
        """The CA's revocation list: revoked devices' certificates and re-issued ones."""
        roster = self.load() if roster is None else roster
        ca_cert, ca_key = self._ca()
        now = _now()
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(ca_cert.subject)
            .last_update(now - dt.timedelta(minutes=5))
            .next_update(now + dt.timedelta(days=CERT_DAYS))
        )
        for identity in roster.values():
            serials = list(identity.retired_serials)
            if not identity.active and identity.serial is not None:
                serials.append(identity.serial)
            for serial in serials:
                revoked = (
                    x509.RevokedCertificateBuilder()
                    .serial_number(serial)
                    .revocation_date(now - dt.timedelta(minutes=5))
                    .build()
                )
                builder = builder.add_revoked_certificate(revoked)
        return builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def render_acl(base: str, devices: list[str]) -> str:
    """The shipped ACL with its per-user ``pattern`` lines written out for each enrolled
    device: a user who is not enrolled (or was revoked) gets no device rights at all."""
    kept: list[str] = []
    patterns: list[str] = []
    for line in base.splitlines():
        if line.strip().startswith("pattern "):
            patterns.append(line.strip()[len("pattern ") :])
        else:
            kept.append(line)
    out = (
        "\n".join(kept).rstrip()
        + "\n\n# Enrolled devices (edgewise identity; do not edit: regenerated)\n"
    )
    for device in sorted(devices):
        out += f"\nuser {device}\n"
        out += "".join(f"topic {p.replace('%u', device)}\n" for p in patterns)
    return out
