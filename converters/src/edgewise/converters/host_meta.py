"""``meta.json`` of a host model, typed: what training knew that conversion needs.

The trainer builds one :class:`HostMeta` per trained model (scikit-learn pipelines and
Keras networks alike); ``save_host_model`` / ``save_keras_host_model`` write it and the
loaders read it back with unknown keys refused, so the converters read fields, not dict
keys. It stays on the host; the device sees only the bundle manifest built from it.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr, ValidationError

from edgewise.edge.errors import EdgewiseError
from edgewise.edge.runtime.manifest import (
    Feature,
    Label,
    Marginal,
    Reference,
    Task,
    TrainingData,
    WindowFeatures,
    describe,
)


class HostFeature(BaseModel):
    """A raw input column of a scikit-learn pipeline."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Annotated[StrictStr, Field(min_length=1)]
    dtype: Literal["float32", "string"]
    # Networks on mixed tables: the training categories of a string column (one-hot).
    categories: tuple[StrictStr, ...] | None = None

    def device_feature(self) -> Feature:
        """The manifest feature of a network's raw input (nullable: imputed on the device)."""
        return Feature(name=self.name, dtype=self.dtype, nullable=True, categories=self.categories)


class AnomalySpec(BaseModel):
    """How the alarm threshold was set: the ``1 - contamination`` quantile of the scores
    of the training rows labelled ``normal`` (all rows when None)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    threshold: float
    contamination: float
    normal: str | None = None


class HostMeta(BaseModel):
    """The host model's metadata (both families; each leaves the other's fields empty)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: StrictStr
    task: Task
    model: StrictStr  # the registry name: random-forest, cnn1d, autoencoder, ...
    metrics: dict[str, float]
    training_data: TrainingData
    window_features: WindowFeatures | None = None
    anomaly: AnomalySpec | None = None
    # The training inputs' distribution (trainer.reference): the device's drift baseline.
    reference: Reference | None = None
    # What occlusion sets inputs to (trainer.reference.table_baseline / array_baseline).
    baseline: tuple[float | Marginal, ...] | None = None
    # scikit-learn pipelines
    layout: Literal["tensor", "columns"] | None = None
    features: tuple[HostFeature, ...] = ()
    text: tuple[StrictStr, ...] = ()  # the free-text column of a text classifier
    preprocessing: tuple[StrictStr, ...] = ()  # steps inside the graph
    # Keras networks
    kind: Literal["tabular", "window", "image"] | None = None
    input_shape: tuple[int, ...] = ()
    channels: tuple[StrictStr, ...] = ()
    labels: tuple[Label, ...] = ()
    impute: tuple[float, ...] | None = None  # training means for missing values
    base: StrictStr | None = None  # transfer learning: the base network's file
    freeze_base: StrictBool | None = None

    @property
    def alarm_threshold(self) -> float:
        """The anomaly threshold (anomaly models)."""
        if self.anomaly is None:
            raise EdgewiseError(f"host model {self.name}: an anomaly model without a threshold")
        return self.anomaly.threshold

    @classmethod
    def from_json(cls, text: str, where: object) -> HostMeta:
        """Parse ``meta.json``; a bad one is one EdgewiseError naming the field."""
        try:
            return cls.model_validate_json(text)
        except ValidationError as exc:
            raise EdgewiseError(f"{where}: meta.json does not match: {describe(exc)}") from None

    def to_json(self) -> str:
        return self.model_dump_json(indent=2, exclude_none=True) + "\n"
