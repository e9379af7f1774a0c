"""Vectorised N-BaIoT feature engine with bounded stream tables (DESIGN 4).

For each batch and each stream table the packets are sorted by stream, each
stream's damped statistics are computed for all its packets at once with
decayed prefix sums (``decayed_sums``), and the final state goes back into a
fixed-budget ``StreamTable``.  The result equals the sequential definition
(``agent.features.reference``) up to floating-point rounding.

Pair groups (HH, HpHp) keep one table entry per unordered stream pair, with
the statistics of both directions and the shared covariance state, so both
sides of a conversation are evicted together.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from agent import native
from agent.capture.packets import L3_ARP, L3_OTHER, PORT_NUMBER, PacketBatch
from agent.features.columns import LAMBDAS, N_FEATURES
from agent.features.decayed_sums import Segments, decayed_sums, previous_time, running_time
from agent.features.stream_table import StreamTable
from agent.util import hash_words

W_INIT = 1e-20
LAM = np.asarray(LAMBDAS)
NL = len(LAMBDAS)


# The stream tables (DESIGN 4), in column order, with a rough cost per entry: 5 decay rates x (w, LS, SS,
# t_last) float64 plus key and index overhead; paired tables also hold the pair state (CF3, w3, t3, r_A, r_B).
ENTRY_BYTES: dict[str, int] = {"mi_dir": 256, "h": 256, "hh": 512, "hh_jit": 256, "hphp": 512}


@dataclass(frozen=True)
class Budgets:
    """Entries per stream table (a firmware profile's [budgets]); the engine evicts beyond these."""

    mi_dir: int = 100_000
    h: int = 100_000
    hh: int = 100_000
    hh_jit: int = 100_000
    hphp: int = 100_000

    @property
    def smallest(self) -> int:
        return min(self.mi_dir, self.h, self.hh, self.hh_jit, self.hphp)

    def estimated_mb(self) -> float:
        return sum(getattr(self, t) * cost for t, cost in ENTRY_BYTES.items()) / 2**20


# --- stream keys -------------------------------------------------------------

@dataclass
class StreamKeys:
    mi: np.ndarray
    h: np.ndarray
    hh_a: np.ndarray  # srcIP -> dstIP
    hh_b: np.ndarray  # its reverse
    hphp_a: np.ndarray
    hphp_b: np.ndarray


def stream_keys(batch: PacketBatch) -> StreamKeys:
    """64-bit hashes of the DESIGN 4 stream keys (collisions: about 2^-64 per pair of streams)."""
    is_mac = batch.l3 == L3_OTHER  # frames with neither IP nor ARP: the MACs stand in for IPs
    mac_tag = is_mac.astype(np.uint64)
    src = hash_words(1, mac_tag, np.where(is_mac, 0, batch.src_ip_hi), np.where(is_mac, batch.src_mac, batch.src_ip_lo))
    dst = hash_words(1, mac_tag, np.where(is_mac, 0, batch.dst_ip_hi), np.where(is_mac, batch.dst_mac, batch.dst_ip_lo))
    # Port words: the number for TCP/UDP, else 65536 + port_kind ("arp", "icmp", "").
    special = np.uint64(65536) + batch.port_kind.astype(np.uint64)
    has_port = batch.port_kind == PORT_NUMBER
    sport = np.where(has_port, batch.sport.astype(np.uint64), special)
    dport = np.where(has_port, batch.dport.astype(np.uint64), special)
    is_arp = batch.l3 == L3_ARP
    hphp_a = np.where(is_arp, hash_words(5, batch.src_mac, batch.dst_mac), hash_words(4, src, sport, dst, dport))
    hphp_b = np.where(is_arp, hash_words(5, batch.dst_mac, batch.src_mac), hash_words(4, dst, dport, src, sport))
    return StreamKeys(
        mi=hash_words(2, batch.src_mac, src),
        h=src,
        hh_a=hash_words(3, src, dst),
        hh_b=hash_words(3, dst, src),
        hphp_a=hphp_a,
        hphp_b=hphp_b,
    )


# --- tables ------------------------------------------------------------------


def _group_by(keys: np.ndarray) -> tuple[np.ndarray, Segments]:
    order = np.argsort(keys, kind="stable")  # stable: packets of a stream stay in time order
    return order, Segments.from_sorted(keys[order])


def _packet_slots(table: StreamTable, keys: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For the compiled kernel: each packet's table slot, whether it opened a new entry, and the new slots."""
    slots = table.find(keys)
    opened = np.zeros(len(keys), dtype=np.uint8)
    missing = np.flatnonzero(slots < 0)
    if not len(missing):
        return slots, opened, missing
    new_keys, first, inverse = np.unique(keys[missing], return_index=True, return_inverse=True)  # first: stable
    new_slots = table.insert(new_keys, t[missing[first]], protected=slots[slots >= 0])
    slots[missing] = new_slots[inverse.reshape(-1)]
    opened[missing[first]] = 1
    return slots, opened, new_slots


def _unsort(rows: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Rows computed in ``order`` back in packet order."""
    inverse = np.empty_like(order)
    inverse[order] = np.arange(len(order))
    return rows.take(inverse, axis=0)


def _mean_var(w: np.ndarray, ls: np.ndarray, ss: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with np.errstate(divide="ignore", invalid="ignore"):
        mu = np.where(w > 0, ls / w, 0.0)
        var = np.where(w > 0, np.abs(ss / w - mu * mu), 0.0)
    return mu, var


class SingleStreams:
    """MI_dir, H and HH_jit: one stream per key. State columns: w, LS, SS (per lambda)."""

    def __init__(self, budget: int, jitter: bool = False, index: str = "auto") -> None:
        self.jitter = jitter
        init = np.zeros((3, NL))
        init[0] = W_INIT
        self.table = StreamTable(budget, init.ravel(), index)

    def update(self, keys: np.ndarray, t: np.ndarray, x: np.ndarray) -> np.ndarray:
        """(n, 3 * L) columns weight, mean, variance per lambda, in packet order."""
        n = len(keys)
        order, seg = _group_by(keys)
        ts = t[order]
        slots, is_new = self.table.lookup(keys[order][seg.start], ts[seg.start])
        if self.jitter:  # a new jitter stream starts at t_last = 0, so its first value is t itself
            self.table.t_last[slots[is_new]] = 0.0
        t_init = self.table.t_last[slots]
        T = running_time(ts, t_init, seg)
        if self.jitter:
            xs = np.maximum(ts - previous_time(T, t_init, seg), 0.0)
        else:
            xs = x[order]
        terms = np.stack([np.ones(n), xs, xs * xs], axis=-1)[:, None, :]  # the same for every lambda
        init = self.table.state[slots].reshape(-1, 3, NL).transpose(0, 2, 1)
        sums = decayed_sums(seg, T, LAM, terms, init, t_init)  # (n, L, 3)
        last = seg.last
        self.table.state[slots] = sums[last].transpose(0, 2, 1).reshape(len(slots), -1)
        self.table.t_last[slots] = T[last]
        w, ls, ss = sums[..., 0], sums[..., 1], sums[..., 2]
        mu, var = _mean_var(w, ls, ss)
        stats = np.empty((n, NL, 3))
        stats[..., 0], stats[..., 1], stats[..., 2] = w, mu, var
        return _unsort(stats.reshape(n, 3 * NL), order)

    def update_native(self, kernel: "_Kernel", keys: np.ndarray, t: np.ndarray, x: np.ndarray, out: np.ndarray, column: int) -> None:
        """``update`` through the compiled kernel, written into ``out[:, column : column + 3 * L]``."""
        slots, _, new_slots = _packet_slots(self.table, keys, t)
        if self.jitter:
            self.table.t_last[new_slots] = 0.0
        kernel.single(len(keys), t, x, slots, int(self.jitter), self.table.state, self.table.t_last, LAM, NL,
                      native.out_pointer(out, column), out.shape[1])


# Pair table state columns (each block of NL values, one per lambda).
# Sums per direction, last residual per direction, covariance sums, and each direction's mean and
# variance at its last own packet (decay leaves them unchanged; kept so they survive underflow).
_W0, _LS0, _SS0, _W1, _LS1, _SS1, _R0, _R1, _CF3, _W3, _MU0, _VAR0, _MU1, _VAR1 = range(14)
_WIDTH = 14


class PairStreams:
    """HH and HpHp: directed streams paired with their reverse, one entry per unordered pair."""

    def __init__(self, budget: int, index: str = "auto") -> None:
        init = np.zeros((_WIDTH, NL))
        init[[_W0, _W1, _W3]] = W_INIT
        self.table = StreamTable(budget, init.ravel(), index)

    def update(self, key_a: np.ndarray, key_b: np.ndarray, t: np.ndarray, x: np.ndarray) -> np.ndarray:
        """(n, 7 * L) columns weight, mean, std, magnitude, radius, covariance, pcc per lambda."""
        n = len(key_a)
        # Direction 0 is the stream with the smaller key; a stream paired with itself is direction 0.
        pair_key, direction, self_paired = _pairing(key_a, key_b)
        direction = direction.astype(np.int64)
        order, seg = _group_by(pair_key)  # "pair order": by pair, then time
        ts, xs, d, selfp = t[order], x[order], direction[order], self_paired[order]
        slots, is_new = self.table.lookup(pair_key[order][seg.start], ts[seg.start])
        t_init = self.table.t_last[slots]
        state = self.table.state[slots].reshape(-1, _WIDTH, NL)
        dir_state = state[:, : 2 * 3].reshape(-1, 2, 3, NL).transpose(0, 1, 3, 2)  # (k, dir, L, 3)
        # Every packet of a pair decays both directions, so one clock per pair.
        T = running_time(ts, t_init, seg)

        # Each direction's own statistics, computed over that direction's packets ("direction order").
        by_dir = np.argsort(seg.ids * 2 + d, kind="stable")
        dseg = Segments.from_sorted((seg.ids * 2 + d)[by_dir])
        dseg_pair = seg.ids[by_dir][dseg.start]
        dseg_dir = d[by_dir][dseg.start]
        xd = xs[by_dir]
        terms = np.stack([np.ones(n), xd, xd * xd], axis=-1)[:, None, :]
        own = decayed_sums(dseg, T[by_dir], LAM, terms, dir_state[dseg_pair, dseg_dir], t_init[dseg_pair])
        mine = np.empty_like(own)
        mine[by_dir] = own  # back to pair order: (n, L, 3)
        mu_a, var_a = _mean_var(mine[..., 0], mine[..., 1], mine[..., 2])

        # Where each packet's reverse stream last had a packet of its own.
        pos = np.arange(n)
        last_of = [np.maximum.accumulate(np.where(d == k, pos, -1)) for k in (0, 1)]
        j = np.where(d == 0, last_of[1], last_of[0])
        mu_b, var_b = _reverse_moments(j, d, selfp, seg, mu_a, var_a, state)
        resid = xs[:, None] - mu_a  # (n, L)
        r_other = _reverse_residual(j, d, selfp, seg, resid, state, T, t_init)
        sp = selfp[:, None]

        # The pair update runs once for the packet that creates the pair, twice afterwards.
        created = np.zeros(n, dtype=bool)
        created[seg.start[is_new]] = True
        repeats = np.where(created, 1.0, 2.0)[:, None]
        second = np.where(sp, resid * resid, resid * r_other)  # the second run sees r_A = r
        cf_terms = resid * r_other + (repeats - 1.0) * second
        pair_terms = np.stack([cf_terms, np.broadcast_to(repeats, cf_terms.shape)], axis=-1)
        pair_init = state[:, [_CF3, _W3]].transpose(0, 2, 1)
        pair_sums = decayed_sums(seg, T, LAM, pair_terms, pair_init, t_init)
        cov = pair_sums[..., 0] / pair_sums[..., 1]

        # Store every pair's final state, both directions decayed to the pair's last time.
        t_end = T[seg.last]
        new_dir = dir_state * np.exp2(-LAM[None, None, :, None] * (t_end - t_init)[:, None, None, None])
        own_last = own[dseg.last] * np.exp2(-LAM[None, :, None] * (t_end[dseg_pair] - T[by_dir][dseg.last])[:, None, None])
        new_dir[dseg_pair, dseg_dir] = own_last
        new_state = state  # a copy already (fancy indexing above)
        new_state[:, : 2 * 3] = new_dir.transpose(0, 1, 3, 2).reshape(-1, 2 * 3, NL)
        new_state[:, [_CF3, _W3]] = pair_sums[seg.last].transpose(0, 2, 1)
        for k, r_col, mu_col, var_col in ((0, _R0, _MU0, _VAR0), (1, _R1, _MU1, _VAR1)):
            jl = last_of[k][seg.last]
            has = jl >= seg.start
            new_state[has, r_col] = resid[jl[has]]
            new_state[has, mu_col] = mu_a[jl[has]]
            new_state[has, var_col] = var_a[jl[has]]
        self.table.state[slots] = new_state.reshape(len(slots), -1)
        self.table.t_last[slots] = t_end

        return _unsort(_pair_columns(mine[..., 0], mu_a, var_a, mu_b, var_b, cov).reshape(n, 7 * NL), order)

    def update_native(self, kernel: "_Kernel", key_a: np.ndarray, key_b: np.ndarray, t: np.ndarray, x: np.ndarray, out: np.ndarray,
                      column: int) -> None:
        """``update`` through the compiled kernel, written into ``out[:, column : column + 7 * L]``."""
        pair_key, direction, self_paired = _pairing(key_a, key_b)
        slots, created, _ = _packet_slots(self.table, pair_key, t)
        kernel.pair(len(key_a), t, x, slots, direction.view(np.uint8), self_paired.view(np.uint8), created,
                    self.table.state, self.table.t_last, LAM, NL, native.out_pointer(out, column), out.shape[1])


def _pairing(key_a: np.ndarray, key_b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per packet: its pair's key (one per unordered stream pair), its direction in the pair (True: 1, the
    stream with the larger key) and whether the stream is its own reverse (then direction 0)."""
    return hash_words(6, np.minimum(key_a, key_b), np.maximum(key_a, key_b)), key_a > key_b, key_a == key_b


def _reverse_moments(j: np.ndarray, d: np.ndarray, selfp: np.ndarray, seg: Segments, mu_a: np.ndarray,
                     var_a: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance of each packet's reverse stream (pair order; ``j``: the reverse stream's last own
    packet in the batch).  Decay does not change a stream's mean and variance, so the reverse side's are those
    of its last own packet, even when its weight has since decayed below what a float can hold."""
    in_batch = j >= seg.start[seg.ids]
    stored = state[:, _MU0:].reshape(-1, 2, 2, NL).transpose(0, 1, 3, 2)  # (k, dir, L, mean/var)
    moments_at_j = np.stack([mu_a, var_a], axis=-1)[np.maximum(j, 0)]
    other = np.where(in_batch[:, None, None], moments_at_j, stored[seg.ids, 1 - d])
    mu_b, var_b = other[..., 0], other[..., 1]
    sp = selfp[:, None]
    return np.where(sp, mu_a, mu_b), np.where(sp, var_a, var_b)


def _reverse_residual(j: np.ndarray, d: np.ndarray, selfp: np.ndarray, seg: Segments, resid: np.ndarray,
                      state: np.ndarray, T: np.ndarray, t_init: np.ndarray) -> np.ndarray:
    """The residual of the reverse direction's last packet before each packet (for a stream paired with
    itself: its own previous one, after the pair decay)."""
    n = len(d)
    pos = np.arange(n)
    seg_first = seg.start[seg.ids]
    prev_pos = np.full(n, -1)
    prev_pos[1:] = np.where(pos[1:] > seg_first[1:], pos[:-1], -1)
    j = np.where(selfp, prev_pos, j)
    in_batch = j >= seg_first
    stored_r = np.where((selfp | (d == 1))[:, None], state[seg.ids, _R0], state[seg.ids, _R1])
    r_other = np.where(in_batch[:, None], resid[np.maximum(j, 0)], stored_r)
    self_decay = np.exp2(-LAM[None, :] * (T - previous_time(T, t_init, seg))[:, None])
    return np.where(selfp[:, None], r_other * self_decay, r_other)


def _pair_columns(weight: np.ndarray, mu_a: np.ndarray, var_a: np.ndarray, mu_b: np.ndarray, var_b: np.ndarray,
                  cov: np.ndarray) -> np.ndarray:
    """(n, L, 7): weight, mean, std, magnitude, radius, covariance, pcc (DESIGN 4)."""
    stats = np.empty(weight.shape + (7,))
    stats[..., 0] = weight
    stats[..., 1] = mu_a
    stats[..., 2] = std_a = np.sqrt(var_a)
    stats[..., 3] = np.sqrt(mu_a * mu_a + mu_b * mu_b)
    stats[..., 4] = np.sqrt(var_a * var_a + var_b * var_b)
    stats[..., 5] = cov
    denom = std_a * np.sqrt(var_b)
    with np.errstate(divide="ignore", invalid="ignore"):
        stats[..., 6] = np.where(denom != 0, cov / denom, 0.0)
    return stats


@dataclass
class _Kernel:
    """The compiled recurrences of agent/native/features.c (signatures declared here, where they are called)."""

    single: object
    pair: object

    @classmethod
    def load(cls) -> "_Kernel | None":
        v = native
        single = v.function("iotguard_single_update", [v.n, v.f64, v.f64, v.i64, v.i32, v.f64, v.f64, v.f64, v.n,
                                                       v.ptr, v.n])  # fmt: skip
        pair = v.function("iotguard_pair_update", [v.n, v.f64, v.f64, v.i64, v.u8, v.u8, v.u8, v.f64, v.f64, v.f64,
                                                   v.n, v.ptr, v.n])  # fmt: skip
        return cls(single, pair) if single and pair else None


@dataclass
class FeatureExtractor:
    """The agent's feature stage: ``update(batch)`` returns (n, 115) float64 features in N-BaIoT order."""

    budgets: Budgets = field(default_factory=Budgets)
    max_batch: int = 8192  # packets per internal step: bounds temporary memory, and stays cache-friendly
    backend: str = "auto"  # "c": the compiled kernel (agent/native), "numpy", or "auto": c when it was built

    def __post_init__(self) -> None:
        if self.backend not in ("auto", "c", "numpy"):
            raise ValueError(f"unknown feature backend {self.backend!r}: auto, c or numpy")
        self._kernel = None if self.backend == "numpy" else _Kernel.load()
        if self.backend == "c" and self._kernel is None:
            raise RuntimeError("the compiled feature kernel is not available (a C compiler builds it at install, see agent/native)")
        b = self.budgets
        index = "sorted" if self.backend == "numpy" else "auto"  # numpy: no compiled part at all
        self.mi = SingleStreams(b.mi_dir, index=index)
        self.h = SingleStreams(b.h, index=index)
        self.hh = PairStreams(b.hh, index)
        self.jit = SingleStreams(b.hh_jit, jitter=True, index=index)
        self.hphp = PairStreams(b.hphp, index)

    def update(self, batch: PacketBatch, out: np.ndarray | None = None) -> np.ndarray:
        """(n, 115) features of the batch.  ``out``: a float64 array of at least n rows to write them into (the
        result is then a view of it): reusing one spares the kernel zeroing tens of megabytes per batch."""
        n = len(batch)
        out = np.empty((n, N_FEATURES)) if out is None or len(out) < n else out[:n]
        # A chunk never holds more streams than the smallest table can take at once.
        step = max(1, min(self.budgets.smallest, self.max_batch))
        for lo in range(0, n, step):
            hi = min(n, lo + step)
            self._update_chunk(batch.take(slice(lo, hi)), out[lo:hi])
        return out

    def _update_chunk(self, batch: PacketBatch, out: np.ndarray) -> None:
        """Features of one chunk, written into ``out`` (a C-contiguous block of rows)."""
        keys = stream_keys(batch)
        t = batch.ts.astype(np.float64)
        x = batch.wire_len.astype(np.float64)
        if self._kernel is not None:
            kernel, c = self._kernel, 3 * NL
            self.mi.update_native(kernel, keys.mi, t, x, out, 0)
            self.h.update_native(kernel, keys.h, t, x, out, c)
            self.hh.update_native(kernel, keys.hh_a, keys.hh_b, t, x, out, 2 * c)
            self.jit.update_native(kernel, keys.hh_a, t, x, out, 2 * c + 7 * NL)
            self.hphp.update_native(kernel, keys.hphp_a, keys.hphp_b, t, x, out, 3 * c + 7 * NL)
            return
        np.concatenate(
            [
                self.mi.update(keys.mi, t, x),
                self.h.update(keys.h, t, x),
                self.hh.update(keys.hh_a, keys.hh_b, t, x),
                self.jit.update(keys.hh_a, t, x),
                self.hphp.update(keys.hphp_a, keys.hphp_b, t, x),
            ],
            axis=1,
            out=out,
        )

    @property
    def tables(self) -> dict[str, StreamTable]:
        return {
            "mi_dir": self.mi.table,
            "h": self.h.table,
            "hh": self.hh.table,
            "hh_jit": self.jit.table,
            "hphp": self.hphp.table,
        }
