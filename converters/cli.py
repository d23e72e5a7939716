"""``edgewise convert``: a saved host model to an edge bundle. Only argparse at import."""

from __future__ import annotations

import argparse


def configure_convert(p: argparse.ArgumentParser) -> None:
    """Arguments of ``edgewise convert``."""
    p.add_argument("model", metavar="MODEL", help="host model directory (or its model.skops)")
    p.add_argument("--out", required=True, metavar="DIR", help="bundle directory to write")
    p.add_argument("--name", help="model name on the device (default: the trained name)")
    p.add_argument("--version", default="1", help="model version (default 1)")
    p.add_argument(
        "--tolerance",
        type=float,
        default=1e-4,
        help="parity limit on probabilities / relative regression error",
    )
    p.set_defaults(run=run_convert)


def run_convert(args: argparse.Namespace) -> int:
    from converters.host_model import load_host_model
    from converters.sklearn_onnx import export_sklearn

    bundle = export_sklearn(
        load_host_model(args.model),
        args.out,
        name=args.name,
        version=args.version,
        tolerance=args.tolerance,
    )
    print_bundle(bundle.path, bundle.manifest)
    return 0


def print_bundle(path: object, manifest: dict[str, object]) -> None:
    """One summary block for a written bundle."""
    parity = manifest["parity"]
    model = manifest["model"]
    assert isinstance(parity, dict) and isinstance(model, dict)
    print(
        f"bundle {path}: {manifest['name']} v{manifest['version']} "
        f"({model['size_bytes']} bytes ONNX)"
    )
    figures = ", ".join(f"{k} {v:.4g}" for k, v in parity.items() if isinstance(v, float))
    print(f"parity on {parity['rows']} held-out rows: passed ({figures})")
