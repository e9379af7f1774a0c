"""Per-packet labels of a whole capture in hindsight: what the pipeline says of each packet once every verdict
is known (pcap mode; the live agent acts on verdicts and labels nothing after the fact).

The model alone errs on single packets: a lone NTP request, a smart plug's broadcast, a first datagram it has
never seen the like of.  The decision stage convicts only on recent, dense evidence, so a packet counts as an
attack here only where the decision stage convicted someone it belongs to:

* a packet decided online (its source, or its flood's target, stood convicted of the attack and the packet has
  that attack's shape) keeps the verdict's class;
* a packet of a party that is convicted at some point of the capture (its source; for a flood from many sources,
  its target and protocol, or the Ethernet sender of a flood at many hosts) keeps the model's label, and an
  attack label in the ``lookback_s`` before a verdict of the party, on a packet of that verdict's shape,
  becomes the verdict's class (an attack's first packets, before the evidence was dense enough), but a scan
  label (a scanner's login session has an ACK flood's shape);
* a packet of an unconvicted party keeps the model's attack label only in a run of that label (gaps under
  ``RUN_GAP_S``): ``RUN_PACKETS`` or more, at ``RUN_RATE`` or more, ``RUN_SHARE`` of the unconvicted parties'
  packets in its span, from ``RUN_SOURCES`` or more senders, none an answer (a SYN-ACK, a RST, a UDP reply, a
  server's segments to its client: boards answering scanners' logins) or an application's stream (media; one
  header across many senders: sensors reporting to a hub).  That is a flood from forged sources too short for
  the flood rules (a 100-packet sample of one), a botnet's bots each too light to convict beside the ones
  convicted, or scanners logging in to the board a few packets each; not one device's burst of odd packets, nor
  a stream, nor a dozen devices announcing themselves a few times a second;
* every other packet is benign: nobody it belongs to was convicted and the model's call stands alone (its false
  alarms spread over classes, senders and time; a quiet home's odd packets are a few).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from agent.capture.packets import VERDICT_LABELS, ip_words
from agent.util import hash_words

BENIGN, SCAN = VERDICT_LABELS.index("benign"), VERDICT_LABELS.index("mirai_scan")
RUN_GAP_S, RUN_PACKETS = 2.0, 10  # a model verdict's half-life and min_packets (DecisionConfig)
RUN_SHARE = 0.05  # of the unconvicted parties' packets in the run's span: 30 times the model's false alarms on
# long benign traffic (0.15% of packets, benchmarks/false_verdicts.py), which spread over classes and senders
RUN_RATE = 20.0  # packets/s: the slowest floods the option grid tries
RUN_SOURCES = 5  # distinct senders: many hosts, or forged addresses
LOOKBACK_S = 30.0  # three half-lives of a scan's evidence (DecisionConfig.scan_half_life_s)
_SRC_TAG, _DST_TAG = 21, 22


@dataclass
class Parties:
    """Who each packet belongs to, kept per packet beside the model's labels (pcap mode)."""

    ts: np.ndarray  # float64 timestamps
    src: np.ndarray  # uint64 key of the source address (``source_keys``)
    dst: np.ndarray  # uint64 key of the destination address and protocol (``target_keys``)
    mac: np.ndarray  # uint64 source MAC
    fits: np.ndarray  # uint8 bit k: the packet has the shape of VERDICT_LABELS[k]'s attack (rules.shape_fits)
    spared: np.ndarray  # bool: an answer or an application's stream, as the decision stage judged it (in no run)

    @classmethod
    def of(cls, packets, decision) -> "Parties":
        """The parties of a PacketBatch the DecisionLayer ``decision`` has just judged."""
        return cls(packets.ts.astype(np.float64), source_keys(packets.src_ip_hi, packets.src_ip_lo),
                   target_keys(packets.dst_ip_hi, packets.dst_ip_lo, packets.proto), packets.src_mac.astype(np.uint64),
                   decision.packet_fits.astype(np.uint8), decision.packet_spared.astype(bool))  # fmt: skip

    @classmethod
    def concatenate(cls, parts: list["Parties"]) -> "Parties":
        names = ("ts", "src", "dst", "mac", "fits", "spared")
        empty = (np.float64, np.uint64, np.uint64, np.uint64, np.uint8, bool)
        return cls(*(np.concatenate([getattr(p, n) for p in parts]) if parts else np.zeros(0, t)
                     for n, t in zip(names, empty)))  # fmt: skip


def source_keys(hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    return hash_words(_SRC_TAG, np.asarray(hi, np.uint64), np.asarray(lo, np.uint64))


def target_keys(hi: np.ndarray, lo: np.ndarray, proto: np.ndarray) -> np.ndarray:
    return hash_words(_DST_TAG, np.asarray(hi, np.uint64), np.asarray(lo, np.uint64), np.asarray(proto, np.uint64))


def _one(keys, *words: int) -> int:
    """``keys`` (source_keys, target_keys) of one packet's words."""
    return int(keys(*(np.array([w], dtype=np.uint64) for w in words))[0])


def _party(v) -> tuple[str, int] | None:
    """(which column of Parties, key) of the party a verdict convicts."""
    if v.kind == "source" and v.src_ip is not None:
        return "src", _one(source_keys, *ip_words(v.src_ip))
    if v.kind == "spoofed" and v.victim_ip is not None and v.proto is not None:
        return "dst", _one(target_keys, *ip_words(v.victim_ip), v.proto)
    if v.kind == "spoofed" and v.src_mac is not None:
        return "mac", int(v.src_mac.replace(":", ""), 16)
    return None


def hindsight_labels(model: np.ndarray, online: np.ndarray, parties: Parties, verdicts: list,
                     lookback_s: float = LOOKBACK_S) -> np.ndarray:
    """Index into VERDICT_LABELS per packet (see the module's docstring).  ``model``: the model's label per packet
    (LABELS share VERDICT_LABELS' first indices); ``online``: the class the decision stage gave the packet as it
    went (-1: none)."""
    out = np.full(len(model), BENIGN, dtype=np.int64)
    windows: dict[str, list[tuple[int, float, float, int]]] = {"src": [], "dst": [], "mac": []}
    for v in verdicts:
        party = _party(v)
        if party is not None:
            which, key = party
            start = max(v.first_seen, v.decided_at - lookback_s)
            windows[which].append((key, start, v.decided_at, VERDICT_LABELS.index(v.label)))
    attack = model != BENIGN
    party = np.zeros(len(model), dtype=bool)  # of a party convicted somewhere in the capture
    for which, rows in windows.items():
        if not rows:
            continue
        keys = getattr(parties, which)
        convicted = np.isin(keys, np.array([r[0] for r in rows], dtype=np.uint64))
        out[convicted] = model[convicted]
        party |= convicted
        # Earliest verdict last: a packet before several verdicts of its party takes the first to come.
        rows.sort(key=lambda r: (r[0], -r[2]))
        w_key = np.array([r[0] for r in rows], dtype=np.uint64)
        w_start, w_end = np.array([r[1] for r in rows]), np.array([r[2] for r in rows])
        w_class = np.array([r[3] for r in rows])
        # (a flood's class never replaces the model's scan label: a scanner's login sessions have an ACK flood's shape)
        idx = np.flatnonzero(convicted & attack & (model != SCAN))
        lo = np.searchsorted(w_key, keys[idx], side="left")
        hi = np.searchsorted(w_key, keys[idx], side="right")
        for step in range(int((hi - lo).max(initial=0))):
            has = lo + step < hi
            i, w = idx[has], (lo + step)[has]
            fits = (parties.fits[i] >> w_class[w].astype(np.uint8)) & 1
            inside = (parties.ts[i] >= w_start[w]) & (parties.ts[i] < w_end[w]) & (fits == 1)
            out[i[inside]] = w_class[w][inside]
    unconvicted = ~party & (online < 0)
    alone = attack & unconvicted
    out[alone] = np.where(_runs(model, parties, alone, unconvicted), model[alone], BENIGN)
    return np.where(online >= 0, online, out)


def _runs(model: np.ndarray, parties: Parties, which: np.ndarray, among: np.ndarray) -> np.ndarray:
    """For the packets ``which``: whether they lie in a run of their model label from many senders among the
    packets ``among`` (see the module's docstring)."""
    out = np.zeros(len(model), dtype=bool)
    every = np.sort(parties.ts[among & ~parties.spared])
    for k in np.unique(model[which]):
        mine = np.flatnonzero(which & ~parties.spared & (model == k))
        if not len(mine):
            continue
        mine = mine[np.argsort(parties.ts[mine], kind="stable")]
        t, src = parties.ts[mine], parties.src[mine]
        run = np.r_[0, np.cumsum(np.diff(t) >= RUN_GAP_S)]  # run number of each packet
        first = np.flatnonzero(np.r_[True, run[1:] != run[:-1]])
        last = np.r_[first[1:], len(mine)] - 1
        size = last - first + 1
        span = np.searchsorted(every, t[last], "right") - np.searchsorted(every, t[first], "left")
        pairs = np.unique(np.stack([run.astype(np.uint64), src]), axis=1)  # (run, sender), each once
        senders = np.bincount(pairs[0].astype(np.intp), minlength=len(first))  # (intp: 32 bits on armv7)
        fast = size - 1 >= RUN_RATE * (t[last] - t[first])
        ok = (size >= RUN_PACKETS) & fast & (size >= RUN_SHARE * span) & (senders >= RUN_SOURCES)
        out[mine] = ok[run]
    return out[which]
