"""Tracked keys of the decision stage: decayed sums of packets, class scores and evidence columns per key.

A ``Tracked`` table is what the decision stage keeps per source, target, pair, initiator or link: the same
exact, vectorised decayed sums as the features, over one half-life, plus a little bookkeeping per key.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

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

    def update(self, keys: np.ndarray, t: np.ndarray, scores: np.ndarray | None, extra: np.ndarray) -> dict:
        """Per packet (in key order): decayed weight, score averages, evidence shares, counts."""
        order = np.argsort(keys, kind="stable")
        seg = Segments.from_sorted(keys[order])
        ts = t[order]
        slots, is_new = self.table.lookup(keys[order][seg.start], ts[seg.start])
        state = self.table.state[slots]
        t_init = self.table.t_last[slots]
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
        return {
            "order": order,
            "seg": seg,
            "slots": slots,
            "state": state,
            "t": ts,
            "T": T,
            "weight": weight,
            "avg": sums[:, self.scores] / weight[:, None],  # attack classes 1.. of LABELS
            "shares": sums[:, self.scores.stop :] / weight[:, None],  # extras, as decayed shares of the key's packets
            "extra_weight": sums[:, self.scores.stop :],  # extras as decayed counts
            "count": count,
            "episode": episode,
            "sums": sums,
        }

    def per_packet(self, r: dict, values: np.ndarray) -> np.ndarray:
        """``values`` given in the key order of ``r`` back in packet order."""
        out = np.empty_like(values)
        out[r["order"]] = values
        return out

    def store(self, r: dict) -> None:
        state, last = r["state"], r["seg"].last
        state[:, : self.n_sums] = r["sums"][last]
        state[:, self.col["count"]] = r["count"][last]
        state[:, self.col["episode"]] = r["episode"][last]
        self.table.state[r["slots"]] = state
        self.table.t_last[r["slots"]] = r["T"][last]
