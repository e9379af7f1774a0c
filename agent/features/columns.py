"""The 115 N-BaIoT feature columns: groups, decay rates and names, declared once (DESIGN 4).

Both feature implementations (``reference`` and ``engine``) and the
model bundle use this layout; ``FEATURE_SCHEMA`` names it so that a model
trained on another layout is refused.
"""

from __future__ import annotations

# Decay rates in the N-BaIoT column order (half-life 1/lambda seconds).
LAMBDAS: tuple[float, ...] = (5.0, 3.0, 1.0, 0.1, 0.01)

# Per-group statistics, in column order.
SINGLE_STATS = ("weight", "mean", "variance")
PAIR_STATS = ("weight", "mean", "std", "magnitude", "radius", "covariance", "pcc")

# (group name, statistics) in column order.  MI_dir, H and HH_jit are single
# streams; HH and HpHp are directed streams paired with their reverse.
GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("MI_dir", SINGLE_STATS),
    ("H", SINGLE_STATS),
    ("HH", PAIR_STATS),
    ("HH_jit", SINGLE_STATS),
    ("HpHp", PAIR_STATS),
)

FEATURE_SCHEMA = "nbaiot-115/1"


def _lambda_name(lam: float) -> str:
    return f"{lam:g}"  # 5 -> "5", 0.1 -> "0.1", as in the N-BaIoT header


def column_names() -> list[str]:
    """The 115 names, e.g. ``HH_L0.1_magnitude``, in the N-BaIoT CSV order."""
    return [
        f"{group}_L{_lambda_name(lam)}_{stat}"
        for group, stats in GROUPS
        for lam in LAMBDAS
        for stat in stats
    ]


COLUMNS: tuple[str, ...] = tuple(column_names())
N_FEATURES = len(COLUMNS)
assert N_FEATURES == 115


def group_slice(group: str) -> slice:
    """Columns of one group (all lambdas)."""
    start = 0
    for name, stats in GROUPS:
        width = len(stats) * len(LAMBDAS)
        if name == group:
            return slice(start, start + width)
        start += width
    raise KeyError(group)
