"""How to reach the broker: one connection-options type for every command that connects.

``Endpoint`` holds the address (``mqtt://``, ``mqtts://``, ``ws://``, ``wss://``), the
credentials (from the URL, percent-decoded, or ``username`` + ``password_file``, or
``$EDGEWISE_MQTT_PASSWORD``) and the TLS settings (CA file or the system store, client
certificate for mutual TLS, server name, and ``tls_insecure`` only when asked for).
Secrets never leave it in text: ``str()`` and ``repr()`` show ``user:***``.
"""

from __future__ import annotations

import os
import ssl
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from edgewise.edge.errors import EdgewiseError

PASSWORD_ENV = "EDGEWISE_MQTT_PASSWORD"
DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883, "ws": 80, "wss": 443}
TLS_SCHEMES = ("mqtts", "wss")
HOSTNAME_MISMATCH = 62  # X509_V_ERR_HOSTNAME_MISMATCH


@dataclass(frozen=True)
class Endpoint:
    """Where the broker is, who we are to it, and how the link is secured."""

    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    scheme: str = "mqtt"
    path: str = "/mqtt"  # WebSocket path (ws://, wss://)
    ca_file: str | None = None  # None: the system's CA store
    cert_file: str | None = None  # client certificate (mutual TLS) ...
    key_file: str | None = None  # ... and its private key
    tls_server_name: str | None = None  # the name the certificate must carry, if not host
    tls_insecure: bool = False  # no certificate or name check: tests and labs only

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        """Parse a broker URL; ``host:port`` without a scheme is ``mqtt://``.

        Errors show the URL without its password.
        """
        if not isinstance(url, str):
            raise EdgewiseError(
                f"broker must be a URL string like mqtt://host:1883, got {type(url).__name__}"
            )
        if "://" not in url:
            url = "mqtt://" + url
        shown = redact_url(url)
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            raise EdgewiseError(
                f"broker URL {shown!r}: port must be 1..65535 (percent-encode / # ? @ "
                "in a password)"
            ) from None
        if parts.scheme not in DEFAULT_PORTS:
            raise EdgewiseError(
                f"broker URL {shown!r}: scheme must be one of "
                f"{', '.join(s + '://' for s in DEFAULT_PORTS)}"
            )
        if not parts.hostname:
            raise EdgewiseError(f"broker URL {shown!r} has no host")
        if port is None:
            port = DEFAULT_PORTS[parts.scheme]
        elif not 1 <= port <= 65535:
            raise EdgewiseError(f"broker URL {shown!r}: port must be 1..65535")
        user = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password is not None else None
        path = parts.path or "/mqtt"
        return cls(parts.hostname, port, user, password, parts.scheme, path)

    @classmethod
    def from_settings(
        cls,
        url: str,
        *,
        username: str | None = None,
        password_file: str | None = None,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        tls_server_name: str | None = None,
        tls_insecure: bool = False,
        environ: Mapping[str, str] | None = None,
    ) -> Endpoint:
        """The URL plus the settings that do not fit in it, checked (files readable, a
        password file not readable by others, TLS options only with mqtts:// or wss://)."""
        base = cls.parse(url)
        env = os.environ if environ is None else environ
        if username and base.username and username != base.username:
            raise EdgewiseError(
                f"user name {username!r} differs from the one in the broker URL "
                f"({base.username!r}); give it once"
            )
        user = base.username or username or None
        password = base.password
        if password is None and password_file:
            password = read_password_file(password_file)
        if password is None and user:
            password = env.get(PASSWORD_ENV) or None
        if password is not None and not user:
            raise EdgewiseError("a password needs a user name (in the URL or username)")
        tls_given = ca_file or cert_file or key_file or tls_server_name or tls_insecure
        if tls_given and base.scheme not in TLS_SCHEMES:
            raise EdgewiseError(
                f"TLS settings need an mqtts:// or wss:// broker URL, not {base.scheme}://"
            )
        if bool(cert_file) != bool(key_file):
            raise EdgewiseError("mutual TLS needs both cert_file and key_file")
        for name, value in (("ca_file", ca_file), ("cert_file", cert_file), ("key_file", key_file)):
            if value and not Path(value).is_file():
                raise EdgewiseError(f"{name} {value}: no such file")
        endpoint = cls(
            base.host,
            base.port,
            user,
            password,
            base.scheme,
            base.path,
            ca_file or None,
            cert_file or None,
            key_file or None,
            tls_server_name or None,
            bool(tls_insecure),
        )
        if endpoint.tls:
            endpoint.ssl_context()  # bad certificate or key files fail here, not at connect
        return endpoint

    @property
    def tls(self) -> bool:
        return self.scheme in TLS_SCHEMES

    @property
    def transport(self) -> str:
        """paho's transport: ``tcp`` or ``websockets``."""
        return "websockets" if self.scheme in ("ws", "wss") else "tcp"

    @property
    def server_name(self) -> str:
        """The name the broker's certificate must carry."""
        return self.tls_server_name or self.host

    def ssl_context(self) -> ssl.SSLContext:
        """A client TLS context: the CA file (or system store), the client certificate,
        hostname verification against ``server_name`` unless ``tls_insecure``."""
        context = _ServerNameContext(ssl.PROTOCOL_TLS_CLIENT)
        context.server_name = self.tls_server_name
        try:
            if self.ca_file:
                context.load_verify_locations(cafile=self.ca_file)
            else:
                context.load_default_certs()
            if self.cert_file and self.key_file:
                context.load_cert_chain(self.cert_file, self.key_file)
        except (ssl.SSLError, OSError) as exc:
            raise EdgewiseError(f"TLS files cannot be used: {exc}") from None
        if self.tls_insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def __str__(self) -> str:
        auth = ""
        if self.username:
            auth = f"{self.username}:***@" if self.password else f"{self.username}@"
        path = self.path if self.transport == "websockets" else ""
        return f"{self.scheme}://{auth}{self.host}:{self.port}{path}"


class _ServerNameContext(ssl.SSLContext):
    """Checks the certificate against ``server_name`` when it is set (paho passes the
    host it connects to, e.g. an IP address the certificate does not name)."""

    server_name: str | None = None

    def wrap_socket(self, sock: Any, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        if self.server_name:
            kwargs["server_hostname"] = self.server_name
        return super().wrap_socket(sock, *args, **kwargs)


def read_password_file(path: str) -> str:
    """The first line of a password file that only its owner (and group) can read."""
    p = Path(path)
    try:
        mode = p.stat().st_mode
        if mode & stat.S_IROTH:
            raise EdgewiseError(
                f"password file {p} is readable by others (mode {stat.filemode(mode)}): "
                f"chmod 600 {p}"
            )
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise EdgewiseError(f"password file {p}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise EdgewiseError(f"password file {p} cannot be read: {exc}") from None
    password = text.splitlines()[0] if text else ""
    if not password:
        raise EdgewiseError(f"password file {p} is empty")
    return password


def describe_tls_error(exc: BaseException, endpoint: Endpoint) -> str | None:
    """One line for a failed TLS handshake (None if ``exc`` is not a TLS error)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        if exc.verify_code == HOSTNAME_MISMATCH:
            return (
                f"TLS: the certificate of the broker at {endpoint} is not valid for "
                f"{endpoint.server_name!r} (set tls_server_name / --tls-server-name to a "
                "name it carries)"
            )
        trust = f"the CA file {endpoint.ca_file}" if endpoint.ca_file else "the system CA store"
        return (
            f"TLS: the certificate of the broker at {endpoint} is not trusted by {trust} "
            f"({exc.verify_message})"
        )
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake with the broker at {endpoint} failed: {exc.reason or exc}"
    return None


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``***`` (for logs and error lines)."""
    scheme, sep, rest = url.rpartition("://")
    auth, at, host = rest.rpartition("@")
    if not at or ":" not in auth:
        return url
    user = auth.split(":", 1)[0]
    return f"{scheme}{sep}{user}:***@{host}"
