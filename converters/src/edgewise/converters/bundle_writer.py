"""Write a bundle directory (model file + manifest.json) and read it back as the device would."""

from __future__ import annotations

import datetime as dt
import hashlib
import platform
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from edgewise.edge.errors import EdgewiseError
from edgewise.edge.runtime.bundle import MANIFEST_NAME, Bundle, load_bundle
from edgewise.edge.runtime.manifest import Manifest, ModelFile


def library_versions(*names: str) -> dict[str, str]:
    """Installed versions of the named distributions (and Python, and edgewise)."""
    versions = {"python": platform.python_version()}
    for name in ("edgewise", *names):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def created_at() -> str:
    """The manifest's creation time: now, UTC, to the second."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def model_file(model_bytes: bytes, file: str, **details: Any) -> ModelFile:
    """The manifest's ``model`` section for ``model_bytes`` written as ``file``."""
    return ModelFile(
        file=file,
        format=file.rsplit(".", 1)[-1],  # type: ignore[arg-type]  # checked by the class
        sha256=hashlib.sha256(model_bytes).hexdigest(),
        size_bytes=len(model_bytes),
        **details,
    )


def write_bundle(
    out_dir: str | Path,
    model_bytes: bytes,
    manifest: Manifest,
    files: Mapping[str, bytes] | None = None,
) -> Bundle:
    """Write the model file, ``files`` (the self-test data) and ``manifest.json``, then load
    the bundle back as the device does.

    The manifest's ``model`` section must describe ``model_bytes`` (see :func:`model_file`)
    and its ``selftest`` the self-test file in ``files``.
    """
    files = dict(files or {})
    root = Path(out_dir)
    if root.exists() and not root.is_dir():
        raise EdgewiseError(f"output {root} exists and is not a directory")
    if manifest.model.sha256 != hashlib.sha256(model_bytes).hexdigest():
        raise EdgewiseError("the manifest's model section describes another model file")
    test = manifest.selftest
    if test is not None and hashlib.sha256(files.get(test.file, b"")).hexdigest() != test.sha256:
        raise EdgewiseError("the manifest's selftest section describes another file")
    root.mkdir(parents=True, exist_ok=True)
    (root / manifest.model.file).write_bytes(model_bytes)
    for name, data in files.items():
        (root / name).write_bytes(data)
    (root / MANIFEST_NAME).write_text(manifest.to_json())
    return load_bundle(root)
