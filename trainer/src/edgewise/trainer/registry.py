"""The names ``train`` and ``compare`` accept: data sets and models, each listed once.

Light on purpose (no scikit-learn, no TensorFlow): the command line builds its help and
its error messages from these lists before any library loads, and the modules that
implement the names check themselves against them (tests/trainer/test_registry.py).
"""

from __future__ import annotations

from edgewise.edge.errors import EdgewiseError

# Tabular data sets that ship with scikit-learn, and the generated sensor windows.
TABULAR_DATASETS = ("iris", "wine", "breast_cancer", "digits", "diabetes")
WINDOW_DATASETS = ("vibration",)
DATASETS = TABULAR_DATASETS + WINDOW_DATASETS

# Classical (scikit-learn) models per task; isolation-forest and kmeans set their own task.
CLASSICAL: dict[str, tuple[str, ...]] = {
    "classification": (
        "logistic-regression",
        "linear",
        "random-forest",
        "gradient-boosting",
        "hist-gradient-boosting",
        "svm",
        "knn",
        "naive-bayes",
        "decision-tree",
    ),
    "regression": (
        "linear",
        "random-forest",
        "gradient-boosting",
        "hist-gradient-boosting",
        "svm",
        "knn",
        "decision-tree",
    ),
    "anomaly": ("isolation-forest",),
    "clustering": ("kmeans",),
}
# Keras networks and the data kind each takes; the autoencoder detects anomalies.
NETWORKS: dict[str, str] = {"mlp": "tabular", "cnn1d": "window", "cnn2d": "image"}
DETECTOR_NETWORKS = ("autoencoder",)


def all_models() -> list[str]:
    """Every model name ``train`` accepts, classical first."""
    names: list[str] = []
    for models in CLASSICAL.values():
        names += [m for m in models if m not in names]
    return [*names, *NETWORKS, *DETECTOR_NETWORKS]


def check_dataset(name: str) -> str:
    """The name, or an error listing every built-in data set."""
    if name not in DATASETS:
        raise EdgewiseError(f"unknown data set {name!r}; built-in: {', '.join(DATASETS)}")
    return name


def check_model(name: str) -> str:
    """The name, or an error listing every model, classical and networks."""
    if name not in all_models():
        classical = sorted({m for models in CLASSICAL.values() for m in models})
        raise EdgewiseError(
            f"unknown model {name!r}; classical: {', '.join(classical)}; "
            f"networks: {', '.join([*NETWORKS, *DETECTOR_NETWORKS])}"
        )
    return name
