"""The compiled kernels (agent/native/*.c through ctypes) against the numpy paths and the scalar reference.

The library is compiled here from the checkout's sources, so these tests never run a stale build.
"""

from __future__ import annotations


import numpy as np
import pytest

from agent import native
from agent.detect.model import load_bundle
from agent.features.engine import Budgets, FeatureExtractor
from agent.features.reference import ReferenceExtractor
from lab.feature_tolerance import mismatches
from lab.native_build import build, use_library
from lab.packet_factory import random_batch, spoofed_syn_flood
from tests.agent.features.test_engine import GOLDEN, _in_batches, _load_golden


@pytest.mark.parametrize(
    "seed,options",
    [
        (0, {}),
        (1, {"disorder": 0.1}),
        (2, {"hosts": 3, "ports": 2}),
        (3, {"mean_gap": 20.0}),
        (4, {"hosts": 40, "ports": 30, "mean_gap": 1e-4, "long_gaps": False}),
    ],
)
# --- features.c ----------------------------------------------------------------------------------


def test_kernel_matches_reference(compiled, seed, options):
    packets = random_batch(3000, seed, **options)
    want = ReferenceExtractor().process(packets)
    got = _in_batches(FeatureExtractor(backend="c"), packets, [700, 1, 13, 2000])
    assert mismatches(got, want) == []


@pytest.mark.parametrize("name,capture", GOLDEN, ids=[g[0] for g in GOLDEN])
def test_kernel_matches_golden(compiled, shared_data, name, capture):
    want, packets = _load_golden(shared_data, name, capture)
    assert mismatches(FeatureExtractor(backend="c").update(packets), want) == []


def test_kernel_and_numpy_evict_alike(compiled):
    """Both paths share the stream tables, so a full table evicts the same streams either way."""
    packets = random_batch(600, 8, hosts=30, ports=30)
    small = Budgets(mi_dir=20, h=20, hh=20, hh_jit=20, hphp=20)
    fast, slow = FeatureExtractor(small, backend="c"), FeatureExtractor(small, backend="numpy")
    got, want = _in_batches(fast, packets, [10]), _in_batches(slow, packets, [10])
    assert mismatches(got, want) == []
    assert [t.evicted for t in fast.tables.values()] == [t.evicted for t in slow.tables.values()] != [0] * 5


def test_kernel_on_a_spoofed_flood(compiled):
    packets = spoofed_syn_flood(20_000, seed=3, t0=1.6e9)
    b = Budgets(5000, 5000, 5000, 5000, 5000)
    got = FeatureExtractor(b, backend="c").update(packets)
    assert np.isfinite(got).all()
    assert mismatches(got, FeatureExtractor(b, backend="numpy").update(packets)) == []


# --- model_input.c -------------------------------------------------------------------------------


def _hostile_features(seed: int, n: int = 20_000) -> np.ndarray:
    """Real feature rows scaled into every range (tiny, huge, negative, zero) with NaN and +-inf sprinkled in."""
    rng = np.random.default_rng(seed)
    real = FeatureExtractor(backend="numpy").update(random_batch(3000, seed, hosts=20, ports=10))
    X = real[rng.integers(0, len(real), n)] * rng.choice([1, -1, 1e-7, 1e7, 0], size=(n, real.shape[1]),
                                                         p=[0.6, 0.1, 0.1, 0.1, 0.1])  # fmt: skip
    for value in (np.nan, np.inf, -np.inf, 1e308, 5e-324):
        X[rng.random(X.shape) < 0.01] = value
    return X


@pytest.mark.parametrize("seed", [0, 1])
def test_model_input_gives_the_numpy_bytes(compiled, seed):
    pre, q = load_bundle().preprocessor, load_bundle().input_q
    plain = FeatureExtractor(backend="numpy").update(random_batch(5000, seed))
    for X in (plain, _hostile_features(seed)):
        with np.errstate(all="ignore"):
            want = pre.quantize(X, q.scale, q.zero_point, backend="numpy")
        got = pre.quantize(X, q.scale, q.zero_point)
        assert got.dtype == np.int8 and got.shape == want.shape == (len(X), 5, 23)
        assert np.array_equal(got, want), f"{int((got != want).sum())} of {got.size} int8 inputs differ"
    assert len(np.unique(want.reshape(-1))) > 100, "the input should reach most int8 levels"


def test_model_input_refuses_a_wrong_shape(compiled):
    pre, q = load_bundle().preprocessor, load_bundle().input_q
    with pytest.raises(ValueError, match="shape"):
        pre.quantize(np.zeros((4, 114)), q.scale, q.zero_point)


# --- loading -------------------------------------------------------------------------------------


def test_backend_choice(compiled, monkeypatch):
    assert native.backend() == "c" and FeatureExtractor()._kernel is not None
    monkeypatch.setenv("IOTGUARD_NATIVE", "off")  # the switch a user has when a build misbehaves
    native.load.cache_clear()
    assert native.backend() == "numpy" and FeatureExtractor()._kernel is None
    with pytest.raises(RuntimeError, match="compiled feature kernel is not available"):
        FeatureExtractor(backend="c")
    with pytest.raises(ValueError, match="unknown feature backend"):
        FeatureExtractor(backend="fortran")


def test_unloadable_library_falls_back_with_a_warning(tmp_path, monkeypatch, caplog):
    broken = tmp_path / "kernel.so"
    broken.write_bytes(b"not a shared object")
    use_library(monkeypatch, broken)
    try:
        assert native.load() is None
        assert "cannot load the compiled kernels" in caplog.text
    finally:
        native.load.cache_clear()


def test_a_build_of_another_kernel_version_is_refused(tmp_path, monkeypatch, caplog):
    source = tmp_path / "old.c"
    source.write_text("int iotguard_kernel_abi(void) { return 99; }\n")
    use_library(monkeypatch, build([source], tmp_path / "old.so"))
    try:
        assert native.load() is None
        assert f"built for kernel ABI 99, this agent needs {native.KERNEL_ABI}" in caplog.text
    finally:
        native.load.cache_clear()


def test_a_build_without_a_function_falls_back_to_numpy(tmp_path, monkeypatch, caplog):
    use_library(monkeypatch, build([native.HERE / "abi.c"], tmp_path / "abi_only.so"))
    try:
        assert native.load() is not None and FeatureExtractor()._kernel is None
        assert "lack iotguard_single_update" in caplog.text
        packets = random_batch(500, 3)
        assert mismatches(FeatureExtractor().update(packets), FeatureExtractor(backend="numpy").update(packets)) == []
    finally:
        native.load.cache_clear()
