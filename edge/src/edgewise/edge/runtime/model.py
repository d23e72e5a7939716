"""A bundle loaded into a backend: raw instances in, JSON-ready predictions out."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from edgewise.edge.errors import BundleError, RequestError
from edgewise.edge.runtime.backends import Backend, BackendOptions, load_backend
from edgewise.edge.runtime.bundle import Bundle
from edgewise.edge.runtime.decode import DECODERS, output_names
from edgewise.edge.runtime.explain import DEFAULT_TOP, Explainer
from edgewise.edge.runtime.features import window_features
from edgewise.edge.runtime.manifest import (
    MISSING_CATEGORY,
    Feature,
    Manifest,
    OcclusionExplain,
)
from edgewise.edge.runtime.occlusion import Occlusion
from edgewise.edge.runtime.one_hot import OneHotRows

if TYPE_CHECKING:
    pass


_NUMBER = (int, float)
# The largest finite float32: models compute in float32, so a bigger value (1e39, or a
# 400-digit integer) would silently become infinite.
FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass(frozen=True)
class SelfTestReport:
    """What the self-test found (published in the model's info)."""

    count: int
    passed: bool
    mismatches: int
    worst_diff: float
    p99_ms: float

    def as_info(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "passed": self.passed,
            "worst_diff": round(self.worst_diff, 9),
            "p99_ms": round(self.p99_ms, 4),
        }


class ServedModel:
    """Turns request instances into backend feeds and backend outputs into predictions."""

    def __init__(self, bundle: Bundle, backend: Backend) -> None:
        self.bundle = bundle
        self.backend = backend
        manifest = bundle.manifest
        spec = manifest.input
        self.name = manifest.name
        self.version = manifest.version
        self.features: tuple[Feature, ...] = spec.features
        self._index = {f.name: i for i, f in enumerate(self.features)}
        # The task decides how outputs are read; the manifest guarantees the matching head.
        self.head = manifest.output
        self._decode = DECODERS[manifest.task]
        self._labels = list(manifest.labels)
        self.instance_shape = spec.instance_shape
        self._tensor_name = spec.tensor_name
        # Window-feature models: clients send raw windows, the agent computes the features.
        self._window = spec.window_features
        self._in_quant = spec.quantization
        self._impute = np.asarray(spec.impute, dtype=np.float32) if spec.impute else None
        # int8 networks on tables: the standardization the graph no longer holds.
        scaling = spec.scaling
        self._scaling = (
            None if scaling is None else (np.asarray(scaling.scale, np.float32),
                                          np.asarray(scaling.offset, np.float32))
        )  # fmt: skip
        # Text models: an instance may be the bare string; text is lowercased as in training.
        self._text = spec.kind == "text"
        self._lowercase = spec.lowercase
        # Networks on mixed tables: the agent one-hot encodes the string features.
        self._one_hot = OneHotRows(self.features) if spec.one_hot else None
        self.explainer = self._explainer(manifest)
        self._check_io()
        # Set by load_models: which trusted key signed the bundle, what its self-test found.
        self.signed_by: str | None = None
        self.selftest: SelfTestReport | None = None

    def _explainer(self, manifest: Manifest) -> Explainer | Occlusion | None:
        spec, names = manifest.explain, [f.name for f in self.features]
        shape = self.instance_shape or ()
        if isinstance(spec, OcclusionExplain):
            if self._window is not None or len(shape) <= 1:  # rows (window features: rows too)
                return Occlusion(spec, "rows", shape, names)
            return Occlusion(spec, "window" if len(shape) == 2 else "image", shape, names)
        if spec is None or self.bundle.layout != "tensor" or self._one_hot is not None:
            return None
        if len(shape) == 1 or self._window is not None:
            return Explainer(spec, names, self._labels or None)
        return None

    @classmethod
    def load(cls, bundle: Bundle, options: BackendOptions | None = None) -> ServedModel:
        """Load the bundle's model file with the first backend that can run it."""
        backend = load_backend(bundle.model_format, bundle.model_path, options or BackendOptions())
        return cls(bundle, backend)

    def _check_io(self) -> None:
        inputs = set(self.backend.input_names)
        if self.bundle.layout == "tensor":
            wanted = {str(self._tensor_name)}
        else:
            wanted = {str(f.onnx_input) for f in self.features}
        outputs = set(self.backend.output_names)
        declared = set(output_names(self.head))
        if wanted - inputs or declared - outputs:
            raise BundleError(
                f"bundle {self.name}: manifest names inputs {sorted(wanted)} / outputs "
                f"{sorted(declared)} but the model has {sorted(inputs)} / {sorted(outputs)}"
            )
        if self.bundle.layout == "tensor":
            name = str(self._tensor_name)
            expected = self._in_quant.dtype if self._in_quant else "float32"
            actual = self.backend.input_dtypes.get(name, expected)
            if actual != expected:
                raise BundleError(
                    f"bundle {self.name}: manifest says input {name!r} is {expected}, "
                    f"the model file takes {actual}"
                )

    # -- requests -----------------------------------------------------------------------

    def _row(self, instance: Any, position: int) -> list[Any]:
        """One instance (dict by name or list in manifest order) as a row of raw values."""
        if isinstance(instance, dict):
            unknown = [k for k in instance if k not in self._index]
            if unknown:
                raise RequestError(
                    "unknown_feature",
                    f"instance {position}: unknown feature(s) {unknown[:5]}; "
                    f"expected {[f.name for f in self.features][:10]}",
                )
            if len(instance) != len(self.features):
                missing = [f.name for f in self.features if f.name not in instance]
                raise RequestError(
                    "missing_feature", f"instance {position}: missing feature(s) {missing[:5]}"
                )
            values = [instance[f.name] for f in self.features]
        elif isinstance(instance, str) and self._text and len(self.features) == 1:
            values = [instance]
        elif isinstance(instance, list):
            if len(instance) != len(self.features):
                raise RequestError(
                    "bad_shape",
                    f"instance {position}: {len(instance)} values, the model takes "
                    f"{len(self.features)}",
                )
            values = instance
        else:
            raise RequestError(
                "bad_type",
                f"instance {position}: expected an object or a list, got {type(instance).__name__}",
            )
        row = [self._value(f, v, position) for f, v in zip(self.features, values)]
        if self._lowercase:
            row = [v.lower() if isinstance(v, str) else v for v in row]
        return row

    @staticmethod
    def _value(feature: Feature, value: Any, position: int) -> Any:
        if feature.dtype == "string":
            if isinstance(value, str):
                return value
            if value is None and feature.nullable:
                return MISSING_CATEGORY  # as in training (manifest preprocessing)
            raise RequestError(
                "bad_type",
                f"instance {position}: feature {feature.name!r} takes a string, "
                f"got {type(value).__name__}",
            )
        if isinstance(value, _NUMBER) and not isinstance(value, bool):
            if isinstance(value, float) and math.isnan(value):
                if not feature.nullable:
                    raise RequestError(
                        "bad_value", f"instance {position}: feature {feature.name!r} is NaN"
                    )
                return value
            if not -FLOAT32_MAX <= value <= FLOAT32_MAX:  # ints compare exactly, any size
                raise RequestError(
                    "bad_value",
                    f"instance {position}: feature {feature.name!r} is outside the finite "
                    f"float32 range (±{FLOAT32_MAX:.4g})",
                )
            return value
        if value is None and feature.nullable:
            return math.nan  # imputed inside the graph
        raise RequestError(
            "bad_type",
            f"instance {position}: feature {feature.name!r} takes a number, "
            f"got {type(value).__name__}",
        )

    def _nested(self, instances: Sequence[Any]) -> np.ndarray[Any, Any]:
        """Windows / images given as nested JSON lists, checked against the input shape."""
        shape = self.instance_shape or ()
        try:
            array = np.asarray(instances, dtype=np.float32)
        except OverflowError:
            raise RequestError(
                "bad_value", "an instance holds an integer too large for a float"
            ) from None
        except (ValueError, TypeError):
            raise RequestError(
                "bad_shape",
                f"instances must be numbers nested as {list(shape)} per instance "
                "(ragged or non-numeric lists given)",
            ) from None
        return self._check_tensor(array)

    def _check_tensor(self, array: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        shape = self.instance_shape or ()
        if array.shape[1:] != shape:
            raise RequestError(
                "bad_shape",
                f"an instance has shape {list(array.shape[1:])}, the model takes {list(shape)}",
            )
        bad = ~np.isfinite(array)
        if self._impute is not None:
            bad &= ~np.isnan(array)  # missing values are filled with training means
        if bad.any():
            raise RequestError("bad_value", "instances hold NaN or infinite values")
        return array

    def _tensor_feed(self, array: np.ndarray[Any, Any]) -> dict[str, np.ndarray[Any, Any]]:
        """Feeds from what the model is fed (features computed, one-hot still to do)."""
        if self._one_hot is not None:
            array = self._one_hot.encode(array)
        if self._impute is not None:
            array = np.where(np.isnan(array), self._impute, array)
        if self._scaling is not None:
            array = array * self._scaling[0] + self._scaling[1]
        if self._in_quant:
            # int8 models: real values in, quantized with the manifest's scale / zero point.
            q = self._in_quant
            info = np.iinfo(q.dtype)
            scaled = np.round(array / q.scale) + q.zero_point
            array = np.clip(scaled, info.min, info.max).astype(q.dtype)
        return {str(self._tensor_name): array}

    def _computed(self, array: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        if self._window is None:
            return array
        w = self._window  # window-feature models: the features of the raw windows
        return window_features(array, float(w.sample_rate), w.bands)

    def encode_tensor(self, array: np.ndarray[Any, Any]) -> dict[str, np.ndarray[Any, Any]]:
        """Feeds for a batch given as one array (binary requests), checked like JSON ones."""
        if self.instance_shape is None or self._one_hot is not None:
            raise RequestError(
                "bad_request", f"model {self.name} takes named columns; send JSON instances"
            )
        array = self._check_tensor(array.astype(np.float32, copy=False))
        return self._tensor_feed(self._computed(array))

    def matrix(self, instances: Sequence[Any]) -> np.ndarray[Any, Any]:
        """Validated instances as the model is fed them before encoding: a float array
        (rows, windows, images; window features computed) or, for tables with strings,
        an object array of raw values in feature order."""
        if self.instance_shape is not None and len(self.instance_shape) > 1:
            return self._computed(self._nested(instances))
        rows = [self._row(inst, i) for i, inst in enumerate(instances)]
        if self.bundle.layout == "tensor" and self._one_hot is None:
            return np.asarray(rows, dtype=np.float32)
        matrix = np.empty((len(rows), len(self.features)), dtype=object)
        matrix[:] = rows
        return matrix

    def feeds(self, matrix: np.ndarray[Any, Any]) -> dict[str, np.ndarray[Any, Any]]:
        """The backend feeds of a ``matrix``."""
        if self.bundle.layout == "tensor":
            return self._tensor_feed(matrix)
        feeds: dict[str, np.ndarray[Any, Any]] = {}
        for j, feature in enumerate(self.features):
            dtype = np.object_ if feature.dtype == "string" else np.float32
            feeds[str(feature.onnx_input)] = matrix[:, j].astype(dtype).reshape(-1, 1)
        return feeds

    def encode(self, instances: Sequence[Any]) -> dict[str, np.ndarray[Any, Any]]:
        """Validate instances and build the backend feeds for them."""
        return self.feeds(self.matrix(instances))

    # -- answers ------------------------------------------------------------------------

    def decode(self, outputs: dict[str, np.ndarray[Any, Any]]) -> list[dict[str, Any]]:
        """Backend outputs as JSON-ready predictions, one per instance."""
        return self._decode(self.head, outputs)

    def predict(
        self, instances: Sequence[Any], explain: bool = False, top: int | None = DEFAULT_TOP
    ) -> list[dict[str, Any]]:
        """Validate, run and decode one batch of instances (explained when asked)."""
        if explain and self.explainer is None:
            raise RequestError(
                "unsupported",
                f"model {self.name} cannot explain its predictions: its bundle has no "
                "explain section (docs/mqtt.md#explanations)",
            )
        matrix = self.matrix(instances)
        feeds = self.feeds(matrix)
        predictions = self.decode(self.backend.run(feeds))
        if explain and isinstance(self.explainer, Occlusion):
            answer = lambda m: self.decode(self.backend.run(self.feeds(m)))  # noqa: E731
            whys = self.explainer.explain(matrix, predictions, answer, top)
        elif explain and isinstance(self.explainer, Explainer):
            whys = self.explainer.explain(feeds[str(self._tensor_name)], predictions, top)
        else:
            return predictions
        for pred, why in zip(predictions, whys):
            pred["explanation"] = why
        return predictions

    def info(self) -> dict[str, Any]:
        """The retained ``info`` document: what clients need to build requests."""
        return {
            "name": self.name,
            "version": self.version,
            "task": self.bundle.task,
            "sha256": self.bundle.sha256,
            "features": [{"name": f.name, "dtype": f.dtype} for f in self.features],
            # Windows and images: clients (edgewise send) need the shape of one instance.
            "input": {
                "kind": self.bundle.manifest.input.kind,
                "shape": list(self.instance_shape) if self.instance_shape else None,
            },
            "labels": self.bundle.labels,
            "backend": self.backend.name,
            "explain": self.explainer.method if self.explainer else None,
            "selftest": self.selftest.as_info() if self.selftest else None,
            "signed_by": self.signed_by,
        }

    def predict_tensor(self, array: np.ndarray[Any, Any]) -> list[dict[str, Any]]:
        """Validate, run and decode a batch given as one array (batch axis first)."""
        return self.decode(self.backend.run(self.encode_tensor(array)))
