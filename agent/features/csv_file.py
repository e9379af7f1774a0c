"""Read the 115 N-BaIoT columns from a CSV by their names (any other columns are ignored)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from agent.features.columns import COLUMNS


class FeatureCSVError(ValueError):
    """The CSV lacks N-BaIoT columns or holds a value that is not a number."""


def read_feature_csv(path: str | Path) -> np.ndarray:
    """(rows, 115) float64 in the N-BaIoT column order."""
    path = Path(path)
    try:
        with open(path, newline="") as fh:
            header = [h.strip().strip('"') for h in fh.readline().strip().split(",")]
            missing = [c for c in COLUMNS if c not in header]
            if missing:
                raise FeatureCSVError(f"{path}: {len(missing)} N-BaIoT columns missing, e.g. {', '.join(missing[:3])}")
            cols = [header.index(c) for c in COLUMNS]
            try:
                return np.loadtxt(fh, delimiter=",", usecols=cols, ndmin=2, dtype=np.float64)
            except UnicodeDecodeError:
                raise
            except ValueError as exc:
                raise FeatureCSVError(f"{path}: {exc}") from None
    except UnicodeDecodeError as exc:  # a capture or other binary file given where a CSV belongs
        raise FeatureCSVError(f"{path}: not a text CSV file (byte {exc.start} is not UTF-8; a capture goes to "
                              "'detect' or 'features')") from None
