"""Blocks of labelled frames on a shared clock, merged into one capture; timing patterns.

Generators add ``Block``s (frames of one kind with their send/capture times, one
label and one role) to a ``Timeline``.  ``Timeline.merge`` keeps the frames that
fall inside the capture, orders everything by microsecond timestamp (stable, so
a reply built after its request at the same microsecond stays after it), and
lays the frames back to back in a ``FrameBatch``.

Timing helpers return times in seconds from the capture start: periodic with
jitter, Poisson, and ``flood_times`` for a bot sending as fast as it can.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from agent.capture.packets import LABELS, LINKTYPE_ETHERNET, FrameBatch

from .frames import Frames

log = logging.getLogger(__name__)

BENIGN = LABELS.index("benign")


@dataclass
class Block:
    t: np.ndarray  # float64 seconds since the capture start
    frames: Frames
    label: int  # index into LABELS
    role: str  # e.g. "benign:camera", "mirai_syn:bot2"

    def __len__(self) -> int:
        return len(self.t)


@dataclass
class Merged:
    frames: FrameBatch
    labels: np.ndarray  # int8 index into LABELS, one per record
    role_index: np.ndarray  # int32 index into roles
    roles: tuple[str, ...]


class Timeline:
    """Collects blocks; ``merge`` turns them into one time-ordered capture.

    With ``only_mac`` set the board captures as a host on a switch port does:
    frames it sends, frames addressed to it, and broadcast/multicast frames.
    Without it the board sees everything (a mirror port or a hub).
    """

    def __init__(self, seconds: float, only_mac: int | None = None) -> None:
        self.seconds = float(seconds)
        self.only_mac = only_mac
        self.blocks: list[Block] = []

    def add(self, t: np.ndarray, frames: Frames, label: int | str, role: str) -> None:
        t = np.asarray(t, dtype=np.float64)
        if len(t) != len(frames):
            raise ValueError(f"{role}: {len(t)} times for {len(frames)} frames")
        if isinstance(label, str):
            label = LABELS.index(label)
        if self.only_mac is not None and len(t):
            mine = np.frombuffer(self.only_mac.to_bytes(6, "big"), dtype=np.uint8)
            rows = frames.rows
            seen = (rows[:, 0] & 1).astype(bool)  # group address: broadcast or multicast
            seen |= (rows[:, 0:6] == mine).all(axis=1) | (rows[:, 6:12] == mine).all(axis=1)
            if not seen.all():
                t, frames = t[seen], frames.take(seen)
        if len(t):
            self.blocks.append(Block(t, frames, int(label), role))

    def __len__(self) -> int:
        return sum(len(b) for b in self.blocks)

    def merge(self, base_us: int) -> Merged:
        blocks = self.blocks
        sizes = np.array([len(b) for b in blocks], dtype=np.int64)
        if not blocks:
            empty = FrameBatch.from_frames([], [])
            return Merged(empty, np.zeros(0, np.int8), np.zeros(0, np.int32), ())
        t = np.concatenate([b.t for b in blocks])
        t_us = np.floor(t * 1e6 + 0.5).astype(np.int64)
        keep = np.flatnonzero((t_us >= 0) & (t_us < int(self.seconds * 1e6)))
        # Sort on the exact times (rounding is monotonic, so microseconds come out sorted too):
        # two packets in the same microsecond keep their true order.
        order = keep[np.argsort(t[keep], kind="stable")]

        block_of = np.repeat(np.arange(len(blocks)), sizes)[order]
        first_row = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        row = order - first_row[block_of]
        length = np.concatenate([b.frames.length for b in blocks])[order]
        widths = np.array([b.frames.rows.shape[1] for b in blocks], dtype=np.int64)
        start = row * widths[block_of]

        # One memoryview slice per frame, joined once: faster than byte-level fancy indexing.
        views = [memoryview(np.ascontiguousarray(b.frames.rows).reshape(-1)) for b in blocks]
        buf = b"".join([views[k][s : s + n] for k, s, n in zip(block_of.tolist(), start.tolist(), length.tolist())])
        n = len(order)
        offset = np.zeros(n, dtype=np.int64)
        if n:
            offset[1:] = np.cumsum(length)[:-1]
        batch = FrameBatch(
            index=np.arange(n, dtype=np.int64),
            ts=(base_us + t_us[order]) / 1e6,
            wire_len=length.copy(),
            cap_len=length,
            offset=offset,
            linktype=np.full(n, LINKTYPE_ETHERNET, dtype=np.uint16),
            buf=np.frombuffer(buf, dtype=np.uint8),
        )
        roles = tuple(sorted({b.role for b in blocks}))
        role_of_block = np.array([roles.index(b.role) for b in blocks], dtype=np.int32)
        labels = np.array([b.label for b in blocks], dtype=np.int8)[block_of]
        return Merged(batch, labels, role_of_block[block_of], roles)


# ---------------------------------------------------------------- timing patterns


def periodic(rng: np.random.Generator, start: float, stop: float, period: float, jitter: float = 0.05) -> np.ndarray:
    """Events every ``period`` seconds (random phase), each moved by Gaussian jitter (fraction of the period)."""
    if stop <= start or period <= 0:
        return np.zeros(0)
    n = int((stop - start) / period) + 2
    t = start + rng.uniform(0, period) + period * np.arange(n) + rng.normal(0, jitter * period, n)
    return np.sort(t[(t >= start) & (t < stop)])


def poisson(rng: np.random.Generator, start: float, stop: float, rate: float) -> np.ndarray:
    if stop <= start or rate <= 0:
        return np.zeros(0)
    n = rng.poisson(rate * (stop - start))
    return np.sort(rng.uniform(start, stop, n))


def flood_times(
    rng: np.random.Generator,
    start: float,
    stop: float,
    rate: float,
    jitter: float = 0.35,
    drift: float = 0.15,
    stall_rate: float = 2.0,
) -> np.ndarray:
    """Send times of a loop calling sendto as fast as the CPU and NIC allow, about ``rate`` per second.

    Gaps are lognormal around 1/rate; the rate wanders around its mean (an AR(1)
    process on its logarithm, one step per ~0.25 s, ``drift`` its spread) and
    the process stalls now and then (``stall_rate`` per second, about 20 ms
    each: scheduling, softirq load).
    """
    if stop <= start or rate <= 0:
        return np.zeros(0)
    per_step = max(1, int(rate * 0.25))
    level = 0.0
    chunks = []
    t0 = start
    while t0 < stop:
        n = int(min(rate * (stop - t0) * 1.3 + 32, 2_000_000))
        steps = n // per_step + 1
        log_rate = np.empty(steps)
        for k in range(steps):  # a few steps per second: cheap
            level = 0.8 * level + rng.normal(0, drift * 0.6)
            log_rate[k] = level
        factor = np.exp(log_rate - drift**2 / 2)[np.arange(n) // per_step]
        gaps = rng.lognormal(-(jitter**2) / 2, jitter, n) / (rate * factor)
        stalls = rng.random(n) < stall_rate / rate
        gaps[stalls] += rng.exponential(0.02, int(stalls.sum()))
        t = t0 + np.cumsum(gaps)
        chunks.append(t[t < stop])
        t0 = float(t[-1])
    return np.concatenate(chunks)


def burst_times(rng: np.random.Generator, at: float, count: int, gap: float) -> np.ndarray:
    """``count`` packets sent back to back from ``at``, gaps exponential around ``gap`` seconds."""
    return at + np.cumsum(rng.exponential(gap, count))
