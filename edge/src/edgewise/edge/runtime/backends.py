"""Runtime backends behind one ``Backend`` protocol, chosen through an explicit registry.

Each backend imports its runtime lazily, so ``edge`` itself stays cheap to import and a
device only needs the runtime for the formats it actually serves.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from edgewise.edge.errors import BackendUnavailableError, BundleError
from edgewise.edge.runtime.native_stderr import quiet_native_stderr

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BackendOptions:
    """Runtime settings common to all backends."""

    num_threads: int | None = None  # None: the runtime's default
    # ONNX Runtime execution providers in order of preference (e.g. TensorRT, CUDA on a
    # Jetson); those this onnxruntime build lacks are skipped with one log line.
    providers: tuple[str, ...] = ("CPUExecutionProvider",)


class Backend(Protocol):
    """A loaded model that maps named input arrays to named output arrays."""

    name: str

    @property
    def input_names(self) -> list[str]: ...

    @property
    def output_names(self) -> list[str]: ...

    @property
    def input_dtypes(self) -> dict[str, str]:
        """NumPy dtype name of each input ("float32", "int8", "object" for strings)."""
        ...

    def run(self, feeds: Mapping[str, np.ndarray[Any, Any]]) -> dict[str, np.ndarray[Any, Any]]:
        """Run one batch; every array's first axis is the batch."""
        ...


def pick_providers(wanted: Sequence[str], available: Sequence[str]) -> list[str]:
    """The wanted execution providers this build has, in order, CPU last as the fallback;
    the missing ones are named in one log line (a CPU-only wheel on a Jetson, say)."""
    chosen = [p for p in wanted if p in available]
    missing = [p for p in wanted if p not in available]
    if "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")
    if missing:
        log.warning(
            "onnxruntime here lacks %s (it has %s); running on %s",
            ", ".join(missing),
            ", ".join(available),
            ", ".join(chosen),
        )
    return chosen


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
        # Pool threads sleep between runs instead of spinning: spinning burnt 20 us of CPU
        # per sample on a 2-core VM (bench/bench_streams.py), CPU the MQTT thread needed.
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.add_session_config_entry("session.inter_op.allow_spinning", "0")
        providers = pick_providers(options.providers, ort.get_available_providers())
        try:
            self._session = ort.InferenceSession(
                str(model_path), sess_options=so, providers=providers
            )
        except Exception as exc:  # ORT raises its own exception types for bad graphs
            raise BundleError(f"onnxruntime cannot load {model_path.name}: {exc}") from None
        self._inputs = [i.name for i in self._session.get_inputs()]
        self._outputs = [o.name for o in self._session.get_outputs()]
        self._dtypes = {i.name: _ORT_TYPES.get(i.type, i.type) for i in self._session.get_inputs()}

    @property
    def input_names(self) -> list[str]:
        return list(self._inputs)

    @property
    def output_names(self) -> list[str]:
        return list(self._outputs)

    @property
    def input_dtypes(self) -> dict[str, str]:
        return dict(self._dtypes)

    def run(self, feeds: Mapping[str, np.ndarray[Any, Any]]) -> dict[str, np.ndarray[Any, Any]]:
        values = self._session.run(self._outputs, dict(feeds))
        return dict(zip(self._outputs, values))


_ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(string)": "object",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(int64)": "int64",
    "tensor(double)": "float64",
}


def _litert_interpreter() -> Any:
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter


def _tflite_runtime_interpreter() -> Any:
    from tflite_runtime.interpreter import Interpreter

    return Interpreter


def _tensorflow_interpreter() -> Any:
    import tensorflow as tf

    return tf.lite.Interpreter


class LiteRtBackend:
    """A TFLite flatbuffer on a LiteRT-compatible interpreter (see ``TFLITE_RUNTIMES``)."""

    def __init__(
        self, model_path: Path, options: BackendOptions, runtime: str = "ai-edge-litert"
    ) -> None:
        interpreter_class = TFLITE_RUNTIMES[runtime]()  # ImportError: try the next runtime
        self.name = runtime
        try:
            with quiet_native_stderr(f"{runtime} loading {model_path.name}"):
                self._interp = self._build(interpreter_class, model_path, options)
        except (ValueError, RuntimeError) as exc:
            if "NumPy" in str(exc):
                # tflite-runtime 2.14 imports under NumPy 2 but cannot build an interpreter.
                raise ImportError(f"{runtime} does not work with this NumPy: {exc}") from None
            raise BundleError(f"{runtime} cannot load {model_path.name}: {exc}") from None
        self._in = {d["name"]: d for d in self._interp.get_input_details()}
        self._out = {d["name"]: d for d in self._interp.get_output_details()}
        self._batch = {name: int(d["shape"][0]) for name, d in self._in.items()}

    @staticmethod
    def _build(interpreter_class: Any, model_path: Path, options: BackendOptions) -> Any:
        interp = interpreter_class(model_path=str(model_path), num_threads=options.num_threads)
        try:
            interp.allocate_tensors()
            return interp
        except RuntimeError as exc:
            # XNNPACK (the default delegate) refuses some int8 graphs, e.g. inputs with a
            # large quantization scale; the builtin kernels run them.
            resolver = getattr(sys.modules[interpreter_class.__module__], "OpResolverType", None)
            if "XNNPACK" not in str(exc) or resolver is None:
                raise
            log.warning(
                "%s: XNNPACK refused the graph (%s); using builtin kernels", model_path, exc
            )
        interp = interpreter_class(
            model_path=str(model_path),
            num_threads=options.num_threads,
            experimental_op_resolver_type=resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        )
        interp.allocate_tensors()
        return interp

    @property
    def input_names(self) -> list[str]:
        return list(self._in)

    @property
    def output_names(self) -> list[str]:
        return list(self._out)

    @property
    def input_dtypes(self) -> dict[str, str]:
        return {name: np.dtype(d["dtype"]).name for name, d in self._in.items()}

    def run(self, feeds: Mapping[str, np.ndarray[Any, Any]]) -> dict[str, np.ndarray[Any, Any]]:
        resized = False
        for name, array in feeds.items():
            if array.shape[0] != self._batch[name]:
                # The batch axis is dynamic (-1 in the signature); resize only on change.
                self._interp.resize_tensor_input(self._in[name]["index"], list(array.shape))
                self._batch[name] = array.shape[0]
                resized = True
        if resized:
            self._interp.allocate_tensors()
        for name, array in feeds.items():
            self._interp.set_tensor(self._in[name]["index"], array)
        self._interp.invoke()
        return {name: self._interp.get_tensor(d["index"]) for name, d in self._out.items()}


# TFLite interpreters in order of preference: the maintained LiteRT wheel, the old
# tflite-runtime (only where it imports and works), TensorFlow's own when it is installed.
TFLITE_RUNTIMES: dict[str, Callable[[], Any]] = {
    "ai-edge-litert": _litert_interpreter,
    "tflite-runtime": _tflite_runtime_interpreter,
    "tensorflow.lite": _tensorflow_interpreter,
}


def _tflite_factory(runtime: str) -> BackendFactory:
    return lambda path, options: LiteRtBackend(path, options, runtime)


BackendFactory = Callable[[Path, BackendOptions], Backend]

# What provides each format's runtime (docs/devices.md).
INSTALL_HINTS = {
    "onnx": "pip install onnxruntime (not available on 32-bit armv7l: convert the model to "
    "TFLite there, edgewise convert --format tflite)",
    "tflite": "pip install ai-edge-litert (tflite-runtime on 32-bit armv7l; an edgewise kit "
    "carries the right one: docs/devices.md)",
}

# Model format -> backends to try, in order of preference. Registering is explicit: a new
# backend adds its factory here, nothing is discovered by import side effects.
REGISTRY: dict[str, list[tuple[str, BackendFactory]]] = {
    "onnx": [("onnxruntime", OnnxRuntimeBackend)],
    "tflite": [(runtime, _tflite_factory(runtime)) for runtime in TFLITE_RUNTIMES],
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
        if missing:
            log.info("not available: %s", "; ".join(missing))
        log.info("loaded %s with backend %s", model_path.name, name)
        return backend
    raise BackendUnavailableError(
        f"no runtime for {model_format} models is installed (tried {', '.join(missing)}); "
        f"{INSTALL_HINTS.get(model_format, 'see docs/devices.md')}"
    )
