"""Metrics as the seed paper reports them (DESIGN 6), for any number of classes."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from agent.capture.packets import LABELS

BENIGN = 0


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int = len(LABELS)) -> np.ndarray:
    """Rows: true class, columns: predicted class."""
    m = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(m, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return m


@dataclass
class Scores:
    accuracy: float
    precision: float  # macro average over the classes present
    recall: float  # macro average over the classes present
    false_alarm: float  # benign packets predicted as any attack / benign packets
    g_mean: float  # geometric mean of the per-class recalls
    detection: float  # attack packets predicted as any attack / attack packets

    def as_dict(self) -> dict:
        return asdict(self)


def score(y_true: np.ndarray, y_pred: np.ndarray) -> Scores:
    m = confusion(y_true, y_pred)
    present = m.sum(axis=1) > 0
    recall = np.diag(m)[present] / m.sum(axis=1)[present]
    predicted = m.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(predicted > 0, np.diag(m) / predicted, 0.0)[present]
    benign_total = m[BENIGN].sum()
    attack_rows = m[1:]
    return Scores(
        accuracy=float(np.trace(m) / m.sum()),
        precision=float(precision.mean()),
        recall=float(recall.mean()),
        false_alarm=float(m[BENIGN, 1:].sum() / benign_total) if benign_total else 0.0,
        g_mean=float(np.exp(np.log(np.maximum(recall, 1e-12)).mean())),
        detection=float(attack_rows[:, 1:].sum() / attack_rows.sum()) if attack_rows.sum() else 0.0,
    )
