"""Feature preprocessing shared by training (convert/) and the board (DESIGN 6).

The raw N-BaIoT features span twenty orders of magnitude (weights near 1,
variances near 1e10, jitter means that are absolute timestamps), so each
value goes through a signed log1p and is then standardised with the training
set's mean and spread.  The columns are also rearranged from the N-BaIoT
order (group-major) into a (5 decay rates x 23 statistics) grid, so the CNN
can convolve across the decay rates.  All parameters travel in the model
bundle; nothing here is fitted on the board.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .feature_columns import COLUMNS, GROUPS, LAMBDAS, N_FEATURES


def grid_order() -> list[int]:
    """Column indices that turn the N-BaIoT order into rows per lambda (23 statistics each)."""
    order = []
    for lam in LAMBDAS:
        for group, stats in GROUPS:
            for stat in stats:
                order.append(COLUMNS.index(f"{group}_L{lam:g}_{stat}"))
    return order


GRID_SHAPE = (len(LAMBDAS), N_FEATURES // len(LAMBDAS))


def signed_log1p(x: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.log1p(np.abs(x))


@dataclass
class Preprocessor:
    """``transform`` maps (n, 115) raw features to (n, 5, 23) float32 model inputs."""

    mean: np.ndarray  # (115,) in grid order
    scale: np.ndarray  # (115,)
    order: np.ndarray  # (115,) int

    @classmethod
    def fit(cls, features: np.ndarray) -> "Preprocessor":
        order = np.asarray(grid_order())
        z = signed_log1p(np.asarray(features, dtype=np.float64)[:, order])
        scale = z.std(axis=0)
        scale[scale < 1e-6] = 1.0  # constant columns stay centred, not blown up
        return cls(mean=z.mean(axis=0), scale=scale, order=order)

    def transform(self, features: np.ndarray) -> np.ndarray:
        z = signed_log1p(np.asarray(features, dtype=np.float64)[:, self.order])
        z = (z - self.mean) / self.scale
        z = np.nan_to_num(z, nan=0.0, posinf=0.0, neginf=0.0)  # a broken value must not poison the batch
        return z.astype(np.float32).reshape(-1, *GRID_SHAPE)

    def to_json(self) -> dict:
        return {
            "kind": "signed_log1p_standardise",
            "order": self.order.tolist(),
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
            "grid_shape": list(GRID_SHAPE),
        }

    @classmethod
    def from_json(cls, data: dict) -> "Preprocessor":
        if data.get("kind") != "signed_log1p_standardise":
            raise ValueError(f"unknown preprocessing kind {data.get('kind')!r}")
        p = cls(
            mean=np.asarray(data["mean"], dtype=np.float64),
            scale=np.asarray(data["scale"], dtype=np.float64),
            order=np.asarray(data["order"], dtype=np.int64),
        )
        if not (p.mean.shape == p.scale.shape == p.order.shape == (N_FEATURES,)):
            raise ValueError("preprocessing parameters must have 115 entries each")
        if sorted(p.order.tolist()) != list(range(N_FEATURES)):
            raise ValueError("preprocessing order must be a permutation of the 115 columns")
        return p
