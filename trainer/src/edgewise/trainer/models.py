"""The model names ``edgewise train --model`` accepts, and the pipelines they build.

Every pipeline takes the raw features: imputation, encoding and scaling live inside it,
so they are converted into the ONNX graph and the device gets raw sensor/record fields.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from edgewise.edge.errors import EdgewiseError
from edgewise.trainer.registry import CLASSICAL

Factory = Callable[[int], BaseEstimator]


def _clf() -> dict[str, Factory]:
    from sklearn import ensemble, linear_model, naive_bayes, neighbors, svm, tree
    from sklearn.calibration import CalibratedClassifierCV

    return {
        "logistic-regression": lambda s: linear_model.LogisticRegression(max_iter=2000),
        "linear": lambda s: linear_model.LogisticRegression(max_iter=2000),
        "random-forest": lambda s: ensemble.RandomForestClassifier(
            n_estimators=100, random_state=s
        ),
        "gradient-boosting": lambda s: ensemble.GradientBoostingClassifier(random_state=s),
        "hist-gradient-boosting": lambda s: ensemble.HistGradientBoostingClassifier(random_state=s),
        # SVC(probability=True) is deprecated (scikit-learn 1.9, removed in 1.11): Platt
        # scaling fitted on cross-validated decisions, one SVC on all rows (ensemble=False).
        # calibration_folds() fits the folds to the smallest class.
        "svm": lambda s: CalibratedClassifierCV(
            svm.SVC(random_state=s), method="sigmoid", ensemble=False
        ),
        "knn": lambda s: neighbors.KNeighborsClassifier(n_neighbors=5),
        "naive-bayes": lambda s: naive_bayes.GaussianNB(),
        "decision-tree": lambda s: tree.DecisionTreeClassifier(random_state=s),
    }


def _reg() -> dict[str, Factory]:
    from sklearn import ensemble, linear_model, neighbors, svm, tree

    return {
        "linear": lambda s: linear_model.LinearRegression(),
        "random-forest": lambda s: ensemble.RandomForestRegressor(n_estimators=100, random_state=s),
        "gradient-boosting": lambda s: ensemble.GradientBoostingRegressor(random_state=s),
        "hist-gradient-boosting": lambda s: ensemble.HistGradientBoostingRegressor(random_state=s),
        "svm": lambda s: svm.SVR(),
        "knn": lambda s: neighbors.KNeighborsRegressor(n_neighbors=5),
        "decision-tree": lambda s: tree.DecisionTreeRegressor(random_state=s),
    }


def _anomaly() -> dict[str, Factory]:
    from sklearn import ensemble

    return {
        "isolation-forest": lambda s: ensemble.IsolationForest(n_estimators=100, random_state=s)
    }


def _clustering() -> dict[str, Factory]:
    from sklearn import cluster

    return {"kmeans": lambda s: cluster.KMeans(n_clusters=3, n_init=10, random_state=s)}


# Models that take TF-IDF (sparse) input and convert with it.
TEXT_MODELS = ("logistic-regression", "linear")
# Unsupervised models set their own task, whatever the data's target is.
MODEL_TASK = {"isolation-forest": "anomaly", "kmeans": "clustering"}
FACTORIES = {
    "classification": _clf,
    "regression": _reg,
    "anomaly": _anomaly,
    "clustering": _clustering,
}

MODELS = CLASSICAL
# Trees split on raw thresholds: scaling them gains nothing and its float32/float64
# rounding could move a value across a threshold between scikit-learn and ONNX.
_UNSCALED = {
    "random-forest",
    "gradient-boosting",
    "hist-gradient-boosting",
    "decision-tree",
    "isolation-forest",
}


def check_model_name(name: str, task: str) -> None:
    """Raise a readable error unless ``name`` is a model for ``task``."""
    if name not in MODELS[task]:
        raise EdgewiseError(
            f"unknown {task} model {name!r}; choose from: {', '.join(MODELS[task])}"
        )


def calibration_folds(pipeline: Pipeline, y: Any) -> None:
    """Stratified folds for a calibrated classifier: at most 5, at most the smallest class."""
    from sklearn.calibration import CalibratedClassifierCV

    est = pipeline.steps[-1][1]
    if not isinstance(est, CalibratedClassifierCV):
        return
    counts = np.unique(np.asarray(y).astype(str), return_counts=True)[1]
    if counts.min() < 2:
        raise EdgewiseError(
            "svm calibrates its probabilities by cross-validation and needs at least 2 "
            "training rows of every class"
        )
    est.set_params(cv=int(min(5, counts.min())))


def build_pipeline(
    name: str,
    task: str,
    numeric: list[str],
    categorical: list[str],
    seed: int,
    params: dict[str, Any] | None = None,
    text: list[str] | None = None,
) -> Pipeline:
    """Preprocessing + estimator for raw features (numeric and categorical column names;
    or one free-text column, TF-IDF of words and word pairs)."""
    check_model_name(name, task)
    estimator = FACTORIES[task]()[name](seed)
    if params:
        estimator.set_params(**params)
    if text:
        if name not in TEXT_MODELS or len(text) != 1:
            raise EdgewiseError(
                f"text classification takes one text column and one of {list(TEXT_MODELS)}"
            )
        from sklearn.feature_extraction.text import TfidfVectorizer

        from edgewise.converters.sklearn_onnx import TEXT_TOKEN_PATTERN

        vectorizer = TfidfVectorizer(
            lowercase=False,
            token_pattern=TEXT_TOKEN_PATTERN,
            ngram_range=(1, 2),
            max_features=50_000,
        )
        return Pipeline(
            [
                ("features", ColumnTransformer([("tfidf", vectorizer, text[0])])),
                ("model", estimator),
            ]
        )
    num_steps: list[tuple[str, Any]] = [
        ("impute", SimpleImputer(strategy="median", keep_empty_features=True))
    ]
    if name not in _UNSCALED:
        num_steps.append(("scale", StandardScaler()))
    if not categorical:
        return Pipeline([*num_steps, ("model", estimator)])
    transformers: list[tuple[str, Any, list[str]]] = [
        ("cat", OneHotEncoder(handle_unknown="ignore", sparse_output=False), categorical)
    ]
    if numeric:
        transformers.insert(0, ("num", Pipeline(num_steps), numeric))
    return Pipeline([("features", ColumnTransformer(transformers)), ("model", estimator)])


def describe_preprocessing(pipeline: Pipeline) -> list[str]:
    """Names of the preprocessing steps inside the graph, for the manifest."""
    steps: list[str] = []
    for _, step in pipeline.steps[:-1]:
        if isinstance(step, ColumnTransformer):
            for tname, trans, cols in step.transformers:
                inner = trans.steps if isinstance(trans, Pipeline) else [(tname, trans)]
                n = 1 if isinstance(cols, str) else len(cols)
                steps += [f"{type(s).__name__}({n} columns)" for _, s in inner]
        else:
            steps.append(type(step).__name__)
    return steps
