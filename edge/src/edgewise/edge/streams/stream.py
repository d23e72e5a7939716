"""One stream at run time: samples in, instances assembled, predictions published.

Samples arrive on the network thread (MQTT sources) or a source's own thread (programs,
serial ports, cameras); each is read (``edge.streams.samples``) and assembled under the
stream's lock (``edge.streams.assembly``). A finished instance waits in a bounded queue
(``queue``; beyond it the oldest is dropped and counted) and one ``Job`` is handed to the
core's worker (``Host.submit``): there every instance waiting runs as one backend call,
the features hear of the predictions as of answered requests (drift, capture, probation,
shadows: ``Host.record``), and the events and state messages are committed to the durable
outbox with the batch's answers. So a broker outage loses no prediction within the
outbox's limits, and a burst of samples costs one backend call, not one per instance.
"""

from __future__ import annotations

import collections
import logging
import math
import threading
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from edgewise.edge.core.feature import Answered, Job
from edgewise.edge.core.stream_settings import StreamSettings
from edgewise.edge.errors import EdgewiseError, RequestError
from edgewise.edge.link.field_path import FieldPath, SampleError, decode_payload
from edgewise.edge.link.outbox import OutMessage
from edgewise.edge.link.payload import encode
from edgewise.edge.runtime.decode import SHOWN, flat
from edgewise.edge.streams.assembly import Frames, Rows, RowTrigger, Windows, resize
from edgewise.edge.streams.samples import Bound, parse_line, read_field, read_time

if TYPE_CHECKING:
    from edgewise.edge.core.feature import Host
    from edgewise.edge.runtime.model import ServedModel

log = logging.getLogger(__name__)

LOG_EVERY_S = 60.0  # one log line per stream and reason at most this often
MAX_PER_JOB = 256  # instances per backend call; the rest go in the next job


def channel_names(model: ServedModel) -> list[str]:
    """A window or image model's channels, in the order of its input's last axis."""
    window = model.bundle.manifest.input.window_features
    return list(window.channels) if window is not None else [f.name for f in model.features]


def check_model(settings: StreamSettings, model: ServedModel) -> None:
    """Refuse (one line) a stream whose bindings do not fit the model."""
    where = f"stream {settings.name!r} (model {model.name})"
    shape = model.instance_shape
    if settings.assemble == "rows":
        if shape is not None and len(shape) != 1:
            raise EdgewiseError(f"{where}: the model takes {len(shape)}-d instances, not rows")
        names = [f.name for f in model.features]
    elif settings.assemble == "windows":
        if shape is None or len(shape) != 2:
            raise EdgewiseError(f"{where}: the model does not take windows (assemble = rows?)")
        names = channel_names(model)
        if settings.window is not None and settings.window != shape[0]:
            raise EdgewiseError(
                f"{where}: window = {settings.window}, but the model takes windows of "
                f"{shape[0]} samples"
            )
        if len(names) != shape[1]:
            raise EdgewiseError(f"{where}: {len(names)} channel names for {shape[1]} channels")
    else:
        if shape is None or len(shape) != 3:
            raise EdgewiseError(f"{where}: the model does not take images")
        return
    unbound = [n for n in names if n not in settings.features]
    unknown = [n for n in settings.features if n not in names]
    if unbound or unknown:
        what = "features" if settings.assemble == "rows" else "channels"
        raise EdgewiseError(
            f"{where}: [features] must bind the model's {what} {names}; "
            f"unbound {unbound}, unknown {unknown}"
        )


class Stream(RowTrigger):
    """The run-time state of one ``[[streams]]`` table (any thread may offer samples)."""

    def __init__(self, settings: StreamSettings, host: Host) -> None:
        self.settings = s = settings
        self.trigger, self.interval = s.trigger, s.interval
        self._host = host
        model = host.models.get(s.model)
        if model is None:
            have = sorted(host.models)
            raise EdgewiseError(
                f"stream {s.name!r}: no model {s.model!r} on this device; have {have}"
            )
        check_model(s, model)
        self.name = s.name
        topics = host.topics
        self.events_topic, self.state_topic = (
            topics.stream(s.name, "events"),
            topics.stream(s.name, "state"),
        )
        self._qos = host.config.qos
        self._max_payload = host.config.max_payload
        self._lock = threading.Lock()
        self._pending: collections.deque[Any] = collections.deque()
        self._scheduled = False
        self.counts = dict.fromkeys(
            ("samples", "instances", "predictions", "published", "stale", "waiting", "dropped"), 0
        )
        self.bad: collections.Counter[str] = collections.Counter()
        self.source: dict[str, Any] = {"kind": s.source}
        self._logged: dict[str, float] = {}
        self._seq = 0
        self._last_key: Any = object()
        self._time = FieldPath.parse(s.timestamp) if s.timestamp else None
        self.shape = model.instance_shape
        strings = {f.name for f in model.features if f.dtype == "string"}
        self.bound = [
            Bound(n, b, b.path, n in strings) for n, b in s.features.items() if not b.constant
        ]
        if s.assemble == "windows":
            assert self.shape is not None
            order = channel_names(model)
            self.bound.sort(key=lambda b: order.index(b.name))
            length = self.shape[0]
            self.windows = Windows(length, self.shape[1], s.stride or length, s.max_gap)
        if s.assemble == "rows":
            names = [f.name for f in model.features]
            constants = {n: b.value for n, b in s.features.items() if b.constant}
            self.rows = Rows(names, constants, s.max_age)
        self.frames = Frames(s.fps)
        plain = all(
            len(b.path.steps) == 1 and isinstance(b.path.steps[0], str) and not b.string
            and b.binding.column is None
            for b in self.bound
        )  # fmt: skip
        self._keys = [str(b.path.steps[0]) for b in self.bound] if plain else None
        self._by_topic: dict[str, list[Bound]] = {}
        for b in self.bound:
            if b.binding.topic is not None:
                self._by_topic.setdefault(b.binding.topic, []).append(b)

    # -- samples in ---------------------------------------------------------------------

    def bad_sample(self, reason: str, message: str) -> None:
        """Count a sample that could not be used; one log line per reason a minute."""
        with self._lock:
            self.bad[reason] += 1
        now = time.monotonic()
        if now - self._logged.get(reason, -LOG_EVERY_S) >= LOG_EVERY_S:
            self._logged[reason] = now
            log.warning(
                "stream %s: %s (%s; counted, the stream goes on)", self.name, message, reason
            )

    def on_message(self, topic: str, filters: list[str], payload: bytes, now: float) -> None:
        """A message on one of the stream's topic filters (``filters``: those it matched)."""
        if len(payload) > self._max_payload:
            self.bad_sample("too_large", f"a payload of {len(payload)} bytes on {topic[:100]}")
            return
        bound = [b for f in filters for b in self._by_topic.get(f, ())]
        if bound:
            try:
                doc = decode_payload(payload)
            except SampleError as exc:
                self.bad_sample(exc.reason, f"{exc} on {topic[:100]}")
                return
            if self.settings.assemble == "windows":
                self._sample(doc, now)
            else:
                self._fields(bound, doc, now)
        if self.trigger == "topic" and self.settings.trigger_topic in filters:
            self.assemble(now)

    def on_line(self, line: bytes, now: float) -> None:
        """One line from a program or serial port."""
        try:
            sample = parse_line(line, self.settings.format)
        except SampleError as exc:
            self.bad_sample(exc.reason, str(exc))
            return
        if self.settings.assemble == "windows":
            self._sample(sample, now)
        else:
            self._fields(self.bound, sample, now)

    def _fields(self, bound: list[Bound], sample: Any, now: float) -> None:
        """Rows: the features a sample holds update the latest values."""
        values = []
        for b in bound:
            try:
                values.append((b.name, read_field(b, sample)))
            except SampleError as exc:
                self.bad_sample(exc.reason, str(exc))
        if values:
            self.update(values, now)

    def emit(self, row: list[Any]) -> None:
        self.offer(row)

    def _sample(self, sample: Any, now: float) -> None:
        """Windows: one sample of every channel appended."""
        try:
            values = self._plain(sample)
            if values is None:  # anything but plain numbers under plain keys: checked fully
                values = [read_field(b, sample) for b in self.bound]
            t = read_time(self._time, sample, now)
        except SampleError as exc:
            self.bad_sample(exc.reason, str(exc))
            return
        with self._lock:
            self.counts["samples"] += 1
            done = self.windows.push(values, t)
        for window in done:
            self.offer(window, {"t": round(t, 6)})  # the time of the window's last sample

    def _plain(self, sample: Any) -> list[Any] | None:
        """The channels of a JSON object holding finite numbers under top-level keys, or
        None (the common case of a 1-3 kHz sensor, read without the general path)."""
        keys = self._keys
        if keys is None or type(sample) is not dict:
            return None
        try:
            values = [sample[k] for k in keys]
        except KeyError:
            return None
        for v in values:
            if type(v) is not float and type(v) is not int:
                return None
        return values if math.isfinite(sum(values)) else None

    def on_frame(self, frame: np.ndarray[Any, Any], now: float) -> None:
        """Images: a decoded (H, W, C) frame in RGB order, kept at most ``fps`` times a second."""
        with self._lock:
            self.counts["samples"] += 1
            number = self.counts["samples"]
            if not self.frames.due(now):
                return
        assert self.shape is not None
        height, width, channels = self.shape
        if frame.ndim == 2:
            frame = frame[..., np.newaxis]
        if channels == 1 and frame.shape[2] != 1:
            frame = frame.mean(axis=2, keepdims=True)  # grayscale models
        elif channels == 3 and frame.shape[2] == 1:
            frame = np.repeat(frame, 3, axis=2)
        if frame.shape[2] != channels:
            self.bad_sample("bad_frame", f"a frame with {frame.shape[2]} channels")
            return
        self.offer(resize(frame, height, width).astype(np.float32), {"frame": number})

    # -- instances to the worker ----------------------------------------------------------

    def offer(self, instance: Any, meta: dict[str, Any] | None = None) -> None:
        """An assembled instance (``meta``: what its events carry besides the prediction:
        a window's sample time, a frame's number): queued; a job is handed to the worker
        unless one waits."""
        with self._lock:
            self.counts["instances"] += 1
            self._pending.append((instance, meta))
            if len(self._pending) > self.settings.queue:
                self._pending.popleft()
                self.counts["dropped"] += 1
            if self._scheduled:
                return
            self._scheduled = True
        self._schedule()

    def _schedule(self) -> None:
        if not self._host.submit(Job(self._predict, f"stream {self.name}")):
            with self._lock:
                self._scheduled = False  # the worker's tick hands it over again

    def tick(self, now: float) -> None:
        """Worker thread: hand over what waits (a full queue refused it), interval rows."""
        self.due(now)
        with self._lock:
            waiting = bool(self._pending) and not self._scheduled
            if waiting:
                self._scheduled = True
        if waiting:
            self._schedule()

    def _predict(self) -> list[OutMessage]:
        """Worker thread (a Job): one backend call for what waits; the messages to commit."""
        with self._lock:
            n = min(len(self._pending), MAX_PER_JOB)
            taken = [self._pending.popleft() for _ in range(n)]
            more = self._scheduled = bool(self._pending)  # the rest: the next job
        if more:
            self._schedule()
        model = self._host.models.get(self.settings.model)
        if not taken:
            return []
        batch, metas = [b for b, _ in taken], [m for _, m in taken]
        if model is None or "incompatible" in self.source:  # undeployed, or does not fit
            with self._lock:
                self.counts["dropped"] += len(batch)
            return []
        tensor = None if self.settings.assemble == "rows" else np.stack(batch)
        started = time.perf_counter()
        try:
            preds = model.predict(batch) if tensor is None else model.predict_tensor(tensor)
        except RequestError as exc:  # e.g. a value the model refuses
            for _ in batch:
                self.bad_sample(exc.code, exc.message)
            return []
        elapsed = (time.perf_counter() - started) * 1000.0
        self._host.record(
            Answered(model, None, batch if tensor is None else None, tensor, preds, elapsed)
        )
        return self._messages(model, preds, metas)

    def _messages(
        self, model: ServedModel, preds: list[dict[str, Any]], metas: list[dict[str, Any] | None]
    ) -> list[OutMessage]:
        out: list[OutMessage] = []
        last = None
        now = round(time.time(), 3)
        for pred, meta in zip(preds, metas):
            self._seq += 1
            doc = self.summary(model, pred)
            if meta:
                doc.update(meta)
            key = tuple(doc.get(k) for k in (*SHOWN, "anomaly"))
            if self.settings.publish == "change" and key == self._last_key:
                continue
            self._last_key = key
            doc.update(seq=self._seq, time=now)
            last = encode(doc)
            out.append(OutMessage(self.events_topic, last, self._qos))
        with self._lock:
            self.counts["predictions"] += len(preds)
            self.counts["published"] += len(out)
        if last is not None:  # the latest only: a burst is one retained write, not many
            out.append(OutMessage(self.state_topic, last, self._qos, retain=True))
        return out

    def summary(self, model: ServedModel, pred: dict[str, Any]) -> dict[str, Any]:
        """The flat document of one prediction (events and state)."""
        doc = {"stream": self.name, "model": model.name, "version": model.version, **flat(pred)}
        if "is_anomaly" in pred:
            doc["anomaly"] = bool(pred["is_anomaly"])
        elif "label" in pred and self.settings.normal:
            doc["anomaly"] = str(pred["label"]) not in self.settings.normal
        return doc

    def swapped(self, new: ServedModel | None) -> None:
        """A new version of the stream's model: its bindings are checked against it."""
        if new is None:
            return
        try:
            check_model(self.settings, new)
            self.source.pop("incompatible", None)
        except EdgewiseError as exc:
            self.source["incompatible"] = str(exc)
            log.error("%s; its instances are refused until a version that fits", exc)

    def health(self) -> dict[str, Any]:
        with self._lock:
            doc: dict[str, Any] = {"model": self.settings.model, **self.counts}
            doc["bad"] = dict(self.bad)
            doc["queued"] = len(self._pending)
            if self.settings.assemble == "windows":
                doc["gaps"] = self.windows.gaps
        doc["source"] = dict(self.source)
        return doc
