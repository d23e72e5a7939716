"""Signed bundles: keys, signatures, and an agent that serves only what its keys signed."""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from edgewise.deploy.broker import LocalBroker
from edgewise.edge.errors import BundleError, EdgewiseError
from edgewise.edge.runtime.loader import load_models
from edgewise.edge.runtime.signing import (
    SIGNATURE_NAME,
    generate_keys,
    key_id,
    load_private_key,
    load_public_key,
    sign_bundle,
    verify_bundle,
)
from tests.agents import new_device, serving
from tests.conftest import ROOT
from tests.mqtt_peer import Peer


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return generate_keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture
def signed(iris_bundle: Path, keys: tuple[Path, Path], tmp_path: Path) -> Path:
    bundle = Path(shutil.copytree(iris_bundle, tmp_path / "iris"))
    sign_bundle(bundle, load_private_key(keys[0]))
    return bundle


def test_private_key_is_0600_and_never_overwritten(keys: tuple[Path, Path]) -> None:
    private, public = keys
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert b"PRIVATE KEY" in private.read_bytes() and b"PUBLIC KEY" in public.read_bytes()
    with pytest.raises(EdgewiseError, match="never overwritten"):
        generate_keys(private.parent)


def test_a_signed_bundle_verifies(signed: Path, keys: tuple[Path, Path]) -> None:
    public = load_public_key(keys[1])
    assert verify_bundle(signed, [public]) == key_id(public)
    doc = json.loads((signed / SIGNATURE_NAME).read_text())
    assert set(doc["files"]) >= {"manifest.json", "model.onnx", "selftest.json"}


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))


def _edit_signature(bundle: Path, **changes: Any) -> None:
    doc = json.loads((bundle / SIGNATURE_NAME).read_text()) | changes
    (bundle / SIGNATURE_NAME).write_text(json.dumps(doc))


TAMPER = [
    (lambda b: (b / SIGNATURE_NAME).unlink(), "is not signed"),
    (lambda b: _flip_byte(b / "model.onnx"), "model.onnx changed after signing"),
    (lambda b: _flip_byte(b / "selftest.json"), "selftest.json changed after signing"),
    (lambda b: (b / "extra.py").write_text("print(1)"), "extra.py is not covered"),
    (lambda b: (b / "selftest.json").unlink(), "signed file selftest.json is missing"),
    (lambda b: (b / SIGNATURE_NAME).write_text("{"), "signature.json is malformed"),
    (lambda b: _edit_signature(b, signature="AAAA"), "does not verify"),
    (lambda b: _edit_signature(b, key_id="0" * 16), "not trusted here"),
    (lambda b: _edit_signature(b, algorithm="rsa"), "only ed25519"),
    (lambda b: _edit_signature(b, files={"manifest.json": "0" * 64}), "does not verify"),
]


@pytest.mark.parametrize(("tamper", "message"), TAMPER)
def test_tampering_is_refused_with_the_reason(
    signed: Path, keys: tuple[Path, Path], tamper: Any, message: str
) -> None:
    tamper(signed)
    with pytest.raises(BundleError, match=message):
        verify_bundle(signed, [load_public_key(keys[1])])


def test_another_key_is_not_trusted(signed: Path, tmp_path: Path) -> None:
    _, other = generate_keys(tmp_path / "other")
    with pytest.raises(BundleError, match="which is not trusted here"):
        verify_bundle(signed, [load_public_key(other)])


def test_bad_key_files_never_echo_their_content(tmp_path: Path) -> None:
    bad = tmp_path / "bad.key"
    bad.write_text("-----BEGIN PRIVATE KEY-----\nSECRETSECRET\n-----END PRIVATE KEY-----\n")
    with pytest.raises(EdgewiseError) as info:
        load_private_key(bad)
    assert "SECRET" not in str(info.value) and "not an unencrypted PEM" in str(info.value)
    with pytest.raises(EdgewiseError, match="is not a PEM public key"):
        load_public_key(bad)


def test_load_models_checks_signatures_first(
    iris_bundle: Path, signed: Path, keys: tuple[Path, Path]
) -> None:
    models = load_models([str(signed)], trusted_keys=[str(keys[1])])
    model = models["iris-rf"]
    assert model.signed_by == key_id(load_public_key(keys[1]))
    assert model.info()["signed_by"] == model.signed_by
    with pytest.raises(BundleError, match="is not signed"):
        load_models([str(iris_bundle)], trusted_keys=[str(keys[1])])


def test_agent_serves_signed_and_refuses_unsigned(
    broker: LocalBroker, iris_bundle: Path, signed: Path, keys: tuple[Path, Path], tmp_path: Path
) -> None:
    """The CLI end to end: keys and sign commands, then agents with --trusted-key."""
    cli = [sys.executable, "-m", "edgewise"]
    made = subprocess.run(
        [*cli, "keys", "new", "--out", str(tmp_path / "k")], capture_output=True, text=True
    )
    assert made.returncode == 0, made.stderr
    private, public = tmp_path / "k" / keys[0].name, tmp_path / "k" / keys[1].name
    bundle = Path(shutil.copytree(iris_bundle, tmp_path / "b"))
    done = subprocess.run(
        [*cli, "sign", str(bundle), "--key", str(private)], capture_output=True, text=True
    )
    assert done.returncode == 0 and "signed iris-rf v1 with key" in done.stdout, done.stderr
    refused = subprocess.run(
        [*cli, "agent", "--bundle", str(iris_bundle), "--broker", broker.url,
         "--trusted-key", str(public), "--state-dir", str(tmp_path / "s")],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert refused.returncode == 1
    assert refused.stderr.count("\n") == 1 and "is not signed" in refused.stderr
    device = new_device("signed")
    with serving(broker, [bundle], device, trusted_keys=(str(public),)):
        peer = Peer(broker.port)
        try:
            peer.subscribe(f"edgewise/{device}/iris-rf/info")
            info = peer.expect_json("/info")
        finally:
            peer.close()
    assert info["signed_by"] == key_id(load_public_key(public))
    assert info["selftest"]["passed"] and info["selftest"]["count"] >= 20
