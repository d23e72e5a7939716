"""The bundle manifest as typed, frozen objects: the one contract between host and device.

Converters build a :class:`Manifest` and write it with :meth:`Manifest.to_json`; the
agent reads it with :meth:`Manifest.from_json` and serves by ``task``, whose output head
(:class:`ClassificationHead`, :class:`RegressionHead`, :class:`AnomalyHead`,
:class:`ClusteringHead`) says which model outputs to read. The JSON Schema shipped in
``runtime/schemas`` is generated from these classes
(``python -m edgewise.edge.runtime.manifest``) and a test keeps the file equal to what the
classes generate.

Scalars are strict (no ``"1"`` for 1, no 1 for ``true``); unknown keys are refused at
every level, so a typo in a hand-edited manifest is an error, not a silently ignored key.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    StringConstraints,
    ValidationError,
    model_validator,
)

FORMAT_VERSION = 1
# A missing categorical value is this category, in training and on the device alike.
MISSING_CATEGORY = ""
Task = Literal["classification", "regression", "anomaly", "clustering"]
TASKS: tuple[str, ...] = ("classification", "regression", "anomaly", "clustering")
Sha256 = Annotated[StrictStr, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
ModelName = Annotated[StrictStr, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
Label = Union[StrictStr, StrictInt, StrictFloat, StrictBool]  # noqa: UP007 (pydantic order)
Number = Union[StrictInt, StrictFloat]  # noqa: UP007


class ManifestError(ValueError):
    """A manifest that does not match the bundle format; the message names the field."""


class _Part(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Feature(_Part):
    """One input field as the device receives it (raw, before in-graph preprocessing)."""

    name: Annotated[StrictStr, StringConstraints(min_length=1)]
    dtype: Literal["float32", "string"]
    nullable: StrictBool
    onnx_input: StrictStr | None = None
    # Tensor layout (networks): the agent one-hot encodes this string feature over these
    # categories, in this order; a value not among them (unseen in training) is all zeros.
    categories: tuple[StrictStr, ...] | None = None

    @property
    def width(self) -> int:
        """How many tensor columns the feature takes (one-hot: one per category)."""
        return len(self.categories) if self.categories is not None else 1


class Quantization(_Part):
    """Affine int8/uint8 quantization of a tensor: real = (q - zero_point) * scale."""

    dtype: Literal["int8", "uint8"]
    scale: Annotated[Number, Field(gt=0)]
    zero_point: StrictInt


class Scaling(_Part):
    """A per-column affine map the agent applies to a network's input, ``x * scale +
    offset``, after one-hot encoding and imputation and before any input quantization.
    It is the network's standardization moved out of the graph, so that an int8 input
    tensor holds standardized values (one quantization scale cannot serve raw columns
    whose ranges differ by 1,000x)."""

    scale: Annotated[tuple[Number, ...], Field(min_length=1)]
    offset: Annotated[tuple[Number, ...], Field(min_length=1)]


class WindowFeatures(_Part):
    """Sensor windows whose features the agent computes (edge.runtime.features, the same
    code as training)."""

    version: Literal[1] = 1
    window: tuple[StrictInt, StrictInt]
    channels: Annotated[tuple[StrictStr, ...], Field(min_length=1)]
    sample_rate: Annotated[Number, Field(gt=0)]
    bands: Annotated[StrictInt, Field(ge=1)]


class InputSpec(_Part):
    """What one request instance is and how it becomes the model's feeds."""

    layout: Literal["tensor", "columns"]
    features: Annotated[tuple[Feature, ...], Field(min_length=1)]
    kind: Literal["tabular", "window", "image", "text"] = "tabular"
    tensor_name: StrictStr | None = None
    dtype: Literal["float32"] | None = None
    shape: Annotated[tuple[StrictInt | None, ...], Field(min_length=2)] | None = None
    quantization: Quantization | None = None
    # Training means for missing values (networks); scikit-learn imputes inside the graph.
    impute: tuple[Number, ...] | None = None
    window_features: WindowFeatures | None = None
    lowercase: StrictBool = False
    scaling: Scaling | None = None

    @model_validator(mode="after")
    def _layout_fields(self) -> InputSpec:
        if self.scaling is not None:
            width = None if self.shape is None or len(self.shape) != 2 else self.shape[1]
            sizes = {len(self.scaling.scale), len(self.scaling.offset)}
            if self.layout != "tensor" or self.kind != "tabular" or sizes != {width}:
                raise ValueError(
                    "scaling belongs to a tabular tensor input and needs one scale and one "
                    f"offset per column ({width}); got {sorted(sizes)}"
                )
        if self.layout == "tensor" and (self.tensor_name is None or self.shape is None):
            raise ValueError("a tensor layout needs tensor_name and shape")
        if self.layout == "columns":
            missing = [f.name for f in self.features if f.onnx_input is None]
            if missing:
                raise ValueError(f"a columns layout needs onnx_input for {missing[:3]}")
        if self.one_hot:
            bare = [f.name for f in self.features if f.dtype == "string" and not f.categories]
            if bare or self.layout != "tensor" or self.kind != "tabular":
                raise ValueError(
                    "one-hot categories need a tabular tensor layout and belong to every "
                    f"string feature (missing for {bare[:3]})"
                )
            width = sum(f.width for f in self.features)
            if self.shape is None or len(self.shape) != 2 or self.shape[1] != width:
                raise ValueError(f"the features encode to {width} columns, shape is {self.shape}")
        return self

    @property
    def one_hot(self) -> bool:
        """True when the agent one-hot encodes string features (a network on a mixed table)."""
        return any(f.categories is not None for f in self.features)

    @property
    def instance_shape(self) -> tuple[int, ...] | None:
        """One instance's shape: (F,) rows, (T, C) windows, (H, W, C) images; None for columns."""
        if self.window_features is not None:
            return tuple(self.window_features.window)
        if self.layout != "tensor" or self.shape is None:
            return None
        return tuple(int(d or 0) for d in self.shape[1:])


class ClassificationHead(_Part):
    """Labels, and which outputs hold them and the class probabilities."""

    labels: Annotated[tuple[Label, ...], Field(min_length=2)]
    label_output: StrictStr | None = None  # absent: the label is the most probable class
    probabilities_output: StrictStr | None = None
    quantization: Quantization | None = None

    @model_validator(mode="after")
    def _some_output(self) -> ClassificationHead:
        if self.label_output is None and self.probabilities_output is None:
            raise ValueError("a classification head needs label_output or probabilities_output")
        return self


class RegressionHead(_Part):
    """The output that holds the predicted value."""

    value_output: StrictStr


class AnomalyHead(_Part):
    """An anomaly score: ``score_sign * output``, above ``threshold`` is an anomaly."""

    score_output: StrictStr
    score_sign: Literal[-1, 1]
    threshold: Number
    quantization: Quantization | None = None


class ClusteringHead(_Part):
    """The cluster index and the distances to every centre."""

    label_output: StrictStr
    distances_output: StrictStr
    clusters: Annotated[StrictInt, Field(ge=1)]


Head = Union[ClassificationHead, RegressionHead, AnomalyHead, ClusteringHead]  # noqa: UP007
HEADS: dict[str, type[_Part]] = {
    "classification": ClassificationHead,
    "regression": RegressionHead,
    "anomaly": AnomalyHead,
    "clustering": ClusteringHead,
}


class Calibration(_Part):
    """The int8 calibration data: how many training rows, and their hash."""

    samples: Annotated[StrictInt, Field(ge=1)]
    sha256: Sha256


class ModelFile(_Part):
    """The model file next to the manifest."""

    file: Annotated[StrictStr, StringConstraints(pattern=r"^[^/\\]+\.(onnx|tflite)$")]
    format: Literal["onnx", "tflite"]
    sha256: Sha256
    size_bytes: Annotated[StrictInt, Field(ge=1)]
    opset: Annotated[StrictInt, Field(ge=1)] | None = None
    quantize: Literal["none", "float16", "dynamic", "int8"] | None = None
    calibration: Calibration | None = None


class Framework(_Part):
    name: StrictStr
    estimator: StrictStr


class Preprocessing(_Part):
    """Human-readable steps: those inside the graph and those the agent does before it."""

    inside_graph: tuple[StrictStr, ...]
    outside_graph: tuple[StrictStr, ...]


class Parity(_Part):
    """How the written bundle, served by the device's own code, followed the original.

    Every converter fills this one report; the figures a gate did not use are absent.
    """

    rows: Annotated[StrictInt, Field(ge=1)]
    passed: StrictBool
    served_by: StrictStr | None = None  # the edge backend that ran the check
    tolerance: Annotated[Number, Field(ge=0)] | None = None
    label_agreement: Annotated[Number, Field(ge=0, le=1)] | None = None
    max_abs_diff: Annotated[Number, Field(ge=0)] | None = None
    max_rel_diff: Annotated[Number, Field(ge=0)] | None = None
    accuracy_reference: Number | None = None
    accuracy_converted: Number | None = None
    accuracy_drop_points: Number | None = None
    max_accuracy_drop_points: Number | None = None


class TrainingData(_Part):
    """Where the training data came from (provenance, not the data)."""

    source: StrictStr
    sha256: Sha256
    rows: Annotated[StrictInt, Field(ge=1)]
    train_rows: Annotated[StrictInt, Field(ge=1)] | None = None
    test_rows: Annotated[StrictInt, Field(ge=0)] | None = None
    seed: StrictInt | None = None


class SelfTest(_Part):
    """Held-out inputs and the answers the bundle gave on the host, in a file beside it.

    Before a bundle is served the device runs them through its own runtime: labels must
    match and values stay within ``tolerance``; with ``p99_budget_ms`` the 99th percentile
    of one-instance latency must stay within it.
    """

    file: Annotated[StrictStr, StringConstraints(pattern=r"^[^/\\]+\.json$")]
    sha256: Sha256
    count: Annotated[StrictInt, Field(ge=1)]
    tolerance: Annotated[Number, Field(gt=0)]
    p99_budget_ms: Annotated[Number, Field(gt=0)] | None = None


class LinearExplain(_Part):
    """Exact per-feature contributions of a standardized linear model (edge.runtime.explain)."""

    method: Literal["linear"] = "linear"
    impute: tuple[Number, ...]
    mean: tuple[Number, ...]
    scale: tuple[Number, ...]
    coef: Annotated[tuple[tuple[Number, ...], ...], Field(min_length=1)]
    intercept: tuple[Number, ...]


class GlobalExplain(_Part):
    """A model's global feature importances, the same for every prediction."""

    method: Literal["global"] = "global"
    importance: tuple[Number, ...]


class Marginal(_Part):
    """A feature's training distribution in a few values and their shares: quantiles of a
    number, the frequent categories of a string. Occluding the feature averages the
    model's answers over these values, weighted by the shares."""

    values: Annotated[tuple[Union[Number, StrictStr], ...], Field(min_length=1, max_length=64)]  # noqa: UP007
    shares: tuple[Annotated[Number, Field(ge=0, le=1)], ...]

    @model_validator(mode="after")
    def _shares(self) -> Marginal:
        if len(self.shares) != len(self.values) or abs(sum(self.shares) - 1.0) > 1e-3:
            raise ValueError("shares: one per value, summing to 1")
        return self

    def single(self) -> float | str:
        """One value standing for all: the weighted mean of numbers, the commonest string."""
        if all(isinstance(v, (int, float)) for v in self.values):
            return float(sum(float(v) * w for v, w in zip(self.values, self.shares)))
        return self.values[max(range(len(self.shares)), key=self.shares.__getitem__)]


class OcclusionExplain(_Part):
    """Per-prediction attribution by occlusion (edge.runtime.occlusion), for any model.

    Each group of inputs in turn is set to its training ``baseline`` and the model is run
    again: the drop of the answer (the predicted class's probability, the value, the
    anomaly score, the closeness to the cluster) is the group's contribution. Groups:
    each feature of a row (averaged over its training ``Marginal``), each
    channel x time segment of a window, each region of an image (per-channel training
    means). ``max_evaluations`` bounds the extra inferences per explained instance.
    """

    method: Literal["occlusion"] = "occlusion"
    baseline: Annotated[tuple[Union[Number, Marginal], ...], Field(min_length=1)]  # noqa: UP007
    max_evaluations: Annotated[StrictInt, Field(ge=1, le=1024)] = 64


Explain = Annotated[
    Union[LinearExplain, GlobalExplain, OcclusionExplain],  # noqa: UP007
    Field(discriminator="method"),
]


class Distribution(_Part):
    """One profiled quantity's training distribution (edge.runtime.drift_profile bins it alike).

    Numeric: ``edges`` are the inner bin edges (a value ``x`` falls in bin
    ``searchsorted(edges, x, "right")``) and ``proportions`` has one share per bin plus a
    last one for missing values. Categorical: one share per category in ``categories``
    plus a last one for every other value.
    """

    name: Annotated[StrictStr, StringConstraints(min_length=1, max_length=256)]
    kind: Literal["numeric", "categorical"]
    edges: tuple[Number, ...] = ()
    categories: tuple[StrictStr, ...] = ()
    proportions: Annotated[tuple[Annotated[Number, Field(ge=0, le=1)], ...], Field(min_length=2)]

    @model_validator(mode="after")
    def _bins(self) -> Distribution:
        bins = len(self.edges) + 2 if self.kind == "numeric" else len(self.categories) + 1
        if len(self.proportions) != bins:
            got = len(self.proportions)
            raise ValueError(f"{self.name}: {bins} proportions expected, got {got}")
        if any(b <= a for a, b in zip(self.edges, self.edges[1:])):
            raise ValueError(f"{self.name}: edges must increase")
        if abs(sum(self.proportions) - 1.0) > 1e-3:
            raise ValueError(f"{self.name}: proportions must sum to 1")
        return self


class Reference(_Part):
    """What the inputs and answers looked like in training: the device's drift baseline.

    ``profile`` says what each instance is summarized by (edge.runtime.drift_profile): tabular
    features themselves; per channel RMS, peak and dominant frequency of windows; the mean
    intensity of images; the length and out-of-vocabulary rate of texts.
    """

    profile: Literal["tabular", "window", "image", "text"]
    rows: Annotated[StrictInt, Field(ge=1)]
    inputs: Annotated[tuple[Distribution, ...], Field(min_length=1)]
    sample_rate: Annotated[Number, Field(gt=0)] | None = None  # windows: Hz of dominant_hz
    vocabulary: tuple[StrictStr, ...] = ()  # texts: the frequent training tokens
    predictions: Distribution | None = None  # on held-out rows, as the bundle answered
    confidence: Annotated[Number, Field(ge=0, le=1)] | None = None  # mean top probability


class Manifest(_Part):
    """``manifest.json`` of bundle format v1 (docs/bundle.md)."""

    model_config = ConfigDict(frozen=True, extra="forbid", title="edgewise bundle manifest v1")

    format_version: Literal[1] = 1
    name: ModelName
    version: Annotated[StrictStr, StringConstraints(min_length=1, max_length=64)]
    task: Task
    created_at: Annotated[StrictStr, StringConstraints(min_length=1)]
    framework: Framework
    model: ModelFile
    input: InputSpec
    output: Head
    preprocessing: Preprocessing
    metrics: dict[str, Number]
    parity: Parity
    versions: dict[str, StrictStr]
    training_data: TrainingData
    explain: Explain | None = None
    selftest: SelfTest | None = None
    reference: Reference | None = None

    @model_validator(mode="before")
    @classmethod
    def _head_of_task(cls, data: Any) -> Any:
        # Read the output as the head of the declared task, so that an error names what
        # that head lacks rather than why each of the four heads does not fit.
        if isinstance(data, dict) and isinstance(data.get("output"), dict):
            head = HEADS.get(data.get("task"))  # type: ignore[arg-type]
            if head is not None:
                try:
                    data = {**data, "output": head.model_validate(data["output"])}
                except ValidationError as exc:
                    raise ValueError(f"output ({data['task']}): {describe(exc)}") from None
        return data

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        if not isinstance(self.output, HEADS[self.task]):
            raise ValueError(f"a {self.task} manifest needs a {HEADS[self.task].__name__} output")
        if self.model.format != self.model.file.rsplit(".", 1)[-1]:
            raise ValueError(f"model.format {self.model.format} does not match {self.model.file}")
        return self

    @property
    def labels(self) -> tuple[Label, ...]:
        """Class labels (classification), else empty."""
        return self.output.labels if isinstance(self.output, ClassificationHead) else ()

    @classmethod
    def from_json(cls, text: str | bytes) -> Manifest:
        """Parse and validate; raises ManifestError with the offending field's path."""
        try:
            return cls.model_validate_json(text)
        except ValidationError as exc:
            raise ManifestError(describe(exc)) from None

    @classmethod
    def from_dict(cls, data: Any) -> Manifest:
        """Validate an already-parsed manifest (converters and tests)."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ManifestError(describe(exc)) from None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; absent optional fields are left out."""
        return self.model_dump(mode="json", exclude_none=True)

    def to_json(self) -> str:
        """The manifest file's text."""
        return json.dumps(self.to_dict(), indent=2) + "\n"


def describe(exc: ValidationError) -> str:
    """The first few problems, each as ``path: message``."""
    parts = []
    for err in exc.errors()[:3]:
        where = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-"))
        msg = str(err["msg"]).removeprefix("Value error, ")
        parts.append(f"{where}: {msg}" if where else msg)
    more = exc.error_count() - len(parts)
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def json_schema() -> dict[str, Any]:
    """The JSON Schema of the manifest, generated from the classes."""
    schema = Manifest.model_json_schema()
    # Which head each task takes, as the classes enforce it.
    schema["allOf"] = [
        {
            "if": {"properties": {"task": {"const": task}}},
            "then": {"properties": {"output": {"$ref": f"#/$defs/{head.__name__}"}}},
        }
        for task, head in HEADS.items()
    ]
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


if __name__ == "__main__":  # python -m edgewise.edge.runtime.manifest > .../runtime/schemas/...
    print(json.dumps(json_schema(), indent=2))
