"""Where the broker is and how to log in: parsed from a URL, printed without secrets."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from edge.errors import EdgewiseError


@dataclass(frozen=True)
class BrokerAddress:
    """Where the broker is: parsed from ``mqtt://[user[:password]@]host[:port]``."""

    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: str | None = None

    @classmethod
    def parse(cls, url: str) -> BrokerAddress:
        """Parse a broker URL; ``host:port`` without a scheme is accepted too.

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
            raise EdgewiseError(f"broker URL {shown!r}: port must be 1..65535") from None
        if parts.scheme != "mqtt":
            raise EdgewiseError(
                f"broker URL {shown!r}: scheme must be mqtt:// (TLS is not built yet)"
            )
        if not parts.hostname:
            raise EdgewiseError(f"broker URL {shown!r} has no host")
        if port is None:
            port = 1883
        elif not 1 <= port <= 65535:
            raise EdgewiseError(f"broker URL {shown!r}: port must be 1..65535")
        user = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password is not None else None
        return cls(parts.hostname, port, user, password)

    def __str__(self) -> str:
        return f"mqtt://{self.host}:{self.port}"


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``***`` (for logs and error lines)."""
    scheme, sep, rest = url.rpartition("://")
    auth, at, host = rest.rpartition("@")
    if not at or ":" not in auth:
        return url
    user = auth.split(":", 1)[0]
    return f"{scheme}{sep}{user}:***@{host}"
