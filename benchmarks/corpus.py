"""A benchmark corpus of realistic shape: real benign captures replayed as many homes, Mirai attacks over them.

``build_realistic(path, packets, seed)`` writes one Ethernet pcap, sorted by time, of at least
``packets`` records, and ``<path stem>.meta.json`` beside it (what went in, class mix, distinct
sources and streams).  The same arguments give the same file.

* Benign half: the real benign captures (``BENIGN``: nDPI's IoT samples and the Lockly hub) replayed
  into many homes.  Each home plays a random stretch of the Lockly hub's week (sped up 10-40x so a
  home's MQTT sessions, ARP and DHCP fit the corpus) and a random selection of the short nDPI
  captures (DNS, NTP, SSDP, MQTT, CoAP, TP-Link, Tuya), some of them several times, at random
  moments: plenty of short streams and first contacts.  Every copy is re-addressed consistently:
  private IPv4 addresses move into the home's own 10.x.y.0/24, unicast MACs and the interface
  part of unicast IPv6 addresses get a per-home value, ports >= 16384 a per-copy value (a new
  ephemeral port, a new stream); public addresses (the clouds the devices talk to) are kept.
* Attack half: every Mirai class from the project's synthesiser (``convert.synth``) at several
  rates, bot and victim views, most floods spoofed with a new random source per packet, scans
  probing from many bots, keeping only the attack packets and the replies they provoke; plus the
  real attack captures (a spoofed SYN flood, masscan, a DoS), re-addressed per copy (public
  addresses shifted within their /16).

IPv4 header checksums are updated for the rewritten addresses; TCP/UDP checksums are left as they
were (the agent does not check them).  Nothing is printed.
"""

from __future__ import annotations

import json
import logging
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

VERSION = 1
REAL = Path("/work/shared/data/real")
HUB = "tjoconnor_lockly-hub-01.pcap"
# nDPI captures: (file, chance a home has it, most replays per home, longest kept gap in seconds)
SHORT = (
    ("ndpi_dns.pcap", 0.9, 4, 2.0),
    ("ndpi_NTPv4.pcap", 0.9, 3, 1.0),
    ("ndpi_ssdp-m-search.pcap", 0.7, 3, 5.0),
    ("ndpi_mqtt.pcap", 0.5, 2, 5.0),
    ("ndpi_tuya_lp.pcap", 0.4, 2, 5.0),
    ("ndpi_tplink_shp.pcap", 0.3, 1, 5.0),
    ("ndpi_coap_mqtt.pcap", 0.15, 1, 2.0),
)
BENIGN = (HUB,) + tuple(s[0] for s in SHORT)
REAL_ATTACKS = (  # (file, class it stands for, copies per million packets)
    ("stopddos_pkt.TCP.synflood.spoofed.pcap", "real:syn_spoofed", 2),
    ("esnet_masscan_tcp_0_1000_20190821.pcap", "real:scan", 2),
    ("chrissanders_ppa1e_dosattack.pcap", "real:dos", 3),
)
FLOODS = ("mirai_ack", "mirai_syn", "mirai_udp", "mirai_udpplain")
FLOOD_RATES = (300.0, 3000.0, 20000.0)
SCAN_RATES = (2.0, 20.0, 60.0)  # scanning bots arriving per second at a scanned board
BASE_TIME = 1_700_000_000
MAX_EPISODE_S = 240.0  # longest synthesised episode (the synthesiser's time grows with it)


@dataclass
class Source:
    """A capture's frames packed back to back, with where the fields to rewrite are in each frame."""

    buf: np.ndarray  # uint8
    offset: np.ndarray  # int64 frame starts in buf
    cap: np.ndarray  # int64
    wire: np.ndarray  # int64
    ts: np.ndarray  # float64 seconds from the capture's first frame
    ip4: np.ndarray  # int64 IPv4 header position in the frame, -1 when none
    ip6: np.ndarray  # IPv6 header position, -1
    arp: np.ndarray  # ARP (IPv4 over Ethernet) position, -1
    l4: np.ndarray  # TCP/UDP header position, -1

    def __len__(self) -> int:
        return len(self.ts)


def load(name: str, max_gap: float | None = None) -> Source:
    """Read a capture with agent.capture; gaps longer than ``max_gap`` seconds are shortened to it."""
    from agent.capture.pcap import read_capture

    batches = list(read_capture(REAL / name))
    frames = [b.buf[o : o + c] for b in batches for o, c in zip(b.offset.tolist(), b.cap_len.tolist())]
    cap = np.array([len(f) for f in frames], dtype=np.int64)
    offset = np.concatenate([[0], np.cumsum(cap)[:-1]]).astype(np.int64)
    buf = np.concatenate(frames) if frames else np.zeros(0, np.uint8)
    ts = np.concatenate([b.ts for b in batches])
    gaps = np.diff(ts, prepend=ts[0])
    if max_gap is not None:
        gaps = np.minimum(gaps, max_gap)
    wire = np.concatenate([b.wire_len for b in batches])
    return Source(buf, offset, cap, wire, np.cumsum(gaps), *_layout(buf, offset, cap))


def _u16(buf: np.ndarray, pos: np.ndarray) -> np.ndarray:
    return (buf[pos].astype(np.int64) << 8) | buf[pos + 1]


def _layout(buf: np.ndarray, offset: np.ndarray, cap: np.ndarray) -> tuple[np.ndarray, ...]:
    n = len(offset)
    l3 = np.full(n, 14, dtype=np.int64)
    safe = lambda rel, need: (rel + need <= cap)  # noqa: E731
    etype = np.where(safe(12, 2), _u16(buf, np.minimum(offset + 12, len(buf) - 2)), 0)
    for _ in range(2):  # up to two 802.1Q / 802.1ad tags
        tagged = np.isin(etype, (0x8100, 0x88A8, 0x9100)) & safe(l3 + 2, 2)
        l3 = np.where(tagged, l3 + 4, l3)
        etype = np.where(tagged, _u16(buf, np.minimum(offset + l3 - 2, len(buf) - 2)), etype)
    at = np.minimum(offset + l3, len(buf) - 40)
    is4 = (etype == 0x0800) & safe(l3, 20) & ((buf[at] >> 4) == 4)
    is6 = (etype == 0x86DD) & safe(l3, 40) & ((buf[at] >> 4) == 6)
    isarp = (etype == 0x0806) & safe(l3, 28) & (_u16(buf, at) == 1) & (_u16(buf, at + 2) == 0x0800)
    ihl = (buf[at] & 15).astype(np.int64) * 4
    first = (_u16(buf, at + 6) & 0x1FFF) == 0
    proto = np.where(is4, buf[at + 9], np.where(is6, buf[np.minimum(at + 6, len(buf) - 1)], 0))
    l4 = np.where(is4, l3 + ihl, l3 + 40)
    has_l4 = (is4 & first | is6) & np.isin(proto, (6, 17)) & safe(l4, 4)
    none = np.int64(-1)
    return (np.where(is4, l3, none), np.where(is6, l3, none), np.where(isarp, l3, none), np.where(has_l4, l4, none))


def _gather(src_buf: np.ndarray, offset: np.ndarray, cap: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The selected frames copied back to back: (new buffer, new offsets)."""
    new_off = np.concatenate([[0], np.cumsum(cap)[:-1]]).astype(np.int64)
    idx = np.repeat(offset - new_off, cap) + np.arange(int(cap.sum()), dtype=np.int64)
    return src_buf[idx], new_off


def _get32(buf: np.ndarray, pos: np.ndarray) -> np.ndarray:
    b = buf[pos[:, None] + np.arange(4)].astype(np.int64)
    return (b[:, 0] << 24) | (b[:, 1] << 16) | (b[:, 2] << 8) | b[:, 3]


def _put(buf: np.ndarray, pos: np.ndarray, value: np.ndarray, size: int) -> None:
    for k in range(size):
        buf[pos + k] = (value >> (8 * (size - 1 - k))) & 0xFF


def _is_private(a: np.ndarray) -> np.ndarray:
    return ((a >> 24) == 10) | ((a >> 20) == 0xAC1) | ((a >> 16) == 0xC0A8) | ((a >> 16) == 0xA9FE)


def _map_ip4(a: np.ndarray, home: int, shift_public: int) -> np.ndarray:
    public = ~_is_private(a) & (a >> 28 < 14) & (a != 0)  # not multicast, reserved or broadcast
    out = np.where(_is_private(a), (10 << 24) | ((home & 0xFFFF) << 8) | (a & 0xFF), a)
    return np.where(public, a ^ (shift_public & 0xFFFF), out)


def _fold(s: np.ndarray) -> np.ndarray:
    for _ in range(3):
        s = (s & 0xFFFF) + (s >> 16)
    return s


def _readdress(src: Source, sel: np.ndarray, home: int, copy_key: int, shift_public: int = 0):
    """Frames ``sel`` of ``src`` rewritten for one copy: (buf, offsets, cap, wire)."""
    cap = src.cap[sel]
    buf, off = _gather(src.buf, src.offset[sel], cap)
    mac_key = (home * 0x9E3779 + 0x5A5A5A) & 0xFFFFFF
    for rel in (0, 6):  # destination and source MAC: unicast ones get the home's low three bytes
        pos = off + rel
        unicast = (buf[pos] & 1) == 0
        low = _get32(buf, pos + 2) & 0xFFFFFF
        _put(buf, pos[unicast] + 3, (low ^ mac_key)[unicast], 3)
    ip4, ip6, arp, l4 = src.ip4[sel], src.ip6[sel], src.arp[sel], src.l4[sel]
    m = ip4 >= 0
    if m.any():
        at = off[m] + ip4[m]
        old = np.stack([_get32(buf, at + 12), _get32(buf, at + 16)])
        new = _map_ip4(old, home, shift_public)
        _put(buf, at + 12, new[0], 4)
        _put(buf, at + 16, new[1], 4)
        words = lambda v: (v >> 16) + (v & 0xFFFF)  # noqa: E731
        csum = _u16(buf, at + 10)
        s = (~csum & 0xFFFF) + sum(words(~v & 0xFFFFFFFF) for v in old) + sum(words(v) for v in new)
        _put(buf, at + 10, ~_fold(s) & 0xFFFF, 2)
    m = arp >= 0
    if m.any():
        at = off[m] + arp[m]
        for rel in (14, 24):
            _put(buf, at + rel, _map_ip4(_get32(buf, at + rel), home, shift_public), 4)
        for rel in (8, 18):
            unicast = ((buf[at + rel] & 1) == 0) & (_get32(buf, at + rel + 2) & 0xFFFFFF != 0)
            _put(buf, (at + rel + 3)[unicast], ((_get32(buf, at + rel + 2) & 0xFFFFFF) ^ mac_key)[unicast], 3)
    m = ip6 >= 0
    if m.any():
        at = off[m] + ip6[m]
        for rel in (8, 24):
            unicast = buf[at + rel] != 0xFF
            _put(buf, (at + rel + 12)[unicast], (_get32(buf, at + rel + 12) ^ (home * 0x10001 + 1))[unicast], 4)
    m = l4 >= 0
    if m.any():
        at = off[m] + l4[m]
        for rel in (0, 2):
            port = _u16(buf, at + rel)
            high = port >= 16384
            _put(buf, (at + rel)[high], (port ^ (copy_key & 0x3FFF))[high], 2)
    return buf, off, cap, src.wire[sel]


@dataclass
class Part:
    """Frames of one piece of the corpus, with microsecond timestamps and a class (index) per frame."""

    buf: np.ndarray
    offset: np.ndarray
    cap: np.ndarray
    wire: np.ndarray
    ts_us: np.ndarray
    label: np.ndarray  # indices into the corpus's class list


def _benign(rng: np.random.Generator, target: int, span: float, classes: list[str]) -> tuple[list[Part], int]:
    hub = load(HUB, max_gap=60.0)
    week = hub.ts[-1] + 1.0
    short = [(load(name, max_gap=gap), p, most) for name, p, most, gap in SHORT]
    parts, count, home = [], 0, 0
    label = classes.index("benign")
    while count < target:
        home += 1
        speed = float(np.exp(rng.uniform(np.log(10), np.log(40))))
        start = float(rng.uniform(-0.3, 0.7)) * span  # homes already running when the corpus starts, or joining
        first = float(rng.uniform(0, week))
        # Two laps of the hub's week, from a random moment, sped up: keep what falls in [0, span).
        t = start + np.concatenate([hub.ts, hub.ts + week]) / speed - first / speed
        lap = np.flatnonzero((t >= 0) & (t < span))
        pieces = [(hub, lap % len(hub), t[lap])]
        for src, p, most in short:
            for _ in range(int(rng.integers(1, most + 1)) if rng.random() < p else 0):
                at = float(rng.uniform(0, span))
                t = at + src.ts
                keep = np.flatnonzero(t < span)
                pieces.append((src, keep, t[keep]))
        for src, sel, t in pieces:
            if len(sel):
                buf, off, cap, wire = _readdress(src, sel, home, int(rng.integers(0, 1 << 14)))
                parts.append(Part(buf, off, cap, wire, np.round(t * 1e6).astype(np.int64), np.full(len(sel), label)))
                count += len(sel)
    return parts, home


def _episodes(rng: np.random.Generator) -> list[tuple[str, dict, float]]:
    """One round of attack episodes: (scenario, forced options, rate) for every class, rate and view."""
    plan = []
    for kind in FLOODS:
        for i, rate in enumerate(FLOOD_RATES):
            view = ("bot", "victim")[(i + FLOODS.index(kind)) % 2]
            force = {"rate_pps": rate}
            if kind != "mirai_udpplain" and i != 1:  # udpplain cannot spoof; one rate per class keeps its bots
                force["source"] = "random"  # a new random source address on every packet
            plan.append((f"{kind}_{view}", force, rate))
    for rate in SCAN_RATES:
        plan.append(("mirai_scan_scanned", {"scanners_per_s": rate}, rate))
    plan += [("mirai_scan_bot", {}, 0.0), ("mirai_scan_victim", {}, 0.0)]
    return [plan[i] for i in rng.permutation(len(plan))]


def _attacks(rng: np.random.Generator, target: int, span: float, classes: list[str], seed: int):
    from agent.capture.packets import LABELS
    from convert.synth import OptionSpace, synthesise

    parts, count, episodes, spoofed = [], 0, [], 0
    lut = np.asarray([classes.index("reply" if name == "benign" else name) for name in LABELS])
    for name, cls, copies in REAL_ATTACKS:  # the real attack captures, re-addressed and re-timed per copy
        src = load(name)
        for c in range(max(1, round(copies * target / 500_000))):
            n = min(len(src), max(100, target // 12))
            first = int(rng.integers(0, len(src) - n + 1))
            sel = np.arange(first, first + n)
            t = src.ts[sel] - src.ts[first] + float(rng.uniform(0, max(1.0, span - (src.ts[sel[-1]] - src.ts[first]))))
            home = 0xF000 + len(episodes)
            key, shift = int(rng.integers(0, 1 << 14)), int(rng.integers(1, 1 << 16))
            buf, off, cap, wire = _readdress(src, sel, home, key, shift)
            parts.append(Part(buf, off, cap, wire, np.round(t * 1e6).astype(np.int64), np.full(n, classes.index(cls))))
            count += n
            spoofed += n if "spoofed" in cls else 0
            episodes.append({"capture": name, "packets": n})
    each = max(500, target // 20)  # attack packets aimed at per episode: a round of 17 fits
    round_ = 0
    while count < target:
        for scenario, force, rate in _episodes(rng):
            if count >= target:
                break
            pkts = 200.0 if scenario.startswith("mirai_scan") else rate  # attack + reply packets/s, roughly
            seconds = float(np.clip(1.2 * each / pkts, 8.0, min(2 * span, MAX_EPISODE_S)))
            ep_seed = zlib.crc32(f"{seed}/{round_}/{len(episodes)}".encode())
            quiet = logging.getLogger("convert.synth")
            level, quiet.level = quiet.level, logging.ERROR  # its notes ("rate exceeds the link") are not ours
            try:
                synth = synthesise(scenario, seconds, ep_seed, OptionSpace(force=force))
            finally:
                quiet.setLevel(level)
            roles = np.asarray([not r.startswith("benign:") for r in synth.role_names])[synth.role_index]
            sel = np.flatnonzero(roles)
            if len(sel) > 1.5 * each:  # many bots, or replies: keep the episode's first 1.5 * each packets
                sel = sel[: int(1.5 * each)]
            if not len(sel):
                continue
            ts = synth.ts_us[sel]
            length = int(ts[-1] - ts[0])
            offset = int(rng.integers(0, max(1, int(span * 1e6) - length)))
            cap = synth.frames.cap_len[sel]
            buf, off = _gather(synth.frames.buf, synth.frames.offset[sel], cap)
            lab = lut[synth.labels[sel].astype(np.int64)]  # benign-labelled frames kept are replies
            parts.append(Part(buf, off, cap, synth.frames.wire_len[sel], ts - ts[0] + offset, lab))
            count += len(sel)
            spoof = force.get("source") == "random"
            spoofed += len(sel) if spoof else 0
            episodes.append({"scenario": scenario, "options": force, "seconds": round(seconds, 2),
                             "packets": int(len(sel)), "spoofed": spoof})
        round_ += 1
    return parts, episodes, spoofed


def build_realistic(path: Path, packets: int, seed: int) -> dict:
    """Write the corpus to ``path`` (and its meta JSON beside it); return the meta."""
    from agent.capture.packets import DecodeStats, FrameBatch
    from agent.capture.parse import parse_frames
    from agent.capture.pcap import read_capture, write_pcap

    rng = np.random.default_rng([int(seed), VERSION, 0x1A7])
    classes = ["benign", "reply", "mirai_ack", "mirai_syn", "mirai_udp", "mirai_udpplain", "mirai_scan"]
    classes += [c for _, c, _ in REAL_ATTACKS]
    span = float(np.clip(600.0 * packets / 1_000_000, 30.0, 3600.0))
    benign, homes = _benign(rng, packets // 2, span, classes)
    got = sum(len(p.ts_us) for p in benign)
    attacks, episodes, spoofed = _attacks(rng, max(1, packets - got), span, classes, seed)
    parts = benign + attacks
    base = np.concatenate([[0], np.cumsum([len(p.buf) for p in parts])[:-1]])
    buf = np.concatenate([p.buf for p in parts])
    offset = np.concatenate([p.offset + b for p, b in zip(parts, base)])
    cap = np.concatenate([p.cap for p in parts])
    wire = np.concatenate([p.wire for p in parts])
    label = np.concatenate([p.label for p in parts])
    ts_us = np.concatenate([p.ts_us for p in parts]) + (BASE_TIME + int(rng.integers(0, 86400))) * 1_000_000
    order = np.argsort(ts_us, kind="stable")

    def batches():
        for lo in range(0, len(order), 65536):
            o = order[lo : lo + 65536]
            chunk, off = _gather(buf, offset[o], cap[o])
            yield FrameBatch(index=np.arange(lo, lo + len(o)), ts=ts_us[o] / 1e6, wire_len=wire[o], cap_len=cap[o],
                             offset=off, linktype=np.ones(len(o), np.uint16), buf=chunk)

    tmp = path.with_name(path.name + ".part")
    written = write_pcap(tmp, batches())
    # Read it back as the agent does: it must decode whole, sorted; count sources and streams.
    stats, srcs, streams, last, sorted_ = DecodeStats(), [], [], -np.inf, True
    for frames in read_capture(tmp, stats=stats):
        p = parse_frames(frames, stats)
        sorted_ &= bool(np.all(np.diff(p.ts) >= 0)) and bool(p.ts[0] >= last) if len(p) else True
        last = p.ts[-1] if len(p) else last
        srcs.append(np.stack([p.src_ip_hi, p.src_ip_lo, p.src_mac * (p.l3 == 0)], 1))
        streams.append(np.stack([p.src_ip_hi, p.src_ip_lo, p.dst_ip_hi, p.dst_ip_lo, p.proto.astype(np.uint64),
                                 p.sport.astype(np.uint64), p.dport.astype(np.uint64)], 1))
    srcs_n = len(np.unique(np.concatenate(srcs), axis=0))
    streams_n = len(np.unique(np.concatenate(streams), axis=0))
    per_class = np.bincount(label, minlength=len(classes))
    meta = {
        "corpus": "realistic", "version": VERSION, "seed": int(seed), "packets": int(written),
        "span_s": span, "homes": homes, "benign_captures": list(BENIGN),
        "packets_per_class": {c: int(n) for c, n in zip(classes, per_class)},
        "attack_share": round(1 - per_class[0] / written, 3),
        "spoofed_share_of_attacks": round(spoofed / max(1, written - int(per_class[0])), 3),
        "distinct_sources": int(srcs_n), "distinct_streams": int(streams_n),
        "decoded": stats.decoded, "skipped": dict(stats.skipped), "time_sorted": sorted_,
        "episodes": episodes,
    }
    path.with_suffix(".meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    # Every record's class (an index into meta's packets_per_class keys), in the capture's order: per-packet truth.
    np.save(labels_path(path), label[order].astype(np.uint8))
    tmp.replace(path)
    return meta


def labels_path(path: Path) -> Path:
    """Where a corpus's per-record classes are kept (beside its pcap)."""
    return path.with_suffix(".labels.npy")
