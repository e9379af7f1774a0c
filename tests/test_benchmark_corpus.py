"""The realistic benchmark corpus (benchmarks/corpus.py): time-sorted, decodes whole, many sources, deterministic."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from agent.capture.packets import DecodeStats
from agent.capture.parse import parse_frames
from agent.capture.pcap import read_capture
from benchmarks.corpus import REAL, build_realistic

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (REAL / "tjoconnor_lockly-hub-01.pcap").exists(), reason="real captures not present"),
]


def test_small_realistic_corpus(tmp_path):
    path = tmp_path / "realistic.pcap"
    meta = build_realistic(path, 20_000, seed=3)
    stats = DecodeStats()
    batches = [parse_frames(f, stats) for f in read_capture(path, stats=stats)]
    ts = np.concatenate([b.ts for b in batches])
    src = np.concatenate([b.src_ip_lo for b in batches])
    assert len(ts) == meta["packets"] >= 20_000
    assert stats.total_skipped == 0 and stats.decoded == len(ts)
    assert np.all(np.diff(ts) >= 0)
    assert len(np.unique(src)) > 2_000  # homes, spoofed floods, scanning bots
    counts = meta["packets_per_class"]
    assert 0.35 < counts["benign"] / meta["packets"] < 0.65
    assert all(counts[c] > 0 for c in ("mirai_ack", "mirai_syn", "mirai_udp", "mirai_udpplain", "mirai_scan"))
    again = tmp_path / "again.pcap"
    build_realistic(again, 20_000, seed=3)
    assert hashlib.sha256(path.read_bytes()).digest() == hashlib.sha256(again.read_bytes()).digest()
