"""``edgewise compare``: classical candidates against deep ones on the user's own data.

Only argparse at import; options are checked before scikit-learn or TensorFlow load.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from edgewise.trainer.cli import add_drop_argument
from edgewise.trainer.registry import DATASETS
from edgewise.trainer.sources import DataSource


def configure_compare(p: argparse.ArgumentParser) -> None:
    """Arguments of ``edgewise compare``."""
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--dataset", help=f"built-in data set: {', '.join(DATASETS)}")
    src.add_argument("--csv", metavar="FILE", help="your CSV file (with --target)")
    src.add_argument("--images", metavar="DIR", help="image folder, one subfolder per class")
    p.add_argument("--image-size", type=int, default=32, help="--images: resize to N x N")
    p.add_argument("--grayscale", action="store_true", help="--images: one channel")
    p.add_argument("--target", help="label column of the CSV")
    add_drop_argument(p)
    p.add_argument("--task", choices=["classification", "regression"], help="override the task")
    p.add_argument(
        "--candidates",
        help="comma-separated (default: logistic-regression/linear, decision-tree, "
        "random-forest, hist-gradient-boosting, knn, and mlp for classification; for "
        "windows the classical ones on window features, and cnn1d)",
    )
    p.add_argument("--window", type=int, help="--csv of raw samples: window length in rows")
    p.add_argument("--stride", type=int, help="--csv of raw samples: step between windows")
    p.add_argument("--sample-rate", type=float, help="windows: Hz for the spectral features")
    p.add_argument("--seed", type=int, default=0, help="seed of the split and the models")
    p.add_argument("--epochs", type=int, default=60, help="most epochs for deep candidates")
    p.add_argument(
        "--repeats",
        type=int,
        default=5,
        help="splits each candidate is scored on, for the 95 %% intervals (default 5; 1: one "
        "split, no intervals; CSV windows: blocks of each run, at most 5)",
    )
    p.add_argument(
        "--deep-budget",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="no new split of a network starts after this long (default 120)",
    )
    p.add_argument("--max-latency-ms", type=float, help="constraint: p50 per sample on device")
    p.add_argument("--max-size-kb", type=float, help="constraint: artifact size")
    p.add_argument("--min-accuracy", type=float, help="constraint: converted accuracy (0..1)")
    p.add_argument(
        "--report", metavar="DIR", help="where compare.json, compare.html and bundles go"
    )
    p.add_argument("--export", metavar="best|NAME", help="write this candidate's bundle to --out")
    p.add_argument("--out", metavar="DIR", help="with --export: the bundle directory to write")
    p.add_argument("--no-progress", action="store_true", help="no progress lines on stderr")
    p.set_defaults(run=run_compare)


def _check(args: argparse.Namespace) -> None:
    from edgewise.edge.errors import EdgewiseError

    DataSource.from_args(args)  # the source's own checks, before any work
    if args.csv and not args.target and not args.window:
        raise EdgewiseError("--csv needs --target COLUMN (the label to learn)")
    if args.dataset and args.target:
        raise EdgewiseError("--target goes with --csv; built-in data sets know their target")
    if bool(args.export) != bool(args.out):
        raise EdgewiseError("--export NAME and --out DIR go together")
    if args.out and Path(args.out).exists():
        raise EdgewiseError(f"--out {args.out} exists; choose a new directory")
    if not 1 <= args.repeats <= 50:
        raise EdgewiseError(f"--repeats {args.repeats}: use 1..50")
    if args.deep_budget < 0:
        raise EdgewiseError(f"--deep-budget {args.deep_budget}: use 0 or more seconds")
    if args.epochs < 1:
        raise EdgewiseError(f"--epochs {args.epochs}: use 1 or more")
    for name in ("max_latency_ms", "max_size_kb"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise EdgewiseError(f"--{name.replace('_', '-')} {value}: use a positive number")
    if args.min_accuracy is not None and not 0 <= args.min_accuracy <= 1:
        raise EdgewiseError(f"--min-accuracy {args.min_accuracy}: use a fraction in 0..1")


def run_compare(args: argparse.Namespace) -> int:
    _check(args)
    import logging

    # Repeated splits train a network per split: Keras' retracing notices are not news.
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    from edgewise.edge.errors import EdgewiseError
    from edgewise.trainer.compare import DEFAULT_CANDIDATES, check_candidates, compare
    from edgewise.trainer.report import recommend, render_table
    from edgewise.trainer.report_html import render_html

    given = [c.strip() for c in args.candidates.split(",") if c.strip()] if args.candidates else []
    windows = None
    source = DataSource.from_args(args)
    if source.is_tensors or args.dataset == "digits":  # digits: pixel rows vs cnn2d
        from edgewise.trainer.compare_tensors import (
            IMAGE_CANDIDATES,
            WINDOW_CANDIDATES,
            check_tensor_candidates,
        )

        windows = source.tensors()
        default = WINDOW_CANDIDATES if windows.kind == "window" else IMAGE_CANDIDATES
        names = check_tensor_candidates(given or default, windows.kind)
    else:
        data = source.table()
        names = check_candidates(given or list(DEFAULT_CANDIDATES[data.task]), data.task)
    if args.export and args.export != "best" and args.export not in names:
        raise EdgewiseError(f"--export {args.export}: not a candidate; have {names}")
    stem = Path(args.dataset or Path(args.csv or args.images).stem).name
    root = Path(args.report or f"compare-{stem}")
    root.mkdir(parents=True, exist_ok=True)

    def progress(step: str) -> None:
        if not args.no_progress:
            print(f"{step}: training, converting, measuring", file=sys.stderr, flush=True)

    if windows is not None:
        from edgewise.trainer.compare_tensors import compare_tensors
        from edgewise.trainer.tensors import sample_rate_of

        report = compare_tensors(
            windows, root / "bundles", names, sample_rate=sample_rate_of(windows, args.sample_rate),
            seed=args.seed, epochs=args.epochs, repeats=args.repeats,
            deep_budget_s=args.deep_budget, progress=progress,
        )  # fmt: skip
    else:
        report = compare(
            data, root / "bundles", names, seed=args.seed, epochs=args.epochs,
            repeats=args.repeats, deep_budget_s=args.deep_budget, progress=progress,
        )  # fmt: skip
    recommend(report, args.max_latency_ms, args.max_size_kb, args.min_accuracy)
    (root / "compare.json").write_text(json.dumps(report.to_json(), indent=2) + "\n")
    (root / "compare.html").write_text(render_html(report), encoding="utf-8")
    print(render_table(report))
    print(f"\nreport: {root / 'compare.html'} (figures in {root / 'compare.json'})")
    print(f"bundles of every candidate: {root / 'bundles'} (--export NAME --out DIR copies one)")
    if args.export:
        choice = report.recommendation.get("choice") if args.export == "best" else args.export
        found = [r for r in report.candidates if r.name == choice and not r.skipped]
        if not found:
            raise EdgewiseError(f"--export {args.export}: no measured candidate to export")
        shutil.copytree(found[0].bundle, args.out)
        print(f"exported {choice} to {args.out}")
    return 0
