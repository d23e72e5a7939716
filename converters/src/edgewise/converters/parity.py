"""The one parity gate: the written bundle, served by the device's own code, against the original.

Every converter stages the bundle it is about to write, loads it with the edge backend
and ``ServedModel`` (the code the agent runs: request validation, missing values,
lowercasing, window features, int8 quantize/dequantize, output decoding), feeds it the
held-out data as a client would send it, and compares the answers with the host model.
The result is one report type, :class:`~edgewise.edge.runtime.manifest.Parity`, stored in the
manifest; a failed gate raises :class:`ParityError` and nothing is written.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from edgewise.converters.bundle_writer import write_bundle
from edgewise.converters.defaults import DEFAULT_TOLERANCE
from edgewise.edge.errors import EdgewiseError, flag
from edgewise.edge.runtime import selftest
from edgewise.edge.runtime.manifest import Manifest, Parity, SelfTest
from edgewise.edge.runtime.model import ServedModel

BATCH = 256
SELFTEST_FILE = "selftest.json"


class ParityError(EdgewiseError):
    """The converted model does not answer like the original.

    ``tries`` are (option, value) pairs worth trying next (value None: "more of it"); the
    message names them as parameters, the command line as flags.
    """

    def __init__(self, message: str, tries: Sequence[tuple[str, str | None]] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.tries = list(tries)

    def _render(self, name: Callable[[str], str]) -> str:
        if not self.tries:
            return self.message
        hints = [f"{name(o)} {v}" if v is not None else f"more {name(o)}" for o, v in self.tries]
        return f"{self.message}; try {' or '.join(hints)}"

    def __str__(self) -> str:
        return self._render(lambda option: option)

    def cli_message(self) -> str:
        return self._render(flag)


def serve_staged(
    model_bytes: bytes, manifest: Manifest, inputs: Sequence[Any] | np.ndarray
) -> tuple[list[dict[str, Any]], str]:
    """Predictions of the bundle as the device serves it, and the backend's name.

    ``inputs`` is a list of JSON instances or one array (batch axis first). A bundle with
    window features is checked on feature rows: the device computes them from windows with
    the same ``edge.runtime.features`` code the trainer used.
    """
    staged = manifest
    if manifest.input.window_features is not None:
        spec = manifest.input.model_copy(update={"window_features": None, "kind": "tabular"})
        staged = manifest.model_copy(update={"input": spec})
    with tempfile.TemporaryDirectory() as staging:
        served = ServedModel.load(write_bundle(staging, model_bytes, staged))
        answers: list[dict[str, Any]] = []
        for start in range(0, len(inputs), BATCH):
            chunk = inputs[start : start + BATCH]
            if isinstance(chunk, np.ndarray):
                answers += served.predict_tensor(chunk)
            else:
                answers += served.predict(list(chunk))
        return answers, served.backend.name


def with_selftest(
    manifest: Manifest,
    instances: Sequence[Any],
    answers: list[dict[str, Any]],
    tolerance: float,
    p99_budget_ms: float | None = None,
    count: int = selftest.DEFAULT_COUNT,
) -> tuple[Manifest, dict[str, bytes]]:
    """The manifest with its self-test, and the self-test file: the first ``count`` held-out
    inputs as clients send them and the answers the staged bundle gave here.

    Window-feature bundles get none: their held-out rows are features, the device takes
    raw windows.
    """
    if manifest.input.window_features is not None or not answers:
        return manifest, {}
    n = min(count, len(answers))
    data = selftest.document(list(instances[:n]), answers[:n])
    spec = SelfTest(
        file=SELFTEST_FILE,
        sha256=hashlib.sha256(data).hexdigest(),
        count=n,
        tolerance=tolerance,
        p99_budget_ms=p99_budget_ms,
    )
    return manifest.model_copy(update={"selftest": spec}), {SELFTEST_FILE: data}


def probabilities(answers: list[dict[str, Any]], labels: Sequence[Any]) -> np.ndarray:
    """The answers' class probabilities as a matrix in label order."""
    keys = [str(c) for c in labels]
    return np.asarray([[a["probabilities"][k] for k in keys] for a in answers], np.float64)


def classification_parity(
    estimator: str,
    labels_ref: np.ndarray,
    labels_new: np.ndarray,
    proba_ref: np.ndarray | None,
    proba_new: np.ndarray | None,
    tolerance: float = DEFAULT_TOLERANCE,
    served_by: str | None = None,
) -> Parity:
    """Every label must agree and every probability (or distance) be within ``tolerance``."""
    labels_ref = np.asarray(labels_ref).reshape(-1)
    labels_new = np.asarray(labels_new).reshape(-1)
    agree = labels_ref.astype(str) == labels_new.astype(str)
    worst = 0.0
    if proba_ref is not None and proba_new is not None:
        worst = float(np.max(np.abs(np.asarray(proba_ref) - np.asarray(proba_new))))
    report = Parity(
        rows=len(labels_ref),
        passed=bool(agree.all()) and worst <= tolerance,
        served_by=served_by,
        tolerance=tolerance,
        label_agreement=float(agree.mean()),
        max_abs_diff=worst,
    )
    if not report.passed:
        raise ParityError(
            f"parity check failed for {estimator}: {int((~agree).sum())} of {len(agree)} labels "
            f"differ, worst probability difference {worst:.3g} (limit {tolerance:g})"
        )
    return report


def regression_parity(
    estimator: str,
    ref: np.ndarray,
    new: np.ndarray,
    tolerance: float = DEFAULT_TOLERANCE,
    served_by: str | None = None,
) -> Parity:
    """Every value within ``tolerance`` relative to max(|reference|, 1)."""
    ref = np.asarray(ref, dtype=np.float64).reshape(-1)
    new = np.asarray(new, dtype=np.float64).reshape(-1)
    diff = np.abs(ref - new)
    rel = diff / np.maximum(np.abs(ref), 1.0)
    report = Parity(
        rows=len(ref),
        passed=bool(np.all(rel <= tolerance)),
        served_by=served_by,
        tolerance=tolerance,
        max_abs_diff=float(diff.max()),
        max_rel_diff=float(rel.max()),
    )
    if not report.passed:
        raise ParityError(
            f"parity check failed for {estimator}: worst relative difference "
            f"{report.max_rel_diff:.3g} (limit {tolerance:g}), absolute {report.max_abs_diff:.3g}"
        )
    return report
