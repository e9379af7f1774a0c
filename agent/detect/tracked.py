"""Tracked keys of the decision stage: decayed sums of packets, class scores and evidence columns per key.

A ``Tracked`` table is what the decision stage keeps per source, target, pair, initiator or link: the same
exact, vectorised decayed sums as the features, over one half-life, plus a little bookkeeping per key.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass, field

import numpy as np

from agent import native
from agent.capture.packets import LABELS
from agent.features.decayed_sums import Segments, decayed_sums, running_time
from agent.features.stream_table import StreamTable

N_CLASSES = len(LABELS)

# State columns: decayed sums first (weight, class scores, the table's evidence columns), then
# bookkeeping: lifetime packet count, start of the current episode (the first packet after a quiet
# spell), class reported last (-1: none), bit set of reported classes.
_W = 0
_BOOK = ("count", "episode", "hostile", "reported")


@dataclass
class Tracked:
    """Decayed sums of packets, their class scores (unless ``with_scores`` is off) and ``extras`` evidence
    columns for a set of keys."""

    budget: int
    half_life_s: float
    extras: tuple[str, ...]
    with_scores: bool = True
    table: StreamTable = field(init=False)

    def __post_init__(self) -> None:
        # The attack classes' scores only: a benign average is never asked for.
        self.scores = slice(1, 1 + (N_CLASSES - 1 if self.with_scores else 0))
        self.n_sums = self.scores.stop + len(self.extras)
        self.col = {name: self.n_sums + i for i, name in enumerate(_BOOK)}
        init = np.zeros(self.n_sums + len(_BOOK))
        init[_W] = 1e-20
        init[self.col["hostile"]] = -1
        self.table = StreamTable(self.budget, init)
        self.lam = 1.0 / self.half_life_s
        self._kernel = _kernel()  # the compiled sums (agent/native/decide.c), or None: numpy
        self._sort = sort_kernel()  # the compiled key sort, or None: numpy

    def update(self, keys: np.ndarray, t: np.ndarray, scores: np.ndarray | None, extra: np.ndarray) -> dict:
        """Per packet (in key order): decayed weight, score averages, evidence shares, counts."""
        order = argsort_keys(keys, self._sort)
        sorted_keys = keys[order]
        seg = Segments.from_sorted(sorted_keys)
        slots, is_new = self.table.lookup(sorted_keys[seg.start], t[order[seg.start]])
        state = self.table.state[slots]
        t_init = self.table.t_last[slots]
        # Sums and their ratios to the weight column by column ((columns, n)): the rules read them a column at a time.
        if self._kernel is not None and len(keys) and self.n_sums <= _MAX_SUMS:
            ts, T, sums, ratio, count, episode = self._sums_native(self._kernel, order, seg, t, scores, extra, state,
                                                                   t_init)
        else:
            ts, T, sums, ratio, count, episode = self._sums_numpy(order, seg, t, scores, extra, state, t_init)
        weight = sums[_W]
        n_scores = self.scores.stop - 1
        return {
            "order": order,
            "seg": seg,
            "slots": slots,
            "state": state,
            "t": ts,
            "T": T,
            "weight": weight,
            "avg": ratio[:n_scores].T,  # attack classes 1.. of LABELS
            "shares": ratio[n_scores:].T,  # extras, as decayed shares of the key's packets
            "extra_weight": sums[self.scores.stop :].T,  # extras as decayed counts
            "count": count,
            "episode": episode,
            "sums": sums.T,
        }

    def _sums_native(self, kernel, order, seg, t, scores, extra, state, t_init) -> tuple:
        """The decayed sums, times, counts and episodes of ``update`` through agent/native/decide.c."""
        n, q = len(order), self.n_sums
        ts, T, count, episode = np.empty(n), np.empty(n), np.empty(n), np.empty(n)
        sums, ratio = np.empty((q, n)), np.empty((q - 1, n))
        if self.with_scores:
            scores = np.ascontiguousarray(scores, dtype=np.float64)
            score_width, n_scores = scores.shape[1], self.scores.stop - 1
        else:
            scores, score_width, n_scores = _NO_SCORES, 0, 0
        extra = np.ascontiguousarray(extra, dtype=np.float64)
        start, length, order = (np.ascontiguousarray(a, dtype=np.int64) for a in (seg.start, seg.length, order))
        kernel(n, len(seg), start, length, order, np.ascontiguousarray(t, dtype=np.float64), scores,
               score_width, n_scores, extra, extra.shape[1] if extra.ndim == 2 else 0, t_init, state, state.shape[1],
               self.col["count"], self.col["episode"], self.lam, ts, T, sums, ratio, count, episode)  # fmt: skip
        return ts, T, sums, ratio, count, episode

    def _sums_numpy(self, order, seg, t, scores, extra, state, t_init) -> tuple:
        """The decayed sums, times, counts and episodes of ``update`` with numpy (segmented prefix sums)."""
        ts = t[order]
        T = running_time(ts, t_init, seg)
        terms = np.empty((len(ts), 1, self.n_sums))
        terms[:, 0, _W] = 1.0
        if self.with_scores:
            terms[:, 0, self.scores] = scores[order, 1:]
        terms[:, 0, self.scores.stop :] = extra[order]
        sums = decayed_sums(seg, T, np.array([self.lam]), terms, state[:, None, : self.n_sums], t_init)[:, 0, :]
        weight = sums[:, _W]
        count = np.arange(1, len(ts) + 1) - np.repeat(seg.start, seg.length) + state[seg.ids, self.col["count"]]
        # An episode starts at a packet that finds less than half a packet of recent weight.
        starts = (weight - 1.0) < 0.5
        marked = starts | seg.first_mask(len(ts))
        last_mark = np.maximum.accumulate(np.where(marked, np.arange(len(ts)), 0))
        episode = np.where(starts[last_mark], ts[last_mark], state[seg.ids, self.col["episode"]])
        sums = np.ascontiguousarray(sums.T)
        ratio = sums[1:] / sums[_W]  # score averages, then evidence shares
        return ts, T, sums, ratio, count, episode

    def recent(self, keys: np.ndarray, t: np.ndarray, name: str) -> np.ndarray:
        """Evidence column ``name`` of each of ``keys`` as a decayed count at times ``t``, as the table holds it
        (0 for a key it does not hold): a read, nothing is added or touched."""
        slots = self.table.find(keys)
        held = slots >= 0
        out = np.zeros(len(keys))
        s = slots[held]
        column = self.scores.stop + self.extras.index(name)
        quiet = np.maximum(t[held] - self.table.t_last[s], 0.0)
        out[held] = self.table.state[s, column] * np.exp2(-self.lam * quiet)
        return out

    def per_packet(self, r: dict, values: np.ndarray) -> np.ndarray:
        """``values`` given in the key order of ``r`` back in packet order."""
        out = np.empty_like(values)
        out[r["order"]] = values
        return out

    def store(self, r: dict) -> None:
        state, last = r["state"], r["seg"].last
        state[:, : self.n_sums] = r["sums"].T[:, last].T  # (the sums are held column by column)
        state[:, self.col["count"]] = r["count"][last]
        state[:, self.col["episode"]] = r["episode"][last]
        self.table.state[r["slots"]] = state
        self.table.t_last[r["slots"]] = r["T"][last]


_NO_SCORES = np.zeros((1, 1))
_MAX_SUMS = 64  # TRACKED_MAX_SUMS in decide.c


def _kernel():
    """agent/native/decide.c's ``iotguard_tracked_sums_by_column`` (its signature declared here, where it is
    called), or None: the numpy path runs (no compiled kernels, IOTGUARD_NATIVE=off, or a build lacking it)."""
    v = native
    return v.function("iotguard_tracked_sums_by_column", [v.n, v.n, v.i64, v.i64, v.i64, v.f64, v.f64, v.n, v.n, v.f64,
                                                           v.n, v.f64, v.f64, v.n, v.n, v.n, ctypes.c_double, v.f64,
                                                           v.f64, v.f64, v.f64, v.f64, v.f64])  # fmt: skip


def sort_kernel():
    """agent/native/decide.c's ``iotguard_argsort_keys``, or None (numpy sorts)."""
    v = native
    return v.function("iotguard_argsort_keys", [v.n, v.u64, v.i64, v.u64, v.i64])


def argsort_keys(keys: np.ndarray, kernel) -> np.ndarray:
    """``np.argsort(keys, kind="stable")``; for 64-bit keys through ``kernel`` (``sort_kernel``: a radix sort)
    unless it is None (the same permutation: a stable sort has only one)."""
    if kernel is None or keys.dtype != np.uint64 or len(keys) < 64:
        return np.argsort(keys, kind="stable")
    keys = np.ascontiguousarray(keys)
    order = np.empty(len(keys), dtype=np.int64)
    kernel(len(keys), keys, order, np.empty(2 * len(keys), dtype=np.uint64), np.empty(len(keys), dtype=np.int64))
    return order
