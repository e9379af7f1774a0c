"""Compare two (n, 115) feature arrays with the tolerances of DESIGN section 4.

weight, mean, magnitude: relative 1e-6.  variance, radius, covariance: absolute
1e-6 * (1 + mu_A^2 + mu_B^2), since they are differences of large sums, plus
1e-12 of the value itself (a jitter stream's first value is an absolute
timestamp, so its variance is ~1e10 while its mean may be small).  std: through
its square, with the variance tolerance.  pcc: only where both directions' std
exceed 1e-3 * |mean| and the covariance exceeds its own tolerance (below that
it is a ratio of rounding noise), absolute 1e-4.
"""

from __future__ import annotations

import numpy as np

from agent.features.columns import COLUMNS, GROUPS, LAMBDAS


def _col(group: str, lam: float, stat: str) -> int:
    return COLUMNS.index(f"{group}_L{lam:g}_{stat}")


def mismatches(got: np.ndarray, want: np.ndarray) -> list[str]:
    """Human-readable list of out-of-tolerance cells (empty when everything matches)."""
    assert got.shape == want.shape, (got.shape, want.shape)
    problems: list[str] = []

    def check(name: str, ok: np.ndarray, g: np.ndarray, w: np.ndarray) -> None:
        bad = np.flatnonzero(~ok)
        for r in bad[:3]:
            problems.append(f"row {r} {name}: got {g[r]!r} want {w[r]!r}")
        if len(bad) > 3:
            problems.append(f"... {name}: {len(bad)} rows out of tolerance")

    for group, stats in GROUPS:
        for lam in LAMBDAS:
            c = {s: _col(group, lam, s) for s in stats}
            mu_a = want[:, c["mean"]]
            if "magnitude" in c:
                mu_b_sq = np.maximum(want[:, c["magnitude"]] ** 2 - mu_a**2, 0.0)
            else:
                mu_b_sq = 0.0
            var_tol = 1e-6 * (1 + mu_a**2 + mu_b_sq)
            slack = 1e-12
            for stat, col in c.items():
                g, w = got[:, col], want[:, col]
                name = COLUMNS[col]
                if stat in ("weight", "mean", "magnitude"):
                    ok = np.isclose(g, w, rtol=1e-6, atol=1e-12)
                elif stat in ("variance", "radius", "covariance"):
                    ok = np.abs(g - w) <= var_tol + slack * np.abs(w)
                elif stat == "std":
                    ok = np.abs(g**2 - w**2) <= var_tol + slack * w**2
                elif stat == "pcc":
                    std_a = want[:, c["std"]]
                    cov = want[:, c["covariance"]]
                    # std_B is not a column; recover it from pcc = cov / (std_A std_B) (0 when pcc is 0).
                    with np.errstate(divide="ignore", invalid="ignore"):
                        std_b = np.where(w * std_a != 0, np.abs(cov / (w * std_a)), 0.0)
                    defined = (
                        (std_a > 1e-3 * np.abs(mu_a))
                        & (std_b > 1e-3 * np.sqrt(mu_b_sq))
                        & (np.abs(cov) > var_tol)
                    )
                    ok = ~defined | (np.abs(g - w) <= 1e-4)
                else:  # pragma: no cover - every statistic has a rule above
                    raise AssertionError(stat)
                check(name, ok, g, w)
    return problems
