"""Write a bundle directory (model file + manifest.json) and read it back as the device would."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

from edge.bundle import FORMAT_VERSION, MANIFEST_NAME, Bundle, load_bundle, validate_manifest
from edge.errors import EdgewiseError


def library_versions(*names: str) -> dict[str, str]:
    """Installed versions of the named distributions (and Python, and edgewise)."""
    versions = {"python": platform.python_version()}
    for name in ("edgewise", *names):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def write_bundle(
    out_dir: str | Path, model_bytes: bytes, model_file: str, manifest: dict[str, Any]
) -> Bundle:
    """Write ``model_file`` and a manifest completed with hash, size and format fields.

    ``manifest`` holds every field but ``format_version``, ``created_at`` and the model
    file's hash and size. The result is validated against the schema before anything is
    written, then loaded back with the device-side loader.
    """
    root = Path(out_dir)
    if root.exists() and not root.is_dir():
        raise EdgewiseError(f"output {root} exists and is not a directory")
    fmt = model_file.rsplit(".", 1)[-1]
    full = {
        "format_version": FORMAT_VERSION,
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        **manifest,
    }
    full["model"] = {
        "file": model_file,
        "format": fmt,
        "sha256": hashlib.sha256(model_bytes).hexdigest(),
        "size_bytes": len(model_bytes),
        **manifest.get("model", {}),
    }
    validate_manifest(full)
    root.mkdir(parents=True, exist_ok=True)
    (root / model_file).write_bytes(model_bytes)
    (root / MANIFEST_NAME).write_text(json.dumps(full, indent=2) + "\n")
    return load_bundle(root)
