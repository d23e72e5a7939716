"""Bundle loading: schema, hashes, clear errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from edgewise.edge.errors import BundleError
from edgewise.edge.runtime.bundle import load_bundle


@pytest.fixture
def bundle_copy(iris_bundle: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(iris_bundle, tmp_path / "b"))


def _edit(path: Path, **changes: object) -> None:
    manifest = json.loads((path / "manifest.json").read_text())
    manifest.update(changes)
    (path / "manifest.json").write_text(json.dumps(manifest))


def test_valid_bundle_loads(iris_bundle: Path) -> None:
    b = load_bundle(iris_bundle)
    assert b.name == "iris-rf" and b.task == "classification" and len(b.features) == 4
    assert b.labels == ["setosa", "versicolor", "virginica"]


def test_changed_model_file_is_refused(bundle_copy: Path) -> None:
    with (bundle_copy / "model.onnx").open("ab") as fh:
        fh.write(b"\0")
    with pytest.raises(BundleError, match=r"sha256 .* the file was changed or corrupted"):
        load_bundle(bundle_copy)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"task": "ranking"}, "does not match bundle format"),
        ({"format_version": 2}, "format version 2 is not supported"),
        ({"surprise": 1}, "does not match bundle format"),
        ({"name": "a/b"}, "does not match bundle format"),
    ],
)
def test_bad_manifest_is_refused(
    bundle_copy: Path, changes: dict[str, object], message: str
) -> None:
    _edit(bundle_copy, **changes)
    with pytest.raises(BundleError, match=message):
        load_bundle(bundle_copy)


def test_missing_pieces(bundle_copy: Path, tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="no such directory"):
        load_bundle(tmp_path / "nowhere")
    (bundle_copy / "model.onnx").unlink()
    with pytest.raises(BundleError, match=r"model file model\.onnx is missing"):
        load_bundle(bundle_copy)
    (bundle_copy / "manifest.json").write_text("{")
    with pytest.raises(BundleError, match="not valid JSON"):
        load_bundle(bundle_copy)
