"""Bundle format v1: a directory with the model file and ``manifest.json`` (docs/bundle.md).

This is the only contract between host and device. Loading validates the manifest against
the JSON Schema shipped in ``edge/schemas`` and the model file against its sha256.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from edge.errors import BundleError

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
SCHEMA_NAME = "manifest-v1.schema.json"


@dataclass(frozen=True)
class Feature:
    """One input field as the device receives it (raw, before in-graph preprocessing)."""

    name: str
    dtype: str  # "float32" or "string"
    nullable: bool
    onnx_input: str | None = None


@dataclass(frozen=True)
class Bundle:
    """A validated bundle on disk."""

    path: Path
    manifest: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.manifest["name"])

    @property
    def version(self) -> str:
        return str(self.manifest["version"])

    @property
    def task(self) -> str:
        return str(self.manifest["task"])

    @property
    def model_path(self) -> Path:
        return self.path / str(self.manifest["model"]["file"])

    @property
    def model_format(self) -> str:
        return str(self.manifest["model"]["format"])

    @property
    def sha256(self) -> str:
        return str(self.manifest["model"]["sha256"])

    @property
    def layout(self) -> str:
        return str(self.manifest["input"]["layout"])

    @property
    def features(self) -> tuple[Feature, ...]:
        return tuple(Feature(**f) for f in self.manifest["input"]["features"])

    @property
    def labels(self) -> list[Any]:
        return list(self.manifest["output"].get("labels", []))


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@cache
def _validator() -> Callable[[Any], Any]:
    import fastjsonschema

    schema = json.loads(resources.files("edge.schemas").joinpath(SCHEMA_NAME).read_text())
    return fastjsonschema.compile(schema)  # type: ignore[no-any-return]


def validate_manifest(manifest: Any) -> None:
    """Raise BundleError unless ``manifest`` matches the v1 JSON Schema."""
    import fastjsonschema

    try:
        _validator()(manifest)
    except fastjsonschema.JsonSchemaException as exc:
        reason = getattr(exc, "message", exc)
        raise BundleError(
            f"manifest does not match bundle format v{FORMAT_VERSION}: {reason}"
        ) from None
    if manifest["input"]["layout"] == "columns":
        missing = [f["name"] for f in manifest["input"]["features"] if "onnx_input" not in f]
        if missing:
            raise BundleError(f"manifest: column layout needs onnx_input for {missing[:3]}")


def load_bundle(path: str | Path) -> Bundle:
    """Read, validate and hash-check the bundle at ``path``."""
    root = Path(path)
    manifest_path = root / MANIFEST_NAME
    if not root.is_dir():
        raise BundleError(f"bundle {root}: no such directory")
    if not manifest_path.is_file():
        raise BundleError(f"bundle {root}: {MANIFEST_NAME} is missing")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"bundle {root}: {MANIFEST_NAME} is not valid JSON ({exc})") from None
    if isinstance(manifest, dict) and manifest.get("format_version") not in (None, FORMAT_VERSION):
        raise BundleError(
            f"bundle {root}: format version {manifest.get('format_version')!r} is not supported "
            f"(this agent reads version {FORMAT_VERSION})"
        )
    try:
        validate_manifest(manifest)
    except BundleError as exc:
        raise BundleError(f"bundle {root}: {exc}") from None
    bundle = Bundle(path=root, manifest=manifest)
    if not bundle.model_path.is_file():
        raise BundleError(f"bundle {root}: model file {bundle.model_path.name} is missing")
    actual = file_sha256(bundle.model_path)
    if actual != bundle.sha256:
        raise BundleError(
            f"bundle {root}: sha256 of {bundle.model_path.name} is {actual[:12]}..., "
            f"the manifest says {bundle.sha256[:12]}...; the file was changed or corrupted"
        )
    return bundle
