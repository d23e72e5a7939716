"""``edgewise convert``: a saved host model to an edge bundle. Only argparse at import."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

# The defaults live with the library (a light module: no NumPy, no TensorFlow).
from edgewise.converters.defaults import (
    DEFAULT_CALIBRATION_SAMPLES,
    DEFAULT_MAX_ACCURACY_DROP,
    DEFAULT_TOLERANCE,
    DEFAULT_VERSION,
)

if TYPE_CHECKING:
    from edgewise.converters.export import ExportOptions
    from edgewise.converters.host_model import HostModel
    from edgewise.converters.keras_host import KerasHostModel
    from edgewise.edge.runtime.manifest import Manifest


def add_conversion_arguments(p: argparse.ArgumentParser) -> None:
    """Format, quantization and gate options (shared by ``convert`` and ``train``)."""
    p.add_argument(
        "--format",
        choices=["onnx", "tflite"],
        help="edge format: onnx (scikit-learn models, default) or tflite (Keras, default) / onnx",
    )
    p.add_argument(
        "--quantize",
        default="none",
        help="Keras models: none, float16 (tflite), dynamic, int8 (default none)",
    )
    p.add_argument(
        "--calibration-samples",
        type=int,
        default=DEFAULT_CALIBRATION_SAMPLES,
        metavar="N",
        help=f"training samples for int8 calibration (default {DEFAULT_CALIBRATION_SAMPLES})",
    )
    p.add_argument(
        "--max-accuracy-drop",
        type=float,
        default=DEFAULT_MAX_ACCURACY_DROP,
        metavar="POINTS",
        help="refuse a conversion that loses more accuracy than this "
        f"(default {DEFAULT_MAX_ACCURACY_DROP:g} point)",
    )
    p.add_argument(
        "--tolerance",
        type=float,
        default=DEFAULT_TOLERANCE,
        help="parity limit on probabilities / relative regression error "
        f"(default {DEFAULT_TOLERANCE:g})",
    )
    p.add_argument(
        "--p99-budget-ms",
        type=float,
        metavar="MS",
        help="the bundle's self-test fails on a device slower than this (p99, one instance)",
    )


def configure_convert(p: argparse.ArgumentParser) -> None:
    """Arguments of ``edgewise convert``."""
    p.add_argument(
        "model",
        metavar="MODEL",
        help="host model directory written by `edgewise train` (or its model.skops / model.keras)",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="bundle directory to write")
    p.add_argument("--name", help="model name on the device (default: the trained name)")
    p.add_argument(
        "--version", default=DEFAULT_VERSION, help=f"model version (default {DEFAULT_VERSION})"
    )
    add_conversion_arguments(p)
    p.set_defaults(run=run_convert)


def export_options(args: argparse.Namespace, name: str | None = None) -> ExportOptions:
    """The library options the flags describe (validated; the CLI shows errors as flags)."""
    from edgewise.converters.export import ExportOptions

    return ExportOptions(
        format=args.format,
        quantize=args.quantize,
        calibration_samples=args.calibration_samples,
        max_accuracy_drop=args.max_accuracy_drop,
        tolerance=args.tolerance,
        p99_budget_ms=args.p99_budget_ms,
        name=name,
        version=getattr(args, "version", None) or DEFAULT_VERSION,
    )


def run_convert(args: argparse.Namespace) -> int:
    from edgewise.converters.export import export
    from edgewise.converters.keras_host import is_keras_host_model, load_keras_host_model

    options = export_options(args, args.name)
    if is_keras_host_model(args.model):
        options.check("keras")  # before TensorFlow loads
        host: HostModel | KerasHostModel = load_keras_host_model(args.model)
    else:
        from edgewise.converters.host_model import load_host_model

        options.check("sklearn")
        host = load_host_model(args.model)
    bundle = export(host, args.out, options)
    print_bundle(bundle.path, bundle.manifest)
    return 0


def print_bundle(path: object, manifest: Manifest) -> None:
    """One summary block for a written bundle."""
    model = manifest.model
    kind = model.format.upper()
    if model.quantize not in (None, "none"):
        kind += f" {model.quantize}"
    print(f"bundle {path}: {manifest.name} v{manifest.version} ({model.size_bytes} bytes {kind})")
    parity = manifest.parity
    figures = ", ".join(
        f"{k} {v:.4g}" for k, v in parity.model_dump().items() if isinstance(v, float)
    )
    by = f" served by {parity.served_by}" if parity.served_by else ""
    print(f"parity on {parity.rows} held-out rows{by}: passed ({figures})")
