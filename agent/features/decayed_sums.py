"""Segmented, exponentially decayed prefix sums: the numeric core of the batch feature engine.

Every N-BaIoT statistic is a linear recurrence per stream:
``S_k = 2^(-lam (T_k - T_{k-1})) S_{k-1} + c_k``.  Unrolled, ``S_k`` is
``2^(-lam T_k) * sum_j c_j 2^(lam T_j)``, a prefix sum of scaled terms, which
numpy computes for a whole batch at once.  Two details keep it exact:

* the scale ``2^(lam T)`` overflows for long spans, so time is cut into blocks
  of at most ``BLOCK_BITS`` bits of decay at the fastest rate; within a block
  the terms are scaled relative to the block start, and the carry from earlier
  blocks is chained block by block (a short loop over block rank);
* segments (one per stream) are summed separately, never by subtracting a
  global cumulative sum, whose rounding error would swamp small streams.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BLOCK_BITS = 500.0  # 2^500 stays far from float64 overflow (2^1024) even times large sums


@dataclass
class Segments:
    """Contiguous runs of a sorted array: run ``i`` covers ``start[i] : start[i] + length[i]``."""

    start: np.ndarray  # int64
    length: np.ndarray  # int64
    ids: np.ndarray  # int64, the run of every element

    @classmethod
    def from_sorted(cls, sorted_keys: np.ndarray) -> "Segments":
        n = len(sorted_keys)
        is_start = np.ones(n, dtype=bool)
        if n:
            is_start[1:] = sorted_keys[1:] != sorted_keys[:-1]
        return cls.from_starts(is_start)

    @classmethod
    def from_starts(cls, is_start: np.ndarray) -> "Segments":
        start = np.flatnonzero(is_start)
        n = len(is_start)
        length = np.diff(np.append(start, n))
        ids = np.cumsum(is_start) - 1
        return cls(start=start, length=length, ids=ids)

    def __len__(self) -> int:
        return len(self.start)

    @property
    def last(self) -> np.ndarray:
        return self.start + self.length - 1

    def first_mask(self, n: int) -> np.ndarray:
        mask = np.zeros(n, dtype=bool)
        mask[self.start] = True
        return mask


def segmented_accumulate(ufunc: np.ufunc, values: np.ndarray, seg: Segments, in_place: bool = False) -> np.ndarray:
    """``ufunc.accumulate`` along axis 0 restarted at every segment, without mixing segments.

    Segments are grouped by length class (powers of two) and padded into a
    2-D block per class, so each class costs a handful of numpy calls.
    """
    out = values if in_place else values.copy()
    if len(values) == 0:
        return out
    long_runs = seg.length > 1
    if not long_runs.any():
        return out
    starts, lengths = seg.start[long_runs], seg.length[long_runs]
    width_class = np.ceil(np.log2(lengths)).astype(np.int64)
    last = len(values) - 1
    for c in np.unique(width_class):
        pick = width_class == c
        s, ln = starts[pick], lengths[pick]
        width = 1 << int(c)
        offsets = np.arange(width)
        idx = s[:, None] + offsets[None, :]
        valid = offsets[None, :] < ln[:, None]
        # Padding sits after each run's last element, so whatever it holds never reaches a valid result.
        block = values[np.minimum(idx, last)]
        acc = ufunc.accumulate(block, axis=1)
        out[idx[valid]] = acc[valid]
    return out


def running_time(t: np.ndarray, t_init: np.ndarray, seg: Segments) -> np.ndarray:
    """``max(t_init, t_0..t_k)`` per segment: the time a stream has been decayed to (DESIGN 4)."""
    if len(t) == 0:
        return t.copy()
    base = np.maximum(t, t_init[seg.ids])
    in_order = np.ones(len(t), dtype=bool)
    in_order[1:] = t[1:] >= t[:-1]
    in_order[seg.start] = True
    if in_order.all():  # the usual case: timestamps already non-decreasing per stream
        return base
    return segmented_accumulate(np.maximum, base, seg)


def previous_time(T: np.ndarray, t_init: np.ndarray, seg: Segments) -> np.ndarray:
    """The time each stream had been decayed to just before each packet (its ``t_last``)."""
    before = np.empty(len(T))
    before[1:] = T[:-1]
    before[seg.start] = t_init
    return before


def decayed_sums(
    seg: Segments,
    T: np.ndarray,
    lambdas: np.ndarray,
    terms: np.ndarray,
    init: np.ndarray,
    t_init: np.ndarray,
) -> np.ndarray:
    """Decayed prefix sums per segment.

    seg     segments of the (sorted) packets, one per stream
    T       (n,) time each packet decays its stream to (``running_time``)
    lambdas (L,) decay rates
    terms   (n, L, q) what each packet adds, per rate and quantity ((n, 1, q): the same for all rates)
    init    (k, L, q) each stream's stored state, valid at time ``t_init``
    Returns (n, L, q): every stream's state right after each packet.
    """
    n, _, q = terms.shape
    L = len(lambdas)
    if n == 0:
        return np.zeros((0, L, q))
    lam = lambdas[None, :, None]
    lam_max = float(lambdas.max())
    t_ref = T[seg.start]  # first packet's time per segment
    # Stored state decayed to the segment's first packet (may underflow to 0: correct).
    start_state = init * np.exp2(-lam * (t_ref - t_init)[:, None, None])

    block = np.floor(lam_max * (T - t_ref[seg.ids]) / BLOCK_BITS).astype(np.int64)
    if block.any():
        is_start = seg.first_mask(n)
        is_start[1:] |= block[1:] != block[:-1]
        sub = Segments.from_starts(is_start)
    else:
        sub = seg
    sub_parent = seg.ids[sub.start]  # segment of each block
    t_block = t_ref[sub_parent] + block[sub.start] * (BLOCK_BITS / lam_max)

    dt = (T - t_block[sub.ids])[:, None]
    scale = np.exp2(lambdas[None, :] * dt)[:, :, None]  # (n, L, 1), between 1 and 2^BLOCK_BITS
    scaled = terms * scale
    if sub is seg:  # one block per stream (the usual case): the stored state is the first term
        scaled[seg.start] += start_state
        return segmented_accumulate(np.add, scaled, seg, in_place=True) / scale
    local = segmented_accumulate(np.add, scaled, sub, in_place=True)

    # Carry into each block: everything before it, decayed to the block start.
    carry = np.zeros((len(sub), L, q))
    first_block = np.ones(len(sub), dtype=bool)
    first_block[1:] = sub_parent[1:] != sub_parent[:-1]
    carry[first_block] = start_state[sub_parent[first_block]]
    if not first_block.all():
        rank = np.arange(len(sub)) - np.maximum.accumulate(np.where(first_block, np.arange(len(sub)), 0))
        local_total = local[sub.last]
        t_last = T[sub.last]
        for r in range(1, int(rank.max()) + 1):
            cur = np.flatnonzero(rank == r)
            prev = cur - 1
            # Decay in two steps, through the state at the previous block's last packet: one
            # factor for the whole gap could underflow although the true value does not.
            at_last = (carry[prev] + local_total[prev]) * np.exp2(-lam * (t_last[prev] - t_block[prev])[:, None, None])
            carry[cur] = at_last * np.exp2(-lam * (t_block[cur] - t_last[prev])[:, None, None])
    return (carry[sub.ids] + local) / scale
