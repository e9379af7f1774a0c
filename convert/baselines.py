"""The classical baselines of the seed paper's table, with scikit-learn's fit/predict.

All of them see the same preprocessed inputs as the CNN (the bundle's
quantile map, flattened to 115 values), so the comparison is about the
learner, not the scaling.  KNN and the RBF SVM scale badly with rows; they
train on a stratified subsample of the training split (``max_train``), which
the evaluation table states.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass
class Baseline:
    name: str
    make: Callable[[int], object]  # seed -> an unfitted scikit-learn estimator
    max_train: int | None = None  # rows used for fit (None: all)


def baselines() -> list[Baseline]:
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.neural_network import MLPClassifier
    from sklearn.svm import SVC
    from sklearn.tree import DecisionTreeClassifier

    return [
        Baseline("KNN", lambda s: KNeighborsClassifier(n_neighbors=5), max_train=20_000),
        Baseline("SVM", lambda s: SVC(kernel="rbf", C=10.0, gamma="scale", random_state=s), max_train=20_000),
        Baseline("LR", lambda s: LogisticRegression(max_iter=500, random_state=s), max_train=None),
        Baseline("ANN", lambda s: MLPClassifier(hidden_layer_sizes=(64, 32), max_iter=50, early_stopping=True, random_state=s), max_train=None),
        Baseline("RF", lambda s: RandomForestClassifier(n_estimators=50, max_depth=20, n_jobs=1, random_state=s), max_train=None),
        Baseline("DT", lambda s: DecisionTreeClassifier(max_depth=20, random_state=s), max_train=None),
    ]


def stratified_subsample(y: np.ndarray, size: int | None, seed: int) -> np.ndarray:
    """Row indices: at most ``size`` rows, classes in their original proportions (sorted)."""
    if size is None or size >= len(y):
        return np.arange(len(y))
    rng = np.random.default_rng(seed)
    picks = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        take = max(1, int(round(size * len(idx) / len(y))))
        picks.append(rng.choice(idx, min(take, len(idx)), replace=False))
    return np.sort(np.concatenate(picks))
