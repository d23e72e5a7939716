"""The outbox on a real SQLite file: order, bounds, crash safety, one owner."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edgewise.edge.errors import EdgewiseError
from edgewise.edge.link.outbox import Outbox, OutMessage
from tests.conftest import ROOT


def msgs(n: int, size: int = 10, start: int = 0) -> list[OutMessage]:
    return [OutMessage(f"t/{i}", bytes([i % 256]) * size) for i in range(start, start + n)]


def test_fifo_and_remove(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite")
    seqs = box.put(msgs(5))
    assert seqs == sorted(seqs) and len(set(seqs)) == 5 and box.last_seq == seqs[-1]
    assert [m.topic for _, m in box.peek()] == [f"t/{i}" for i in range(5)]
    assert [s for s, _ in box.peek(after=seqs[1], limit=2)] == seqs[2:4]
    box.remove([seqs[0], seqs[2], 10_000])  # an unknown seq is ignored
    assert box.depth == 3 and box.size_bytes == 30
    assert [m.topic for _, m in box.peek()] == ["t/1", "t/3", "t/4"]
    box.close()


def test_correlation_and_retain_survive(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite")
    box.put([OutMessage("r/1", b"{}", qos=0, retain=True, correlation_data=b"\x00\x01")])
    [(_, m)] = box.peek()
    assert m == OutMessage("r/1", b"{}", qos=0, retain=True, correlation_data=b"\x00\x01")
    box.close()


@pytest.mark.parametrize(
    ("max_count", "max_bytes", "kept"),
    [(3, 1 << 20, ["t/7", "t/8", "t/9"]), (100, 45, ["t/6", "t/7", "t/8", "t/9"])],
)
def test_full_outbox_drops_oldest_and_counts(
    tmp_path: Path, max_count: int, max_bytes: int, kept: list[str]
) -> None:
    path = tmp_path / "o.sqlite"
    box = Outbox(path, max_count=max_count, max_bytes=max_bytes)
    box.put(msgs(4))
    box.put(msgs(6, start=4))
    assert [m.topic for _, m in box.peek()] == kept
    assert box.dropped == 10 - len(kept) and box.depth == len(kept)
    box.close()
    again = Outbox(path, max_count=max_count, max_bytes=max_bytes)  # counts are kept
    assert again.dropped == 10 - len(kept) and again.depth == len(kept)
    assert again.size_bytes == 10 * len(kept)
    again.close()


def test_committed_entries_survive_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite"
    script = (
        "import os, sys; from edgewise.edge.link.outbox import Outbox, OutMessage; "
        "box = Outbox(sys.argv[1]); "
        "[box.put([OutMessage('t', str(i).encode())]) for i in range(100)]; "
        "os.kill(os.getpid(), 9)"
    )
    proc = subprocess.run([sys.executable, "-c", script, str(path)], cwd=ROOT)
    assert proc.returncode == -9
    box = Outbox(path)  # the lock died with the process
    assert [m.payload for _, m in box.peek(limit=1000)] == [str(i).encode() for i in range(100)]
    box.close()


def test_one_agent_per_outbox(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite")
    with pytest.raises(EdgewiseError, match="in use by another agent"):
        Outbox(tmp_path / "o.sqlite")
    box.close()
    Outbox(tmp_path / "o.sqlite").close()


@pytest.mark.parametrize(
    ("options", "message"),
    [({"sync": "off"}, "outbox sync 'off'"), ({"max_count": 0}, "must be positive")],
)
def test_bad_options(tmp_path: Path, options: dict[str, object], message: str) -> None:
    with pytest.raises(EdgewiseError, match=message):
        Outbox(tmp_path / "o.sqlite", **options)  # type: ignore[arg-type]


def test_not_a_database_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(EdgewiseError, match="cannot open"):
        Outbox(path)


def test_unusable_state_dir_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(EdgewiseError, match="outbox directory"):
        Outbox(tmp_path / "file" / "o.sqlite")
