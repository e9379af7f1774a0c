"""agent.detect.preprocess: rounding noise removed, the capped quantile map, the (rate x statistic) grid,
and the parameters' JSON form."""

from __future__ import annotations

import json

import numpy as np
import pytest

from agent.detect.preprocess import GRID_SHAPE, Preprocessor, column_caps, denoise, grid_order
from agent.features.columns import COLUMNS, LAMBDAS, N_FEATURES


def col(name: str) -> int:
    return COLUMNS.index(name)


def grid_position(name: str, order: np.ndarray) -> tuple[int, int]:
    """Where column ``name`` lands in a transformed (rate, statistic) grid."""
    flat = int(np.flatnonzero(order == col(name))[0])
    return divmod(flat, GRID_SHAPE[1])


@pytest.fixture(scope="module")
def training() -> np.ndarray:
    """Values whose noise floors (at most 1e-6 * (1 + 100^2) and 1e-3 * (1 + 100)) never bite."""
    rng = np.random.default_rng(0)
    return rng.uniform(1.0, 100.0, (3000, N_FEATURES))


@pytest.fixture(scope="module")
def fitted(training) -> Preprocessor:
    return Preprocessor.fit(training)


# --- the grid ------------------------------------------------------------------------------------------


def test_grid_rows_are_decay_rates_with_the_same_statistics_in_the_same_order():
    order = np.asarray(grid_order())
    assert sorted(order.tolist()) == list(range(N_FEATURES))
    names = np.array(COLUMNS)[order].reshape(GRID_SHAPE)
    assert GRID_SHAPE == (len(LAMBDAS), 23)
    for r, lam in enumerate(LAMBDAS):
        assert all(f"_L{lam:g}_" in name for name in names[r])
    without_rate = [[name.replace(f"_L{lam:g}_", "_") for name in names[r]] for r, lam in enumerate(LAMBDAS)]
    assert all(row == without_rate[0] for row in without_rate)
    assert without_rate[0][:3] == ["MI_dir_weight", "MI_dir_mean", "MI_dir_variance"]


def test_only_the_jitter_mean_and_variance_are_capped():
    caps = column_caps()
    capped = {COLUMNS[i]: caps[i] for i in np.flatnonzero(np.isfinite(caps))}
    assert capped == {**{f"HH_jit_L{lam:g}_mean": 1e6 for lam in LAMBDAS},
                      **{f"HH_jit_L{lam:g}_variance": 1e12 for lam in LAMBDAS}}  # fmt: skip


# --- denoise -------------------------------------------------------------------------------------------


def test_denoise_zeroes_what_is_below_the_noise_floor_of_its_mean():
    X = np.zeros((2, N_FEATURES))
    X[:, col("H_L1_mean")] = 554.0
    X[:, col("HH_L1_mean")] = 554.0
    X[:, col("H_L1_variance")] = [1e-5, 1.0]  # floor 1e-6 * (1 + 554^2) = 0.31
    X[:, col("HH_L1_std")] = [0.5, 1.0]  # floor 1e-3 * (1 + 554) = 0.555
    X[:, col("MI_dir_L1_weight")] = [1e-300, 1e-300]  # a weight has no floor
    out = denoise(X)
    assert out[0, col("H_L1_variance")] == 0.0 and out[0, col("HH_L1_std")] == 0.0
    assert out[1, col("H_L1_variance")] == 1.0 and out[1, col("HH_L1_std")] == 1.0
    assert out[0, col("H_L1_mean")] == 554.0
    assert (out[:, col("MI_dir_L1_weight")] > 0).all()
    assert X[0, col("H_L1_variance")] == 1e-5, "denoise must not change its argument"


def test_denoise_rounds_to_20_mantissa_bits_so_rounding_differences_vanish():
    rng = np.random.default_rng(1)
    X = rng.normal(0, 1e4, (200, N_FEATURES))
    X[:, [i for i, name in enumerate(COLUMNS) if name.endswith("_mean")]] = 0.0  # floors of 1e-6 and 1e-3 only
    out = denoise(X)
    assert (np.abs(out - X) <= 2.0**-21 * np.abs(X)).all()  # round to nearest: half a unit of the 20th bit
    assert (out.view(np.int64) & ((1 << 32) - 1) == 0).all()
    third = np.full((1, N_FEATURES), 1 / 3)
    nudged = third * (1 + 1e-13)  # what another machine's rounding might give
    assert third[0, 0] != nudged[0, 0]
    np.testing.assert_array_equal(denoise(third), denoise(nudged))
    np.testing.assert_array_equal(denoise(-third), -denoise(third))


# --- fit and transform ---------------------------------------------------------------------------------


def test_transform_gives_the_grid_in_minus_one_to_one(fitted, training):
    out = fitted.transform(training)
    assert out.shape == (len(training), *GRID_SHAPE) and out.dtype == np.float32
    assert out.min() == -1.0 and out.max() == 1.0


def test_each_column_maps_monotonically_from_its_minimum_to_its_maximum(fitted, training):
    ranked = np.sort(training, axis=0)  # every column increasing down the rows
    out = fitted.transform(ranked).reshape(len(ranked), -1)
    assert (np.diff(out, axis=0) >= 0).all()
    np.testing.assert_array_equal(out[0], -1.0)
    np.testing.assert_array_equal(out[-1], 1.0)
    median = fitted.transform(np.median(training, axis=0, keepdims=True))
    assert np.abs(median).max() < 0.01


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # an infinite mean's noise floor is NaN
def test_values_beyond_the_training_range_clamp_and_nan_counts_as_zero(fitted, training):
    probe = np.stack([training.max(axis=0) * 10, -training.max(axis=0), np.full(N_FEATURES, np.inf),
                      np.full(N_FEATURES, np.nan), np.zeros(N_FEATURES)])  # fmt: skip
    out = fitted.transform(probe).reshape(len(probe), -1)
    np.testing.assert_array_equal(out[0], 1.0)
    np.testing.assert_array_equal(out[1], -1.0)
    np.testing.assert_array_equal(out[2], 1.0)
    np.testing.assert_array_equal(out[3], out[4])


def test_one_column_moves_one_grid_cell(fitted, training):
    base = np.median(training, axis=0, keepdims=True)
    moved = base.copy()
    moved[0, col("HpHp_L0.1_magnitude")] = training[:, col("HpHp_L0.1_magnitude")].max()
    diff = fitted.transform(moved)[0] != fitted.transform(base)[0]
    assert np.flatnonzero(diff.ravel()).tolist() == [np.ravel_multi_index(
        grid_position("HpHp_L0.1_magnitude", fitted.order), GRID_SHAPE)]  # fmt: skip
    assert grid_position("HpHp_L0.1_magnitude", fitted.order)[0] == LAMBDAS.index(0.1)


def test_a_value_many_rows_share_maps_to_the_middle_of_its_quantiles():
    rng = np.random.default_rng(2)
    X = rng.uniform(1, 2, (4000, N_FEATURES))
    X[:2000, col("H_L1_weight")] = 0.0  # half the rows: the lower half of the quantiles
    X[:, col("H_L3_weight")] = 7.0  # a constant column carries nothing
    pre = Preprocessor.fit(X)
    out = pre.transform(X[:1])[0]
    assert out[grid_position("H_L1_weight", pre.order)] == pytest.approx(-0.5, abs=0.01)
    assert out[grid_position("H_L3_weight", pre.order)] == 0.0


def test_jitter_columns_are_capped_before_the_map():
    rng = np.random.default_rng(3)
    X = rng.uniform(0, 1e8, (1000, N_FEATURES))  # first jitter values are absolute timestamps: huge
    pre = Preprocessor.fit(X)
    rows = np.array([np.full(N_FEATURES, v) for v in (1e6, 5e7, 9e7)])
    out = pre.transform(rows)
    jit, plain = grid_position("HH_jit_L1_mean", pre.order), grid_position("H_L1_mean", pre.order)
    assert out[0][jit] == out[1][jit] == out[2][jit]  # over the 1e6 cap: all alike
    assert out[0][plain] < out[1][plain] < out[2][plain]  # an uncapped column still tells them apart


def test_fit_subsamples_reproducibly(training):
    a = Preprocessor.fit(training, max_rows=500, seed=4)
    b = Preprocessor.fit(training, max_rows=500, seed=4)
    c = Preprocessor.fit(training, max_rows=500, seed=5)
    assert all(np.array_equal(x, y) for x, y in zip(a.knots_x, b.knots_x))
    assert not all(np.array_equal(x, y) for x, y in zip(a.knots_x, c.knots_x))


# --- JSON ----------------------------------------------------------------------------------------------


def test_json_round_trip_transforms_identically(fitted, training):
    doc = json.loads(json.dumps(fitted.to_json()))
    assert doc["kind"] == "capped_quantile" and doc["grid_shape"] == list(GRID_SHAPE)
    assert doc["caps"].count(None) == N_FEATURES - 10
    again = Preprocessor.from_json(doc)
    np.testing.assert_array_equal(again.transform(training[:200]), fitted.transform(training[:200]))


@pytest.mark.parametrize("damage,message", [
    (lambda d: d.update(kind="quantile"), "unknown preprocessing kind"),
    (lambda d: d.update(order=d["order"][:-1]), "115 entries"),
    (lambda d: d["order"].__setitem__(0, d["order"][1]), "permutation"),
    (lambda d: d["knots_x"].__setitem__(3, d["knots_x"][3][::-1]), "grid column 3"),
    (lambda d: d["knots_y"][4].__setitem__(0, -1.5), "grid column 4"),
    (lambda d: d["knots_x"].__setitem__(5, []), "grid column 5"),
], ids=["kind", "length", "order", "decreasing", "outside", "empty"])  # fmt: skip
def test_from_json_refuses_malformed_parameters(fitted, damage, message):
    doc = json.loads(json.dumps(fitted.to_json()))
    damage(doc)
    with pytest.raises(ValueError, match=message):
        Preprocessor.from_json(doc)
