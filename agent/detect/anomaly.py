"""Anomaly detector beside the classifier: traffic unlike what the board learned as normal.

The CNN knows benign traffic and five Mirai classes; anything else (nmap or masscan
scans, other flood tools, future variants) it calls by the nearest of those names.
This detector instead learns what normal traffic looks like and scores how far each
packet's 115 features are from it, after Kitsune's KitNET (Mirsky et al., NDSS 2018):

* a *feature mapper* groups the 115 columns by correlation (average linkage on
  1 - |correlation|) into groups of at most ``max_group`` columns;
* one small autoencoder per group (sigmoid, hidden = ceil(0.75 x inputs), tied
  weights) reconstructs its columns; the RMSE of each reconstruction goes to
* an output autoencoder over those RMSEs, whose own RMSE is the anomaly score.

``score`` divides that RMSE by the threshold fixed after learning, so a score above 1
means anomalous.  It is vectorised over the batch (a loop over the ~15 autoencoders,
none per packet).  ``learn`` trains on batches with minibatch SGD as KitNET does, so a
board can learn its own network during a learning period and then ``fix_threshold``.

Runs on the board: numpy and the standard library only.  The model file is JSON
(``save``/``load``, ``to_dict``/``from_dict``) with a sha256 over its content; a
missing, corrupt or mismatched file raises ``AnomalyModelError`` with one line.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from agent.detect.preprocess import column_caps, repeated_rows
from agent.features.columns import COLUMNS, FEATURE_SCHEMA, N_FEATURES

log = logging.getLogger(__name__)

SCHEMA = "iotguard.anomaly/1"
DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "model" / "anomaly.json"  # agent/model/

# Features go through asinh before min-max.  Raw, the weight and variance columns span
# 10-12 decades (a variance of 1e6 next to 0.3; HH_jit variance up to 1e12), so min-max
# puts nearly every packet at 0 in those columns and the autoencoders see nothing there.
# asinh is a signed log (asinh(x) ~ sign(x) log(2|x|) for large |x|, ~x near 0, so pcc
# and covariance keep their sign) and costs one float32 pass, where log1p costs four
# times as much in numpy.  Measured with the default recipe on synthesised traffic only
# (benchmarks/anomaly_eval.py --ablation): with asinh 18.8% of Mirai attack packets score
# > 1 (mean over the 11 scenarios) at 0.01% of held-out benign packets; without, 9.1% at 0.00%,
# and 8 of the 11 scenarios are not seen at all.
TRANSFORMS = ("asinh", "none")
# Normalised inputs live in [0, 1] on the learning traffic; values outside are clipped to
# [-CLIP, 1 + CLIP]: a column 10^6 times its learned range counts as "far out", bounded,
# instead of swamping every other column of its group.
CLIP = 0.5
# A column (almost) constant while learning gets at least this span (in transformed
# units), so rounding noise around the constant is not an anomaly.
MIN_SPAN = 0.5
# The same for the ensemble's RMSEs, which are small numbers (0.001-0.5).
OUT_MIN_SPAN = 1e-6
HIDDEN_RATIO = 0.75


class AnomalyModelError(ValueError):
    """The anomaly model file or object is unusable; the message (one line) says why."""


def _transform(X: np.ndarray, kind: str) -> np.ndarray:
    return np.arcsinh(X) if kind == "asinh" else np.array(X, dtype=np.float64)


# --- incremental statistics -----------------------------------------------------------------


@dataclass
class Ranges:
    """Running per-column minimum and maximum (min-max normalisation of KitNET)."""

    lo: np.ndarray
    hi: np.ndarray

    @classmethod
    def empty(cls, width: int) -> "Ranges":
        return cls(np.full(width, np.inf), np.full(width, -np.inf))

    def update(self, X: np.ndarray) -> None:
        if len(X):
            self.lo = np.minimum(self.lo, X.min(axis=0))
            self.hi = np.maximum(self.hi, X.max(axis=0))

    def get(self, min_span: float = MIN_SPAN) -> tuple[np.ndarray, np.ndarray]:
        """(low, span) with spans of at least ``min_span``, centred on the learned interval."""
        span = self.hi - self.lo
        lo = np.where(span < min_span, (self.lo + self.hi - min_span) / 2, self.lo)
        return lo, np.maximum(span, min_span)


@dataclass
class Correlation:
    """Running sums for the correlation matrix of the columns (shifted by the first row for accuracy)."""

    width: int
    n: int = 0
    shift: np.ndarray | None = None
    s1: np.ndarray | None = None
    s2: np.ndarray | None = None

    def update(self, X: np.ndarray) -> None:
        if not len(X):
            return
        if self.shift is None:
            self.shift = X[0].copy()
            self.s1 = np.zeros(self.width)
            self.s2 = np.zeros((self.width, self.width))
        D = X - self.shift
        self.n += len(X)
        self.s1 += D.sum(axis=0)
        self.s2 += D.T @ D

    def get(self) -> np.ndarray:
        """Correlation matrix; a constant column has correlation 0 with every other."""
        mean = self.s1 / self.n
        cov = self.s2 / self.n - np.outer(mean, mean)
        std = np.sqrt(np.maximum(np.diag(cov), 0.0))
        std[std < 1e-9] = np.inf
        return np.clip(cov / np.outer(std, std), -1.0, 1.0)


def feature_groups(corr: np.ndarray, max_group: int) -> list[list[int]]:
    """Average-linkage clustering on distance 1 - |corr|, never merging beyond ``max_group`` columns.

    KitNET splits a single-linkage tree top-down; single linkage chains, which leaves
    many one-column autoencoders.  Merging bottom-up under the size cap keeps strongly
    correlated columns together and gives fewer, fuller groups.  Deterministic: ties go
    to the lowest indices.
    """
    n = len(corr)
    dist = 1.0 - np.abs(corr)
    clusters: list[list[int]] = [[i] for i in range(n)]
    D = dist.copy()
    np.fill_diagonal(D, np.inf)
    alive = np.ones(n, bool)
    while True:
        sizes = np.array([len(c) for c in clusters])
        fits = (sizes[:, None] + sizes[None, :] <= max_group) & alive[:, None] & alive[None, :]
        cand = np.where(fits, D, np.inf)
        k = int(np.argmin(cand))
        i, j = divmod(k, n)
        if not np.isfinite(cand[i, j]):
            break
        ni, nj = sizes[i], sizes[j]
        clusters[i] = clusters[i] + clusters[j]
        clusters[j] = []
        alive[j] = False
        merged = (ni * D[i] + nj * D[j]) / (ni + nj)  # average linkage (Lance-Williams)
        D[i, :] = merged
        D[:, i] = merged
        D[i, i] = np.inf
        D[j, :] = np.inf
        D[:, j] = np.inf
    groups = [sorted(c) for c in clusters if c]
    return sorted(groups, key=lambda g: g[0])


# --- autoencoders ---------------------------------------------------------------------------


def sigmoid(a: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(a, -60.0, 60.0)))


@dataclass
class Autoencoder:
    """KitNET's dA: sigmoid hidden and output layers, tied weights (decoder = W transposed)."""

    W: np.ndarray  # (inputs, hidden)
    b: np.ndarray  # (hidden,) hidden bias
    c: np.ndarray  # (inputs,) output bias

    @classmethod
    def new(cls, inputs: int, rng: np.random.Generator) -> "Autoencoder":
        hidden = max(1, math.ceil(inputs * HIDDEN_RATIO))
        a = 1.0 / inputs
        return cls(rng.uniform(-a, a, (inputs, hidden)), np.zeros(hidden), np.zeros(inputs))

    def reconstruct(self, Z: np.ndarray) -> np.ndarray:
        return sigmoid(sigmoid(Z @ self.W + self.b) @ self.W.T + self.c)

    def rmse(self, Z: np.ndarray) -> np.ndarray:
        return np.sqrt(np.mean((Z - self.reconstruct(Z)) ** 2, axis=1))

    def sgd(self, Z: np.ndarray, lr: float) -> np.ndarray:
        """One minibatch step (KitNET's gradient, averaged over the rows); returns each row's RMSE before it."""
        y = sigmoid(Z @ self.W + self.b)
        e = Z - sigmoid(y @ self.W.T + self.c)
        dh = (e @ self.W) * y * (1.0 - y)
        n = len(Z)
        self.W += lr * (Z.T @ dh + e.T @ y) / n
        self.b += lr * dh.mean(axis=0)
        self.c += lr * e.mean(axis=0)
        return np.sqrt(np.mean(e * e, axis=1))

    def to_dict(self) -> dict:
        return {"W": self.W.tolist(), "b": self.b.tolist(), "c": self.c.tolist()}

    @classmethod
    def from_dict(cls, d: dict, inputs: int) -> "Autoencoder":
        W = np.asarray(d["W"], dtype=np.float64)
        b = np.asarray(d["b"], dtype=np.float64)
        c = np.asarray(d["c"], dtype=np.float64)
        if W.ndim != 2 or W.shape[0] != inputs or b.shape != (W.shape[1],) or c.shape != (inputs,):
            raise ValueError(f"autoencoder of {inputs} inputs has weights of shape {W.shape}, {b.shape}, {c.shape}")
        if not (np.isfinite(W).all() and np.isfinite(b).all() and np.isfinite(c).all()):
            raise ValueError("autoencoder weights are not finite")
        return cls(W, b, c)


def _tanh_form(ae: Autoencoder) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The sigmoid autoencoder rewritten for inputs u = 2z - 1, as (W1, b1, W2, b2) applied to columns.

    sigmoid(a) = (1 + tanh(a / 2)) / 2, so with z = (u + 1) / 2 the autoencoder becomes
    t = tanh(W1 u + b1), q = tanh(W2 t + b2), and z - reconstruction = (u - q) / 2: the
    same numbers as ``Autoencoder.rmse`` with fewer passes over the data (no 1 / (1 + exp)).
    """
    W1 = ae.W.T / 4
    b1 = ae.W.sum(axis=0) / 4 + ae.b / 2
    W2 = ae.W / 4
    b2 = ae.W.sum(axis=1) / 4 + ae.c / 2
    return W1, b1, W2, b2


class _Scorer:
    """Float32 inference of a trained detector, one block of packets at a time (not thread-safe: one work area).

    Works on the transposed block (features x packets): every elementwise step then
    runs along thousands of packets in one contiguous sweep, where rows of 8-10 values
    (one group's columns of one packet) cost numpy a loop setup each.  The weights of
    all groups sit in row blocks of a few arrays; only the two matrix products loop
    over the groups.
    """

    BLOCK = 2048  # packets per block: the working arrays (about 1 MB) stay in the CPU cache

    def __init__(self, det: "AnomalyDetector") -> None:
        f = np.float32
        self.asinh = det.transform == "asinh"
        self.order = np.concatenate([np.asarray(g) for g in det.groups])
        lo, span = det.ranges.get()
        scale, offset = 2.0 / span, -2.0 * lo / span - 1.0  # onto u = 2z - 1, z = (x - lo) / span
        self.scale = scale[self.order].astype(f)[:, None]
        self.offset = offset[self.order].astype(f)[:, None]
        self.u_lo = f(-1.0 - 2 * CLIP)
        # the upper clip, lowered to the column's cap where it has one (min(u(x), u(cap)) = u(min(x, cap)))
        with np.errstate(invalid="ignore"):
            u_cap = scale * _transform(det.caps, det.transform) + offset
        self.u_hi = np.fmin(1.0 + 2 * CLIP, u_cap)[self.order].astype(f)[:, None]
        self.out_hi = f(1.0 + 2 * CLIP)
        forms = [_tanh_form(ae) for ae in det.ensemble]
        sizes = [len(g) for g in det.groups]
        hidden = [w1.shape[0] for w1, _, _, _ in forms]
        self.cols = _slices(sizes)
        self.rows = _slices(hidden)
        self.W1 = [w1.astype(f) for w1, _, _, _ in forms]
        self.W2 = [w2.astype(f) for _, _, w2, _ in forms]
        self.b1 = np.concatenate([b1 for _, b1, _, _ in forms]).astype(f)[:, None]
        self.b2 = np.concatenate([b2 for _, _, _, b2 in forms]).astype(f)[:, None]
        self.inv_4k = (1.0 / (4.0 * np.array(sizes))).astype(f)[:, None]
        olo, ospan = det.out_ranges.get(OUT_MIN_SPAN)
        self.out_scale = (2.0 / ospan).astype(f)[:, None]
        self.out_offset = (-2.0 * olo / ospan - 1.0).astype(f)[:, None]
        oW1, ob1, oW2, ob2 = _tanh_form(det.output)
        self.oW1, self.ob1 = oW1.astype(f), ob1.astype(f)[:, None]
        self.oW2, self.ob2 = oW2.astype(f), ob2.astype(f)[:, None]
        self.groups = len(sizes)
        self.hidden = sum(hidden)
        self._work = None

    def raw(self, X: np.ndarray) -> np.ndarray:
        out = np.empty(len(X))
        for lo in range(0, len(X), self.BLOCK):
            out[lo : lo + self.BLOCK] = self._block(X[lo : lo + self.BLOCK])
        return out

    def _block(self, X: np.ndarray) -> np.ndarray:
        n = len(X)
        if self._work is None:  # reused: fresh megabyte arrays cost a page fault per 4 KB
            f, B = np.float32, self.BLOCK
            self._work = (np.empty((B, N_FEATURES), f), np.empty((N_FEATURES, B), f), np.empty((self.hidden, B), f),
                          np.empty((N_FEATURES, B), f), np.empty((self.groups, B), f))  # fmt: skip
        P, U, T, Q, R = self._work
        P, U, T, Q, R = P[:n], U[:, :n], T[:, :n], Q[:, :n], R[:, :n]
        if self.asinh:
            np.arcsinh(X, out=P, dtype=np.float32)  # float64 -> float32 on the fly
        else:
            np.copyto(P, X, casting="same_kind")
        np.take(P.T, self.order, axis=0, out=U, mode="clip")  # features x packets in group order; clip: unbuffered
        U *= self.scale
        U += self.offset
        np.minimum(U, self.u_hi, out=U)  # per row: the clip, or the column's cap where lower; np.clip is slower
        np.maximum(U, self.u_lo, out=U)
        for W1, cols, rows in zip(self.W1, self.cols, self.rows):
            np.matmul(W1, U[cols], out=T[rows])
        T += self.b1
        np.tanh(T, out=T)
        for W2, cols, rows in zip(self.W2, self.cols, self.rows):
            np.matmul(W2, T[rows], out=Q[cols])
        Q += self.b2
        np.tanh(Q, out=Q)
        Q -= U
        for j, cols in enumerate(self.cols):  # each group's sum of squared errors
            np.einsum("ij,ij->j", Q[cols], Q[cols], out=R[j])
        R *= self.inv_4k  # (u - q) / 2 is the error in [0, 1] units: mean square over the group's k columns
        np.sqrt(R, out=R)  # each autoencoder's RMSE
        R *= self.out_scale
        R += self.out_offset
        np.minimum(R, self.out_hi, out=R)
        np.maximum(R, self.u_lo, out=R)
        H = np.tanh(self.oW1 @ R + self.ob1)
        D = np.tanh(self.oW2 @ H + self.ob2)
        D -= R
        return np.sqrt(np.einsum("ij,ij->j", D, D, dtype=np.float64) / (4 * self.groups))


def _slices(sizes: list[int]) -> list[slice]:
    bounds = np.cumsum([0] + list(sizes))
    return [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]


# --- the detector ---------------------------------------------------------------------------


@dataclass
class AnomalyDetector:
    """KitNET-style ensemble of autoencoders over the 115 features; see the module docstring.

    Fresh: ``AnomalyDetector()``; then ``learn(X)`` on normal traffic (the first
    ``map_rows`` rows also fix the feature map), ``fix_threshold()``, ``score(X)``.
    """

    max_group: int = 10
    lr: float = 0.5
    minibatch: int = 32
    map_rows: int = 5000
    output_warmup: int = 20000
    seed: int = 0
    transform: str = "asinh"
    keep_rows: int = 8192  # learning rows kept (float32) for fix_threshold() without arguments
    # learned state
    ranges: Ranges = field(default_factory=lambda: Ranges.empty(N_FEATURES))
    correlation: Correlation = field(default_factory=lambda: Correlation(N_FEATURES))
    groups: list[list[int]] = field(default_factory=list)
    ensemble: list[Autoencoder] = field(default_factory=list)
    out_ranges: Ranges | None = None
    output: Autoencoder | None = None
    threshold: float | None = None
    rows_learned: int = 0
    digest: str = ""  # sha256 over the rows learned from, in order
    info: dict = field(default_factory=dict)  # free-form training metadata kept in the file

    def __post_init__(self) -> None:
        if self.transform not in TRANSFORMS:
            raise AnomalyModelError(f"unknown feature transform {self.transform!r} (choose from {', '.join(TRANSFORMS)})")
        self.caps = column_caps()  # jitter mean/variance capped as for the CNN: no date in the features
        self._rng = np.random.default_rng(self.seed)
        self._hash = hashlib.sha256()
        self._kept = np.zeros((0, N_FEATURES), np.float32)
        self._seen = 0  # rows offered to the reservoir
        self._fast = None

    # -- learning ----------------------------------------------------------------------------

    def _prepare(self, X: np.ndarray) -> np.ndarray:
        return _transform(np.minimum(_check_features(X), self.caps), self.transform)

    def _normalise(self, L: np.ndarray) -> np.ndarray:
        lo, span = self.ranges.get()
        return np.clip((L - lo) / span, -CLIP, 1.0 + CLIP)

    def learn(self, X: np.ndarray, epochs: int = 1) -> None:
        """Learn from a batch of normal traffic (n, 115).

        Until ``map_rows`` rows have been seen, rows only feed the feature mapper (as
        KitNET's grace period); the batch that completes it builds the groups and is
        learned from too.  Ranges grow with every batch.  The output layer starts after
        the ensemble has learned from ``output_warmup`` rows, so its ranges are not
        those of the untrained ensemble's large errors.
        """
        X = _check_features(X)
        finite = np.isfinite(X).all(axis=1)
        if not finite.all():
            log.warning("anomaly: %d of %d learning rows have NaN or inf features; not learned", (~finite).sum(), len(X))
            X = X[finite]
        L = self._prepare(X)
        self._hash.update(memoryview(np.ascontiguousarray(X, dtype=np.float64)))
        self.digest = self._hash.hexdigest()
        self._keep(X)
        self.ranges.update(L)
        self._fast = None
        if not self.groups:
            self.correlation.update(L)
            if self.correlation.n < self.map_rows:
                return
            self._build()
        Z = self._normalise(L)
        for _ in range(epochs):
            order = self._rng.permutation(len(Z))
            for lo in range(0, len(Z), self.minibatch):
                self._step(Z[order[lo : lo + self.minibatch]])

    def _build(self) -> None:
        self.groups = feature_groups(self.correlation.get(), self.max_group)
        self.ensemble = [Autoencoder.new(len(g), self._rng) for g in self.groups]
        self.out_ranges = Ranges.empty(len(self.groups))
        self.output = Autoencoder.new(len(self.groups), self._rng)
        self.correlation = Correlation(N_FEATURES)  # its sums are no longer needed
        log.info("anomaly: %d features in %d groups (sizes %s)", N_FEATURES, len(self.groups), [len(g) for g in self.groups])

    def _step(self, Z: np.ndarray) -> None:
        R = np.column_stack([ae.sgd(Z[:, g], self.lr) for ae, g in zip(self.ensemble, self.groups)])
        self.rows_learned += len(Z)
        if self.rows_learned > self.output_warmup:
            self.out_ranges.update(R)
            lo, span = self.out_ranges.get(OUT_MIN_SPAN)
            self.output.sgd(np.clip((R - lo) / span, -CLIP, 1.0 + CLIP), self.lr)

    def _keep(self, X: np.ndarray) -> None:
        """Reservoir sample of the learning rows (Algorithm R, one batch at a time)."""
        take = max(0, min(len(X), self.keep_rows - len(self._kept)))
        self._kept = np.concatenate([self._kept, X[:take].astype(np.float32)])
        rest = X[take:]
        position = self._seen + take + np.arange(1, len(rest) + 1)  # 1-based place of each row in the stream
        slot = (self._rng.random(len(rest)) * position).astype(np.int64)
        hit = slot < self.keep_rows
        self._kept[slot[hit]] = rest[hit]  # on a repeated slot the later row wins, as in the sequential algorithm
        self._seen += len(X)

    def fix_threshold(self, X: np.ndarray | None = None, quantile: float = 0.999, margin: float = 1.5) -> float:
        """Threshold = ``margin`` x the ``quantile`` of raw scores on ``X`` (default: the kept learning rows).

        Score > 1 then means: further from normal than all but 0.1% of the normal
        traffic, by half again.  The margin covers normal traffic the learning period
        did not show (a device that talks once a day); the decision stage wants most of
        a source's recent packets over 1, so single outliers cost nothing.
        """
        self._require_trained(threshold=False)
        rows = self._kept if X is None else X
        if len(rows) == 0:
            raise AnomalyModelError("no rows to fix the threshold on")
        raw = self.raw_score(rows)
        self.threshold = float(np.quantile(raw, quantile) * margin)
        if not self.threshold > 0:
            raise AnomalyModelError("threshold came out as 0: the learning traffic is degenerate")
        self.info["threshold_rule"] = {"quantile": quantile, "margin": margin, "rows": len(rows)}
        self._kept = np.zeros((0, N_FEATURES), np.float32)
        return self.threshold

    # -- scoring -----------------------------------------------------------------------------

    def _require_trained(self, threshold: bool = True) -> None:
        if not self.groups or self.output is None or self.out_ranges is None or not np.isfinite(self.out_ranges.hi).all():
            raise AnomalyModelError("the anomaly detector has not learned enough traffic yet")
        if threshold and not self.threshold:
            raise AnomalyModelError("the anomaly detector has no threshold yet: call fix_threshold()")

    def raw_score(self, X: np.ndarray) -> np.ndarray:
        """The output autoencoder's RMSE per row (before division by the threshold)."""
        self._require_trained(threshold=False)
        X = _check_features(X)
        if self._fast is None:
            self._fast = _Scorer(self)
        first, inverse = repeated_rows(X, self.caps)
        out = self._fast.raw(X) if inverse is None else self._fast.raw(X[first])[inverse]
        bad = ~np.isfinite(out)
        if bad.any():  # NaN or inf features: score them as far out as any column can be
            out[bad] = self._fast.raw(np.nan_to_num(X[bad], nan=np.inf))
        return out

    def score(self, X: np.ndarray) -> np.ndarray:
        """(n,) anomaly score per row of (n, 115) features: raw score / threshold, > 1 = anomalous."""
        self._require_trained()
        return self.raw_score(X) / self.threshold

    # -- files -------------------------------------------------------------------------------

    def to_dict(self) -> dict:
        self._require_trained()
        body = {
            "schema": SCHEMA,
            "feature_schema": FEATURE_SCHEMA,
            "columns": len(COLUMNS),
            "transform": self.transform,
            "clip": CLIP,
            "min_span": MIN_SPAN,
            "caps": [None if math.isinf(c) else float(c) for c in self.caps],
            "ranges": {"lo": self.ranges.lo.tolist(), "hi": self.ranges.hi.tolist()},
            "groups": self.groups,
            "ensemble": [ae.to_dict() for ae in self.ensemble],
            "output": {"lo": self.out_ranges.lo.tolist(), "hi": self.out_ranges.hi.tolist(), **self.output.to_dict()},
            "threshold": self.threshold,
            "training": {
                "rows": self.rows_learned,
                "digest": self.digest,
                "max_group": self.max_group,
                "lr": self.lr,
                "minibatch": self.minibatch,
                "seed": self.seed,
                **self.info,
            },
        }
        return {**body, "sha256": _content_sha256(body)}

    @classmethod
    def from_dict(cls, d: dict) -> "AnomalyDetector":
        """Check and load what ``to_dict`` wrote; anything else raises AnomalyModelError."""
        try:
            return cls._from_dict(d)
        except AnomalyModelError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
            text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise AnomalyModelError(f"malformed anomaly model: {text}") from None

    @classmethod
    def _from_dict(cls, d: dict) -> "AnomalyDetector":
        if not isinstance(d, dict):
            raise AnomalyModelError("malformed anomaly model: not a JSON object")
        if d.get("schema") != SCHEMA:
            raise AnomalyModelError(f"anomaly model schema {d.get('schema')!r} is not {SCHEMA!r}")
        if d.get("feature_schema") != FEATURE_SCHEMA:
            raise AnomalyModelError(f"anomaly model features {d.get('feature_schema')!r} are not {FEATURE_SCHEMA!r}")
        body = {k: v for k, v in d.items() if k != "sha256"}
        if d.get("sha256") != _content_sha256(body):
            raise AnomalyModelError("anomaly model sha256 does not match its content (corrupt or edited)")
        if d["clip"] != CLIP or d["min_span"] != MIN_SPAN:
            raise AnomalyModelError("anomaly model was made with other clip/min_span constants")
        caps = [math.inf if c is None else c for c in d["caps"]]
        if len(caps) != N_FEATURES or not np.array_equal(np.asarray(caps, dtype=np.float64), column_caps()):
            raise AnomalyModelError("anomaly model caps differ from this agent's feature caps")
        t = d["training"]
        det = cls(max_group=int(t["max_group"]), lr=float(t["lr"]), minibatch=int(t["minibatch"]), seed=int(t["seed"]),
                  transform=d["transform"])  # fmt: skip
        groups = [[int(i) for i in g] for g in d["groups"]]
        if sorted(i for g in groups for i in g) != list(range(N_FEATURES)) or any(not g for g in groups):
            raise AnomalyModelError("anomaly model groups are not a partition of the 115 columns")
        lo = np.asarray(d["ranges"]["lo"], dtype=np.float64)
        hi = np.asarray(d["ranges"]["hi"], dtype=np.float64)
        out = d["output"]
        olo = np.asarray(out["lo"], dtype=np.float64)
        ohi = np.asarray(out["hi"], dtype=np.float64)
        if lo.shape != (N_FEATURES,) or hi.shape != (N_FEATURES,) or olo.shape != (len(groups),) or ohi.shape != olo.shape:
            raise AnomalyModelError("anomaly model ranges have the wrong length")
        if not all(np.isfinite(a).all() and (b >= a).all() for a, b in ((lo, hi), (olo, ohi))) or not np.isfinite(hi).all():
            raise AnomalyModelError("anomaly model ranges are not finite, or low exceeds high")
        if len(d["ensemble"]) != len(groups):
            raise AnomalyModelError(f"anomaly model has {len(d['ensemble'])} autoencoders for {len(groups)} groups")
        threshold = float(d["threshold"])
        if not (math.isfinite(threshold) and threshold > 0):
            raise AnomalyModelError(f"anomaly model threshold {threshold!r} is not a positive number")
        det.groups = groups
        det.ranges = Ranges(lo, hi)
        det.ensemble = [Autoencoder.from_dict(a, len(g)) for a, g in zip(d["ensemble"], groups)]
        det.out_ranges = Ranges(olo, ohi)
        det.output = Autoencoder.from_dict(out, len(groups))
        det.threshold = threshold
        det.rows_learned = int(t["rows"])
        det.digest = str(t["digest"])
        det.info = {k: v for k, v in t.items() if k not in ("rows", "digest", "max_group", "lr", "minibatch", "seed")}
        det.correlation = Correlation(N_FEATURES)
        return det

    def save(self, path: str | Path) -> Path:
        """Write the model as JSON (sorted keys: the same model gives the same bytes), atomically."""
        path = Path(path)
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":")) + "\n"
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path = DEFAULT_MODEL) -> "AnomalyDetector":
        path = Path(path)
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise AnomalyModelError(f"{path}: no such anomaly model file") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise AnomalyModelError(f"{path}: cannot read the anomaly model: {exc}") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise AnomalyModelError(f"{path}: not JSON ({exc.msg} at line {exc.lineno}); corrupt anomaly model") from None
        try:
            return cls.from_dict(data)
        except AnomalyModelError as exc:
            raise AnomalyModelError(f"{path}: {exc}") from None


def _check_features(X) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] != N_FEATURES:
        raise ValueError(f"anomaly detector wants (n, {N_FEATURES}) features, got shape {X.shape}")
    return X


def _content_sha256(body: dict) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def load_anomaly(mode: str, path: str | Path = "") -> AnomalyDetector | None:
    """The detector a configuration asks for: None when ``mode`` is "off"; ``path`` empty: the bundled one
    (missing only in a broken install: then the agent runs without it and says so)."""
    if mode == "off":
        return None
    if not path and not DEFAULT_MODEL.exists():
        log.warning("no bundled anomaly model at %s: running without the anomaly detector", DEFAULT_MODEL)
        return None
    return AnomalyDetector.load(path or DEFAULT_MODEL)
