"""Bundles as packs and chunks (edge.runtime.transfer), desired states
(edge.runtime.desired), and the device's store of received bundles
(edge.fleet.bundle_store): pure logic, no broker."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from edgewise.edge.errors import BundleError, EdgewiseError
from edgewise.edge.fleet.bundle_store import BundleStore, Entry
from edgewise.edge.link.fleet_topics import FleetTopics, Target
from edgewise.edge.link.topics import check_device
from edgewise.edge.runtime.desired import Desired
from edgewise.edge.runtime.transfer import BundleIndex, check_chunk, pack, unpack


def test_pack_round_trips_and_is_content_addressed(iris_bundle: Path, tmp_path: Path) -> None:
    index, blob = pack(iris_bundle, chunk_size=4096)
    assert len(index.chunks) == -(-len(blob) // 4096) and index.model == "iris-rf"
    again = BundleIndex.parse(index.model_dump_json().encode())
    assert again == index and pack(iris_bundle, chunk_size=4096)[0].sha256 == index.sha256
    out = unpack(index, blob, tmp_path / "out")
    for f in iris_bundle.iterdir():
        assert (out / f.name).read_bytes() == f.read_bytes()


def test_a_tampered_chunk_or_pack_is_refused(iris_bundle: Path, tmp_path: Path) -> None:
    index, blob = pack(iris_bundle, chunk_size=4096)
    bad = bytearray(blob[:4096])
    bad[10] ^= 0xFF
    with pytest.raises(BundleError, match="chunk 0 does not match"):
        check_chunk(index, 0, bytes(bad))
    with pytest.raises(BundleError, match=r"has .* chunks"):
        check_chunk(index, len(index.chunks), b"")
    with pytest.raises(BundleError, match="does not match its sha256"):
        unpack(index, bytes(bad) + blob[4096:], tmp_path / "out")
    assert not (tmp_path / "out").exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "change, message",
    [
        ({"files": [{"name": "../evil", "size": 1, "sha256": "0" * 64}]}, "files.0.name"),
        ({"chunks": []}, "chunks cannot hold"),
        ({"size": "12"}, "size"),
        ({"extra": 1}, "extra"),
        ({"sha256": "xyz"}, "sha256"),
    ],
)
def test_a_bad_index_is_named(iris_bundle: Path, change: dict[str, object], message: str) -> None:
    doc = json.loads(pack(iris_bundle)[0].model_dump_json()) | change
    with pytest.raises(BundleError, match=message):
        BundleIndex.parse(json.dumps(doc).encode())


def test_pack_refuses_folders(iris_bundle: Path, tmp_path: Path) -> None:
    bundle = Path(shutil.copytree(iris_bundle, tmp_path / "b"))
    (bundle / "sub").mkdir()
    with pytest.raises(BundleError, match="not a plain file"):
        pack(bundle)


@pytest.mark.parametrize(
    "payload, message",
    [
        (b"{", "desired state"),
        (b'{"model": "m", "bundle": null}', "id"),
        (b'{"model": "m", "bundle": "abc", "id": "1"}', "bundle"),
        (b'{"model": "m", "bundle": null, "id": "1", "mode": "canary"}', "mode"),
        (b'{"model": "a/b", "bundle": null, "id": "1"}', "model"),
        (b"x" * 5000, "at most"),
    ],
)
def test_a_bad_desired_state_is_named(payload: bytes, message: str) -> None:
    with pytest.raises(EdgewiseError, match=message):
        Desired.parse(payload)


def test_desired_round_trip_and_topics() -> None:
    want = Desired.new("iris", "a" * 64, "2", "shadow")
    assert Desired.parse(want.to_json()) == want
    fleet = FleetTopics("edgewise")
    target = Target("groups", "line-3", "iris")
    assert fleet.parse_desired(fleet.desired(target)) == target
    assert fleet.parse_bundle(fleet.chunk("a" * 64, 7)) == ("a" * 64, 7)
    assert fleet.parse_bundle(fleet.index("a" * 64)) == ("a" * 64, None)
    assert fleet.parse_bundle("edgewise/fleet/bundles/zz/1") is None
    with pytest.raises(EdgewiseError, match="reserved"):
        check_device("fleet")


def test_store_keeps_history_and_prunes(iris_bundle: Path, tmp_path: Path) -> None:
    store = BundleStore(tmp_path / "store", keep=2)
    index, blob = pack(iris_bundle, chunk_size=4096)
    for i in range(len(index.chunks)):
        store.put_chunk(index, i, blob[i * 4096 : (i + 1) * 4096])
    assert store.have(index) == set(range(len(index.chunks)))
    path = store.install(index)
    entries = [Entry(f"{i:064x}", str(i), str(tmp_path / f"cfg{i}")) for i in range(3)]
    store.record_active("iris", Entry(index.sha256, "p", str(path)))
    store.record_active("iris", entries[0])
    store.record_active("iris", entries[1])
    assert [e.version for e in store.history("iris")] == ["0", "p"]
    assert path.is_dir() and store.find("iris", index.sha256) is not None
    store.record_active("iris", entries[2])
    assert [e.version for e in store.history("iris")] == ["1", "0"]
    assert not path.is_dir()  # out of the history: its files are gone
    store.record_active("iris", entries[0])  # back to an older one: out of the history
    assert [e.version for e in store.history("iris")] == ["2", "1"]
    store.mark_refused("abc")
    reopened = BundleStore(tmp_path / "store", keep=2)
    assert reopened.refused("abc") and reopened.active()["iris"] == entries[0]
    reopened.record_removed("iris")
    assert BundleStore(tmp_path / "store").active() == {"iris": None}
