"""Scalar reference implementation of the 115 N-BaIoT features (DESIGN 4).

One packet at a time, plain Python floats and dicts, written to be read next
to DESIGN section 4 line by line.  It is slow (a few thousand packets/s) and
unbounded; it exists so that the vectorised engine in ``features.py`` can be
tested against something obviously correct.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from agent.capture.packets import L3_ARP, L3_OTHER, PORT_ARP, PORT_ICMP, PORT_NUMBER, PacketBatch
from agent.features.columns import LAMBDAS

W_INIT = 1e-20


@dataclass
class Stream:
    """Damped statistics of one stream at one decay rate."""

    lam: float
    t_last: float
    w: float = W_INIT
    ls: float = 0.0
    ss: float = 0.0
    last_mean: float = 0.0  # mean and variance right after the last insert (0 before any)
    last_variance: float = 0.0

    def decay(self, t: float) -> None:
        if t > self.t_last:
            factor = 2.0 ** (-self.lam * (t - self.t_last))
            self.w *= factor
            self.ls *= factor
            self.ss *= factor
            self.t_last = t

    def insert(self, x: float, t: float) -> None:
        self.decay(t)
        self.w += 1.0
        self.ls += x
        self.ss += x * x
        # Decay leaves mean and variance unchanged; remember them for when this stream is read as
        # the reverse side of a pair, since its decayed weight may underflow to 0 meanwhile.
        self.last_mean, self.last_variance = self.mean(), self.variance()

    def mean(self) -> float:
        return self.ls / self.w if self.w > 0 else 0.0

    def variance(self) -> float:
        if self.w <= 0:
            return 0.0
        mu = self.ls / self.w
        return abs(self.ss / self.w - mu * mu)

    def std(self) -> float:
        return math.sqrt(self.variance())


@dataclass
class Pair:
    """Shared state of a stream and its reverse at one decay rate."""

    lam: float
    t3: float
    cf3: float = 0.0
    w3: float = W_INIT
    residual: dict = field(default_factory=dict)  # stream key -> last residual

    def update(self, key_a, a: Stream, b: Stream, key_b, x: float, t: float) -> None:
        b.decay(t)
        if t > self.t3:
            factor = 2.0 ** (-self.lam * (t - self.t3))
            self.cf3 *= factor
            self.w3 *= factor
            self.residual[key_a] = self.residual.get(key_a, 0.0) * factor
            self.t3 = t
        r = x - a.mean()
        self.cf3 += r * self.residual.get(key_b, 0.0)
        self.w3 += 1.0
        self.residual[key_a] = r


class SingleTable:
    """Streams keyed by a hashable key, one Stream per lambda."""

    def __init__(self, jitter: bool = False) -> None:
        self.jitter = jitter
        self.streams: dict = {}

    def update(self, key, x: float, t: float) -> list[float]:
        if key not in self.streams:
            t0 = 0.0 if self.jitter else t  # jitter streams start at t_last = 0 (DESIGN 4)
            self.streams[key] = [Stream(lam, t0) for lam in LAMBDAS]
        out: list[float] = []
        for s in self.streams[key]:
            if self.jitter:
                x = max(t - s.t_last, 0.0)
            s.insert(x, t)
            out += [s.w, s.mean(), s.variance()]
        return out


class PairTable:
    """Directed streams paired with their reverse (HH and HpHp)."""

    def __init__(self) -> None:
        self.streams: dict = {}
        self.pairs: dict = {}

    def _streams(self, key, t: float) -> list[Stream]:
        if key not in self.streams:
            self.streams[key] = [Stream(lam, t) for lam in LAMBDAS]
        return self.streams[key]

    def update(self, key_a, key_b, x: float, t: float) -> list[float]:
        sa = self._streams(key_a, t)
        sb = self._streams(key_b, t)  # the reference registers both directions at once
        pair_key = frozenset((key_a, key_b))
        created = pair_key not in self.pairs
        if created:
            self.pairs[pair_key] = [Pair(lam, t) for lam in LAMBDAS]
        out: list[float] = []
        for a, b, p in zip(sa, sb, self.pairs[pair_key]):
            a.insert(x, t)
            # Once inside the insert (only when the pair already existed) and once explicitly.
            for _ in range(1 if created else 2):
                p.update(key_a, a, b, key_b, x, t)
            mu_a, mu_b = a.mean(), b.last_mean
            var_a, var_b = a.variance(), b.last_variance
            cov = p.cf3 / p.w3
            denom = math.sqrt(var_a) * math.sqrt(var_b)
            out += [
                a.w,
                mu_a,
                math.sqrt(var_a),
                math.sqrt(mu_a * mu_a + mu_b * mu_b),
                math.sqrt(var_a * var_a + var_b * var_b),
                cov,
                cov / denom if denom != 0 else 0.0,
            ]
        return out


def packet_identity(batch: PacketBatch, i: int) -> tuple:
    """(src_mac, dst_mac, src_ip, dst_ip, sport, dport) as Kitsune's string fields, for packet i."""
    src_mac, dst_mac = int(batch.src_mac[i]), int(batch.dst_mac[i])
    l3 = int(batch.l3[i])
    if l3 == L3_OTHER:
        src_ip, dst_ip = ("mac", src_mac), ("mac", dst_mac)
    else:
        src_ip = ("ip", int(batch.src_ip_hi[i]), int(batch.src_ip_lo[i]))
        dst_ip = ("ip", int(batch.dst_ip_hi[i]), int(batch.dst_ip_lo[i]))
    kind = int(batch.port_kind[i])
    if kind == PORT_NUMBER:
        sport, dport = int(batch.sport[i]), int(batch.dport[i])
    elif kind == PORT_ARP:
        sport = dport = "arp"
    elif kind == PORT_ICMP:
        sport = dport = "icmp"
    else:
        sport = dport = ""
    return src_mac, dst_mac, src_ip, dst_ip, sport, dport, l3


class ReferenceExtractor:
    """Sequential N-BaIoT feature extractor; ``update`` returns the 115 values of one packet."""

    def __init__(self) -> None:
        self.mi = SingleTable()
        self.h = SingleTable()
        self.hh = PairTable()
        self.jit = SingleTable(jitter=True)
        self.hphp = PairTable()

    def update(self, ident: tuple, t: float, size: float) -> list[float]:
        src_mac, dst_mac, src_ip, dst_ip, sport, dport, l3 = ident
        row = self.mi.update((src_mac, src_ip), size, t)
        row += self.h.update(src_ip, size, t)
        row += self.hh.update((src_ip, dst_ip), (dst_ip, src_ip), size, t)
        row += self.jit.update((src_ip, dst_ip), 0.0, t)
        if l3 == L3_ARP:
            a, b = ("mac", src_mac, dst_mac), ("mac", dst_mac, src_mac)
        else:
            a, b = (src_ip, sport, dst_ip, dport), (dst_ip, dport, src_ip, sport)
        row += self.hphp.update(a, b, size, t)
        return row

    def process(self, batch: PacketBatch) -> np.ndarray:
        """Features of every packet in a batch, shape (n, 115)."""
        rows = [
            self.update(packet_identity(batch, i), float(batch.ts[i]), float(batch.wire_len[i]))
            for i in range(len(batch))
        ]
        return np.array(rows, dtype=np.float64).reshape(len(batch), 115)
