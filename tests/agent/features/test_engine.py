"""The numpy feature engine against the golden values, against the scalar reference, and within its memory budget
(test_native.py holds the compiled kernel to the same)."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from agent.capture.packets import DecodeStats, PacketBatch
from agent.features.columns import COLUMNS
from agent.features.engine import Budgets, FeatureExtractor
from agent.features.reference import ReferenceExtractor
from lab.feature_tolerance import mismatches
from lab.packet_factory import random_batch, spoofed_syn_flood

GOLDEN = [
    ("ndpi_coap_mqtt", "ndpi_coap_mqtt.pcap"),
    ("esnet_masscan_tcp_0_1000_20190821", "esnet_masscan_tcp_0_1000_20190821.pcap"),
    ("tjoconnor_lockly-hub-01.first5000", "tjoconnor_lockly-hub-01.pcap"),
]


def _load_golden(shared_data, name: str, capture: str) -> tuple[np.ndarray, PacketBatch]:
    from agent.pipeline import packets_from_capture

    with gzip.open(shared_data / "golden" / f"{name}.features.csv.gz", "rt") as fh:
        header = fh.readline().strip().split(",")
        table = np.loadtxt(fh, delimiter=",")
    assert header[:3] == ["index", "timestamp", "wire_len"] and tuple(header[3:]) == COLUMNS
    packets = PacketBatch.concat(list(packets_from_capture(shared_data / "real" / capture, DecodeStats())))
    wanted = table[:, 0].astype(np.int64)
    packets = packets.take(np.isin(packets.index, wanted))  # "first5000": a prefix of the capture
    np.testing.assert_array_equal(packets.index, wanted, err_msg="decoded packets differ from the golden rows")
    np.testing.assert_array_equal(packets.wire_len, table[:, 2])
    np.testing.assert_array_equal(packets.ts, table[:, 1])
    return table[:, 3:], packets


@pytest.mark.parametrize("name,capture", GOLDEN, ids=[g[0] for g in GOLDEN])
def test_batch_engine_matches_golden(shared_data, name, capture):
    want, packets = _load_golden(shared_data, name, capture)
    got = np.concatenate([FeatureExtractor(backend="numpy").update(packets)])
    assert mismatches(got, want) == []


@pytest.mark.parametrize("name,capture", GOLDEN, ids=[g[0] for g in GOLDEN])
def test_reference_matches_golden(shared_data, name, capture):
    want, packets = _load_golden(shared_data, name, capture)
    assert mismatches(ReferenceExtractor().process(packets), want) == []


def _in_batches(extractor: FeatureExtractor, packets: PacketBatch, sizes: list[int]) -> np.ndarray:
    out, lo, i = [], 0, 0
    while lo < len(packets):
        hi = min(len(packets), lo + sizes[i % len(sizes)])
        out.append(extractor.update(packets.take(slice(lo, hi))))
        lo, i = hi, i + 1
    return np.concatenate(out)


@pytest.mark.parametrize(
    "seed,options",
    [
        (0, {}),  # includes idle gaps of minutes and streams paired with themselves (src == dst)
        (1, {"disorder": 0.1}),  # timestamps that step backwards
        (2, {"hosts": 3, "ports": 2}),  # few long streams
        (3, {"mean_gap": 20.0}),  # slow traffic: statistics decay to float underflow between packets
        (4, {"hosts": 40, "ports": 30, "mean_gap": 1e-4, "long_gaps": False}),  # many short streams
    ],
)
def test_batch_engine_matches_reference(seed, options):
    packets = random_batch(3000, seed, **options)
    want = ReferenceExtractor().process(packets)
    got = _in_batches(FeatureExtractor(backend="numpy"), packets, [700, 1, 13, 2000])
    assert mismatches(got, want) == []


def test_batch_boundaries_do_not_matter():
    packets = random_batch(4000, 7)
    whole = FeatureExtractor(backend="numpy").update(packets)
    pieces = _in_batches(FeatureExtractor(backend="numpy"), packets, [1, 5, 333, 64])
    assert mismatches(pieces, whole) == []


def test_evicted_stream_restarts_from_nothing():
    packets = random_batch(600, 8, hosts=30, ports=30)
    small = FeatureExtractor(Budgets(mi_dir=20, h=20, hh=20, hh_jit=20, hphp=20), backend="numpy")
    got = _in_batches(small, packets, [10])
    assert all(len(t) <= 20 for t in small.tables.values())
    assert sum(t.evicted for t in small.tables.values()) > 0
    full = FeatureExtractor(backend="numpy").update(packets)
    differs = ~np.isclose(got, full, rtol=1e-9, atol=1e-9).all(axis=1)
    assert differs.any(), "a budget of 20 streams must change some features"
    # A packet whose H stream restarted shows weight exactly 1 (first packet of a new stream).
    h_weight = got[:, COLUMNS.index("H_L0.01_weight")]
    assert (h_weight[differs] == 1.0).any()


@pytest.mark.slow
def test_spoofed_flood_stays_within_budget():
    budget = 100_000
    extractor = FeatureExtractor(Budgets(budget, budget, budget, budget, budget), backend="numpy")
    total, batch = 1_000_000, 65536
    peak = 0
    for i, lo in enumerate(range(0, total, batch)):
        packets = spoofed_syn_flood(min(batch, total - lo), seed=i, t0=1.6e9 + lo * 1e-5)
        features = extractor.update(packets)
        assert np.isfinite(features).all()
        peak = max(peak, max(len(t) for t in extractor.tables.values()))
        assert all(len(t) <= budget for t in extractor.tables.values())
        assert all(len(t.state) <= budget for t in extractor.tables.values())
    assert peak == budget  # the flood did fill the tables, and eviction held them there
    # Every new source beyond the budget evicted an old one (random 32-bit sources repeat rarely).
    assert extractor.tables["h"].evicted >= 0.99 * (total - budget)
