"""Keras models for ``edgewise train --model mlp | cnn1d | cnn2d``, and their training.

Networks take raw values (sensor units, pixel values): standardization or rescaling is
the first layer, with constants from the training split, so the converted model needs no
preprocessing on the device. The layer before the classifier is named ``features`` and
the classifier ``head``: transfer learning (``--base``) keeps everything up to
``features`` and trains a new ``head``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from edgewise.converters.host_meta import HostFeature, HostMeta
from edgewise.converters.host_model import json_value
from edgewise.converters.keras_host import KerasHostModel, load_keras_model
from edgewise.edge.errors import EdgewiseError
from edgewise.edge.runtime.manifest import MISSING_CATEGORY, TrainingData
from edgewise.edge.runtime.one_hot import OneHotRows
from edgewise.trainer.reference import (
    array_baseline,
    array_reference,
    table_baseline,
    table_reference,
)
from edgewise.trainer.registry import NETWORKS
from edgewise.trainer.tensors import TensorData

log = logging.getLogger(__name__)

# model name -> the kind of data it takes
DEEP_MODELS = NETWORKS
CALIBRATION_ROWS = 1000  # training rows kept for int8 calibration


def _standardize(keras: Any, X: np.ndarray, axes: tuple[int, ...]) -> Any:
    """A Rescaling layer that standardizes per feature/channel with training constants.

    Rescaling keeps its scale/offset as constants in the graph; a Normalization layer's
    variables became extra graph inputs in the ONNX export (tf2onnx 1.17).
    """
    mean = np.nanmean(X, axis=axes)
    std = np.nanstd(X, axis=axes)
    std = np.where(std > 1e-6, std, 1.0)
    return keras.layers.Rescaling(
        scale=(1 / std).astype(float).tolist(),
        offset=(-mean / std).astype(float).tolist(),
        name="standardize",
    )


def build_network(kind: str, data: TensorData, X_train: np.ndarray, n_classes: int) -> Any:
    """The Keras model for ``kind`` (mlp, cnn1d, cnn2d), input in raw units."""
    import keras
    from keras import layers

    inputs = keras.Input(shape=X_train.shape[1:], name="input")
    if kind == "mlp":
        x = _standardize(keras, X_train, (0,))(inputs)
        x = layers.Dense(64, activation="relu")(x)
        x = layers.Dense(32, activation="relu", name="features")(x)
    elif kind == "cnn1d":
        x = _standardize(keras, X_train, (0, 1))(inputs)
        x = layers.Conv1D(16, 7, activation="relu", padding="same")(x)
        x = layers.MaxPooling1D(2)(x)
        x = layers.Conv1D(32, 5, activation="relu", padding="same")(x)
        x = layers.MaxPooling1D(2)(x)
        x = layers.Conv1D(32, 3, activation="relu", padding="same")(x)
        x = layers.GlobalAveragePooling1D(name="embedding")(x)
        x = layers.Dense(32, activation="relu", name="features")(x)
    elif kind == "cnn2d":
        x = layers.Rescaling(data.value_scale, name="rescale")(inputs)
        x = layers.Conv2D(16, 3, activation="relu", padding="same")(x)
        if X_train.shape[1] >= 16:
            x = layers.MaxPooling2D(2)(x)
        x = layers.Conv2D(32, 3, activation="relu", padding="same")(x)
        x = layers.MaxPooling2D(2)(x)
        x = layers.Conv2D(64, 3, activation="relu", padding="same")(x)
        x = layers.MaxPooling2D(2)(x)
        # Small maps keep where the strokes are (flatten); large ones are pooled to a vector.
        small = x.shape[1] * x.shape[2] <= 16
        x = (layers.Flatten if small else layers.GlobalAveragePooling2D)(name="embedding")(x)
        x = layers.Dense(64, activation="relu", name="features")(x)
    else:
        raise EdgewiseError(f"unknown deep model {kind!r}; use one of {', '.join(DEEP_MODELS)}")
    outputs = layers.Dense(n_classes, activation="softmax", name="head")(x)
    return keras.Model(inputs, outputs, name=kind)


def from_base(base_path: str, X_train: np.ndarray, n_classes: int, freeze: bool) -> Any:
    """A new classifier head on a saved network's ``features`` layer (transfer learning)."""
    import keras

    base = load_keras_model(base_path)
    if tuple(base.input_shape[1:]) != tuple(X_train.shape[1:]):
        raise EdgewiseError(
            f"--base {base_path} takes inputs of shape {tuple(base.input_shape[1:])}, "
            f"the data has {tuple(X_train.shape[1:])}"
        )
    names = [layer.name for layer in base.layers]
    # Keep the generic part: the pooled convolution features of a CNN ("embedding"), the
    # last hidden layer of an MLP ("features"), or all but the last layer of a foreign one.
    cut = next((n for n in ("embedding", "features") if n in names), names[-2])
    if freeze:
        for layer in base.layers:
            layer.trainable = False
    x = base.get_layer(cut).output
    if cut == "embedding":
        x = keras.layers.Dense(base.get_layer("features").units, "relu", name="features")(x)
    head = keras.layers.Dense(n_classes, activation="softmax", name="head")(x)
    return keras.Model(base.inputs, head, name=f"{base.name}_transfer")


def _split(
    data: TensorData, y: np.ndarray, test_size: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    if data.test_index is not None:
        test = np.zeros(len(y), bool)
        test[data.test_index] = True
        return np.flatnonzero(~test), np.flatnonzero(test)
    from sklearn.model_selection import train_test_split

    _, counts = np.unique(y, return_counts=True)
    idx = np.arange(len(y))
    try:
        train_idx, test_idx = train_test_split(
            idx, test_size=test_size, random_state=seed, stratify=y if counts.min() >= 2 else None
        )
    except ValueError as exc:
        raise EdgewiseError(f"cannot split {data.source} for training: {exc}") from None
    return np.sort(train_idx), np.sort(test_idx)


def _limit_per_class(train_idx: np.ndarray, y: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    picked = [
        rng.permutation(train_idx[y[train_idx] == c])[:per_class] for c in np.unique(y[train_idx])
    ]
    return np.sort(np.concatenate(picked))


def train_deep(
    data: TensorData,
    model: str,
    name: str,
    *,
    seed: int = 0,
    test_size: float = 0.2,
    epochs: int = 60,
    batch_size: int = 32,
    patience: int = 8,
    learning_rate: float = 1e-3,
    base: str | None = None,
    freeze_base: bool = False,
    per_class: int | None = None,
    verbose: int = 0,
) -> KerasHostModel:
    """Train a Keras network on ``data``; the held-out split is kept for metrics and parity."""
    if model not in DEEP_MODELS:
        raise EdgewiseError(f"unknown deep model {model!r}; use one of {', '.join(DEEP_MODELS)}")
    if DEEP_MODELS[model] != data.kind:
        raise EdgewiseError(
            f"{model} takes {DEEP_MODELS[model]} data; {data.source} is {data.kind} data"
        )
    if not 0 < test_size < 1 or epochs < 1 or batch_size < 1 or patience < 1:
        raise EdgewiseError("test size must be in (0, 1); epochs, batch size, patience >= 1")
    if per_class is not None and per_class < 1:
        raise EdgewiseError(f"--per-class {per_class}: use 1 or more")
    if base and not Path(base).is_file():
        raise EdgewiseError(f"{base}: no such Keras model file")
    import keras

    labels = data.labels
    y = np.searchsorted(np.asarray(labels), data.y).astype(np.int64)
    train_idx, test_idx = _split(data, y, test_size, seed)
    if per_class:
        train_idx = _limit_per_class(train_idx, y, per_class, seed)
    y_train = y[train_idx]
    features: tuple[HostFeature, ...] = ()
    if data.categorical:  # a mixed table: one-hot with the training categories
        frame = pd.DataFrame(data.X[train_idx], columns=data.channels)
        reference = table_reference(frame, data.categorical, ())
        baseline = table_baseline(frame, data.categorical)
        features = tuple(_host_feature(c, data.X[train_idx, j], data.categorical)
                         for j, c in enumerate(data.channels))  # fmt: skip
        encoder = OneHotRows([f.device_feature() for f in features])
        X_train, X_test = encoder.encode(data.X[train_idx]), encoder.encode(data.X[test_idx])
    else:
        X_train, X_test = data.X[train_idx], data.X[test_idx]
        reference = array_reference(data.kind, X_train, data.channels)  # before imputation
        baseline = array_baseline(data.kind, X_train)
    impute: list[float] | None = None
    if data.kind == "tabular" and (
        data.categorical or np.isnan(X_train).any() or np.isnan(X_test).any()
    ):
        # Missing values are filled on the device (manifest input.impute) with training means.
        impute = np.nan_to_num(np.nanmean(X_train, axis=0)).astype(float).tolist()
        X_train = np.where(np.isnan(X_train), np.asarray(impute, np.float32), X_train)
    keras.utils.set_random_seed(seed)
    if base:
        net = from_base(base, X_train, len(labels), freeze_base)
    else:
        net = build_network(model, data, X_train, len(labels))
    net.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    fit_args: dict[str, Any] = {}
    if len(train_idx) >= 40:
        rng = np.random.default_rng(seed)
        val = rng.random(len(train_idx)) < 0.15  # early-stopping split inside training data
        fit_args["validation_data"] = (X_train[val], y_train[val])
        X_fit, y_fit = X_train[~val], y_train[~val]
    else:
        X_fit, y_fit = X_train, y_train
    monitor = "val_loss" if "validation_data" in fit_args else "loss"
    stop = keras.callbacks.EarlyStopping(monitor, patience=patience, restore_best_weights=True)
    started = time.perf_counter()
    history = net.fit(
        X_fit,
        y_fit,
        epochs=epochs,
        batch_size=batch_size,
        callbacks=[stop],
        verbose=verbose,
        shuffle=True,
        **fit_args,
    )
    fit_s = time.perf_counter() - started
    heldout = _instances(data.X[test_idx]) if data.categorical else None
    if impute is not None:
        X_test = np.where(np.isnan(X_test), np.asarray(impute, np.float32), X_test)
    from edgewise.trainer.train import evaluate

    probs = net.predict(X_test, batch_size=256, verbose=0)
    metrics = evaluate("classification", y[test_idx], probs.argmax(axis=1))
    meta = HostMeta(
        name=name,
        task="classification",
        model=model,
        kind=data.kind,  # type: ignore[arg-type]
        input_shape=tuple(int(d) for d in X_train.shape[1:]),
        channels=tuple(data.channels),
        labels=tuple(labels),
        impute=tuple(impute) if impute is not None else None,
        base=str(base) if base else None,
        freeze_base=freeze_base if base else None,
        reference=reference,
        baseline=baseline,
        features=features,
        metrics=metrics
        | {"fit_seconds": round(fit_s, 3), "epochs_run": len(history.history["loss"])},
        training_data=TrainingData(
            source=data.source,
            sha256=data.sha256,
            rows=len(data.X),
            train_rows=len(train_idx),
            test_rows=len(test_idx),
            seed=seed,
        ),
    )
    cal = np.random.default_rng(seed).permutation(len(X_train))[:CALIBRATION_ROWS]
    log.info("trained %s on %s in %.1fs: %s", model, data.source, fit_s, metrics)
    return KerasHostModel(
        net,
        meta,
        X_test.astype(np.float32),
        y[test_idx],
        X_train[cal].astype(np.float32),
        {k: [float(v) for v in vs] for k, vs in history.history.items()},
        heldout,
    )


MAX_CATEGORIES = 64  # one-hot columns per string feature; rarer values encode as unseen


def _host_feature(name: str, column: np.ndarray, categorical: Sequence[str]) -> HostFeature:
    """A raw feature of a mixed table; a string one with its (most frequent) categories."""
    if name not in categorical:
        return HostFeature(name=name, dtype="float32")
    values = pd.Series([MISSING_CATEGORY if v is None else v for v in column])
    top = values.value_counts(sort=True).index[:MAX_CATEGORIES]
    return HostFeature(name=name, dtype="string", categories=tuple(sorted(str(v) for v in top)))


def _instances(raw: np.ndarray) -> list[list[Any]]:
    """Raw rows as a client sends them: missing numbers as null."""
    return [[json_value(v) for v in row] for row in raw.tolist()]
