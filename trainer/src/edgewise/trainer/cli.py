"""``edgewise train`` and ``edgewise demo``. Only argparse at import; work is lazy."""

from __future__ import annotations

import argparse
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from edgewise.edge.link.topics import DEFAULT_BROKER
from edgewise.trainer.registry import (
    CLASSICAL,
    DETECTOR_NETWORKS,
    NETWORKS,
    TABULAR_DATASETS,
    WINDOW_DATASETS,
    check_dataset,
    check_model,
)

if TYPE_CHECKING:
    from edgewise.trainer.tensors import TensorData


def configure_train(p: argparse.ArgumentParser) -> None:
    """Arguments of ``edgewise train``."""
    from edgewise.converters.cli import add_conversion_arguments
    from edgewise.converters.defaults import DEFAULT_VERSION

    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--dataset",
        help=f"built-in data set: {', '.join(TABULAR_DATASETS)}, "
        f"{', '.join(WINDOW_DATASETS)} (sensor windows, generated)",
    )
    src.add_argument("--csv", metavar="FILE", help="your CSV file (with --target)")
    src.add_argument(
        "--images", metavar="DIR", help="image folder, one subfolder per class (cnn2d)"
    )
    p.add_argument("--target", help="label column of the CSV")
    p.add_argument(
        "--text", metavar="COLUMN", help="text classification: the CSV's free-text column "
        "(TF-IDF + logistic-regression; the device takes raw text)",
    )  # fmt: skip
    p.add_argument(
        "--task", choices=["classification", "regression"], help="override the inferred task"
    )
    add_drop_argument(p)
    p.add_argument(
        "--model",
        required=True,
        help=f"classical: {', '.join(CLASSICAL['classification'])} (on sensor windows: "
        "hand-made window features); anomaly: "
        f"{', '.join([*CLASSICAL['anomaly'], *DETECTOR_NETWORKS])} (Keras); clustering: "
        f"{', '.join(CLASSICAL['clustering'])}; deep (Keras): "
        + ", ".join(f"{name} ({kind})" for name, kind in NETWORKS.items()),
    )
    p.add_argument("--out", required=True, metavar="DIR", help="bundle directory to write")
    p.add_argument(
        "--force", action="store_true", help="replace --out (and its .host) if they exist"
    )
    p.add_argument(
        "--host-dir", metavar="DIR", help="where the host model goes (default: DIR.host)"
    )
    p.add_argument("--name", help="model name on the device (default: the --out folder name)")
    p.add_argument(
        "--version", default=DEFAULT_VERSION, help=f"model version (default {DEFAULT_VERSION})"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the split and the model")
    p.add_argument("--test-size", type=float, default=0.2, help="held-out fraction (default 0.2)")
    deep = p.add_argument_group("deep models")
    deep.add_argument("--epochs", type=int, default=60, help="most epochs (default 60)")
    deep.add_argument("--batch-size", type=int, default=32, help="batch size (default 32)")
    deep.add_argument(
        "--patience", type=int, default=8, help="early stopping patience in epochs (default 8)"
    )
    deep.add_argument("--window", type=int, help="--csv of raw samples: window length in rows")
    deep.add_argument("--stride", type=int, help="--csv of raw samples: step between windows")
    deep.add_argument("--image-size", type=int, default=32, help="--images: resize to N x N")
    deep.add_argument("--grayscale", action="store_true", help="--images: one channel")
    deep.add_argument("--classes", help="keep only these classes (comma-separated)")
    deep.add_argument(
        "--per-class", type=int, metavar="N", help="use at most N training samples per class"
    )
    deep.add_argument(
        "--base", metavar="MODEL.keras", help="transfer learning: new head on this network"
    )
    deep.add_argument(
        "--freeze-base", action="store_true", help="with --base: train the new head only"
    )
    deep.add_argument(
        "-v", "--verbose", action="store_true", help="show Keras's progress per epoch"
    )
    deep.add_argument(
        "--sample-rate", type=float, help="windows: Hz, for the spectral features (default: "
        "2560 for vibration, else 1 = cycles per sample)",
    )  # fmt: skip
    unsup = p.add_argument_group("anomaly detection and clustering")
    unsup.add_argument("--normal", metavar="LABEL", help="anomaly: fit on this label's rows only")
    unsup.add_argument(
        "--contamination", type=float, default=0.01,
        help="anomaly: share of normal training rows above the alarm threshold (default 0.01)",
    )  # fmt: skip
    unsup.add_argument("--clusters", type=int, default=3, help="kmeans: clusters (default 3)")
    add_conversion_arguments(p.add_argument_group("conversion"))  # type: ignore[arg-type]
    p.set_defaults(run=run_train)


def configure_demo(p: argparse.ArgumentParser) -> None:
    """Arguments of ``edgewise demo``."""
    p.add_argument("--dataset", default="iris", help="built-in data set (default iris)")
    p.add_argument("--model", default="random-forest", help="model name (default random-forest)")
    p.add_argument(
        "--broker",
        default=DEFAULT_BROKER,
        help="broker to use when reachable; else one is started for the run",
    )
    p.add_argument("--device", default="demo", help="device id (default demo)")
    p.add_argument("--workdir", metavar="DIR", help="keep the bundle and logs here")
    p.set_defaults(run=run_demo)


def default_name(out: str) -> str:
    """A model name from the output folder's name (topic-safe)."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(out).resolve().name).strip("-.")
    return name or "model"


def add_drop_argument(p: argparse.ArgumentParser) -> None:
    """``--drop COLUMN`` (repeatable): CSV columns that are not features."""
    p.add_argument(
        "--drop", action="append", metavar="COLUMN", help="--csv: leave this column out "
        "(an id, a note); repeat for more",
    )  # fmt: skip


@contextmanager
def removed_on_failure(host_dir: Path) -> Iterator[None]:
    """A host model written for a conversion that then fails (a parity gate) is removed,
    so the rerun is not refused for a half-written output."""
    try:
        yield
    except BaseException:
        shutil.rmtree(host_dir, ignore_errors=True)
        raise


def load_tensor_data(args: argparse.Namespace) -> TensorData:
    """The deep-learning data the arguments name, filtered by --classes."""
    import numpy as np

    from edgewise.edge.errors import EdgewiseError
    from edgewise.trainer.sources import DataSource

    data = DataSource.from_args(args).tensors(digits_as_images=args.model == "cnn2d")
    if args.classes:
        wanted = [c.strip() for c in args.classes.split(",") if c.strip()]
        have = {str(label): label for label in data.labels}
        unknown = [c for c in wanted if c not in have]
        if unknown:
            raise EdgewiseError(f"--classes {unknown}: not in the data; it has {sorted(have)}")
        keep = np.isin(data.y.astype(str), wanted)
        index = np.flatnonzero(keep)
        test = None if data.test_index is None else np.flatnonzero(np.isin(index, data.test_index))
        data = data.subset(index)
        data.test_index = test
    return data


def run_train_deep(args: argparse.Namespace) -> int:
    from edgewise.converters.cli import export_options, print_bundle
    from edgewise.converters.export import export
    from edgewise.converters.keras_host import save_keras_host_model
    from edgewise.trainer.deep import train_deep

    export_options(args).check("keras")  # before hours of training, not after
    data = load_tensor_data(args)
    name = args.name or default_name(args.out)
    host = train_deep(
        data,
        args.model,
        name,
        seed=args.seed,
        test_size=args.test_size,
        epochs=args.epochs,
        batch_size=args.batch_size,
        patience=args.patience,
        base=args.base,
        freeze_base=args.freeze_base,
        per_class=args.per_class,
        verbose=2 if args.verbose else 0,
    )
    host_dir = save_keras_host_model(args.host_dir or f"{args.out.rstrip('/')}.host", host)
    shown = {k: round(v, 4) for k, v in host.meta.metrics.items()}
    print(
        f"trained {args.model} on {data.source} ({data.kind}, {len(data.X)} samples of shape "
        f"{list(data.X.shape[1:])}): {shown}"
    )
    print(f"host model {host_dir} (model.keras, history.json; stays on the host)")
    with removed_on_failure(host_dir):
        bundle = export(host, args.out, export_options(args, name))
    print_bundle(bundle.path, bundle.manifest)
    return 0


def refuse_existing_out(args: argparse.Namespace) -> None:
    """A bundle (or host model) already at --out is replaced only with --force."""
    from edgewise.edge.errors import EdgewiseError

    host = args.host_dir or f"{args.out.rstrip('/')}.host"
    taken = [p for p in (args.out, host) if Path(p).exists() and any(Path(p).iterdir())]
    if taken and not args.force:
        raise EdgewiseError(f"{taken[0]} exists; pass --force to replace it")


def run_train(args: argparse.Namespace) -> int:
    check_model(args.model)
    if args.dataset:
        check_dataset(args.dataset)
    refuse_existing_out(args)
    if args.model in NETWORKS:
        return run_train_deep(args)
    if args.model == "autoencoder":
        return run_train_autoencoder(args)
    from edgewise.converters.cli import export_options, print_bundle
    from edgewise.converters.export import export
    from edgewise.converters.host_model import save_host_model
    from edgewise.edge.errors import EdgewiseError
    from edgewise.trainer.reference import array_reference
    from edgewise.trainer.sources import DataSource
    from edgewise.trainer.train import train

    source = DataSource.from_args(args)
    if args.images:
        raise EdgewiseError(f"{args.model} is a classical model: images go to cnn2d")
    if args.csv and not args.target:
        raise EdgewiseError("--csv needs --target COLUMN (the label to learn)")
    export_options(args).check("sklearn")
    if args.clusters < 1:
        raise EdgewiseError(f"--clusters {args.clusters}: use 1 or more")
    test_index = None
    window_features = None
    reference = None  # the training rows' (train) unless the device gets raw windows
    if args.text and not args.csv:
        raise EdgewiseError("--text goes with --csv FILE --target LABEL")
    if args.text:
        from edgewise.trainer.datasets import load_text_csv

        data = load_text_csv(args.csv, args.target, args.text)
    elif source.is_tensors:
        from edgewise.trainer.tensors import sample_rate_of, window_feature_dataset

        windows = load_tensor_data(args)
        rate = sample_rate_of(windows, args.sample_rate)
        data, window_features = window_feature_dataset(windows, rate)
        test_index = windows.test_index
        reference = array_reference("window", windows.X, windows.channels, rate)
    else:
        data = source.table()
    if args.dataset and args.task and args.task != data.task:
        raise EdgewiseError(f"data set {args.dataset} is a {data.task} task")
    name = args.name or default_name(args.out)
    host = train(
        data,
        args.model,
        name,
        seed=args.seed,
        test_size=args.test_size,
        params={"n_clusters": args.clusters} if args.model == "kmeans" else None,
        normal=args.normal,
        contamination=args.contamination,
        test_index=test_index,
        window_features=window_features,
        reference=reference,
    )
    host_dir = save_host_model(args.host_dir or f"{args.out.rstrip('/')}.host", host)
    shown = {k: round(v, 4) for k, v in host.meta.metrics.items()}
    print(f"trained {args.model} on {data.source} ({host.task}, {len(data.X)} rows): {shown}")
    print(f"host model {host_dir} (stays on the host)")
    with removed_on_failure(host_dir):
        bundle = export(host, args.out, export_options(args, name))
    print_bundle(bundle.path, bundle.manifest)
    return 0


def run_train_autoencoder(args: argparse.Namespace) -> int:
    """Anomaly detection with a Keras autoencoder (rows, or windows as window features)."""
    from edgewise.converters.cli import export_options, print_bundle
    from edgewise.converters.export import export
    from edgewise.converters.keras_host import save_keras_host_model
    from edgewise.trainer.autoencoder import train_autoencoder
    from edgewise.trainer.reference import array_reference
    from edgewise.trainer.tensors import TensorData, sample_rate_of, window_feature_dataset

    export_options(args).check("keras")
    window_features = reference = None
    data = load_tensor_data(args)
    if data.kind == "window":
        rate = sample_rate_of(data, args.sample_rate)
        reference = array_reference("window", data.X, data.channels, rate)
        table, window_features = window_feature_dataset(data, rate)
        data = TensorData(
            table.X.to_numpy(dtype="float32"), table.y, "tabular", list(table.X.columns),
            table.source, test_index=data.test_index,
        )  # fmt: skip
    name = args.name or default_name(args.out)
    host = train_autoencoder(
        data, name, seed=args.seed, test_size=args.test_size, epochs=args.epochs,
        batch_size=args.batch_size, patience=args.patience, normal=args.normal,
        contamination=args.contamination, verbose=2 if args.verbose else 0,
        window_features=window_features, reference=reference,
    )  # fmt: skip
    host_dir = save_keras_host_model(args.host_dir or f"{args.out.rstrip('/')}.host", host)
    shown = {k: round(v, 4) for k, v in host.meta.metrics.items()}
    print(f"trained autoencoder on {data.source} (anomaly, {len(data.X)} rows): {shown}")
    print(f"host model {host_dir} (model.keras; stays on the host)")
    with removed_on_failure(host_dir):
        bundle = export(host, args.out, export_options(args, name))
    print_bundle(bundle.path, bundle.manifest)
    return 0


def run_demo(args: argparse.Namespace) -> int:
    from edgewise.trainer.demo import run

    return run(args.dataset, args.model, args.broker, args.device, args.workdir)


def configure_examples(p: argparse.ArgumentParser) -> None:
    """Arguments of ``edgewise examples``."""
    p.add_argument("--out", default="examples", metavar="DIR", help="default ./examples")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated data")
    p.add_argument("--force", action="store_true", help="replace example files in DIR")
    p.set_defaults(run=run_examples)


def run_examples(args: argparse.Namespace) -> int:
    from edgewise.trainer.examples import write_examples

    for path in write_examples(args.out, seed=args.seed, force=args.force):
        size = (
            sum(f.stat().st_size for f in path.rglob("*")) if path.is_dir() else path.stat().st_size
        )
        print(f"{path} ({size / 1024:.0f} KiB)")
    return 0
