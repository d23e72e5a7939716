"""``edgewise train`` and ``edgewise demo``. Only argparse at import; work is lazy."""

from __future__ import annotations

import argparse
import re
from pathlib import Path


def configure_train(p: argparse.ArgumentParser) -> None:
    """Arguments of ``edgewise train``."""
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--dataset", help="built-in data set: iris, wine, breast_cancer, digits, diabetes"
    )
    src.add_argument("--csv", metavar="FILE", help="your CSV file (with --target)")
    p.add_argument("--target", help="label column of the CSV")
    p.add_argument(
        "--task", choices=["classification", "regression"], help="override the inferred task"
    )
    p.add_argument(
        "--model",
        required=True,
        help="random-forest, gradient-boosting, hist-gradient-boosting, "
        "logistic-regression, linear, svm, knn, naive-bayes, decision-tree",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="bundle directory to write")
    p.add_argument(
        "--host-dir", metavar="DIR", help="where the host model goes (default: DIR.host)"
    )
    p.add_argument("--name", help="model name on the device (default: the --out folder name)")
    p.add_argument("--version", default="1", help="model version (default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split and the model")
    p.add_argument("--test-size", type=float, default=0.2, help="held-out fraction (default 0.2)")
    p.set_defaults(run=run_train)


def configure_demo(p: argparse.ArgumentParser) -> None:
    """Arguments of ``edgewise demo``."""
    p.add_argument("--dataset", default="iris", help="built-in data set (default iris)")
    p.add_argument("--model", default="random-forest", help="model name (default random-forest)")
    p.add_argument(
        "--broker",
        default="mqtt://127.0.0.1:1883",
        help="broker to use when reachable; else one is started for the run",
    )
    p.add_argument("--device", default="demo", help="device id (default demo)")
    p.add_argument("--workdir", metavar="DIR", help="keep the bundle and logs here")
    p.set_defaults(run=run_demo)


def default_name(out: str) -> str:
    """A model name from the output folder's name (topic-safe)."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(out).resolve().name).strip("-.")
    return name or "model"


def run_train(args: argparse.Namespace) -> int:
    from converters.cli import print_bundle
    from converters.host_model import save_host_model
    from converters.sklearn_onnx import export_sklearn
    from edge.errors import EdgewiseError
    from trainer.datasets import load_builtin, load_csv
    from trainer.train import train

    if args.csv and not args.target:
        raise EdgewiseError("--csv needs --target COLUMN (the label to learn)")
    if args.dataset and args.target:
        raise EdgewiseError("--target goes with --csv; built-in data sets know their target")
    data = (
        load_builtin(args.dataset) if args.dataset else load_csv(args.csv, args.target, args.task)
    )
    if args.dataset and args.task and args.task != data.task:
        raise EdgewiseError(f"data set {args.dataset} is a {data.task} task")
    name = args.name or default_name(args.out)
    host = train(data, args.model, name, seed=args.seed, test_size=args.test_size)
    host_dir = save_host_model(args.host_dir or f"{args.out.rstrip('/')}.host", host)
    shown = {k: round(v, 4) for k, v in host.meta["metrics"].items()}
    print(f"trained {args.model} on {data.source} ({data.task}, {len(data.X)} rows): {shown}")
    print(f"host model {host_dir} (stays on the host)")
    bundle = export_sklearn(host, args.out, name=name, version=args.version)
    print_bundle(bundle.path, bundle.manifest)
    return 0


def run_demo(args: argparse.Namespace) -> int:
    from trainer.demo import run

    return run(args.dataset, args.model, args.broker, args.device, args.workdir)
