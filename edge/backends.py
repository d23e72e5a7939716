"""Runtime backends behind one ``Backend`` protocol, chosen through an explicit registry.

Each backend imports its runtime lazily, so ``edge`` itself stays cheap to import and a
device only needs the runtime for the formats it actually serves.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from edge.errors import BackendUnavailableError, BundleError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BackendOptions:
    """Runtime settings common to all backends."""

    num_threads: int | None = None  # None: the runtime's default


class Backend(Protocol):
    """A loaded model that maps named input arrays to named output arrays."""

    name: str

    @property
    def input_names(self) -> list[str]: ...

    @property
    def output_names(self) -> list[str]: ...

    def run(self, feeds: Mapping[str, np.ndarray[Any, Any]]) -> dict[str, np.ndarray[Any, Any]]:
        """Run one batch; every array's first axis is the batch."""
        ...


class OnnxRuntimeBackend:
    """ONNX Runtime on the CPU."""

    name = "onnxruntime"

    def __init__(self, model_path: Path, options: BackendOptions) -> None:
        import onnxruntime as ort

        so = ort.SessionOptions()
        # The default thread count is kept unless asked: forcing 1 thread made tree
        # ensembles 1.4-1.9x slower here (shared/notes/dependencies.md).
        if options.num_threads is not None:
            so.intra_op_num_threads = options.num_threads
        so.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(
                str(model_path), sess_options=so, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # ORT raises its own exception types for bad graphs
            raise BundleError(f"onnxruntime cannot load {model_path.name}: {exc}") from None
        self._inputs = [i.name for i in self._session.get_inputs()]
        self._outputs = [o.name for o in self._session.get_outputs()]

    @property
    def input_names(self) -> list[str]:
        return list(self._inputs)

    @property
    def output_names(self) -> list[str]:
        return list(self._outputs)

    def run(self, feeds: Mapping[str, np.ndarray[Any, Any]]) -> dict[str, np.ndarray[Any, Any]]:
        values = self._session.run(self._outputs, dict(feeds))
        return dict(zip(self._outputs, values))


BackendFactory = Callable[[Path, BackendOptions], Backend]

# Model format -> backends to try, in order of preference. Registering is explicit: a new
# backend adds its factory here, nothing is discovered by import side effects.
REGISTRY: dict[str, list[tuple[str, BackendFactory]]] = {
    "onnx": [("onnxruntime", OnnxRuntimeBackend)],
}


def load_backend(model_format: str, model_path: Path, options: BackendOptions) -> Backend:
    """Load ``model_path`` with the first registered backend whose runtime imports."""
    candidates = REGISTRY.get(model_format)
    if not candidates:
        raise BackendUnavailableError(
            f"no backend for model format {model_format!r}; known: {sorted(REGISTRY)}"
        )
    missing: list[str] = []
    for name, factory in candidates:
        try:
            backend = factory(model_path, options)
        except ImportError as exc:
            missing.append(f"{name} ({exc.name or exc})")
            continue
        log.info("loaded %s with backend %s", model_path.name, name)
        return backend
    raise BackendUnavailableError(
        f"no runtime for {model_format} models is installed (tried {', '.join(missing)}); "
        "install edgewise[edge]"
    )
