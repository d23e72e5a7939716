"""Array data for the deep models: tabular rows, sensor windows and images.

Every loader returns a ``TensorData``: X is float32 with the batch first (N, F) for
tabular, (N, T, C) for windows, (N, H, W, C) for images, in the units the device will
send (raw sensor values, raw pixel values); normalization lives inside the network.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
from pandas.api.types import is_numeric_dtype

from edgewise.edge.errors import EdgewiseError
from edgewise.edge.runtime.features import DEFAULT_BANDS, feature_names, window_features
from edgewise.edge.runtime.features import VERSION as FEATURES_VERSION
from edgewise.edge.runtime.manifest import WindowFeatures
from edgewise.trainer.datasets import Dataset
from edgewise.trainer.reference import is_missing
from edgewise.trainer.vibration import CHANNELS, SAMPLE_RATE_HZ
from edgewise.trainer.vibration import generate as generate_vibration

KINDS = ("tabular", "window", "image")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")


@dataclass
class TensorData:
    """Inputs, class labels and provenance for one deep-learning data set."""

    X: np.ndarray
    y: np.ndarray
    kind: str
    channels: list[str]  # feature names (tabular) or names of the last axis
    source: str
    value_scale: float = 1.0  # images: 1 / largest pixel value
    # Indices of held-out rows chosen by the loader (time series must not leak), else None.
    test_index: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)
    # Mixed tables: the string columns; X is then an object array of raw values (numbers,
    # NaN, strings, None) that the trainer one-hot encodes with the training categories.
    categorical: tuple[str, ...] = ()
    digest: str | None = None  # the source table's hash, when X is not a float array
    # Windows cut from a time-ordered CSV: the run (one label) each came from and its first
    # sample, so repeated splits can hold out blocks without overlap (uncertainty).
    runs: np.ndarray | None = None
    starts: np.ndarray | None = None

    @property
    def sha256(self) -> str:
        if self.digest is not None:
            return self.digest
        y = np.asarray(self.y).astype(str)
        return hashlib.sha256(self.X.tobytes() + "\n".join(y).encode()).hexdigest()

    @property
    def labels(self) -> list[str | int]:
        values = np.unique(self.y)
        return [v.item() if isinstance(v, np.generic) else v for v in values]

    def subset(self, index: np.ndarray, test_index: np.ndarray | None = None) -> TensorData:
        """The rows at ``index`` (provenance kept), optionally with held-out positions."""

        def pick(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[index]

        return replace(
            self, X=self.X[index], y=np.asarray(self.y)[index], test_index=test_index,
            runs=pick(self.runs), starts=pick(self.starts),
        )  # fmt: skip


def load_vibration(per_class: int = 200, seed: int = 0) -> TensorData:
    """The built-in machine-vibration windows (trainer.vibration), seeded."""
    X, y = generate_vibration(per_class=per_class, seed=seed)
    return TensorData(
        X,
        y,
        "window",
        list(CHANNELS),
        f"edgewise:vibration(per_class={per_class},seed={seed},fs={SAMPLE_RATE_HZ:g}Hz)",
    )


def load_digits_images() -> TensorData:
    """scikit-learn's 8x8 digits as images (values 0..16, one channel)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    X = np.asarray(bunch.images, dtype=np.float32)[..., np.newaxis]
    return TensorData(X, np.asarray(bunch.target), "image", ["gray"], "sklearn:digits", 1 / 16)


def load_image_folder(path: str | Path, size: int = 32, grayscale: bool = False) -> TensorData:
    """A folder with one subfolder per class of PNG/JPEG images, resized to size x size."""
    from PIL import Image, UnidentifiedImageError

    root = Path(path)
    if not root.is_dir():
        raise EdgewiseError(f"image folder {root}: no such directory")
    if not 4 <= size <= 512:
        raise EdgewiseError(f"--image-size {size}: use 4..512 pixels")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    if len(classes) < 2:
        raise EdgewiseError(f"image folder {root}: needs one subfolder per class, found {classes}")
    mode = "L" if grayscale else "RGB"
    images: list[np.ndarray] = []
    labels: list[str] = []
    for label in classes:
        files = sorted(p for p in (root / label).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise EdgewiseError(f"image folder {root}: class {label!r} has no PNG/JPEG images")
        for file in files:
            try:
                with Image.open(file) as img:
                    pixels = img.convert(mode).resize((size, size), Image.Resampling.BILINEAR)
            except (UnidentifiedImageError, OSError) as exc:
                raise EdgewiseError(f"image {file}: cannot be read ({exc})") from None
            images.append(np.asarray(pixels, dtype=np.float32).reshape(size, size, -1))
            labels.append(label)
    channels = ["gray"] if grayscale else ["r", "g", "b"]
    return TensorData(
        np.stack(images), np.asarray(labels), "image", channels, f"folder:{root.name}", 1 / 255
    )


def load_window_csv(
    path: str | Path,
    window: int,
    stride: int,
    label: str = "label",
    time_column: str | None = "timestamp",
    test_size: float = 0.2,
) -> TensorData:
    """Cut a CSV of raw samples (time, channels..., label) into labelled windows.

    A window never spans two labels: the rows are cut into runs of one label and each run
    into windows. The held-out windows are the last ``test_size`` of each run, and the
    training windows that overlap them are dropped, so overlapping windows do not leak.
    """
    p = Path(path)
    if window < 2 or stride < 1:
        raise EdgewiseError(f"--window {window} / --stride {stride}: use window >= 2, stride >= 1")
    if not p.is_file():
        raise EdgewiseError(f"CSV file {p}: no such file")
    try:
        df = pd.read_csv(p)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise EdgewiseError(f"CSV file {p} cannot be read: {str(exc).splitlines()[0]}") from None
    if label not in df.columns:
        raise EdgewiseError(f"CSV file {p} has no label column {label!r}")
    if time_column and time_column in df.columns:
        df = df.sort_values(time_column, kind="stable").drop(columns=[time_column])
    y_all = df.pop(label).astype(str).to_numpy()
    bad = [c for c in df.columns if not is_numeric_dtype(df[c])]
    if bad or df.shape[1] == 0:
        raise EdgewiseError(f"CSV file {p}: channels must be numeric columns (not {bad})")
    values = df.to_numpy(dtype=np.float32)
    if not np.isfinite(values).all():
        raise EdgewiseError(f"CSV file {p}: sensor channels have missing or infinite values")
    starts, labels, held_out, runs = [], [], [], []
    run_edges = np.flatnonzero(y_all[1:] != y_all[:-1]) + 1
    for run_id, (lo, hi) in enumerate(zip(np.r_[0, run_edges], np.r_[run_edges, len(y_all)])):
        run = list(range(lo, hi - window + 1, stride))
        n_test = round(len(run) * test_size)
        test_from = run[-n_test] if n_test else hi
        for s in run:
            is_test = s >= test_from
            if not is_test and s + window > test_from:
                continue  # overlaps a held-out window
            starts.append(s)
            runs.append(run_id)
            labels.append(y_all[lo])
            held_out.append(is_test)
    if not starts:
        raise EdgewiseError(f"CSV file {p}: no run of one label is {window} samples long")
    X = np.stack([values[s : s + window] for s in starts])
    return TensorData(
        X,
        np.asarray(labels),
        "window",
        [str(c) for c in df.columns],
        f"csv:{p.name}(window={window},stride={stride})",
        test_index=np.flatnonzero(held_out),
        runs=np.asarray(runs),
        starts=np.asarray(starts),
    )


def from_tabular(data: Dataset) -> TensorData:
    """A classical Dataset for the MLP: a float matrix, or with categorical columns an
    object matrix of raw values (one-hot encoded in training, edge.runtime.one_hot)."""
    if data.text:
        raise EdgewiseError(
            f"mlp takes numbers and categories; {data.source} has free text {data.text[0]!r}: "
            "use a classical model"
        )
    if data.task != "classification":
        raise EdgewiseError("deep models are built for classification; use a classical model")
    names = [str(c) for c in data.X.columns]
    y = np.asarray(data.y)
    if not data.categorical:
        X = data.X.to_numpy(dtype=np.float32)
        return TensorData(X, y, "tabular", names, data.source)
    raw = np.empty(data.X.shape, dtype=object)
    for j, c in enumerate(data.X.columns):
        if c in data.categorical:
            raw[:, j] = [None if is_missing(v) else str(v) for v in data.X[c]]
        else:
            raw[:, j] = data.X[c].to_numpy(dtype=np.float64)
    return TensorData(
        raw, y, "tabular", names, data.source,
        categorical=tuple(str(c) for c in data.categorical), digest=data.sha256,
    )  # fmt: skip


def window_feature_dataset(
    data: TensorData, sample_rate: float, bands: int = DEFAULT_BANDS
) -> tuple[Dataset, WindowFeatures]:
    """Sensor windows as a table of hand-made features (edge.runtime.features) for the classical
    models, and the manifest's ``input.window_features`` that lets the device compute
    the same features from raw windows."""
    if data.kind != "window":
        raise EdgewiseError(f"window features need sensor windows; {data.source} is {data.kind}")
    if sample_rate <= 0:
        raise EdgewiseError(f"--sample-rate {sample_rate}: use a positive number of Hz")
    names = feature_names(data.channels, bands)
    X = pd.DataFrame(window_features(data.X, sample_rate, bands), columns=names)
    y = np.asarray(data.y)
    dataset = Dataset(X, y, "classification", f"{data.source}:features", data.sha256, [])
    spec = WindowFeatures(
        version=FEATURES_VERSION,
        window=(int(data.X.shape[1]), int(data.X.shape[2])),
        channels=tuple(data.channels),
        sample_rate=float(sample_rate),
        bands=bands,
    )
    return dataset, spec


def sample_rate_of(data: TensorData, given: float | None) -> float:
    """The built-in vibration set knows its rate; otherwise --sample-rate (default 1)."""
    if given is not None:
        return given
    return SAMPLE_RATE_HZ if data.source.startswith("edgewise:vibration") else 1.0


def pixel_dataset(data: TensorData) -> Dataset:
    """Images as a table of their pixels (row-major, channels last) for classical models;
    the client sends an image's flattened pixel row."""
    if data.kind != "image":
        raise EdgewiseError(f"pixel rows need images; {data.source} is {data.kind} data")
    h, w, c = data.X.shape[1:]
    names = [f"px_{i}_{j}_{k}" for i in range(h) for j in range(w) for k in range(c)]
    X = pd.DataFrame(data.X.reshape(len(data.X), -1), columns=names)
    return Dataset(
        X, np.asarray(data.y), "classification", f"{data.source}:pixels", data.sha256, []
    )
