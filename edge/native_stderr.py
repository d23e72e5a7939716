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
import sys
import tempfile
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
