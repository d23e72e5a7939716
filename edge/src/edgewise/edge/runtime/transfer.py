"""A bundle as bytes on the broker: one pack, cut into chunks, described by an index.

The pack is the bundle's files concatenated in name order. Its index lists each file
(name, size, sha256), each chunk's sha256, and the pack's own sha256, which names the
bundle on the broker (``edge.link.fleet_topics``). A device checks every chunk as it arrives,
the pack when it is whole, and every file before it writes anything: nothing it did not
verify reaches the disk as a bundle. File names are plain names (no directories), so a
pack cannot write outside the directory it is unpacked into.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edgewise.edge.errors import BundleError

FORMAT = "edgewise-pack/1"
CHUNK_SIZE = 256 * 1024  # well under Mosquitto's and most brokers' packet limits
MAX_INDEX_BYTES = 1 << 20
MAX_FILES = 64
FILE_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"
_FILE_NAME = re.compile(FILE_NAME)
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class PackedFile(BaseModel):
    """One file of the pack, in order."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    name: Annotated[str, Field(pattern=f"^{FILE_NAME}$")]
    size: Annotated[int, Field(ge=0)]
    sha256: Sha256


class BundleIndex(BaseModel):
    """What a device needs to fetch and check a bundle (retained on ``.../index``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    format: Literal["edgewise-pack/1"] = "edgewise-pack/1"
    sha256: Sha256
    size: Annotated[int, Field(ge=1)]
    chunk_size: Annotated[int, Field(ge=1024, le=16 << 20)]
    chunks: tuple[Sha256, ...]
    files: Annotated[tuple[PackedFile, ...], Field(min_length=1, max_length=MAX_FILES)]
    model: Annotated[str, Field(min_length=1, max_length=256)]
    version: Annotated[str, Field(min_length=1, max_length=256)]

    def check(self) -> BundleIndex:
        """The sizes agree with each other (a consistent index, not yet the data)."""
        if len(self.chunks) != -(-self.size // self.chunk_size):
            raise BundleError(
                f"index: {len(self.chunks)} chunks cannot hold {self.size} bytes "
                f"in chunks of {self.chunk_size}"
            )
        if sum(f.size for f in self.files) != self.size:
            raise BundleError("index: the file sizes do not add up to the pack size")
        if len({f.name for f in self.files}) != len(self.files):
            raise BundleError("index: a file is listed twice")
        return self

    def chunk_length(self, i: int) -> int:
        return min(self.chunk_size, self.size - i * self.chunk_size)

    @classmethod
    def parse(cls, payload: bytes) -> BundleIndex:
        """An index from the broker, every field checked; BundleError says what is wrong."""
        if len(payload) > MAX_INDEX_BYTES:
            raise BundleError(f"index: {len(payload)} bytes; at most {MAX_INDEX_BYTES}")
        try:
            return cls.model_validate_json(payload).check()
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "index"
            raise BundleError(f"index: {where}: {first['msg']}") from None


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def pack(bundle_dir: str | Path, chunk_size: int = CHUNK_SIZE) -> tuple[BundleIndex, bytes]:
    """The bundle directory as (index, pack bytes); only plain files, no folders."""
    root = Path(bundle_dir)
    if not root.is_dir():
        raise BundleError(f"bundle {root}: not a directory")
    try:
        manifest = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
        model, version = str(manifest["name"]), str(manifest["version"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BundleError(f"bundle {root}: no readable manifest.json ({exc})") from None
    files, parts = [], []
    for path in sorted(root.iterdir()):
        if not path.is_file() or path.is_symlink():
            raise BundleError(f"bundle {root}: {path.name} is not a plain file; packs hold files")
        if not _FILE_NAME.fullmatch(path.name):
            raise BundleError(f"bundle {root}: file name {path.name!r} cannot be packed")
        data = path.read_bytes()
        files.append(PackedFile(name=path.name, size=len(data), sha256=sha256(data)))
        parts.append(data)
    blob = b"".join(parts)
    chunks = tuple(sha256(blob[i : i + chunk_size]) for i in range(0, len(blob), chunk_size))
    index = BundleIndex(
        sha256=sha256(blob),
        size=len(blob),
        chunk_size=chunk_size,
        chunks=chunks,
        files=tuple(files),
        model=model,
        version=version,
    )
    return index.check(), blob


def check_chunk(index: BundleIndex, i: int, data: bytes) -> None:
    """A chunk as it arrives: in range, the right length and hash."""
    if not 0 <= i < len(index.chunks):
        raise BundleError(f"chunk {i}: the bundle has {len(index.chunks)} chunks")
    if len(data) != index.chunk_length(i) or sha256(data) != index.chunks[i]:
        raise BundleError(f"chunk {i} does not match its sha256 in the index (tampered or torn)")


STAGING_PREFIX = ".unpack-"  # an unpack in progress; one left by a crash is pruned


def unpack(index: BundleIndex, blob: bytes, dest: Path) -> Path:
    """Write the verified files into ``dest`` (created whole, by one rename, or not at all)."""
    return unpack_stream(index, iter([blob]), dest)


def unpack_stream(index: BundleIndex, parts: Iterator[bytes], dest: Path) -> Path:
    """``unpack`` from the pack's bytes in pieces (the stored chunks, read one at a time),
    so memory holds a chunk, not the bundle. Every file's hash and the pack's are checked
    before the one rename that makes ``dest``."""
    if dest.exists():
        return dest  # content-addressed: the same sha256 is the same files
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=dest.parent))
    whole = hashlib.sha256()
    pending, size = b"", 0
    try:
        for f in index.files:
            digest = hashlib.sha256()
            with open(staging / f.name, "xb") as fh:
                left = f.size
                while left:
                    if not pending:
                        pending = next(parts, b"")
                        if not pending:
                            raise BundleError("the assembled bundle is shorter than its index")
                        whole.update(pending)
                        size += len(pending)
                    piece, pending = pending[:left], pending[left:]
                    digest.update(piece)
                    fh.write(piece)
                    left -= len(piece)
                fh.flush()
                os.fsync(fh.fileno())
            if digest.hexdigest() != f.sha256:
                raise BundleError(f"file {f.name} does not match its sha256 in the index")
        for rest in parts:  # bytes past the last file: the pack's hash will say so
            whole.update(rest)
            size += len(rest)
        if whole.hexdigest() != index.sha256 or size != index.size:
            raise BundleError("the assembled bundle does not match its sha256")
        os.replace(staging, dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return dest
