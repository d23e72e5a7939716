"""``edgewise capture pull``: a device's captured samples, over MQTT, into a file to label.

The puller asks the agent (edge.observe.field_data) for the rows after the last one it holds, one
chunk at a time, on an MQTT 5 response topic under the device's tree (the shipped ACL lets
a device publish only there). Each chunk's sha256 is checked and its rows are appended to
``OUT.partial`` (JSON lines) before the next is asked for, so an interrupted pull resumes
where it stopped. At the end the rows become ``OUT``: a CSV for tabular and text models
(the feature columns, ``predicted``, ``confidence``, ``captured_at``, ``reason`` and an
empty ``label`` column to fill in), an ``.npz`` for windows and images (``X``,
``predicted``, ``confidence``, ``captured_at``). ``--clear`` then deletes the pulled rows
on the device, and only those.
"""

from __future__ import annotations

import csv
import json
import queue
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgewise.edge.errors import EdgewiseError
from edgewise.edge.link.capture_wire import CAPTURE_COLUMNS, rows_digest
from edgewise.edge.link.endpoint import Endpoint
from edgewise.edge.link.message import Message
from edgewise.edge.link.mqtt import MqttConnection
from edgewise.edge.link.topics import Topics, check_segment
from edgewise.edge.remote.client import connect

ATTEMPTS = 3  # tries per chunk before giving up (the partial file keeps what came)


@dataclass
class PullResult:
    """What a pull brought: rows written, the device's counts, and what was cleared."""

    rows: int
    first: int | None
    last: int | None
    stored: int
    dropped: int
    cleared: int | None
    out: Path


class _Link:
    """One connection with a private response topic; one request at a time."""

    def __init__(self, endpoint: Endpoint, topics: Topics, model: str, timeout: float) -> None:
        self.request_topic = topics.model(model, "capture")
        self.reply_topic = f"{self.request_topic}/reply/{uuid.uuid4().hex[:12]}"
        self.timeout = timeout
        self.conn: MqttConnection
        self.conn, self.inbox = connect(endpoint, "5", [(self.reply_topic, 1)], timeout)

    def ask(self, doc: dict[str, Any]) -> dict[str, Any]:
        for _ in range(ATTEMPTS):
            tag = uuid.uuid4().bytes
            self.conn.publish(
                self.request_topic,
                json.dumps(doc).encode(),
                qos=1,
                correlation_data=tag,
                response_topic=self.reply_topic,
            )
            answer = self._wait(tag)
            if answer is not None:
                if "error" in answer:
                    raise EdgewiseError(f"the device refused: {answer['error']}")
                return answer
        raise EdgewiseError(
            f"no answer on {self.reply_topic} after {ATTEMPTS} tries of {self.timeout:g}s: is "
            "the agent online, and does this user may write its capture topic?"
        )

    def _wait(self, tag: bytes) -> dict[str, Any] | None:
        deadline = time.monotonic() + self.timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                msg: Message = self.inbox.get(timeout=left)
            except queue.Empty:
                return None
            if msg.correlation_data != tag:
                continue  # an answer to an earlier try
            try:
                doc = json.loads(msg.payload)
            except ValueError:
                raise EdgewiseError("the device's answer is not JSON") from None
            return doc if isinstance(doc, dict) else None
        return None

    def close(self) -> None:
        self.conn.stop(final_status=None, timeout=2)


def _resume(partial: Path, device: str, model: str) -> tuple[int, int]:
    """The last seq and row count already in ``partial`` (a new one gets a header)."""
    header = {"device": device, "model": model}
    if partial.exists():
        lines = partial.read_text(encoding="utf-8").splitlines()
        if lines and json.loads(lines[0]) == header:
            rows = [json.loads(line) for line in lines[1:] if line.strip()]
            return (rows[-1]["seq"] if rows else 0), len(rows)
    partial.write_text(json.dumps(header) + "\n", encoding="utf-8")
    return 0, 0


def pull(
    endpoint: Endpoint,
    prefix: str,
    device: str,
    model: str,
    out: str | Path,
    *,
    clear: bool = False,
    timeout: float = 10.0,
) -> PullResult:
    """Pull the device's captured rows of ``model`` into ``out`` (see the module doc)."""
    check_segment("model", model)
    out = Path(out)
    if out.suffix not in (".csv", ".npz"):
        raise EdgewiseError(f"--out {out}: use a .csv (tables, texts) or .npz (windows, images)")
    topics = Topics(prefix, device)
    partial = out.with_name(out.name + ".partial")
    link = _Link(endpoint, topics, model, timeout)  # no partial file for a broker not reached
    try:
        after, _ = _resume(partial, device, model)
        answer = link.ask({"op": "pull", "after": after})
        while True:
            rows = answer["rows"]
            if rows_digest(rows) != answer["sha256"]:
                raise EdgewiseError("a chunk arrived damaged (sha256 differs); pull again")
            seqs = [r["seq"] for r in rows]
            if any(b <= a for a, b in zip([after, *seqs], seqs)):
                raise EdgewiseError("the device sent rows out of order; pull again")
            with partial.open("a", encoding="utf-8") as fh:
                fh.writelines(json.dumps(r) + "\n" for r in rows)
            after = answer["next"]
            if not answer["more"] or not rows:
                break
            answer = link.ask({"op": "pull", "after": after})
        kept = [json.loads(line) for line in partial.read_text("utf-8").splitlines()[1:]]
        _write(out, kept, answer.get("features") or [], answer.get("kind") or "tabular")
        cleared = None
        if clear and kept:
            cleared = int(link.ask({"op": "clear", "through": kept[-1]["seq"]})["cleared"])
    finally:
        link.close()
    partial.unlink()
    return PullResult(
        rows=len(kept),
        first=kept[0]["seq"] if kept else None,
        last=kept[-1]["seq"] if kept else None,
        stored=int(answer["stored"]),
        dropped=int(answer["dropped"]),
        cleared=cleared,
        out=out,
    )


def _predicted(prediction: dict[str, Any]) -> Any:
    for key in ("label", "value", "cluster"):
        if key in prediction:
            return prediction[key]
    if "is_anomaly" in prediction:
        return "anomaly" if prediction["is_anomaly"] else "normal"
    return None


def _write(out: Path, rows: list[dict[str, Any]], features: list[str], kind: str) -> None:
    tmp = out.with_name(out.name + ".tmp")
    if out.suffix == ".npz":
        if kind not in ("window", "image"):
            raise EdgewiseError(f"--out {out}: a {kind} model's samples go to a .csv")
        import numpy as np

        with tmp.open("wb") as fh:
            np.savez_compressed(
                fh,
                X=np.asarray([r["instance"] for r in rows], dtype=np.float32),
                predicted=np.asarray([str(_predicted(r["prediction"])) for r in rows]),
                confidence=np.asarray([r["confidence"] for r in rows], dtype=np.float64),
                captured_at=np.asarray([r["captured_at"] for r in rows], dtype=np.float64),
            )
    else:
        if kind in ("window", "image"):
            raise EdgewiseError(f"--out {out}: a {kind} model's samples go to an .npz")
        extra = list(CAPTURE_COLUMNS)
        with tmp.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow([*features, *extra])
            for r in rows:
                inst = r["instance"]
                values = (
                    [inst.get(f) for f in features]
                    if isinstance(inst, dict)
                    else [inst]
                    if isinstance(inst, str)
                    else list(inst)
                )
                cells = ["" if v is None else v for v in values]
                conf = r["confidence"]
                writer.writerow(
                    [*cells, _predicted(r["prediction"]), "" if conf is None else conf,
                     r["captured_at"], r["reason"], ""]
                )  # fmt: skip
    tmp.replace(out)
