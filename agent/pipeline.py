"""Capture file -> parsed packets -> features, one batch at a time.

The stages themselves live in their own modules; this one only strings them
together for the offline (pcap) commands and keeps the per-reason counts of
records that could not be decoded.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from .capture_file import read_capture
from .features import Budgets, FeatureExtractor
from .packets import DecodeStats, PacketBatch
from .parse import parse_frames

log = logging.getLogger(__name__)

DEFAULT_BATCH = 65536


@dataclass
class FeatureBatch:
    packets: PacketBatch
    features: np.ndarray  # (n, 115) float64


def packets_from_capture(path: str | Path, stats: DecodeStats, batch_size: int = DEFAULT_BATCH) -> Iterator[PacketBatch]:
    for frames in read_capture(path, batch_size=batch_size, stats=stats):
        packets = parse_frames(frames, stats=stats)
        if len(packets):
            yield packets


def features_from_capture(
    path: str | Path,
    stats: DecodeStats,
    budgets: Budgets | None = None,
    batch_size: int = DEFAULT_BATCH,
) -> Iterator[FeatureBatch]:
    extractor = FeatureExtractor(budgets or Budgets())
    for packets in packets_from_capture(path, stats, batch_size):
        yield FeatureBatch(packets, extractor.update(packets))
