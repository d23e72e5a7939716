"""``export(host_model, out, options)``: any host model to a checked edge bundle.

The library entry point for both families, free of the command line: options are one
validated dataclass, checked before any work (before TensorFlow loads); a bad one raises
:class:`~edgewise.edge.errors.OptionError` naming the parameter, which the CLI shows as
its flag. scikit-learn models become float ONNX graphs; Keras models TFLite (default) or
ONNX, optionally quantized. Either way the written bundle passed the parity gate.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from edgewise.converters.defaults import (
    DEFAULT_CALIBRATION_SAMPLES,
    DEFAULT_MAX_ACCURACY_DROP,
    DEFAULT_TOLERANCE,
    DEFAULT_VERSION,
)
from edgewise.edge.errors import OptionError

if TYPE_CHECKING:
    from edgewise.converters.host_model import HostModel
    from edgewise.converters.keras_export import KerasExportOptions
    from edgewise.converters.keras_host import KerasHostModel
    from edgewise.edge.runtime.bundle import Bundle

Family = Literal["sklearn", "keras"]


@dataclass(frozen=True)
class ExportOptions:
    """How to convert and how strict the gate is; ``format=None`` picks the family's default."""

    format: str | None = None
    quantize: str = "none"
    calibration_samples: int = DEFAULT_CALIBRATION_SAMPLES
    max_accuracy_drop: float = DEFAULT_MAX_ACCURACY_DROP
    tolerance: float = DEFAULT_TOLERANCE
    name: str | None = None  # default: the trained model's name
    version: str = DEFAULT_VERSION
    p99_budget_ms: float | None = None  # the self-test's latency budget on the device

    def __post_init__(self) -> None:
        if not isinstance(self.version, str) or not 1 <= len(self.version) <= 64:
            raise OptionError("version", f"{self.version!r}: use 1 to 64 characters")
        if not 0 < self.tolerance < 1:
            raise OptionError("tolerance", f"{self.tolerance!r} must be between 0 and 1")
        if self.p99_budget_ms is not None and not 0 < self.p99_budget_ms <= 60_000:
            raise OptionError("p99_budget_ms", f"{self.p99_budget_ms!r}: use 0 < ms <= 60000")

    def check(self, family: Family) -> None:
        """Raise OptionError unless these options suit the family (no work is done)."""
        if family == "sklearn":
            if (self.format or "onnx") != "onnx":
                raise OptionError(
                    "format", f"{self.format!r}: scikit-learn models convert to onnx only"
                )
            if self.quantize != "none":
                raise OptionError(
                    "quantize",
                    f"{self.quantize!r}: scikit-learn models convert to float onnx "
                    "(their graphs are already small)",
                )
        else:
            self.keras()

    def keras(self) -> KerasExportOptions:
        """The Keras converter's options (validated)."""
        from edgewise.converters.keras_export import KerasExportOptions

        return KerasExportOptions(
            format=self.format or "tflite",
            quantize=self.quantize,
            calibration_samples=self.calibration_samples,
            max_accuracy_drop=self.max_accuracy_drop,
            tolerance=self.tolerance,
        )


def family_of(host: object) -> Family:
    """'keras' for a KerasHostModel, else 'sklearn'."""
    from edgewise.converters.keras_host import KerasHostModel

    return "keras" if isinstance(host, KerasHostModel) else "sklearn"


def export(
    host: HostModel | KerasHostModel,
    out: str | Path,
    options: ExportOptions | None = None,
) -> Bundle:
    """Convert ``host`` into a bundle directory ``out``; the parity gate must pass."""
    from edgewise.converters.keras_host import KerasHostModel

    options = options or ExportOptions()
    if isinstance(host, KerasHostModel):
        from edgewise.converters.keras_export import export_keras

        return export_keras(
            host,
            out,
            options.keras(),
            name=options.name,
            version=options.version,
            p99_budget_ms=options.p99_budget_ms,
        )
    from edgewise.converters.sklearn_onnx import export_sklearn

    options.check("sklearn")
    return export_sklearn(
        host,
        out,
        name=options.name,
        version=options.version,
        tolerance=options.tolerance,
        p99_budget_ms=options.p99_budget_ms,
    )
