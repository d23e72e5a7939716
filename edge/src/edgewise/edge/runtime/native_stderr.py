"""Keep what native libraries print on file descriptor 2 off the terminal, unless asked.

LiteRT prints "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." when an
interpreter is built, and the TFLite converter "fully_quantize: 0, inference_type: 6, ...";
both go straight to fd 2 from C++, past Python's logging. :func:`quiet_native_stderr`
sends fd 2 to a temporary file for the duration of such a call: on success the text is
logged at DEBUG (``--log-level debug`` shows it), on failure it is written back to stderr,
so nothing that explains an error is lost. fd 2 is process-wide, so this is for calls made
while loading and converting, not while serving.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)


@contextmanager
def quiet_native_stderr(what: str) -> Iterator[None]:
    """Capture fd 2 while the block runs; ``what`` names the call in the debug log."""
    if log.isEnabledFor(logging.DEBUG):
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable fd 2 (embedded interpreters): leave it be
        yield
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        failed = False
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text = sink.read().decode("utf-8", "replace").strip()
            if text and failed:
                print(text, file=sys.stderr)
            elif text:
                log.debug("%s printed: %s", what, text)


# What TensorFlow's C++ side prints at import and while building graphs, whatever
# TF_CPP_MIN_LOG_LEVEL says (TF 2.21 logs through absl): absl's "before InitializeLog"
# notice and glog-style lines such as "I0000 00:00:1796446995.18 28139 port.cc:153] oneDNN".
NATIVE_BANNER = re.compile(
    rb"^(WARNING: All log messages before absl::InitializeLog\(\) is called"
    rb"|[IWE]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [\w.+-]+:\d+\] )"
)


@contextmanager
def without_native_banners() -> Iterator[None]:
    """Drop native libraries' log banners from fd 2 for the whole block (a CLI command);
    every other line, Python's own errors included, passes through as it comes."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
        read_end, write_end = os.pipe()
    except (OSError, ValueError):
        yield
        return

    def pump() -> None:
        with os.fdopen(read_end, "rb", buffering=0) as pipe:
            pending = b""
            while chunk := pipe.read(65536):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                out = b"".join(ln + b"\n" for ln in lines if not NATIVE_BANNER.match(ln))
                if out:
                    os.write(saved, out)
            if pending and not NATIVE_BANNER.match(pending):
                os.write(saved, pending)

    thread = threading.Thread(target=pump, name="stderr-filter", daemon=True)
    thread.start()
    os.dup2(write_end, 2)
    os.close(write_end)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # the pipe's last writer closes: the pump drains and ends
        thread.join(timeout=2.0)
        os.close(saved)
