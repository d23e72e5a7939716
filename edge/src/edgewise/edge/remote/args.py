"""The broker flags every command shares (``--broker``, credentials, TLS), and the
endpoint they describe. Only argparse at import time."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from edgewise.edge.link.topics import DEFAULT_BROKER

if TYPE_CHECKING:
    from edgewise.edge.link.endpoint import Endpoint


def add_broker_arguments(p: argparse.ArgumentParser, with_device: bool = True) -> None:
    """--broker, --prefix, --protocol (and --device), credentials and TLS."""
    p.add_argument("--broker", default=None, help=f"broker URL (default {DEFAULT_BROKER})")
    p.add_argument("--prefix", default=None, help="topic prefix (default edgewise)")
    p.add_argument(
        "--protocol",
        choices=["auto", "5", "3.1.1"],
        default=None,
        help="MQTT version (default auto: 5 where the broker speaks it)",
    )
    if with_device:
        p.add_argument("--device", default=None, help="device id in the topics")
    # Credentials and TLS (docs/mqtt.md#security); a password goes in the URL
    # (percent-encoded), in --password-file, or in $EDGEWISE_MQTT_PASSWORD.
    p.add_argument("--username", default=None, help="MQTT user name (if not in the URL)")
    p.add_argument(
        "--password-file", default=None, metavar="FILE", help="file holding the MQTT password"
    )
    p.add_argument(
        "--ca-file", default=None, metavar="FILE", help="CA certificates (default: system store)"
    )
    p.add_argument("--cert-file", default=None, metavar="FILE", help="client certificate (mTLS)")
    p.add_argument("--key-file", default=None, metavar="FILE", help="its private key (mTLS)")
    p.add_argument("--tls-server-name", default=None, help="name the broker certificate must carry")
    p.add_argument(
        "--tls-insecure",
        action="store_true",
        default=None,
        help="skip certificate checks (labs only; logs a warning)",
    )


# Flags of add_broker_arguments that are Endpoint settings (and AgentConfig keys) of the same name.
CONNECTION_FLAGS = (
    "username",
    "password_file",
    "ca_file",
    "cert_file",
    "key_file",
    "tls_server_name",
    "tls_insecure",
)


def connection_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The connection flags as Endpoint settings (AgentConfig keys of the same name)."""
    return {name: getattr(args, name) for name in CONNECTION_FLAGS}


def endpoint_from_args(args: argparse.Namespace) -> Endpoint:
    """The broker endpoint the connection flags describe."""
    from edgewise.edge.link.endpoint import Endpoint

    settings = connection_settings(args)
    settings["tls_insecure"] = bool(settings["tls_insecure"])
    return Endpoint.from_settings(args.broker or DEFAULT_BROKER, **settings)
