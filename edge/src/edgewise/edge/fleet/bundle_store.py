"""Bundles a device received over the broker, and which version of each model is active.

Under ``{state_dir}/fleet/{device}/``:

- ``partial/{sha256}/{i}``: chunks received so far (a download resumes from them);
- ``bundles/{sha256}/``: unpacked, verified bundles;
- ``state.json``: per model, the active bundle (or that it was removed) and the last few
  versions before it (``edgewise rollback`` picks from them); the deployment ids that
  were refused, so that the same roll-out is not tried again after every restart.

Only the agent's fleet thread writes here, except a probation rollback, hence the lock.
``state.json`` is replaced atomically (written beside it, fsynced, renamed).
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections.abc import Collection
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edgewise.edge.errors import BundleError
from edgewise.edge.runtime.transfer import (
    STAGING_PREFIX,
    BundleIndex,
    check_chunk,
    pack,
    unpack_stream,
)

KEEP_VERSIONS = 3  # versions before the active one kept for rollback
MAX_REFUSED = 200
MAX_SEQS = 1000  # (target, model) sequences remembered
SPACE_MARGIN = 16 << 20  # bytes left free after a download, for the outbox and logs


@dataclass(frozen=True)
class Entry:
    """One version of a model that the device can serve: its pack sha256 and directory."""

    sha256: str
    version: str
    path: str


def pack_sha256(bundle_dir: str | Path) -> str:
    """The content address of a bundle directory (as ``edgewise deploy`` names it)."""
    return pack(bundle_dir)[0].sha256


class BundleStore:
    """A device's received bundles and its record of active versions."""

    def __init__(self, root: Path, keep: int = KEEP_VERSIONS) -> None:
        self.root = root
        self.keep = keep
        self._lock = threading.RLock()
        self._pending: set[str] = set()  # installed, not yet recorded: never pruned
        self._state = self._load()
        # No unpack runs yet: a staging folder here is a crash's (kill -9 mid-unpack).
        for d in self.root.glob(f"bundles/{STAGING_PREFIX}*"):
            shutil.rmtree(d, ignore_errors=True)

    # -- state.json ---------------------------------------------------------------------

    def _load(self) -> dict[str, Any]:
        try:
            doc = json.loads((self.root / "state.json").read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {"models": {}, "refused": []}
        except (OSError, ValueError) as exc:
            raise BundleError(
                f"fleet state {self.root / 'state.json'}: unreadable ({exc})"
            ) from None
        if not isinstance(doc, dict):
            raise BundleError(f"fleet state {self.root / 'state.json'}: not an object")
        doc.setdefault("models", {})
        doc.setdefault("refused", [])
        return doc

    def _save(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / "state.json.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(self._state, fh, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.root / "state.json")

    def active(self) -> dict[str, Entry | None]:
        """Model -> its recorded active version (None: removed by ``undeploy``)."""
        with self._lock:
            out: dict[str, Entry | None] = {}
            for name, rec in self._state["models"].items():
                out[name] = Entry(**rec["active"]) if rec.get("active") else None
            return out

    def history(self, name: str) -> list[Entry]:
        """The versions before the active one, newest first."""
        with self._lock:
            rec = self._state["models"].get(name) or {}
            return [Entry(**e) for e in rec.get("history", [])]

    def find(self, name: str, sha256: str) -> Entry | None:
        """A version of ``name`` with this content on disk (active or in its history)."""
        with self._lock:
            rec = self._state["models"].get(name) or {}
            for e in [rec.get("active"), *rec.get("history", [])]:
                if e and e["sha256"] == sha256 and Path(e["path"]).is_dir():
                    return Entry(**e)
        path = self.bundle_dir(sha256)
        return Entry(sha256, "", str(path)) if path.is_dir() else None

    def record_active(self, name: str, entry: Entry) -> None:
        """``entry`` is active now; the one before goes to the history (the oldest go)."""
        with self._lock:
            rec = self._state["models"].setdefault(name, {"active": None, "history": []})
            old = rec.get("active")
            history = [e for e in rec.get("history", []) if e["sha256"] != entry.sha256]
            if old and old["sha256"] != entry.sha256:
                history.insert(0, old)
            rec["active"], rec["history"] = asdict(entry), history[: self.keep]
            self._pending.discard(entry.sha256)
            self._save()
            self._prune()

    def record_removed(self, name: str) -> None:
        with self._lock:
            rec = self._state["models"].setdefault(name, {"active": None, "history": []})
            if rec.get("active"):
                rec["history"] = [rec["active"], *rec.get("history", [])][: self.keep]
            rec["active"] = None
            self._save()
            self._prune()

    def refused(self, deployment_id: str) -> bool:
        with self._lock:
            return deployment_id in self._state["refused"]

    def last_seq(self, key: str) -> tuple[int, str] | None:
        """The sequence and deployment id of the last desired state accepted for ``key``
        (``devices/pi-1/iris``): a replayed older one is refused, across restarts."""
        with self._lock:
            got = self._state.setdefault("seqs", {}).get(key)
            return (int(got[0]), str(got[1])) if isinstance(got, list) and len(got) == 2 else None

    def record_seq(self, key: str, seq: int, deployment_id: str) -> None:
        with self._lock:
            seqs = self._state.setdefault("seqs", {})
            seqs[key] = [seq, deployment_id]
            if len(seqs) > MAX_SEQS:  # models come and go: the oldest keys go first
                for old in sorted(seqs, key=lambda k: seqs[k][0])[: len(seqs) - MAX_SEQS]:
                    del seqs[old]
            self._save()

    def mark_refused(self, deployment_id: str) -> None:
        with self._lock:
            self._state["refused"] = [*self._state["refused"], deployment_id][-MAX_REFUSED:]
            self._save()

    def _prune(self) -> None:
        # Received bundles no model refers to any more (configured ones are never ours).
        used = self._pending | {
            e["sha256"]
            for rec in self._state["models"].values()
            for e in [rec.get("active"), *rec.get("history", [])]
            if e
        }
        bundles = self.root / "bundles"
        if bundles.is_dir():
            for d in bundles.iterdir():
                if d.name not in used and not d.name.startswith("."):
                    shutil.rmtree(d, ignore_errors=True)

    # -- downloads ----------------------------------------------------------------------

    def bundle_dir(self, sha256: str) -> Path:
        return self.root / "bundles" / sha256

    def _partial(self, sha256: str) -> Path:
        return self.root / "partial" / sha256

    def check_space(self, index: BundleIndex, max_bytes: int) -> None:
        """Refuse a bundle larger than allowed or than the disk can take (chunks + files)."""
        if index.size > max_bytes:
            raise BundleError(
                f"the bundle is {index.size} bytes; this device takes at most {max_bytes} "
                "(max_bundle_bytes)"
            )
        self.root.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(self.root).free
        if free < 2 * index.size + SPACE_MARGIN:
            raise BundleError(
                f"disk too small: the bundle needs {2 * index.size + SPACE_MARGIN} bytes "
                f"free under {self.root}, {free} are"
            )

    def have(self, index: BundleIndex) -> set[int]:
        """The chunks of ``index`` already on disk and intact."""
        part = self._partial(index.sha256)
        have = set()
        for i in range(len(index.chunks)):
            try:
                check_chunk(index, i, (part / str(i)).read_bytes())
            except (OSError, BundleError):
                continue
            have.add(i)
        return have

    def put_chunk(self, index: BundleIndex, i: int, data: bytes) -> None:
        """Store a chunk after checking it (BundleError for a bad one)."""
        check_chunk(index, i, data)
        part = self._partial(index.sha256)
        part.mkdir(parents=True, exist_ok=True)
        tmp = part / f".{i}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, part / str(i))

    def install(self, index: BundleIndex) -> Path:
        """Verify and unpack the stored chunks into ``bundles/{sha256}``, reading one chunk
        at a time (memory holds a chunk, not the bundle); drop the chunks. An OSError
        (a full disk) leaves no staging folder; the chunks stay for a retry."""
        with self._lock:
            self._pending.add(index.sha256)
        part = self._partial(index.sha256)
        chunks = ((part / str(i)).read_bytes() for i in range(len(index.chunks)))
        try:
            path = unpack_stream(index, chunks, self.bundle_dir(index.sha256))
        except BundleError:
            shutil.rmtree(part, ignore_errors=True)  # torn on disk: fetch it again
            raise
        except BaseException:
            with self._lock:
                self._pending.discard(index.sha256)
            raise
        shutil.rmtree(part, ignore_errors=True)
        return path

    def prune_leftovers(self, keep: Collection[str] = ()) -> list[str]:
        """Remove what no download or version needs: chunks of downloads other than
        ``keep`` (superseded, or refused before a restart), staging folders and partly
        written chunk files left by a crash. The names removed, for the log."""
        removed = []
        partial = self.root / "partial"
        if partial.is_dir():
            for d in partial.iterdir():
                if d.name not in keep:
                    shutil.rmtree(d, ignore_errors=True)
                    removed.append(f"partial/{d.name}")
                elif d.is_dir():
                    for tmp in d.glob(".*.tmp"):
                        tmp.unlink(missing_ok=True)
        bundles = self.root / "bundles"
        if bundles.is_dir():
            for d in bundles.glob(f"{STAGING_PREFIX}*"):
                shutil.rmtree(d, ignore_errors=True)
                removed.append(f"bundles/{d.name}")
        return removed

    def discard(self, sha256: str) -> None:
        """Forget a refused download: its chunks, and its files unless a version uses them."""
        shutil.rmtree(self._partial(sha256), ignore_errors=True)
        with self._lock:
            self._pending.discard(sha256)
            self._prune()
