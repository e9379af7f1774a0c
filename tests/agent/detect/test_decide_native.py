"""The decision stage's compiled kernels (agent/native/decide.c) against its numpy paths.

``Tracked.update`` sums each key's packets through a sequential recurrence in C and through segmented prefix
sums in numpy: the sums agree to rounding, and every verdict and per-packet label of the decision layer is
the same either way.  The library is compiled here from the checkout's sources (as in tests/agent/test_native.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agent import native
from agent.capture.packets import LABELS, PacketBatch
from agent.detect.decide import DecisionConfig, DecisionLayer
from agent.detect.tracked import Tracked, argsort_keys, sort_kernel
from agent.features.engine import FeatureExtractor
from lab.native_build import use_library
from lab.packet_factory import random_batch, spoofed_syn_flood

DEMO = Path(__file__).resolve().parents[3] / "agent" / "samples" / "mirai_demo.pcap"


def _numpy(table: Tracked) -> Tracked:
    """``table`` switched to its numpy paths."""
    table._kernel = table._sort = None
    return table


def _numpy_layer(layer: DecisionLayer) -> DecisionLayer:
    for table in vars(layer).values():
        if isinstance(table, Tracked):
            _numpy(table)
    return layer


# --- Tracked.update ------------------------------------------------------------------------------------------


def _batches(seed: int, n: int, keys: int, disorder: float, long_gaps: bool, sizes: list[int]):
    rng = np.random.default_rng(seed)
    t = 1.6e9 + np.cumsum(rng.exponential(0.02, n))
    if long_gaps:  # idle spells past the numpy path's block span (500 half-lives)
        t += np.cumsum(np.where(rng.random(n) < 0.01, rng.uniform(500, 3000, n), 0.0))
    if disorder:
        back = rng.random(n) < disorder
        t[back] -= rng.uniform(0, 0.5, back.sum())
    repeat = rng.random(n) < 0.1  # the previous packet's timestamp again (bursts within one microsecond)
    repeat[0] = False
    t = t[np.maximum.accumulate(np.where(repeat, 0, np.arange(n)))]
    key = rng.integers(0, keys, n).astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    scores = rng.dirichlet(np.ones(len(LABELS)), n)
    extra = (rng.random((n, 4)) < 0.3).astype(float)
    extra[:, 3] = rng.uniform(0.06, 1.5, n)
    lo = 0
    for size in sizes:
        yield key[lo : lo + size], t[lo : lo + size], scores[lo : lo + size], extra[lo : lo + size]
        lo += size


@pytest.mark.parametrize(
    "seed,keys,disorder,long_gaps,with_scores,budget",
    [
        (0, 5, 0.0, False, True, 100),
        (1, 300, 0.1, True, True, 1000),
        (2, 40, 0.0, True, False, 1000),
        (3, 3000, 0.05, False, True, 2200),  # a table full to its budget: evictions
        (4, 1, 0.0, True, True, 10),
    ],
)
def test_tracked_sums_match_numpy(compiled, seed, keys, disorder, long_gaps, with_scores, budget):
    extras = ("a", "b", "c", "kbytes")
    fast = Tracked(budget, 2.0, extras, with_scores=with_scores)
    slow = _numpy(Tracked(budget, 2.0, extras, with_scores=with_scores))
    assert fast._kernel is not None and fast._sort is not None
    for key, t, scores, extra in _batches(seed, 6000, keys, disorder, long_gaps, [1, 700, 13, 2000, 3286]):
        got = fast.update(key, t, scores if with_scores else None, extra)
        want = slow.update(key, t, scores if with_scores else None, extra)
        for name in ("order", "t", "T", "count", "episode"):
            np.testing.assert_array_equal(got[name], want[name], err_msg=name)
        np.testing.assert_array_equal(got["seg"].start, want["seg"].start)
        for name in ("weight", "avg", "shares", "extra_weight", "sums"):
            assert got[name].shape == want[name].shape, name
            np.testing.assert_allclose(got[name], want[name], rtol=1e-9, atol=1e-300, err_msg=name)
        fast.store(got)
        slow.store(want)
        # (What each stored, the next batch's sums start from.)
        assert (len(fast.table), fast.table.evicted) == (len(slow.table), slow.table.evicted)
        np.testing.assert_array_equal(fast.table.contains(key), slow.table.contains(key))


def test_an_empty_update(compiled):
    table = Tracked(10, 2.0, ("a",))
    r = table.update(np.zeros(0, np.uint64), np.zeros(0), np.zeros((0, len(LABELS))), np.zeros((0, 1)))
    assert r["weight"].shape == (0,) and r["avg"].shape == (0, len(LABELS) - 1) and r["shares"].shape == (0, 1)
    table.store(r)


@pytest.mark.parametrize("n", [0, 1, 63, 64, 65, 1000, 40_000])
def test_key_sort_is_numpys_stable_sort(compiled, n):
    rng = np.random.default_rng(n)
    kernel = sort_kernel()
    assert kernel is not None
    for keys in (
        rng.integers(0, 2**64, n, dtype=np.uint64),
        rng.integers(0, 7, n).astype(np.uint64),  # many equal keys: stability shows
        rng.integers(0, 300, n).astype(np.uint64) << np.uint64(40),  # bytes every key shares
        np.full(n, 2**64 - 1, dtype=np.uint64),
    ):
        np.testing.assert_array_equal(argsort_keys(keys, kernel), np.argsort(keys, kind="stable"))


# --- The decision layer ----------------------------------------------------------------------------------------


def _verdicts_alike(got: list, want: list) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want):
        g, w = g.to_dict(), w.to_dict()
        assert g.pop("confidence") == pytest.approx(w.pop("confidence"), rel=1e-9)
        assert g == w


def _mixed_traffic(seed: int) -> tuple[PacketBatch, np.ndarray]:
    """Benign hosts, hosts the model scores as attackers (some of them TCP with no flags: probes), and a spoofed
    SYN flood at one victim; scores per source's class."""
    rng = np.random.default_rng(seed)
    hosts = random_batch(6000, seed, hosts=12, ports=6, mean_gap=0.002, long_gaps=False)
    flood = spoofed_syn_flood(3000, seed, t0=hosts.ts[0] + 2.0)
    flood.tcp_flags[:] = 0x02
    flood.tcp_hdr_len[:] = 20
    packets = PacketBatch.concat([hosts, flood])
    packets = packets.take(np.argsort(packets.ts, kind="stable"))
    packets.index = np.arange(len(packets), dtype=np.int64)
    host_class = rng.integers(0, len(LABELS), 2**16)
    label = host_class[(packets.src_ip_lo % np.uint64(2**16)).astype(np.int64)]
    label = np.where(rng.random(len(packets)) < 0.1, 0, label)
    scores = np.full((len(packets), len(LABELS)), 0.02)
    scores[np.arange(len(packets)), label] = 0.9
    return packets, scores


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_decision_layer_alike_with_and_without_kernels(compiled, seed):
    packets, scores = _mixed_traffic(seed)
    features = FeatureExtractor(backend="numpy").update(packets)
    config = DecisionConfig(max_sources=512, max_targets=512)  # chunks and evictions too
    fast, slow = DecisionLayer(config), _numpy_layer(DecisionLayer(config))
    assert fast.sources._kernel is not None
    raised = 0
    for lo, hi in [(0, 1), (1, 2500), (2500, 2513), (2513, len(packets))]:
        sl = slice(lo, hi)
        got = fast.update(packets.take(sl), scores[sl], features[sl])
        want = slow.update(packets.take(sl), scores[sl], features[sl])
        _verdicts_alike(got, want)
        np.testing.assert_array_equal(fast.packet_labels, slow.packet_labels)
        np.testing.assert_array_equal(fast.packet_flood_labels, slow.packet_flood_labels)
        raised += len(got)
    assert raised > 0  # the comparison covered verdicts


def test_demo_capture_alike_with_and_without_kernels(native_library, monkeypatch):
    from agent.detect.model import Classifier, load_bundle
    from agent.pipeline import detect_capture

    runs = {}
    for mode, library in (("off", None), ("compiled", native_library)):
        use_library(monkeypatch, library)
        runs[mode] = detect_capture(DEMO, Classifier(load_bundle()))
    native.load.cache_clear()
    off, c = runs["off"], runs["compiled"]
    assert len(off.verdicts) > 0
    _verdicts_alike(c.verdicts, off.verdicts)
    np.testing.assert_array_equal(c.decided, off.decided)
    np.testing.assert_array_equal(c.flooded, off.flooded)
