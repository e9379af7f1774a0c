"""The decision stage: per-packet class scores -> per-source verdicts.

A single odd packet must not raise an alert, so every source keeps a decayed
average of its packets' class scores (half-life ``half_life_s``) and a packet
count; a source becomes hostile when it has sent at least ``min_packets``
packets and one attack class's average reaches ``threshold``.  It is released
when that average falls below ``release`` (hysteresis).

A spoofed flood shows a new source for nearly every packet, which no per-source
count can judge.  So the same statistics are kept per target as well (victim
address, protocol, destination port for floods at one port, or victim address
alone), together with how many of the target's hostile packets came from
sources never seen before; when that share is high, the verdict names the
target ("spoofed flood at 10.0.0.5 tcp/80") instead of a source.

The statistics use the same exact, vectorised decayed sums as the features.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from .decayed_sums import Segments, decayed_sums, running_time
from .key_hash import hash_words
from .packets import LABELS, PORT_NUMBER, PacketBatch, format_ip, format_mac
from .stream_table import StreamTable

N_CLASSES = len(LABELS)


@dataclass
class DecisionConfig:
    half_life_s: float = 2.0
    threshold: float = 0.7  # average score of one attack class to call a source hostile
    release: float = 0.3  # below this the verdict ends
    min_packets: int = 10
    max_sources: int = 65536  # bounded table of tracked sources (LRU eviction)
    max_targets: int = 65536
    spoofed_share: float = 0.6  # share of a target's hostile packets from never-seen sources
    flood_rate: float = 200.0  # packets/s at a target that can make a header-judged flood ...
    flood_new_share: float = 0.9  # ... when this share comes from never-seen sources ...
    flood_shape_share: float = 0.9  # ... and this share has one shape (SYN only, ACK only or UDP)


@dataclass
class Verdict:
    """One hostile source (or one target of a spoofed flood)."""

    kind: str  # "source" or "spoofed"
    label: str
    confidence: float
    packets: int
    first_seen: float
    last_seen: float
    decided_at: float  # timestamp of the packet that tipped the decision
    src_ip: str | None = None
    src_mac: str | None = None
    src_port: int | None = None
    victim_ip: str | None = None
    victim_port: int | None = None
    proto: int | None = None
    basis: str = "model"  # "model": per-packet scores; "headers": a spoofed flood's volume and shape

    @property
    def latency(self) -> float:
        return self.decided_at - self.first_seen

    def to_dict(self) -> dict:
        d = asdict(self)
        d["latency_s"] = round(self.latency, 6)
        return d

    def describe(self) -> str:
        if self.kind == "spoofed":
            port = f"/{self.victim_port}" if self.victim_port is not None else ""
            who = f"spoofed flood at {self.victim_ip} proto {self.proto}{port}" + (" [headers]" if self.basis == "headers" else "")
        else:
            who = f"{self.src_ip} ({self.src_mac})"
        return (
            f"{self.label:15s} {who:45s} conf {self.confidence:.3f} packets {self.packets:8d} "
            f"first {self.first_seen:.6f} last {self.last_seen:.6f} after {self.latency * 1000:.1f} ms"
        )


# What each packet adds to its key besides its class scores: whether its source was never seen
# before, and its header shape (for floods the model cannot judge packet by packet).
EXTRAS = ("new_source", "syn_only", "ack_only", "udp")
N_EXTRA = len(EXTRAS)

# State columns of a tracked key: decayed sums first (weight, class scores, extras), then bookkeeping.
_W = 0
_S = slice(1, 1 + N_CLASSES)
_SUMS = slice(0, 1 + N_CLASSES + N_EXTRA)
_COUNT, _FIRST, _HOSTILE, _DECIDED, _REPORTED = range(_SUMS.stop, _SUMS.stop + 5)
_WIDTH = _SUMS.stop + 5


def _init_row() -> np.ndarray:
    row = np.zeros(_WIDTH)
    row[_W] = 1e-20
    row[_HOSTILE] = -1
    return row


@dataclass
class _Tracked:
    """Decayed score averages for a set of keys (sources, or targets)."""

    budget: int
    lam: float
    table: StreamTable = field(init=False)

    def __post_init__(self) -> None:
        self.table = StreamTable(self.budget, _init_row())

    def update(self, keys: np.ndarray, t: np.ndarray, scores: np.ndarray, extra: np.ndarray) -> dict:
        """Per packet (in key order): averages, counts and new-source shares; plus the bookkeeping."""
        order = np.argsort(keys, kind="stable")
        seg = Segments.from_sorted(keys[order])
        ts = t[order]
        slots, is_new = self.table.lookup(keys[order][seg.start], ts[seg.start])
        state = self.table.state[slots]
        state[is_new, _FIRST] = ts[seg.start][is_new]
        t_init = self.table.t_last[slots]
        T = running_time(ts, t_init, seg)
        lam = np.array([self.lam])
        terms = np.concatenate([np.ones((len(ts), 1)), scores[order], extra[order]], axis=1)[:, None, :]
        sums = decayed_sums(seg, T, lam, terms, state[:, None, _SUMS], t_init)[:, 0, :]
        count = np.cumsum(np.ones(len(ts))) - np.repeat(seg.start, seg.length) + state[seg.ids, _COUNT]
        return {
            "order": order,
            "seg": seg,
            "slots": slots,
            "state": state,
            "t": ts,
            "T": T,
            "avg": sums[:, _S] / sums[:, :1],
            "shares": sums[:, _S.stop :] / sums[:, :1],  # EXTRAS, as decayed shares of the key's packets
            "weight": sums[:, 0],
            "count": count,
            "sums": sums,
        }

    def store(self, r: dict) -> None:
        seg, state, sums = r["seg"], r["state"], r["sums"]
        last = seg.last
        state[:, _W] = sums[last, 0]
        state[:, _S] = sums[last, 1 : 1 + N_CLASSES]
        state[:, _S.stop : _SUMS.stop] = sums[last, _S.stop :]
        state[:, _COUNT] = r["count"][last]
        self.table.state[r["slots"]] = state
        self.table.t_last[r["slots"]] = r["T"][last]


def _header_floods(r: dict, cfg: DecisionConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Spoofed floods judged by volume and header shape: (hot, class, share) per packet of ``r``.

    The N-BaIoT features are all keyed by source, so a packet from a never-seen source looks the
    same whether it is a stranger's first contact or one of a million spoofed SYNs.  A target that
    receives a high rate of packets, nearly all from never-seen sources and nearly all of one
    shape (SYN only, ACK only, UDP), is flooded whatever the model says of each packet.
    """
    shares = r["shares"]
    shape = 1 + shares[:, 1:].argmax(axis=1)  # column of EXTRAS: 1 syn, 2 ack, 3 udp
    share = shares[np.arange(len(shares)), shape]
    rate_weight = cfg.flood_rate * cfg.half_life_s / np.log(2)  # decayed weight of a steady flood at that rate
    hot = (
        (r["count"] >= cfg.min_packets)
        & (shares[:, 0] >= cfg.flood_new_share)
        & (share >= cfg.flood_shape_share)
        & (r["weight"] >= rate_weight)
    )
    label = np.array([0, LABELS.index("mirai_syn"), LABELS.index("mirai_ack"), LABELS.index("mirai_udp")])[shape]
    return hot, label, share


def _decide(
    r: dict, cfg: DecisionConfig, allowed: np.ndarray | None = None, alternative: tuple | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Find the verdicts in ``r``: for each key, the first packet at which each attack class becomes
    hot (at least ``min_packets`` and an average score over ``threshold``), once per class until the
    key cools down.  So a host that floods with UDP and later scans is reported for both.

    Returns (segment ids, packet positions) of the verdicts, in time order per key.
    """
    avg = r["avg"]
    attack = 1 + avg[:, 1:].argmax(axis=1)
    conf = avg[np.arange(len(avg)), attack]
    hot = (r["count"] >= cfg.min_packets) & (conf >= cfg.threshold)
    if allowed is not None:
        hot &= allowed
    basis = np.zeros(len(avg), dtype=bool)  # True: decided on headers, not on the model's scores
    if alternative is not None:
        alt_hot, alt_attack, alt_conf = alternative
        basis = alt_hot & ~hot
        attack = np.where(basis, alt_attack, attack)
        conf = np.where(basis, alt_conf, conf)
        hot = hot | alt_hot
    r["basis"] = basis
    seg, state = r["seg"], r["state"]
    reported = state[:, _REPORTED].astype(np.int64)  # bit c: class c already reported for this key
    pos = np.arange(len(avg))
    seg_ids, positions = [], []
    for c in range(1, N_CLASSES):
        cand = hot & (attack == c) & ((reported[seg.ids] >> c) & 1 == 0)
        if cand.any():
            sid, first = np.unique(seg.ids[cand], return_index=True)
            seg_ids.append(sid)
            positions.append(pos[cand][first])
            reported[sid] |= 1 << c
    sids = np.concatenate(seg_ids) if seg_ids else np.zeros(0, np.int64)
    at = np.concatenate(positions) if positions else np.zeros(0, np.int64)
    by_time = np.argsort(at, kind="stable")
    sids, at = sids[by_time], at[by_time]
    first_seen = state[:, _HOSTILE] < 0
    state[sids[first_seen[sids]], _DECIDED] = r["t"][at[first_seen[sids]]]
    state[sids, _HOSTILE] = attack[at]  # the latest class reported
    # Release keys that cooled down by the end of the batch: they may be reported afresh later.
    cooled = (reported != 0) & (conf[seg.last] < cfg.release)
    reported[cooled] = 0
    state[cooled, _HOSTILE] = -1
    state[:, _REPORTED] = reported
    r["attack"], r["conf"] = attack, conf
    return sids, at


class DecisionLayer:
    """``update(packets, scores)`` -> the verdicts this batch raised (the layer keeps no history: a
    long-running agent must not grow with every verdict)."""

    def __init__(self, config: DecisionConfig | None = None) -> None:
        self.cfg = config or DecisionConfig()
        lam = 1.0 / self.cfg.half_life_s
        self.sources = _Tracked(self.cfg.max_sources, lam)
        self.targets = _Tracked(self.cfg.max_targets, lam)

    def update(self, packets: PacketBatch, scores: np.ndarray) -> list[Verdict]:
        """Verdicts raised by this batch (processed in chunks no table budget can overflow)."""
        step = max(1, min(self.cfg.max_sources, self.cfg.max_targets))
        scores = np.asarray(scores, dtype=np.float64)
        out: list[Verdict] = []
        for lo in range(0, len(packets), step):
            sl = slice(lo, lo + step)
            out += self._update_chunk(packets.take(sl), scores[sl])
        return out

    def _update_chunk(self, packets: PacketBatch, scores: np.ndarray) -> list[Verdict]:
        n = len(packets)
        t = packets.ts
        flags = packets.tcp_flags & 0x17  # SYN, RST, ACK, FIN
        is_tcp = packets.proto == 6
        extra = np.stack(
            [np.zeros(n), is_tcp & (flags == 0x02), is_tcp & (flags == 0x10), packets.proto == 17], axis=1
        ).astype(np.float64)
        src_key = hash_words(11, packets.src_ip_hi, packets.src_ip_lo, packets.l3.astype(np.uint64))
        srcs = self.sources.update(src_key, t, scores, extra)
        turned, at = _decide(srcs, self.cfg)
        new_verdicts = [self._source_verdict(packets, srcs, s, p) for s, p in zip(turned, at)]

        # Targets: a packet from a source seen for the first time counts towards "spoofed".
        seg, state = srcs["seg"], srcs["state"]
        fresh_sorted = np.zeros(n)
        fresh_sorted[seg.start[state[:, _COUNT] == 0]] = 1.0  # first packet of a never-seen source
        extra[srcs["order"], 0] = fresh_sorted
        # Targets are (victim, protocol): Mirai's floods randomise the destination port per packet.
        tgt_key = hash_words(12, packets.dst_ip_hi, packets.dst_ip_lo, packets.proto.astype(np.uint64))
        tgts = self.targets.update(tgt_key, t, scores, extra)
        # "Spoofed" needs many never-seen sources recently, not just a high share: after a quiet spell a
        # target's decayed window holds only the newest packets, and one new attacker's first packet would
        # make the share 1 (the packet count, kept for ever, says nothing about the window).
        fresh = tgts["shares"][:, 0]
        spoofed = (fresh >= self.cfg.spoofed_share) & (fresh * tgts["weight"] >= self.cfg.min_packets)
        turned_t, at_t = _decide(tgts, self.cfg, allowed=spoofed, alternative=_header_floods(tgts, self.cfg))
        new_verdicts += [self._target_verdict(packets, tgts, s, p) for s, p in zip(turned_t, at_t)]

        self.sources.store(srcs)
        self.targets.store(tgts)
        return new_verdicts

    def _common(self, r: dict, seg_id: int, pos: int) -> dict:
        state = r["state"]
        end = r["seg"].last[seg_id]
        return dict(
            label=LABELS[int(r["attack"][pos])],
            confidence=float(r["conf"][pos]),
            packets=int(r["count"][end]),
            first_seen=float(state[seg_id, _FIRST]),
            last_seen=float(r["t"][end]),
            decided_at=float(r["t"][pos]),
            basis="headers" if r["basis"][pos] else "model",
        )

    def _source_verdict(self, packets: PacketBatch, r: dict, seg_id: int, pos: int) -> Verdict:
        i = int(r["order"][pos])
        return Verdict(
            kind="source",
            src_ip=format_ip(packets.src_ip_hi[i], packets.src_ip_lo[i]),
            src_mac=format_mac(packets.src_mac[i]),
            src_port=int(packets.sport[i]) if packets.port_kind[i] == PORT_NUMBER else None,
            victim_ip=format_ip(packets.dst_ip_hi[i], packets.dst_ip_lo[i]),
            victim_port=int(packets.dport[i]) if packets.port_kind[i] == PORT_NUMBER else None,
            proto=int(packets.proto[i]),
            **self._common(r, seg_id, pos),
        )

    def _target_verdict(self, packets: PacketBatch, r: dict, seg_id: int, pos: int) -> Verdict:
        i = int(r["order"][pos])
        # A port only when the flood hit one port (in this batch): then a rule can name it.
        seg = r["seg"]
        members = r["order"][seg.start[seg_id] : seg.start[seg_id] + seg.length[seg_id]]
        ports = np.unique(np.where(packets.port_kind[members] == PORT_NUMBER, packets.dport[members], -1))
        return Verdict(
            kind="spoofed",
            victim_ip=format_ip(packets.dst_ip_hi[i], packets.dst_ip_lo[i]),
            victim_port=int(ports[0]) if len(ports) == 1 and ports[0] >= 0 else None,
            proto=int(packets.proto[i]),
            **self._common(r, seg_id, pos),
        )
