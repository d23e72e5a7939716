"""Bundle format v1: a directory with the model file and ``manifest.json`` (docs/bundle.md).

The manifest is the only contract between host and device (``edge.runtime.manifest``). Loading
validates it with the typed classes and checks the model file against its sha256.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgewise.edge.errors import BundleError
from edgewise.edge.runtime.manifest import (
    FORMAT_VERSION,
    Feature,
    Label,
    Manifest,
    ManifestError,
)

MANIFEST_NAME = "manifest.json"
SCHEMA_NAME = "manifest-v1.schema.json"
__all__ = ["FORMAT_VERSION", "MANIFEST_NAME", "Bundle", "Feature", "load_bundle"]


@dataclass(frozen=True)
class Bundle:
    """A validated bundle on disk."""

    path: Path
    manifest: Manifest

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def task(self) -> str:
        return self.manifest.task

    @property
    def model_path(self) -> Path:
        return self.path / self.manifest.model.file

    @property
    def model_format(self) -> str:
        return self.manifest.model.format

    @property
    def sha256(self) -> str:
        return self.manifest.model.sha256

    @property
    def layout(self) -> str:
        return self.manifest.input.layout

    @property
    def features(self) -> tuple[Feature, ...]:
        return self.manifest.input.features

    @property
    def labels(self) -> list[Label]:
        return list(self.manifest.labels)


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def validate_manifest(manifest: Any) -> Manifest:
    """The typed manifest, or BundleError naming what does not match format v1."""
    try:
        return Manifest.from_dict(manifest)
    except ManifestError as exc:
        raise BundleError(
            f"manifest does not match bundle format v{FORMAT_VERSION}: {exc}"
        ) from None


def load_bundle(path: str | Path) -> Bundle:
    """Read, validate and hash-check the bundle at ``path``."""
    root = Path(path)
    manifest_path = root / MANIFEST_NAME
    if not root.is_dir():
        raise BundleError(f"bundle {root}: no such directory")
    if not manifest_path.is_file():
        raise BundleError(f"bundle {root}: {MANIFEST_NAME} is missing")
    try:
        raw = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"bundle {root}: {MANIFEST_NAME} is not valid JSON ({exc})") from None
    if isinstance(raw, dict) and raw.get("format_version") not in (None, FORMAT_VERSION):
        raise BundleError(
            f"bundle {root}: format version {raw.get('format_version')!r} is not supported "
            f"(this agent reads version {FORMAT_VERSION})"
        )
    try:
        manifest = validate_manifest(raw)
    except BundleError as exc:
        raise BundleError(f"bundle {root}: {exc}") from None
    bundle = Bundle(path=root, manifest=manifest)
    if not bundle.model_path.is_file():
        raise BundleError(f"bundle {root}: model file {bundle.model_path.name} is missing")
    checked = [(bundle.model_path, bundle.sha256)]
    if manifest.selftest is not None:
        checked.append((root / manifest.selftest.file, manifest.selftest.sha256))
    for path, expected in checked:
        if not path.is_file():
            raise BundleError(f"bundle {root}: {path.name} is missing")
        actual = file_sha256(path)
        if actual != expected:
            raise BundleError(
                f"bundle {root}: sha256 of {path.name} is {actual[:12]}..., "
                f"the manifest says {expected[:12]}...; the file was changed or corrupted"
            )
    return bundle
