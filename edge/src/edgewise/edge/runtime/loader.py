"""Bundles made ready to serve: signature, hashes, runtime and self-test, in that order."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from edgewise.edge.errors import EdgewiseError
from edgewise.edge.runtime.backends import BackendOptions
from edgewise.edge.runtime.bundle import load_bundle
from edgewise.edge.runtime.model import ServedModel
from edgewise.edge.runtime.selftest import run_selftest
from edgewise.edge.runtime.signing import load_public_key, verify_bundle

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


def load_checked(
    path: str, options: BackendOptions, trusted: Sequence[Ed25519PublicKey] = ()
) -> ServedModel:
    """One bundle, ready to serve: signature (when keys are trusted), hashes, runtime,
    self-test. Nothing in it is used before all of them passed."""
    signer = None
    if trusted:
        signer = verify_bundle(path, trusted)  # before anything in it is parsed
    model = ServedModel.load(load_bundle(path), options)
    model.signed_by = signer
    model.selftest = run_selftest(model)
    return model


def trusted_public_keys(paths: Sequence[str]) -> list[Ed25519PublicKey]:
    """The public keys in ``paths`` (none: signatures are not checked)."""
    if not paths:
        return []
    return [load_public_key(k) for k in paths]


def load_models(
    bundles: Sequence[str],
    options: BackendOptions | None = None,
    trusted_keys: Sequence[str] = (),
) -> dict[str, ServedModel]:
    """Load every bundle directory (``load_checked``); model names must be unique.

    With ``trusted_keys`` (public key files) a bundle must be signed by one of them.
    """
    if not bundles:
        raise EdgewiseError("no bundle given: pass --bundle DIR (or bundles = [...] in the config)")
    options = options or BackendOptions()
    trusted = trusted_public_keys(trusted_keys)
    models: dict[str, ServedModel] = {}
    for path in bundles:
        model = load_checked(path, options, trusted)
        if model.name in models:
            raise EdgewiseError(f"two bundles are named {model.name!r}; model names must be unique")
        models[model.name] = model
    return models
