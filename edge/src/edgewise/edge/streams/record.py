"""``edgewise record``: a stream's samples written as training data, labelled.

The same ``[[streams]]`` table the agent runs (its source, its bindings) records on the
host or the device, with no model: rows as a labelled CSV (columns: the bound features in
the table's order, then ``label``), window streams as a CSV of samples (the channels,
then ``label``: ``edgewise train --csv FILE --target label --window N`` cuts it), image
streams as a folder with one subfolder per label. The label is ``--label NAME`` for the
whole run, or the latest message on ``--label-topic`` (a switch, or an annotation the
user publishes: the payload, or ``--label-field`` in it); samples before any label are
skipped and counted. Every record is flushed as written: Ctrl-C leaves a valid file.
"""

from __future__ import annotations

import csv
import logging
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from edgewise.edge.core.config import AgentConfig
from edgewise.edge.core.feature import matches
from edgewise.edge.core.stream_settings import StreamSettings, check_filter
from edgewise.edge.errors import EdgewiseError
from edgewise.edge.link.field_path import FieldPath, SampleError, decode_payload
from edgewise.edge.link.mqtt import MqttConnection
from edgewise.edge.streams.assembly import Frames, Rows, RowTrigger
from edgewise.edge.streams.samples import Bound, parse_line, read_field
from edgewise.edge.streams.sources import source_for

log = logging.getLogger(__name__)

PROGRESS_EVERY_S = 1.0
MAX_LABEL = 64  # characters of a label (it names a folder of images)


def check_label(label: str) -> str:
    """A label usable as a CSV value and a folder name."""
    label = label.strip()
    if not label or len(label) > MAX_LABEL or not label.isprintable() or set(label) & set("/\\"):
        raise SampleError("bad_label", f"label {label[:40]!r}: 1..{MAX_LABEL} printable, no /")
    return label


def _loose(bound: Bound, sample: Any) -> Any:
    """A bound value for a CSV without a model to say its type: a finite number when it
    is one, else the string (a zone, a switch's state)."""
    try:
        return read_field(bound, sample)
    except SampleError as exc:
        if exc.reason != "not_a_number":
            raise
    raw = read_field(Bound(bound.name, bound.binding, bound.path, True), sample)
    if not raw.isprintable() or len(raw) > MAX_LABEL * 4:
        raise SampleError("not_a_string", f"{bound.name}: not a printable short string")
    return raw


class Recorder(RowTrigger):
    """Writes one stream's samples; sources feed it as they feed a running stream."""

    def __init__(self, settings: StreamSettings, out: Path, label: str | None) -> None:
        self.settings, self.name = settings, settings.name
        self.trigger, self.interval = settings.trigger, settings.interval
        self.source: dict[str, Any] = {"kind": settings.source}
        self.label = check_label(label) if label is not None else None
        self.counts: Counter[str] = Counter()
        self.bad: Counter[str] = Counter()
        self._lock = threading.Lock()
        self.out = out
        self.bound = [
            Bound(n, b, b.path, False) for n, b in settings.features.items() if not b.constant
        ]
        self.names = list(settings.features)
        constants = {n: b.value for n, b in settings.features.items() if b.constant}
        self.rows = Rows(self.names, constants, settings.max_age)
        self.frames = Frames(settings.fps)
        self._file: TextIO | None = None
        self._csv: Any = None
        if settings.assemble == "images":
            out.mkdir(parents=True, exist_ok=True)
        else:
            exists = out.exists() and out.stat().st_size > 0
            self._file = out.open("a", newline="", encoding="utf-8")
            self._csv = csv.writer(self._file)
            if not exists:
                self._csv.writerow([*self.names, "label"])
                self._file.flush()

    # -- what sources call ----------------------------------------------------------------

    def bad_sample(self, reason: str, message: str) -> None:
        with self._lock:
            self.bad[reason] += 1

    def on_message(self, topic: str, payload: bytes, now: float) -> None:
        try:
            doc = decode_payload(payload)
        except SampleError as exc:
            self.bad_sample(exc.reason, str(exc))
            return
        levels = topic.split("/")
        bound = [
            b for b in self.bound if b.binding.topic and matches(b.binding.topic.split("/"), levels)
        ]
        self._take(bound, doc, now)
        trigger = self.settings.trigger_topic
        if trigger is not None and matches(trigger.split("/"), levels):
            self.assemble(now)

    def on_line(self, line: bytes, now: float) -> None:
        try:
            sample = parse_line(line, self.settings.format)
        except SampleError as exc:
            self.bad_sample(exc.reason, str(exc))
            return
        self._take(self.bound, sample, now)

    def on_frame(self, frame: np.ndarray[Any, Any], now: float) -> None:
        with self._lock:
            if not self.frames.due(now):
                return
            label = self._label()
            if label is None:
                return
            import cv2

            folder = self.out / label
            folder.mkdir(exist_ok=True)
            self.counts["recorded"] += 1
            path = folder / f"{self.name}-{int(time.time() * 1000)}-{self.counts['recorded']}.png"
            cv2.imwrite(str(path), np.ascontiguousarray(frame[..., ::-1]))  # RGB -> BGR

    # -- assembly ---------------------------------------------------------------------------

    def _label(self) -> str | None:
        if self.label is None:
            self.counts["unlabelled"] += 1
        return self.label

    def _take(self, bound: list[Bound], sample: Any, now: float) -> None:
        values = []
        for b in bound:
            try:
                values.append((b.name, _loose(b, sample)))
            except SampleError as exc:
                self.bad_sample(exc.reason, str(exc))
                if self.settings.assemble == "windows":
                    return  # a sample with a channel missing is not written
        if not values:
            return
        if self.settings.assemble == "windows":
            with self._lock:
                label = self._label()
                if label is not None:
                    self._write([v for _, v in values], label)
            return
        self.update(values, now)

    def emit(self, row: list[Any]) -> None:
        with self._lock:
            label = self._label()
            if label is not None:
                self._write(row, label)

    def _write(self, values: list[Any], label: str) -> None:
        self._csv.writerow([*values, label])
        self.counts["recorded"] += 1

    def tick(self, now: float) -> None:
        """Flush; interval rows."""
        self.due(now)
        with self._lock:
            if self._file is not None:
                self._file.flush()

    def set_label(self, label: str | None) -> None:
        with self._lock:
            self.label = label

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def progress(self) -> str:
        with self._lock:
            what = {"rows": "rows", "windows": "samples", "images": "images"}
            line = f"recorded {self.counts['recorded']} {what[self.settings.assemble]}"
            line += f" (label {self.label or '-'})"
            if self.counts["unlabelled"]:
                line += f", {self.counts['unlabelled']} without a label"
            skipped = self.counts["stale"] + self.counts["waiting"]
            if skipped:
                line += f", {skipped} incomplete"
            if self.bad:
                line += f", {sum(self.bad.values())} bad samples"
            return line


def record(
    config: AgentConfig,
    stream_name: str,
    out: Path,
    label: str | None,
    label_topic: str | None,
    label_field: str,
    count: int | None,
    duration: float | None,
    progress: TextIO = sys.stderr,
    stop: threading.Event | None = None,
) -> Counter[str]:
    """Record until ``count`` records, ``duration`` seconds, ``stop`` or Ctrl-C."""
    streams = {s.name: s for s in config.streams}
    if stream_name not in streams:
        raise EdgewiseError(f"no stream {stream_name!r} in the config; have {sorted(streams)}")
    if (label is None) == (label_topic is None):
        raise EdgewiseError("give --label NAME or --label-topic TOPIC (one of them)")
    settings = streams[stream_name]
    if settings.assemble == "images" and out.suffix:
        raise EdgewiseError(f"--out {out}: an image stream records into a folder")
    if settings.assemble != "images" and out.suffix.lower() != ".csv":
        raise EdgewiseError(f"--out {out}: rows and samples are recorded into a .csv file")
    path = FieldPath.parse(label_field)
    try:
        if label is not None:
            label = check_label(label)
        if label_topic is not None:
            check_filter(label_topic)
    except (SampleError, ValueError) as exc:
        raise EdgewiseError(f"--label / --label-topic: {exc}") from None
    recorder = Recorder(settings, out, label)
    stop = stop or threading.Event()
    source = source_for(recorder)
    subs = [(t, 1) for t in settings.topics] + ([(label_topic, 1)] if label_topic else [])

    def on_message(msg: Any) -> None:
        now = time.monotonic()
        if label_topic is not None and matches(label_topic.split("/"), msg.topic.split("/")):
            try:
                raw = path.read(decode_payload(msg.payload))
                recorder.set_label(check_label(str(raw)) if str(raw).strip() else None)
            except SampleError as exc:
                recorder.bad_sample(exc.reason, str(exc))
            return
        recorder.on_message(msg.topic, msg.payload, now)

    conn = None
    if subs:
        conn = MqttConnection(
            config.endpoint,
            protocol=config.protocol,
            on_message=on_message,
            subscriptions=subs,
            quiet=True,
        )
        conn.start()
        if not conn.wait_connected(10):
            conn.stop(final_status=None, timeout=1)
            recorder.close()
            raise EdgewiseError(f"{conn.last_error} (gave up after 10s)")
    thread = None
    if source is not None:
        thread = threading.Thread(target=source.run, args=(stop,), daemon=True)
        thread.start()
    started = time.monotonic()
    shown = 0.0
    try:
        while not stop.wait(0.1):
            now = time.monotonic()
            recorder.tick(now)
            if now - shown >= PROGRESS_EVERY_S:
                shown = now
                progress.write("\r" + recorder.progress())
                progress.flush()
            if count is not None and recorder.counts["recorded"] >= count:
                break
            if duration is not None and now - started >= duration:
                break
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        if source is not None:
            source.close()
        if thread is not None:
            thread.join(5)
        if conn is not None:
            conn.stop(final_status=None, timeout=2)
        recorder.close()
        progress.write("\r" + recorder.progress() + "\n")
    return recorder.counts
