"""``edgewise convert``: a saved host model to an edge bundle. Only argparse at import."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edgewise.converters.host_model import HostModel
    from edgewise.converters.keras_export import KerasExportOptions
    from edgewise.converters.keras_host import KerasHostModel
    from edgewise.edge.bundle import Bundle
    from edgewise.edge.manifest import Manifest


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
        default=200,
        metavar="N",
        help="training samples for int8 calibration (default 200)",
    )
    p.add_argument(
        "--max-accuracy-drop",
        type=float,
        default=1.0,
        metavar="POINTS",
        help="refuse a conversion that loses more accuracy than this (default 1 point)",
    )
    p.add_argument(
        "--tolerance",
        type=float,
        default=1e-4,
        help="parity limit on probabilities / relative regression error (default 1e-4)",
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
    p.add_argument("--version", default="1", help="model version (default 1)")
    add_conversion_arguments(p)
    p.set_defaults(run=run_convert)


def keras_options(args: argparse.Namespace) -> KerasExportOptions:
    """The conversion options of a Keras model, validated before any work is done."""
    from edgewise.converters.keras_export import KerasExportOptions

    return KerasExportOptions(
        format=args.format or "tflite",
        quantize=args.quantize,
        calibration_samples=args.calibration_samples,
        max_accuracy_drop=args.max_accuracy_drop,
        tolerance=args.tolerance,
    )


def check_sklearn_options(args: argparse.Namespace) -> None:
    """scikit-learn models have one target: float ONNX."""
    from edgewise.edge.errors import EdgewiseError

    if (args.format or "onnx") != "onnx" or args.quantize != "none":
        raise EdgewiseError(
            "scikit-learn models convert to --format onnx without --quantize "
            "(their float graphs are already small)"
        )


def export_host_model(
    host: HostModel | KerasHostModel, args: argparse.Namespace, name: str | None
) -> Bundle:
    """Export a scikit-learn or Keras host model as the arguments say; returns the bundle."""
    from edgewise.converters.keras_host import KerasHostModel

    if isinstance(host, KerasHostModel):
        from edgewise.converters.keras_export import export_keras

        return export_keras(host, args.out, keras_options(args), name=name, version=args.version)
    from edgewise.converters.sklearn_onnx import export_sklearn

    check_sklearn_options(args)
    return export_sklearn(
        host,
        args.out,
        name=name,
        version=args.version,
        tolerance=args.tolerance,
    )


def run_convert(args: argparse.Namespace) -> int:
    from edgewise.converters.keras_host import is_keras_host_model, load_keras_host_model

    if is_keras_host_model(args.model):
        keras_options(args)  # options are checked before TensorFlow loads
        host: HostModel | KerasHostModel = load_keras_host_model(args.model)
    else:
        from edgewise.converters.host_model import load_host_model

        check_sklearn_options(args)
        host = load_host_model(args.model)
    bundle = export_host_model(host, args, args.name)
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
