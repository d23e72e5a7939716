"""What native code writes to fd 2 stays off the terminal, and comes back when it failed."""

from __future__ import annotations

import logging
import os

import pytest

from edgewise.edge.runtime.native_stderr import quiet_native_stderr


def test_native_output_is_kept_for_the_debug_log(
    capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    logger = "edgewise.edge.runtime.native_stderr"
    with caplog.at_level(logging.INFO, logger=logger), quiet_native_stderr("a loader"):
        os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n")
    assert "XNNPACK" not in capfd.readouterr().err
    with caplog.at_level(logging.DEBUG, logger=logger), quiet_native_stderr("a loader"):
        os.write(2, b"shown with --log-level debug\n")
    assert "shown with --log-level debug" in capfd.readouterr().err  # not captured at DEBUG


def test_native_output_comes_back_when_the_call_fails(capfd: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(RuntimeError), quiet_native_stderr("a converter"):
        os.write(2, b"why it failed\n")
        raise RuntimeError("conversion failed")
    assert "why it failed" in capfd.readouterr().err
    os.write(2, b"fd 2 is restored\n")
    assert "fd 2 is restored" in capfd.readouterr().err
