"""Feature preprocessing shared by training (convert/) and the board (DESIGN 6).

The model's input is int8, so every column gets only 256 levels.  A plain
log-and-standardise transform spends them badly: Mirai's UDP (554-byte) and
ACK (566-byte) floods then fall on the same level.  Instead each column goes
through its training distribution's quantiles (a monotone, piecewise linear
map onto [-1, 1]), which spends the levels where traffic actually is.

Values first lose what only rounding decides (``denoise``): x86 and ARM
compute the features with different rounding, and the quantile map must not
magnify that.  Two columns carry an artefact of the definition rather than behaviour: a new
jitter stream's first value is the absolute timestamp (DESIGN 4), so the
jitter mean and variance would tell the capture's date.  They are capped
(1e6 s, 1e12 s^2) first: "older than 11 days" all looks alike.

The columns are also rearranged from the N-BaIoT order (group-major) into a
(5 decay rates x 23 statistics) grid so the CNN can convolve across rates.
All parameters travel in the model bundle; nothing is fitted on the board.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from agent import native
from agent.features.columns import COLUMNS, GROUPS, LAMBDAS, N_FEATURES

KNOTS = 257
CAPS = {"HH_jit": {"mean": 1e6, "variance": 1e12}}
DROPPED_BITS = 32  # of float64's 52 mantissa bits; 20 left ~ 1e-6 relative, DESIGN 4's tolerance: nothing finer is signal


def grid_order() -> list[int]:
    """Column indices that turn the N-BaIoT order into rows per lambda (23 statistics each)."""
    order = []
    for lam in LAMBDAS:
        for group, stats in GROUPS:
            for stat in stats:
                order.append(COLUMNS.index(f"{group}_L{lam:g}_{stat}"))
    return order


GRID_SHAPE = (len(LAMBDAS), N_FEATURES // len(LAMBDAS))


def column_caps() -> np.ndarray:
    """Upper cap per column in N-BaIoT order (inf: none)."""
    caps = np.full(N_FEATURES, np.inf)
    for i, name in enumerate(COLUMNS):
        group, rest = name.split("_L", 1)
        stat = rest.split("_", 1)[1]
        caps[i] = CAPS.get(group, {}).get(stat, np.inf)
    return caps


def _noise_floors() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per column (N-BaIoT order): the column holding its group's mean (or -1), and how the floor
    below which its values are rounding noise scales with that mean (DESIGN 4's tolerances):
    variance-like columns 1e-6 * (1 + mu^2), std 1e-3 * (1 + |mu|), covariance and pcc likewise."""
    mean_of = np.full(N_FEATURES, -1, dtype=np.int64)  # int64 on 32-bit boards too (the C kernel reads it)
    quad = np.zeros(N_FEATURES)  # floor = quad * (1 + mu^2) + lin * (1 + |mu|)
    lin = np.zeros(N_FEATURES)
    for i, name in enumerate(COLUMNS):
        prefix, stat = name.rsplit("_", 1)
        if stat in ("variance", "radius", "covariance"):
            mean_of[i], quad[i] = COLUMNS.index(f"{prefix}_mean"), 1e-6
        elif stat in ("std", "pcc"):
            mean_of[i], lin[i] = COLUMNS.index(f"{prefix}_mean"), 1e-3
    return mean_of, quad, lin


_MEAN_OF, _QUAD, _LIN = _noise_floors()


def denoise(features: np.ndarray) -> np.ndarray:
    """Drop what only floating-point rounding decides, so that equal traffic gives equal model inputs
    on every machine: values below their noise floor become 0 (a std of 1e-5 next to a mean of 554
    is a rounding residue of a constant stream), and every value is rounded to a 20-bit mantissa
    (about 6 significant digits, DESIGN 4's tolerance) by masking its low bits.
    Without this, the quantile map puts knots inside the noise and x86 and ARM disagree."""
    X = np.array(features, dtype=np.float64)
    has = _MEAN_OF >= 0
    mu = np.abs(X[:, np.where(has, _MEAN_OF, 0)])
    floor = _QUAD * (1 + mu * mu) + _LIN * (1 + mu)
    X[(np.abs(X) < floor) & has] = 0.0
    bits = X.view(np.int64)
    bits += np.int64(1 << (DROPPED_BITS - 1))  # round to nearest, not towards zero
    bits &= np.int64(~((1 << DROPPED_BITS) - 1))
    return X


def _knots(column: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct quantile values of a column and the position in [-1, 1] each maps to."""
    q = np.quantile(column, np.linspace(0, 1, KNOTS))
    y = np.linspace(-1.0, 1.0, KNOTS)
    xs, inverse = np.unique(q, return_inverse=True)
    ys = np.bincount(inverse, weights=y) / np.bincount(inverse)  # a value many rows share: its middle
    return xs, ys


def _model_input_kernel():
    """agent/native/model_input.c's one function, or None (numpy path)."""
    v = native
    return v.function("iotguard_model_input_v2", [v.n, v.n, v.f64, v.i64, v.f64, v.i64, v.f64, v.f64, v.f64,
                                                  v.f64, v.f64, v.i64, v.f32, v.i32, v.i64, v.i8])  # fmt: skip


def repeated_rows(X: np.ndarray, caps: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """``(first, inverse)``: row ``i`` preprocesses (and scores) as row ``first[inverse[i]]`` does, or
    ``(all rows, None)`` when few rows repeat.  Rows are grouped into runs of consecutive rows equal to the one
    before them once each column is capped (``caps``: both the model's preprocessing and the anomaly detector
    clip a column there): a spoofed flood's packets, every one from a new source, have the very same features
    but for the new jitter streams' first value (the packet's absolute time), and handling each run once is what
    makes the model and the anomaly detector affordable there.  A row with a NaN starts a run of its own."""
    n = len(X)
    if n < 64:
        return np.arange(n), None
    # First one column (the first uncapped): most rows differing there already starts too many runs.
    probe = int(np.flatnonzero(~np.isfinite(caps))[0])
    if np.count_nonzero(X[1:, probe] != X[:-1, probe]) >= n // 2:
        return np.arange(n), None
    same = X[1:] == X[:-1]
    for c in np.flatnonzero(np.isfinite(caps)):  # both beyond the cap: alike to the scorer
        same[:, c] |= (X[1:, c] >= caps[c]) & (X[:-1, c] >= caps[c])
    starts = np.ones(n, dtype=bool)
    starts[1:] = ~same.all(axis=1)
    if starts.sum() > n // 2:
        return np.arange(n), None
    return np.flatnonzero(starts), np.cumsum(starts) - 1


@dataclass
class Preprocessor:
    """``transform`` maps (n, 115) raw features to (n, 5, 23) float32 model inputs in [-1, 1]."""

    order: np.ndarray  # (115,) int: grid position -> N-BaIoT column
    caps: np.ndarray  # (115,) upper caps, N-BaIoT order
    knots_x: list[np.ndarray]  # per grid position: increasing raw values
    knots_y: list[np.ndarray]  # per grid position: where they map in [-1, 1]
    _flat: tuple | None = field(default=None, init=False, repr=False, compare=False)  # the knots as one array

    @classmethod
    def fit(cls, features: np.ndarray, max_rows: int = 200_000, seed: int = 0) -> "Preprocessor":
        X = np.asarray(features, dtype=np.float64)
        if len(X) > max_rows:
            X = X[np.sort(np.random.default_rng(seed).choice(len(X), max_rows, replace=False))]
        order = np.asarray(grid_order())
        caps = column_caps()
        X = denoise(np.minimum(X, caps))[:, order]
        pairs = [_knots(X[:, j]) for j in range(N_FEATURES)]
        return cls(order=order, caps=caps, knots_x=[p[0] for p in pairs], knots_y=[p[1] for p in pairs])

    def transform(self, features: np.ndarray) -> np.ndarray:
        X = denoise(np.minimum(np.asarray(features, dtype=np.float64), self.caps))[:, self.order]
        X = np.nan_to_num(X, nan=0.0, posinf=np.finfo(np.float64).max, neginf=-np.finfo(np.float64).max)
        out = np.empty(X.shape, dtype=np.float32)
        for j in range(N_FEATURES):
            xs, ys = self.knots_x[j], self.knots_y[j]
            out[:, j] = np.interp(X[:, j], xs, ys) if len(xs) > 1 else 0.0
        return out.reshape(-1, *GRID_SHAPE)

    def quantize(self, features: np.ndarray, scale: float, zero_point: int, backend: str = "auto") -> np.ndarray:
        """(n, 115) raw features -> (n, 5, 23) int8 model inputs: ``transform``, then the model's input
        quantisation.  The compiled kernel (agent/native/model_input.c) gives the same bytes in one pass;
        ``backend="numpy"`` forces the numpy path it is tested against."""
        kernel = None if backend == "numpy" else _model_input_kernel()
        if kernel is None:
            x = self.transform(features)
            return np.clip(np.round(x / scale) + zero_point, -128, 127).astype(np.int8)
        X = np.ascontiguousarray(features, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != N_FEATURES:
            raise ValueError(f"features must have shape (n, {N_FEATURES}), got {X.shape}")
        if self._flat is None:
            sizes = [len(x) for x in self.knots_x]
            # np.interp's slope of each interval (one unused value after each column's last knot)
            slopes = [np.append((y[1:] - y[:-1]) / (x[1:] - x[:-1]), 0.0) for x, y in zip(self.knots_x, self.knots_y)]
            self._flat = (np.ascontiguousarray(self.order, dtype=np.int64), np.ascontiguousarray(self.caps, np.float64),
                          np.concatenate(self.knots_x), np.concatenate(self.knots_y), np.concatenate(slopes),
                          np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64))  # fmt: skip
        order, caps, kx, ky, slopes, start = self._flat
        out = np.empty((len(X), N_FEATURES), dtype=np.int8)
        guess = np.full(N_FEATURES, -1, dtype=np.int64)
        kernel(len(X), N_FEATURES, X, order, caps, _MEAN_OF, _QUAD, _LIN, kx, ky, slopes, start, scale, zero_point,
               guess, out)
        return out.reshape(-1, *GRID_SHAPE)

    def to_json(self) -> dict:
        return {
            "kind": "capped_quantile",
            "order": self.order.tolist(),
            "caps": [None if np.isinf(c) else float(c) for c in self.caps],
            "knots_x": [x.tolist() for x in self.knots_x],
            "knots_y": [y.tolist() for y in self.knots_y],
            "grid_shape": list(GRID_SHAPE),
        }

    @classmethod
    def from_json(cls, data: dict) -> "Preprocessor":
        if data.get("kind") != "capped_quantile":
            raise ValueError(f"unknown preprocessing kind {data.get('kind')!r}")
        order = np.asarray(data["order"], dtype=np.int64)
        caps = np.array([np.inf if c is None else float(c) for c in data["caps"]])
        kx = [np.asarray(x, dtype=np.float64) for x in data["knots_x"]]
        ky = [np.asarray(y, dtype=np.float64) for y in data["knots_y"]]
        if not (len(order) == len(caps) == len(kx) == len(ky) == N_FEATURES):
            raise ValueError("preprocessing parameters must have 115 entries each")
        if sorted(order.tolist()) != list(range(N_FEATURES)):
            raise ValueError("preprocessing order must be a permutation of the 115 columns")
        for j, (x, y) in enumerate(zip(kx, ky)):
            if len(x) != len(y) or len(x) == 0 or np.any(np.diff(x) <= 0) or not np.all(np.abs(y) <= 1):
                raise ValueError(f"preprocessing knots of grid column {j} are malformed")
        return cls(order=order, caps=caps, knots_x=kx, knots_y=ky)
