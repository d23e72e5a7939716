"""A bundle loaded into a backend: raw instances in, JSON-ready predictions out."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from edge.backends import Backend, BackendOptions, load_backend
from edge.bundle import Bundle, Feature
from edge.errors import BundleError, RequestError

_NUMBER = (int, float)


class ServedModel:
    """Turns request instances into backend feeds and backend outputs into predictions."""

    def __init__(self, bundle: Bundle, backend: Backend) -> None:
        self.bundle = bundle
        self.backend = backend
        self.name = bundle.name
        self.version = bundle.version
        self.features: tuple[Feature, ...] = bundle.features
        self._index = {f.name: i for i, f in enumerate(self.features)}
        out = bundle.manifest["output"]
        self._labels = bundle.labels
        self._label_output = out.get("label_output")
        self._proba_output = out.get("probabilities_output")
        self._value_output = out.get("value_output")
        self._check_io()

    @classmethod
    def load(cls, bundle: Bundle, options: BackendOptions | None = None) -> ServedModel:
        """Load the bundle's model file with the first backend that can run it."""
        backend = load_backend(bundle.model_format, bundle.model_path, options or BackendOptions())
        return cls(bundle, backend)

    def _check_io(self) -> None:
        inputs = set(self.backend.input_names)
        if self.bundle.layout == "tensor":
            wanted = {self.bundle.manifest["input"]["tensor_name"]}
        else:
            wanted = {str(f.onnx_input) for f in self.features}
        outputs = set(self.backend.output_names)
        declared = {o for o in (self._label_output, self._proba_output, self._value_output) if o}
        if wanted - inputs or declared - outputs:
            raise BundleError(
                f"bundle {self.name}: manifest names inputs {sorted(wanted)} / outputs "
                f"{sorted(declared)} but the model has {sorted(inputs)} / {sorted(outputs)}"
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
        return [self._value(f, v, position) for f, v in zip(self.features, values)]

    @staticmethod
    def _value(feature: Feature, value: Any, position: int) -> Any:
        if feature.dtype == "string":
            if isinstance(value, str):
                return value
            if value is None and feature.nullable:
                return ""  # the trainer maps missing categories to "" (manifest preprocessing)
            raise RequestError(
                "bad_type",
                f"instance {position}: feature {feature.name!r} takes a string, "
                f"got {type(value).__name__}",
            )
        if isinstance(value, _NUMBER) and not isinstance(value, bool):
            if math.isinf(value):
                raise RequestError(
                    "bad_value", f"instance {position}: feature {feature.name!r} is infinite"
                )
            if math.isnan(value) and not feature.nullable:
                raise RequestError(
                    "bad_value", f"instance {position}: feature {feature.name!r} is NaN"
                )
            return value
        if value is None and feature.nullable:
            return math.nan  # imputed inside the graph
        raise RequestError(
            "bad_type",
            f"instance {position}: feature {feature.name!r} takes a number, "
            f"got {type(value).__name__}",
        )

    def encode(self, instances: Sequence[Any]) -> dict[str, np.ndarray[Any, Any]]:
        """Validate instances and build the backend feeds for them."""
        rows = [self._row(inst, i) for i, inst in enumerate(instances)]
        manifest_input = self.bundle.manifest["input"]
        if self.bundle.layout == "tensor":
            return {manifest_input["tensor_name"]: np.asarray(rows, dtype=np.float32)}
        feeds: dict[str, np.ndarray[Any, Any]] = {}
        for j, feature in enumerate(self.features):
            column = [row[j] for row in rows]
            dtype = np.object_ if feature.dtype == "string" else np.float32
            feeds[str(feature.onnx_input)] = np.asarray(column, dtype=dtype).reshape(-1, 1)
        return feeds

    # -- answers ------------------------------------------------------------------------

    def decode(self, outputs: dict[str, np.ndarray[Any, Any]]) -> list[dict[str, Any]]:
        """Backend outputs as JSON-ready predictions, one per instance."""
        if self._value_output:
            values = outputs[self._value_output].reshape(-1)
            return [{"value": float(v)} for v in values]
        labels = outputs[str(self._label_output)].reshape(-1).tolist()
        if not self._proba_output:
            return [{"label": lab} for lab in labels]
        keys = [str(c) for c in self._labels]
        probs = outputs[self._proba_output].tolist()
        return [
            {"label": lab, "probabilities": dict(zip(keys, row))} for lab, row in zip(labels, probs)
        ]

    def predict(self, instances: Sequence[Any]) -> list[dict[str, Any]]:
        """Validate, run and decode one batch of instances."""
        return self.decode(self.backend.run(self.encode(instances)))
