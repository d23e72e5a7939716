"""Roll-outs that fail for want of disk or memory, torn retained chunks, superseded and
crashed downloads: each ends in a state the operator sees, leaves no files behind, and
runs again once it can (a real agent on a real broker; the full disk is injected)."""

from __future__ import annotations

import errno
import os
import threading
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgewise.deploy.broker import LocalBroker
from edgewise.edge.fleet import bundle_store, reconcile
from edgewise.edge.fleet.bundle_store import BundleStore
from edgewise.edge.link.endpoint import Endpoint
from edgewise.edge.link.fleet_topics import Target
from edgewise.edge.remote.fleet_client import FleetLink, set_desired
from edgewise.edge.runtime.desired import Desired
from edgewise.edge.runtime.transfer import BundleIndex, pack
from tests.agents import serving
from tests.edge.test_fleet import MODEL, Watcher, operator_key, roll_out

ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.fixture(autouse=True)
def quick_retry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reconcile, "RETRY_S", 1.0)


def _leftovers(state: Path, device: str) -> list[str]:
    root = state / "fleet" / device
    partial = [f"partial/{p.name}" for p in (root / "partial").glob("*")]
    staging = [f"bundles/{p.name}" for p in (root / "bundles").glob(".unpack-*")]
    return partial + staging


def _settle(watcher: Watcher, prefix: str, device: str, want: Desired, state: str) -> Any:
    topic = f"{prefix}/{device}/{MODEL}/deployment"
    return watcher.until(
        topic,
        lambda d: isinstance(d, dict) and d.get("deployment") == want.id and d["state"] == state,
        timeout=30,
    )


@pytest.mark.parametrize("step", ["download", "unpack"])
def test_a_full_disk_fails_the_roll_out_cleans_up_and_it_runs_again(
    broker: LocalBroker,
    prefix: str,
    versions: dict[str, Path],
    keys: tuple[Path, Path],
    watcher: Watcher,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    step: str,
) -> None:
    full = threading.Event()
    full.set()
    if step == "download":
        real_put = BundleStore.put_chunk

        def put_chunk(self: BundleStore, index: BundleIndex, i: int, data: bytes) -> None:
            if full.is_set() and i >= 2:  # a few chunks in, the disk is full
                raise ENOSPC
            real_put(self, index, i, data)

        monkeypatch.setattr(BundleStore, "put_chunk", put_chunk)
    else:
        real_unpack = bundle_store.unpack_stream

        def unpack_stream(index: BundleIndex, parts: Iterator[bytes], dest: Path) -> Path:
            def filling() -> Iterator[bytes]:
                for n, part in enumerate(parts):
                    if full.is_set() and n == 2:
                        raise ENOSPC  # the staging folder holds files by now
                    yield part

            return real_unpack(index, filling(), dest)

        monkeypatch.setattr(bundle_store, "unpack_stream", unpack_stream)
    state, device = tmp_path / "state", "disk"
    settings = {"prefix": prefix, "trusted_keys": (str(keys[1]),)}
    with serving(broker, [versions["1"]], device, state, **settings):
        want = roll_out(broker, prefix, versions["2"], Target("devices", device, MODEL))
        doc = _settle(watcher, prefix, device, want, "failed")
        what = "storing the download" if step == "download" else "unpacking the bundle"
        assert f"disk full while {what}" in doc["reason"] and "trying again" in doc["reason"]
        assert doc["version"] == "1" and _leftovers(state, device) == []
        assert watcher.ask(prefix, device, "while full")["version"] == "1"
        full.clear()  # space freed: the same roll-out runs again by itself
        _settle(watcher, prefix, device, want, "active")
        assert watcher.ask(prefix, device, "after")["version"] == "2"
        assert _leftovers(state, device) == []


def _chunks(
    link: FleetLink, index: BundleIndex, blob: bytes, which: range
) -> list[tuple[str, bytes]]:
    """The retained (topic, payload) of chunks ``which`` of a packed bundle."""
    size = index.chunk_size
    return [(link.fleet.chunk(index.sha256, i), blob[i * size : (i + 1) * size]) for i in which]


def _link(broker: LocalBroker, prefix: str) -> FleetLink:
    return FleetLink(Endpoint.parse(broker.url), prefix, "auto", [])


def test_an_emptied_chunk_is_waited_for_not_refused(
    broker: LocalBroker,
    prefix: str,
    versions: dict[str, Path],
    keys: tuple[Path, Path],
    watcher: Watcher,
) -> None:
    """Someone clears a retained chunk mid-download (an empty message reaches the device):
    the roll-out waits; when the chunks are published again it completes."""
    index, blob = pack(versions["2"], chunk_size=16384)
    device = "torn"
    link = _link(broker, prefix)
    try:
        with serving(broker, [versions["1"]], device, prefix=prefix, trusted_keys=(str(keys[1]),)):
            link.publish([(link.fleet.index(index.sha256), index.model_dump_json().encode())])
            want = Desired.new(MODEL, index.sha256, index.version, "active")
            set_desired(link, [Target("devices", device, MODEL)], want, operator_key())
            _settle(watcher, prefix, device, want, "downloading")
            time.sleep(0.5)  # subscribed to the chunks by now
            link.publish([(link.fleet.chunk(index.sha256, 0), b"")])  # a cleared chunk
            time.sleep(1.0)
            doc = watcher.latest[f"{prefix}/{device}/{MODEL}/deployment"]
            assert doc["state"] == "downloading", doc
            link.publish(_chunks(link, index, blob, range(len(index.chunks))))
            _settle(watcher, prefix, device, want, "active")
    finally:
        link.close()


def test_a_superseded_download_leaves_no_chunks(
    broker: LocalBroker,
    prefix: str,
    versions: dict[str, Path],
    keys: tuple[Path, Path],
    watcher: Watcher,
    tmp_path: Path,
) -> None:
    index, blob = pack(versions["2"], chunk_size=16384)
    state, device = tmp_path / "state", "super"
    link = _link(broker, prefix)
    try:
        with serving(broker, [versions["1"]], device, state, prefix=prefix,
                     trusted_keys=(str(keys[1]),)):  # fmt: skip
            index_doc = (link.fleet.index(index.sha256), index.model_dump_json().encode())
            # Two chunks and the index: the download stops half-way.
            link.publish([*_chunks(link, index, blob, range(2)), index_doc])
            target = Target("devices", device, MODEL)
            want = Desired.new(MODEL, index.sha256, index.version, "active")
            set_desired(link, [target], want, operator_key())
            part = state / "fleet" / device / "partial" / index.sha256
            deadline = time.monotonic() + 15
            while len(list(part.glob("[0-9]*"))) < 2 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert _leftovers(state, device) == [f"partial/{index.sha256}"]
            back = roll_out(broker, prefix, versions["1"], target)  # the operator changes course
            _settle(watcher, prefix, device, back, "active")
            assert _leftovers(state, device) == []
    finally:
        link.close()


def test_leftovers_of_a_crash_are_removed_at_start(
    broker: LocalBroker,
    prefix: str,
    versions: dict[str, Path],
    keys: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``kill -9`` mid-unpack left a staging folder, and an old download its chunks."""
    monkeypatch.setattr(reconcile, "LEFTOVERS_AFTER_S", 0.5)
    state, device = tmp_path / "state", "crashed"
    root = state / "fleet" / device
    (root / "bundles" / ".unpack-x1y2").mkdir(parents=True)
    (root / "bundles" / ".unpack-x1y2" / "model.onnx").write_bytes(b"half")
    (root / "partial" / ("ab" * 32)).mkdir(parents=True)
    (root / "partial" / ("ab" * 32) / "0").write_bytes(b"chunk")
    with serving(broker, [versions["1"]], device, state, prefix=prefix,
                 trusted_keys=(str(keys[1]),)):  # fmt: skip
        deadline = time.monotonic() + 10
        while _leftovers(state, device) and time.monotonic() < deadline:
            time.sleep(0.1)
    assert _leftovers(state, device) == []


def test_installing_holds_a_chunk_not_the_bundle(tmp_path: Path, iris_bundle: Path) -> None:
    """A 24 MiB bundle is verified and unpacked with memory for a few chunks (the whole
    pack in memory raised RSS by twice the bundle's size)."""
    import shutil

    bundle = Path(shutil.copytree(iris_bundle, tmp_path / "big"))
    (bundle / "weights.bin").write_bytes(os.urandom(24 << 20))
    chunk = 256 << 10
    index, blob = pack(bundle, chunk_size=chunk)
    store = BundleStore(tmp_path / "store")
    for i in range(len(index.chunks)):
        store.put_chunk(index, i, blob[i * chunk : (i + 1) * chunk])
    del blob
    tracemalloc.start()
    try:
        path = store.install(index)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (path / "weights.bin").stat().st_size == 24 << 20
    print(f"install peak {peak / 2**20:.2f} MiB for a {index.size / 2**20:.1f} MiB bundle")
    assert peak < 4 * chunk + (1 << 20)
    assert not (tmp_path / "store" / "partial" / index.sha256).exists()
