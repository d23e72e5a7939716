"""Frames from a camera, a video file or a stream URL, through OpenCV (the ``camera`` extra).

``camera = "0"`` is the first camera (``/dev/video0``); a path is a video file, read at
the file's own frame rate (as a camera would deliver it); anything else is handed to
OpenCV as a URL (RTSP, HTTP). Frames are converted to RGB and given to the stream, which
keeps at most ``fps`` a second and resizes them to the model's input. When the camera
fails or a file ends, it is reopened after a capped, jittered back-off (health:
``source.restarts``): a video file plays again.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

import numpy as np

from edgewise.edge.errors import EdgewiseError
from edgewise.edge.link.backoff import Backoff
from edgewise.edge.streams.samples import Sink

log = logging.getLogger(__name__)


class CameraSource:
    """Reads frames with ``cv2.VideoCapture`` on its own thread."""

    def __init__(self, stream: Sink) -> None:
        self.stream = stream
        where = str(stream.settings.camera)
        self.file = os.path.isfile(where)
        self.where: int | str = int(where) if where.isdigit() else where
        stream.source.update(state="starting", restarts=0, camera=_shown(where))
        try:
            import cv2  # noqa: F401
        except ImportError:
            raise EdgewiseError(
                f"stream {stream.name!r}: source = 'camera' needs OpenCV "
                "(the camera extra: edgewise kit --extra camera, or pip install './edge[camera]' "
                "from the checkout; docs/devices.md)"
            ) from None

    def run(self, stop: threading.Event) -> None:
        import cv2

        backoff = Backoff(initial=0.5, cap=30.0)
        source = self.stream.source
        while not stop.is_set():
            cap = cv2.VideoCapture(self.where)
            try:
                if not cap.isOpened():
                    source.update(state="failed", error="cannot open the camera")
                else:
                    source.update(state="running", error=None)
                    self._frames(cap, stop)
                    if not stop.is_set():
                        source.update(state="ended" if self.file else "failed")
            finally:
                cap.release()
            if stop.is_set():
                break
            source["restarts"] += 1
            if stop.wait(backoff.next() if not self.file else 0.5):
                break

    def _frames(self, cap: Any, stop: threading.Event) -> None:
        import cv2

        period = 0.0
        if self.file:  # a file: at its own rate, as a camera delivers
            fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
            period = 1.0 / fps if 0 < fps <= 1000 else 0.0
        next_at = time.monotonic()
        while not stop.is_set():
            ok, frame = cap.read()
            if not ok:
                return
            now = time.monotonic()
            if not isinstance(frame, np.ndarray) or frame.ndim not in (2, 3) or frame.size == 0:
                self.stream.bad_sample("bad_frame", "a frame that does not decode")
                continue
            rgb = frame[..., ::-1] if frame.ndim == 3 and frame.shape[2] == 3 else frame
            self.stream.on_frame(rgb, now)
            if period:
                next_at += period
                if stop.wait(max(0.0, next_at - time.monotonic())):
                    return

    def close(self) -> None:
        """Nothing to do: the reader releases the camera when the stop event is set."""


def _shown(where: str) -> str:
    # A stream URL may carry a password (rtsp://user:pass@host): never in health or logs.
    if "@" in where and "://" in where:
        scheme, rest = where.split("://", 1)
        return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
    return where
