"""Anomaly detection, deep family: a small dense autoencoder on tabular rows (or window
features), trained on normal rows; its score is the mean squared reconstruction error of
the standardized input, computed inside the network, so the edge runtime outputs the
score itself and the agent only compares it with the manifest's threshold.

Only built-in Keras layers (the error is Subtract, Multiply and a fixed averaging Dense),
so ``model.keras`` loads in safe mode without this module.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from edgewise.converters.host_meta import AnomalySpec, HostMeta
from edgewise.converters.keras_host import KerasHostModel
from edgewise.edge.errors import EdgewiseError
from edgewise.edge.runtime.manifest import Reference, TrainingData, WindowFeatures
from edgewise.trainer.deep import CALIBRATION_ROWS, _split, _standardize
from edgewise.trainer.reference import array_baseline, array_reference
from edgewise.trainer.tensors import TensorData
from edgewise.trainer.unsupervised import flag_metrics

log = logging.getLogger(__name__)


def build_autoencoder(X_fit: np.ndarray) -> tuple[Any, Any]:
    """(network trained to reconstruct the standardized input, network output = score)."""
    import keras
    from keras import layers

    n = X_fit.shape[1]
    hidden, code = max(4, n // 2), max(2, n // 4)
    inputs = keras.Input((n,), name="input")
    z = _standardize(keras, X_fit, (0,))(inputs)
    h = layers.Dense(hidden, activation="relu", name="encode")(z)
    h = layers.Dense(code, activation="relu", name="embedding")(h)
    h = layers.Dense(hidden, activation="relu", name="decode")(h)
    recon = layers.Dense(n, name="reconstruction")(h)
    diff = layers.Subtract(name="residual")([z, recon])
    squared = layers.Multiply(name="squared")([diff, diff])
    mean = layers.Dense(
        1, use_bias=False, trainable=False, name="score",
        kernel_initializer=keras.initializers.Constant(1.0 / n),
    )(squared)  # fmt: skip
    return keras.Model(inputs, recon, name="autoencoder_fit"), keras.Model(
        inputs, mean, name="autoencoder"
    )


def train_autoencoder(
    data: TensorData,
    name: str,
    *,
    seed: int = 0,
    test_size: float = 0.2,
    epochs: int = 60,
    batch_size: int = 32,
    patience: int = 8,
    normal: str | None = None,
    contamination: float = 0.01,
    verbose: int = 0,
    window_features: WindowFeatures | None = None,
    reference: Reference | None = None,
) -> KerasHostModel:
    """Fit on the training rows labelled ``normal`` (all when None); threshold from them."""
    if data.kind != "tabular":
        raise EdgewiseError(
            f"autoencoder takes rows (tables, or sensor windows as window features); "
            f"{data.source} is {data.kind} data"
        )
    if data.categorical:
        raise EdgewiseError(
            f"autoencoder takes numeric columns; {data.source} has categorical "
            f"{list(data.categorical[:5])}: use isolation-forest (it one-hot encodes them)"
        )
    if not 0 < contamination < 0.5:
        raise EdgewiseError(f"contamination {contamination!r} must be between 0 and 0.5")
    labels = np.asarray(data.y).astype(str)
    if normal is not None and normal not in set(labels):
        raise EdgewiseError(f"--normal {normal!r} is not a label of {data.source}")
    import keras

    train_idx, test_idx = _split(data, labels, test_size, seed)
    fit_idx = train_idx[labels[train_idx] == normal] if normal is not None else train_idx
    X = np.asarray(data.X, dtype=np.float32)
    if reference is None and window_features is None:
        reference = array_reference("tabular", X[train_idx], data.channels)
    baseline = array_baseline("tabular", X[train_idx])
    impute = np.nan_to_num(np.nanmean(X[fit_idx], axis=0)).astype(np.float32)
    X = np.where(np.isnan(X), impute, X)
    X_fit = X[fit_idx]
    keras.utils.set_random_seed(seed)
    fit_net, score_net = build_autoencoder(X_fit)
    std = np.where(X_fit.std(0) > 1e-6, X_fit.std(0), 1.0)
    target = (X_fit - X_fit.mean(0)) / std
    fit_net.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    stop = keras.callbacks.EarlyStopping(
        "val_loss", patience=patience, restore_best_weights=True
    )  # fmt: skip
    started = time.perf_counter()
    history = fit_net.fit(
        X_fit, target, epochs=epochs, batch_size=batch_size, validation_split=0.15,
        callbacks=[stop], verbose=verbose, shuffle=True,
    )  # fmt: skip
    fit_s = time.perf_counter() - started
    fit_scores = score_net.predict(X_fit, batch_size=256, verbose=0).reshape(-1)
    test_scores = score_net.predict(X[test_idx], batch_size=256, verbose=0).reshape(-1)
    metrics, spec = flag_metrics(fit_scores, test_scores, labels[test_idx], normal, contamination)
    meta = HostMeta(
        name=name,
        task="anomaly",
        model="autoencoder",
        kind="tabular",
        input_shape=(int(X.shape[1]),),
        channels=tuple(data.channels),
        impute=tuple(impute.astype(float).tolist()) if np.isnan(data.X).any() else None,
        anomaly=AnomalySpec.model_validate(spec),
        metrics=metrics
        | {"fit_seconds": round(fit_s, 3), "epochs_run": len(history.history["loss"])},
        training_data=TrainingData(
            source=data.source,
            sha256=data.sha256,
            rows=len(X),
            train_rows=len(fit_idx),
            test_rows=len(test_idx),
            seed=seed,
        ),
        window_features=window_features,
        reference=reference,
        baseline=baseline,
    )
    cal = np.random.default_rng(seed).permutation(len(X_fit))[:CALIBRATION_ROWS]
    log.info("trained autoencoder on %s in %.1fs: %s", data.source, fit_s, metrics)
    return KerasHostModel(
        score_net, meta, X[test_idx], labels[test_idx], X_fit[cal],
        {k: [float(v) for v in vs] for k, vs in history.history.items()},
    )  # fmt: skip
