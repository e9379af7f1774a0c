"""The decision stage's evidence beyond the model: windowed evidence, header floods, scans, Mirai's scanner
fingerprint, floods from rotating sources, anomaly verdicts, and per-packet verdict labels.

The model's scores are held benign throughout (as for an attack shape it never learned), so every verdict
here comes from the headers or the anomaly scores.  Features come from the real feature engine.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from agent.capture.packets import ANOMALY, L3_IPV4, L3_IPV6, LABELS, PORT_ICMP, PORT_NUMBER, VERDICT_LABELS, PacketBatch
from agent.detect.decide import DecisionConfig, DecisionLayer
from agent.features.engine import FeatureExtractor

FIN, SYN, RST, ACK, SYNACK, RSTACK, PSHACK, XMAS = 0x01, 0x02, 0x04, 0x10, 0x12, 0x14, 0x18, 0x29
ECHO_REQUEST, ECHO_REPLY = 8, 0
BOARD = 0x0A000005  # 10.0.0.5
T0 = 1.7e9


def ip(a: int, b: int, c: int, d: int) -> int:
    return (a << 24) | (b << 16) | (c << 8) | d


def batch(ts, src, dst, proto=6, sport=40000, dport=80, flags=SYN, seq=1, size=60, icmp_type=-1, gre_proto=-1,
          win=64240, ack=4321) -> PacketBatch:
    ts = np.asarray(ts, dtype=np.float64)
    n = len(ts)

    def col(v, dtype):
        return np.broadcast_to(np.asarray(v), (n,)).astype(dtype)

    order = np.argsort(ts, kind="stable")
    src, dst = col(src, np.uint64), col(dst, np.uint64)
    tcp = col(proto, np.uint8) == 6
    cols = dict(
        index=np.arange(n, dtype=np.int64), ts=ts, wire_len=col(size, np.int64),
        src_mac=src + np.uint64(2 << 40), dst_mac=dst + np.uint64(2 << 40), vlan=np.full(n, -1, np.int32),
        l3=np.full(n, L3_IPV4, np.uint8), src_ip_hi=np.zeros(n, np.uint64), src_ip_lo=np.uint64(0xFFFF_0000_0000) | src,
        dst_ip_hi=np.zeros(n, np.uint64), dst_ip_lo=np.uint64(0xFFFF_0000_0000) | dst, proto=col(proto, np.uint8),
        port_kind=np.full(n, PORT_NUMBER, np.uint8), sport=col(sport, np.int32), dport=col(dport, np.int32),
        ttl=np.full(n, 64, np.uint8), ip_id=np.zeros(n, np.uint16), df=np.zeros(n, bool), frag=np.zeros(n, bool),
        ip_len=col(size, np.int32) - 14, tcp_flags=np.where(tcp, col(flags, np.uint8), 0).astype(np.uint8),
        tcp_seq=col(seq, np.uint32), tcp_ack=col(ack, np.uint32), tcp_win=col(win, np.uint16),
        tcp_hdr_len=np.where(tcp, 20, 0).astype(np.uint8),
        payload_len=np.where(col(proto, np.uint8) == 17, np.maximum(col(size, np.int32) - 42, 0), 0).astype(np.int32),
        icmp_type=col(icmp_type, np.int16), gre_proto=col(gre_proto, np.int32),
        udp_head_hi=np.zeros(n, np.uint64), udp_head_lo=np.zeros(n, np.uint64), udp_head_ok=np.zeros(n, bool),
    )
    b = PacketBatch(**cols)
    return b.take(order)


def join(*batches: PacketBatch) -> PacketBatch:
    fields = PacketBatch.__dataclass_fields__
    b = PacketBatch(**{f: np.concatenate([getattr(x, f) for x in batches]) for f in fields})
    b = b.take(np.argsort(b.ts, kind="stable"))
    b.index = np.arange(len(b), dtype=np.int64)
    return b


def benign_scores(n: int) -> np.ndarray:
    s = np.full((n, len(LABELS)), 0.002)
    s[:, 0] = 0.99
    return s


def run(b: PacketBatch, config: DecisionConfig | None = None, anomaly=None, chunk: int = 4096, scores=None):
    """Verdicts and per-packet labels; the model's scores benign unless given."""
    d = DecisionLayer(config)
    fe = FeatureExtractor()
    scores = benign_scores(len(b)) if scores is None else scores
    verdicts, labels = [], []
    for lo in range(0, len(b), chunk):
        part = b.take(slice(lo, lo + chunk))
        verdicts += d.update(part, scores[lo : lo + chunk], fe.update(part), None if anomaly is None else anomaly[lo : lo + chunk])
        labels.append(d.packet_labels)
    return verdicts, np.concatenate(labels)


def rng_ports(rng, n):
    return rng.integers(1024, 65536, n)


def test_odd_packets_spread_over_days_never_convict():
    """A benign hub the model misjudges now and then: 19 'hostile' packets spread over five days."""
    ts = T0 + np.sort(np.random.default_rng(1).uniform(0, 5 * 86400, 52))
    b = batch(ts, ip(192, 168, 1, 20), ip(52, 1, 2, 3), sport=50000, dport=8883, flags=PSHACK)
    scores = benign_scores(52)
    scores[::3] = np.eye(len(LABELS))[LABELS.index("mirai_syn")] * 0.996 + 0.0008
    d = DecisionLayer()
    assert d.update(b, scores, FeatureExtractor().update(b)) == []


def test_udp_flood_of_any_payload_from_one_source_is_caught_on_headers_within_a_second():
    rng = np.random.default_rng(2)
    n = 6000
    ts = T0 + np.arange(n) / 3000.0  # 3,000 packets/s, 1,400-byte payloads, random ports
    b = batch(ts, ip(203, 0, 113, 9), BOARD, proto=17, sport=rng_ports(rng, n), dport=rng_ports(rng, n), size=1442)
    verdicts, labels = run(b)
    assert [(v.kind, v.label, v.basis, v.src_ip) for v in verdicts] == [("source", "mirai_udp", "headers", "203.0.113.9")]
    assert verdicts[0].latency < 1.0
    assert (labels == LABELS.index("mirai_udp")).mean() > 0.95  # packets after the verdict carry its class


def test_empty_ack_flood_and_fixed_port_syn_flood_are_caught():
    rng = np.random.default_rng(3)
    n = 3000
    ts = T0 + np.arange(n) / 2000.0
    ack = batch(ts, ip(198, 51, 100, 1), BOARD, sport=rng_ports(rng, n), dport=rng_ports(rng, n), flags=ACK, size=60)
    syn = batch(ts + 10, ip(198, 51, 100, 2), BOARD, sport=4444, dport=443, flags=SYN, size=74)  # one socket
    verdicts, _ = run(join(ack, syn))
    assert sorted((v.label, v.src_ip) for v in verdicts) == [("mirai_ack", "198.51.100.1"), ("mirai_syn", "198.51.100.2")]


def test_floods_of_other_tools_ping_and_odd_tcp_flags_are_caught_and_the_victims_replies_never():
    """hping3-style floods: echo requests at 1,000/s, and FIN, Xmas or flagless TCP at one port from ever new
    source ports.  The board answers each (echo replies, RSTs) at the same rate: answers never make it a
    flooder."""
    rng = np.random.default_rng(9)
    n = 3000
    ts = T0 + np.arange(n) / 1000.0
    pinger, flooder = ip(203, 0, 113, 50), ip(203, 0, 113, 51)
    ping = batch(ts, pinger, BOARD, proto=1, sport=-1, dport=-1, icmp_type=ECHO_REQUEST, size=98)
    pong = batch(ts + 0.0002, BOARD, pinger, proto=1, sport=-1, dport=-1, icmp_type=ECHO_REPLY, size=98)
    flags = rng.choice([FIN, XMAS, 0], n)
    odd = batch(ts + 10, flooder, BOARD, sport=40000 + np.arange(n), dport=80, flags=flags)
    resets = batch(ts + 10.0002, BOARD, flooder, sport=odd.dport, dport=odd.sport, flags=RSTACK)
    # Mirai's syn attack with every flag set but RST and URG (its "syn" command takes any flag bits).
    synner = ip(203, 0, 113, 52)
    odd_syn = batch(ts + 20, synner, BOARD, sport=rng_ports(rng, n), dport=443, flags=0x1B, size=74)
    verdicts, labels = run(join(ping, pong, odd, resets, odd_syn))
    assert [(v.label, v.basis, v.src_ip, v.proto) for v in verdicts] == [
        ("mirai_udp", "headers", "203.0.113.50", 1), ("mirai_ack", "headers", "203.0.113.51", 6),
        ("mirai_syn", "headers", "203.0.113.52", 6),
    ]
    assert all(v.latency < 1.0 for v in verdicts)


def test_the_victim_of_a_syn_flood_answering_with_syn_acks_is_no_flooder():
    rng = np.random.default_rng(10)
    n = 4000
    ts = T0 + np.arange(n) / 2000.0
    attacker = ip(198, 51, 100, 77)
    syn = batch(ts, attacker, BOARD, sport=rng_ports(rng, n), dport=80, flags=SYN, size=74)
    synack = batch(ts + 0.0002, BOARD, attacker, sport=80, dport=syn.sport, flags=SYNACK, size=74)
    verdicts, _ = run(join(syn, synack))
    assert [(v.label, v.src_ip) for v in verdicts] == [("mirai_syn", "198.51.100.77")]


def test_syn_acks_that_answer_no_syn_are_a_syn_flood():
    """Mirai's syn attack with the ACK bit set sends SYN-ACKs nobody asked for (here spoofed, at a /30)."""
    rng = np.random.default_rng(13)
    n = 3000
    ts = T0 + np.arange(n) / 1500.0
    flood = batch(ts, ip(100, 64, 0, 0) + rng.integers(0, 1 << 20, n), ip(10, 0, 0, 4) + rng.integers(0, 4, n),
                  sport=rng_ports(rng, n), dport=53, flags=SYNACK, size=74)
    verdicts, labels = run(flood)
    assert {(v.kind, v.label, v.basis) for v in verdicts} == {("spoofed", "mirai_syn", "headers")}
    assert (labels == LABELS.index("mirai_syn")).mean() > 0.8  # each of the 4 targets convicted after 100


@pytest.mark.parametrize("flags", [FIN, XMAS, 0], ids=["fin", "xmas", "null"])
def test_stealth_port_scans_are_scans(flags):
    """nmap -sF/-sX/-sN: closed ports answer with RST, open ones not at all; no SYN-ACK ever."""
    rng = np.random.default_rng(11)
    scanner = ip(192, 168, 1, 99)
    ports = rng.permutation(np.arange(1, 501))
    ts = T0 + np.arange(500) / 100.0
    probes = batch(ts, scanner, BOARD, sport=55555, dport=ports, flags=flags)
    resets = batch(ts[ports > 30] + 0.0003, BOARD, scanner, sport=ports[ports > 30], dport=55555, flags=RSTACK)
    verdicts, _ = run(join(probes, resets))
    assert [(v.label, v.basis, v.src_ip) for v in verdicts] == [("mirai_scan", "headers", "192.168.1.99")]
    assert verdicts[0].latency < 1.0


def test_a_ping_sweep_of_absent_hosts_is_a_scan_and_pinging_live_hosts_is_not():
    sweeper, monitor = ip(192, 168, 1, 98), ip(192, 168, 1, 2)
    hosts = ip(10, 20, 0, 0) + np.arange(200)
    ts = T0 + np.arange(200) / 50.0
    sweep = batch(ts, sweeper, hosts, proto=1, sport=-1, dport=-1, icmp_type=ECHO_REQUEST, size=98)
    # A monitor pinging 60 devices every few seconds, every one answering.
    devices = ip(192, 168, 1, 100) + np.arange(60)
    tm = T0 + np.arange(600) / 20.0
    checks = batch(tm, monitor, devices[np.arange(600) % 60], proto=1, sport=-1, dport=-1, icmp_type=ECHO_REQUEST)
    answers = batch(tm + 0.002, devices[np.arange(600) % 60], monitor, proto=1, sport=-1, dport=-1,
                    icmp_type=ECHO_REPLY)
    verdicts, _ = run(join(sweep, checks, answers))
    assert [(v.label, v.basis, v.src_ip) for v in verdicts] == [("mirai_scan", "headers", "192.168.1.98")]


@pytest.mark.parametrize(
    "proto, flags, ports, header, model_says, verdict",
    [
        (17, 0, "random", 0, "mirai_udpplain", "mirai_udp"),  # fresh socket pairs: Mirai's udp flood
        (17, 0, "fixed", 0, "mirai_udp", "mirai_udpplain"),  # one socket reused: udpplain (or udp, both ports set)
        (6, ACK, "random", 20, "mirai_scan", "mirai_ack"),  # empty ACKs at random ports
        (6, SYN, "random", 40, "mirai_scan", "mirai_syn"),  # SYNs with a flood's option block, random ports
        (6, SYN, "random", 20, "mirai_syn", "mirai_scan"),  # short SYNs to ports not tried: a port scan
    ],
    ids=["udp", "one-socket", "ack", "syn", "port-scan"],
)
def test_below_flood_rates_the_model_says_attack_and_the_headers_say_which(proto, flags, ports, header, model_says,
                                                                          verdict):
    """A slow attack (80 packets/s of 400-byte frames, 32 kB/s: no header rule) the model calls an attack of the
    wrong class for its headers.  Through one socket, Mirai's udp flood with both ports set and its udpplain differ
    in no feature the model sees: the headers name the one that always sends so."""
    rng = np.random.default_rng(12)
    n = 400
    ts = T0 + np.arange(n) / 80.0
    sport, dport = (rng_ports(rng, n), rng.permutation(np.arange(1, n + 1))) if ports == "random" else (40000, 443)
    b = batch(ts, ip(198, 51, 100, 5), BOARD, proto=proto, sport=sport, dport=dport, flags=flags, size=400)
    b.tcp_hdr_len[:] = header
    scores = np.full((n, len(LABELS)), 0.02)
    scores[:, LABELS.index(model_says)] = 0.9
    verdicts, _ = run(b, scores=scores)
    assert [(v.label, v.basis) for v in verdicts][:1] == [(verdict, "model")]


def test_a_syn_flood_whose_kernel_refuses_every_syn_ack_is_still_a_syn_flood():
    """hping3 sends raw SYNs; the attacker's own kernel answers each SYN-ACK with a RST: half its packets."""
    n = 4000
    ts = T0 + np.arange(n) / 1700.0
    attacker = ip(198, 51, 100, 88)
    syn = batch(ts, attacker, BOARD, sport=1024 + np.arange(n), dport=80, flags=SYN)
    rst = batch(ts + 0.0004, attacker, BOARD, sport=1024 + np.arange(n), dport=80, flags=0x04)
    verdicts, _ = run(join(syn, rst))
    assert [(v.label, v.basis, v.src_ip) for v in verdicts] == [("mirai_syn", "headers", "198.51.100.88")]
    assert verdicts[0].latency < 1.0


def test_bursts_of_probes_are_scans_at_once_and_never_floods():
    """nmap -sS sends 1,000 SYNs in 20 ms; nmap -sn bursts echo requests across a /24 (no host there).  (nmap's
    second round to the silent hosts is no probe any more: it can add a ping-flood verdict, left as it is.)"""
    syn_scanner, sweeper = ip(192, 168, 1, 91), ip(192, 168, 1, 92)
    ts = T0 + np.arange(1000) / 50000.0
    probes = batch(ts, syn_scanner, BOARD, sport=61000, dport=np.arange(1, 1001), flags=SYN)
    hosts = ip(10, 30, 0, 0) + np.arange(256)
    pings = batch(T0 + 5 + np.arange(256) / 1000.0, sweeper, hosts, proto=1, sport=-1, dport=-1, icmp_type=ECHO_REQUEST)
    verdicts, _ = run(join(probes, pings))
    assert [(v.label, v.basis, v.src_ip) for v in verdicts] == [
        ("mirai_scan", "headers", "192.168.1.91"), ("mirai_scan", "headers", "192.168.1.92")
    ]
    assert all(v.latency < 0.5 for v in verdicts)


def test_bursts_of_small_datagrams_are_no_flood_however_the_model_scores_them():
    """A peer sends 20 small datagrams in 40 ms, and 30 more a second later (the live agent test's probes):
    the model scores them like a udpplain flood, but at 2-3 kB/s they carry no flood's volume."""
    ts = T0 + np.concatenate([np.arange(20) * 0.002, 1.3 + np.arange(30) * 0.002])
    b = batch(ts, ip(10, 77, 0, 20), BOARD, proto=17, sport=41000, dport=9999, size=60)
    b.payload_len[:] = 8  # ("probe 17": too short to show an application's header, or its absence)
    scores = np.full((len(b), len(LABELS)), 0.02)
    scores[:, LABELS.index("mirai_udpplain")] = 0.9
    assert run(b, scores=scores)[0] == []
    flood = batch(T0 + np.arange(400) / 80.0, ip(10, 77, 0, 21), BOARD, proto=17, sport=41000, dport=9999, size=400)
    scores = np.full((len(flood), len(LABELS)), 0.02)
    scores[:, LABELS.index("mirai_udpplain")] = 0.9
    assert [v.label for v in run(flood, scores=scores)[0]] == ["mirai_udpplain"]  # 32 kB/s


def test_a_telnet_session_the_model_finds_scan_like_is_no_scan_without_probes():
    """A phone typing into the router's telnet: the model scores it like the scanner's brute force.  A scanner
    probes new hosts beside its sessions."""
    n = 300
    ts = T0 + np.arange(n) / 10.0
    scan_scores = np.full((n, len(LABELS)), 0.02)
    scan_scores[:, LABELS.index("mirai_scan")] = 0.9
    phone = batch(ts, ip(192, 168, 1, 50), ip(192, 168, 1, 1), sport=50123, dport=23, flags=PSHACK, size=67)
    assert run(phone, scores=scan_scores)[0] == []
    bot = batch(ts, ip(192, 168, 1, 51), ip(192, 168, 1, 1), sport=50124, dport=23, flags=PSHACK, size=67)
    probes = batch(ts + 0.05, ip(192, 168, 1, 51), ip(100, 64, 0, 0) + np.arange(n), sport=rng_ports(np.random.default_rng(14), n), dport=23, flags=SYN)
    both = join(bot, probes)
    scores = np.full((len(both), len(LABELS)), 0.02)
    scores[:, LABELS.index("mirai_scan")] = 0.9
    verdicts, _ = run(both, scores=scores)
    assert [(v.label, v.src_ip) for v in verdicts][:1] == [("mirai_scan", "192.168.1.51")]


def test_a_steady_udp_stream_or_a_download_is_no_flood():
    n = 6000
    ts = T0 + np.arange(n) / 1000.0
    rtp = batch(ts, ip(192, 168, 1, 30), ip(192, 168, 1, 40), proto=17, sport=5004, dport=5004, size=1300)
    download = batch(ts, ip(151, 101, 1, 1), BOARD, sport=443, dport=51000, flags=ACK, size=1514)
    assert run(join(rtp, download))[0] == []


def test_port_scan_answered_by_resets_is_a_scan_and_a_burst_of_answered_connections_is_not():
    rng = np.random.default_rng(4)
    scanner, phone = ip(192, 168, 1, 66), ip(192, 168, 1, 23)
    ports = rng.permutation(np.arange(1, 1001))
    ts = T0 + np.arange(1000) / 300.0
    probes = batch(ts, scanner, BOARD, sport=61000, dport=ports, flags=SYN)
    resets = batch(ts + 0.0003, BOARD, scanner, sport=ports, dport=61000, flags=RSTACK)
    # A phone opening 40 connections to 40 servers at once; every one answered.
    servers = ip(104, 16, 0, 0) + np.arange(40)
    tp = T0 + 0.01 * np.arange(40)
    sports = 50000 + np.arange(40)
    opens = batch(tp, phone, servers, sport=sports, dport=443, flags=SYN, size=74)
    answers = batch(tp + 0.03, servers, phone, sport=443, dport=sports, flags=SYNACK, size=74)
    acks = batch(tp + 0.031, phone, servers, sport=sports, dport=443, flags=ACK)
    verdicts, _ = run(join(probes, resets, opens, answers, acks))
    assert [(v.label, v.basis, v.src_ip) for v in verdicts] == [("mirai_scan", "headers", "192.168.1.66")]
    assert verdicts[0].latency < 1.0


def test_mirai_scanners_probing_the_board_are_caught_by_their_fingerprint():
    """Many scanning bots, one to three SYNs each to 23/2323, sequence number = the board's address."""
    rng = np.random.default_rng(5)
    bots = ip(100, 64, 0, 0) + rng.choice(1 << 20, 300, replace=False)
    per_bot = rng.integers(1, 4, 300)
    src = np.repeat(bots, per_bot)
    ts = T0 + np.sort(rng.uniform(0, 600, len(src)))
    scan = batch(ts, src, BOARD, sport=rng_ports(rng, len(src)), dport=np.where(rng.random(len(src)) < 0.9, 23, 2323),
                 flags=SYN, seq=BOARD, size=60)
    other = batch(ts[:50] + 0.5, ip(100, 64, 200, 1) + np.arange(50), BOARD, dport=23, flags=SYN, seq=12345, size=60)
    verdicts, labels = run(join(scan, other))
    assert {v.src_ip for v in verdicts} == {f"100.{64 + (int(b) >> 16 & 0xFF) - 64}.{int(b) >> 8 & 0xFF}.{int(b) & 0xFF}" for b in bots}
    assert {(v.label, v.basis) for v in verdicts} == {("mirai_scan", "headers")}
    assert all(v.latency == 0 for v in verdicts)


def test_mirai_syn_floods_seen_as_a_trickle_are_caught_by_their_zero_window():
    """The board's view of two bots' SYN floods at its /24: a few SYNs a second each, to random ports, with the
    option block of a real stack but a receive window of 0 (attack_tcp.c never sets it), among clients whose SYNs
    carry options and a window, and nmap's raw SYNs (window 1024).  Each bot is convicted of a SYN flood at its
    second packet (a never-seen source's first packet may be a spoofed flood's forged address), which carries
    the verdict's class, as all its later ones do; nobody else is."""
    rng = np.random.default_rng(31)
    bots, n = (ip(178, 129, 244, 223), ip(93, 240, 62, 73)), 30
    floods = [batch(T0 + 1 + k * 0.2 + np.sort(rng.uniform(0, 10, n)), bot, BOARD, sport=rng_ports(rng, n),
                    dport=rng_ports(rng, n), size=74, win=0) for k, bot in enumerate(bots)]
    clients = batch(T0 + np.sort(rng.uniform(0, 12, 40)), ip(100, 65, 0, 1) + np.arange(40), BOARD, dport=443,
                    sport=rng_ports(rng, 40), size=74)
    nmap = batch(T0 + 3 + np.arange(5) * 0.3, ip(100, 66, 0, 1), BOARD, dport=rng_ports(rng, 5), size=58, win=1024)
    for b in (*floods, clients):
        b.tcp_hdr_len[:] = 40
    nmap.tcp_hdr_len[:] = 24  # (nmap's MSS option alone)
    b = join(*floods, clients, nmap)
    verdicts, labels = run(b)
    assert sorted((v.src_ip, v.label, v.basis) for v in verdicts) == [
        ("178.129.244.223", "mirai_syn", "headers"), ("93.240.62.73", "mirai_syn", "headers")]
    second = {f"{bot >> 24}.{bot >> 16 & 255}.{bot >> 8 & 255}.{bot & 255}": b.ts[b.src_ipv4 == bot][1] for bot in bots}
    assert all(v.decided_at == second[v.src_ip] for v in verdicts)
    from_bots = np.isin(b.src_ipv4, bots)
    first = np.zeros(len(b), dtype=bool)
    first[[int(np.flatnonzero(b.src_ipv4 == bot)[0]) for bot in bots]] = True
    assert (labels[from_bots & ~first] == LABELS.index("mirai_syn")).all() and (labels[~from_bots] < 0).all()


def test_a_spoofed_zero_window_syn_flood_convicts_its_target_not_a_forged_source():
    """Mirai's SYN flood with its source option set to random: a new address with every packet.  Its zero window
    never convicts a forged source (each sends one packet); the flood is its target's verdict."""
    rng = np.random.default_rng(32)
    n = 4000
    flood = batch(T0 + np.arange(n) / 1000.0, rng.integers(1, 1 << 32, n), BOARD, sport=rng_ports(rng, n),
                  dport=rng_ports(rng, n), size=74, win=0)
    flood.tcp_hdr_len[:] = 40
    verdicts, _ = run(flood)
    assert [(v.kind, v.label) for v in verdicts] == [("spoofed", "mirai_syn")]


def test_a_server_acknowledging_a_slowloris_attack_is_never_convicted():
    """Slowloris at the board: 300 connections opened in 1.5 s, each sending a header line every 10 s.  The
    board's bare ACKs of those lines come after seconds of silence on each socket pair (fresh, like an ack
    flood's) and from its one port 80; the model takes them for an ack flood.  They acknowledge data the other
    end sent: answers, neither an ACK scan's probes nor a flood."""
    rng = np.random.default_rng(33)
    n, rounds = 300, 4
    attacker = ip(203, 0, 113, 60)
    sports = 40000 + np.arange(n)
    t_open = T0 + np.sort(rng.uniform(0, 1.5, n))
    isn_c, isn_s = rng.integers(1, 1 << 31, n), rng.integers(1, 1 << 31, n)
    parts = [batch(t_open, attacker, BOARD, sport=sports, size=74),
             batch(t_open + 0.0002, BOARD, attacker, sport=80, dport=sports, flags=SYNACK, seq=isn_s, ack=isn_c + 1,
                   size=74),
             batch(t_open + 0.02, attacker, BOARD, sport=sports, flags=ACK, seq=isn_c + 1, ack=isn_s + 1)]
    for r in range(rounds + 1):
        sent = 200 + 10 * r  # the request, then a 10-byte header line a round
        t = t_open + 0.021 + 10.0 * r + rng.uniform(0, 3, n)
        line = batch(t, attacker, BOARD, sport=sports, flags=PSHACK, seq=isn_c + 1 + (sent - (200 if r == 0 else 10)),
                     ack=isn_s + 1, size=74)
        line.payload_len[:] = 200 if r == 0 else 10
        parts += [line, batch(t + 0.001, BOARD, attacker, sport=80, dport=sports, flags=ACK, seq=isn_s + 1,
                              ack=isn_c + 1 + sent)]
    b = join(*parts)
    from_board = b.src_ipv4 == BOARD
    scores = benign_scores(len(b))
    scores[from_board] = np.eye(len(LABELS))[LABELS.index("mirai_ack")] * 0.9 + 0.02
    verdicts, labels = run(b, scores=scores)
    assert not [v for v in verdicts if v.src_ip == "10.0.0.5"]
    assert (labels[from_board] < 0).all()


def test_a_telnet_password_guesser_is_a_scan_and_a_few_logins_are_not():
    """hydra-like: 16 tasks, each a new connection to the board's telnet port every 2.5 s (one guess, then "Login
    incorrect"), no Mirai fingerprint.  A user logging in three times in a minute is nobody's scan."""
    rng = np.random.default_rng(34)
    guesser, user = ip(203, 0, 113, 50), ip(192, 168, 1, 30)
    starts = (T0 + rng.uniform(0, 0.2, 16)[:, None] + 2.5 * np.arange(8)[None, :]).ravel()
    user_starts = T0 + np.array([1.0, 20.0, 55.0])
    b = join(connections(np.sort(starts), guesser, BOARD, rng, port=23),
             connections(user_starts, user, BOARD, rng, port=23))
    verdicts, _ = run(b)
    assert [(v.src_ip, v.label, v.basis) for v in verdicts] == [("203.0.113.50", "mirai_scan", "headers")]
    assert verdicts[0].latency < 1.0


def test_a_bot_flooding_a_subnet_beside_its_own_upload_is_caught_on_the_flood_alone():
    """The board as a bot: a UDP flood at a /24 (random hosts and ports, 300 packets/s) while it uploads video over
    TCP (200 segments/s), so that UDP is 60% of what it sends: no flood's shape.  The model is unsure of the flood
    (half its score).  What it sends that subnet is a flood on the headers."""
    rng = np.random.default_rng(35)
    bot, n_flood, n_up = ip(192, 168, 1, 50), 1500, 1000
    flood = batch(T0 + np.sort(rng.uniform(0, 5, n_flood)), bot, ip(133, 135, 255, 0) + rng.integers(1, 255, n_flood),
                  proto=17, sport=rng_ports(rng, n_flood), dport=rng_ports(rng, n_flood), size=362)
    upload = batch(T0 + np.arange(n_up) / 200.0, bot, ip(52, 1, 2, 3), sport=50000, dport=443, flags=PSHACK,
                   seq=1 + 1400 * np.arange(n_up), size=1454)
    upload.payload_len[:] = 1400
    b = join(flood, upload)
    scores = benign_scores(len(b))
    is_flood = b.proto == 17
    scores[is_flood] = 0.01
    scores[is_flood, 0], scores[is_flood, LABELS.index("mirai_udp")] = 0.45, 0.5
    verdicts, labels = run(b, scores=scores)
    assert [(v.src_ip, v.label, v.basis) for v in verdicts] == [("192.168.1.50", "mirai_udp", "headers")]
    assert verdicts[0].latency < 1.0
    assert (labels[~is_flood] < 0).all()


def test_syn_flood_from_rotating_sources_is_reported_within_a_second():
    rng = np.random.default_rng(6)
    n = 20000
    sources = ip(45, 0, 0, 0) + np.arange(40)
    ts = T0 + np.arange(n) / 4000.0  # 100 packets/s per source: none heavy enough on its own
    b = batch(ts, sources[np.arange(n) % 40], BOARD, sport=rng_ports(rng, n), dport=80, flags=SYN, size=74)
    verdicts, labels = run(b)
    assert [(v.kind, v.label, v.basis, v.victim_ip, v.victim_port) for v in verdicts] == [
        ("spoofed", "mirai_syn", "headers", "10.0.0.5", 80)
    ]
    assert verdicts[0].latency < 1.0
    assert (labels == LABELS.index("mirai_syn")).mean() > 0.95


def test_anomaly_verdicts_need_most_recent_packets_anomalous():
    n = 600
    ts = T0 + np.arange(n) / 50.0
    b = batch(ts, ip(192, 168, 1, 77), ip(192, 168, 1, 1), proto=17, sport=7000, dport=7001, size=300)
    score = np.full(n, 0.5)
    score[200:] = 3.0
    verdicts, labels = run(b, anomaly=score)
    assert [(v.label, v.basis) for v in verdicts] == [(ANOMALY, "anomaly")]
    assert VERDICT_LABELS[labels[-1]] == ANOMALY and (labels[:200] == -1).all()
    # Scattered anomalous packets are not enough.
    sparse = np.where(np.arange(n) % 4 == 0, 3.0, 0.5)
    assert run(b, anomaly=sparse)[0] == []


def test_anomaly_verdicts_are_reported_and_blocked_only_when_configured():
    from agent.act.respond import ResponseConfig, alert_document, rule_for
    from agent.detect.decide import Verdict
    from agent.wire import ALERT_SCHEMA, parse_alert

    v = Verdict("source", ANOMALY, 0.9, 50, T0, T0 + 5, T0 + 1, src_ip="192.0.2.9", basis="anomaly")
    assert rule_for(v, T0, ResponseConfig()) is None
    assert rule_for(v, T0, ResponseConfig(block_anomalies=True)).id == "src:192.0.2.9"
    doc = {**alert_document(v, "none", None), "schema": ALERT_SCHEMA, "seq": 1, "device": "d1", "fleet": "f"}
    parsed = parse_alert(json.dumps(doc).encode(), "f", "d1")
    assert (parsed["class"], parsed["basis"]) == (ANOMALY, "anomaly")


def test_spoofed_flood_at_a_whole_subnet_is_reported_per_sender():
    """Mirai with a /24 target and spoofed sources: every source and every target is light."""
    rng = np.random.default_rng(8)
    n = 8000
    ts = T0 + np.arange(n) / 5000.0
    src = rng.integers(1, 1 << 32, n)
    dst = ip(10, 0, 0, 0) + rng.integers(0, 256, n)
    b = batch(ts, src, dst, proto=17, sport=rng_ports(rng, n), dport=rng_ports(rng, n), size=554)
    b.src_mac[:] = 0x0200_0000_0042
    verdicts, labels = run(b)
    assert [(v.kind, v.label, v.basis, v.src_mac, v.victim_ip) for v in verdicts] == [
        ("spoofed", "mirai_udp", "headers", "02:00:00:00:00:42", None)
    ]
    assert verdicts[0].latency < 1.0 and (labels == LABELS.index("mirai_udp")).mean() > 0.95


def scan_scores(n: int, label: str = "mirai_scan") -> np.ndarray:
    s = np.full((n, len(LABELS)), 0.01)
    s[:, LABELS.index(label)] = 0.95
    return s


def test_lone_bare_probes_convict_each_scanner_behind_nat_and_a_spoofed_flood_of_them_convicts_its_target():
    """A board behind NAT probed by scanning bots: one to three SYNs each, no TCP options, and the sequence number is
    the router's public address (no fingerprint).  The model calls them scans.  A client's SYN carries options;
    a spoofed flood of bare SYNs, which the model calls scans as well, is its target's verdict (its first
    packet looks like a lone probe: one source verdict at most)."""
    rng = np.random.default_rng(21)
    bots = ip(100, 64, 0, 0) + rng.choice(1 << 20, 40, replace=False)
    src = np.repeat(bots, rng.integers(1, 4, 40))
    ts = T0 + np.sort(rng.uniform(0, 120, len(src)))
    probes = batch(ts, src, BOARD, sport=rng_ports(rng, len(src)), dport=23, flags=SYN, seq=ip(203, 0, 113, 1))
    client = batch(ts[:20] + 0.3, ip(100, 65, 0, 1) + np.arange(20), BOARD, dport=23, flags=SYN, size=74)
    client.tcp_hdr_len[:] = 40  # an operating system's SYN
    b = join(probes, client)
    verdicts, labels = run(b, scores=scan_scores(len(b)))
    assert {v.src_ip for v in verdicts} == {f"100.{int(x) >> 16 & 0xFF}.{int(x) >> 8 & 0xFF}.{int(x) & 0xFF}" for x in bots}
    assert {(v.label, v.basis) for v in verdicts} == {("mirai_scan", "headers")}
    assert max(v.latency for v in verdicts) < 1.0

    n = 5000
    flood = batch(T0 + np.arange(n) / 2000.0, rng.integers(1, 1 << 32, n), BOARD, sport=rng_ports(rng, n), dport=80)
    verdicts, _ = run(flood, scores=scan_scores(n))
    assert [(v.kind, v.label) for v in verdicts if v.kind == "spoofed"] == [("spoofed", "mirai_syn")]
    assert len([v for v in verdicts if v.kind == "source"]) <= 1
    # The same flood at random addresses from random MACs (every target light, every sender new): one source
    # verdict at most, not one per spoofed address.
    scattered = batch(T0 + np.arange(n) / 2000.0, rng.integers(1, 1 << 32, n), rng.integers(1, 1 << 32, n),
                      sport=rng_ports(rng, n), dport=rng_ports(rng, n))  # fmt: skip
    scattered.src_mac[:] = rng.integers(1, 1 << 47, n).astype(np.uint64)
    verdicts, _ = run(scattered, scores=scan_scores(n))
    assert len([v for v in verdicts if v.kind == "source"]) <= 1


def test_a_slow_tcp_flood_through_fresh_sockets_needs_no_volume_and_one_socket_does():
    """40 empty ACKs a second (2.4 kB/s, below the volume a model flood verdict needs) at random ports: Mirai's ack
    flood at a slow uplink.  The same packets through one socket pair are a session the model misjudges."""
    rng = np.random.default_rng(22)
    n = 400
    ts = T0 + np.arange(n) / 40.0
    fresh = batch(ts, ip(198, 51, 100, 7), BOARD, sport=rng_ports(rng, n), dport=rng_ports(rng, n), flags=ACK)
    verdicts, _ = run(fresh, scores=scan_scores(n, "mirai_ack"))
    assert [(v.label, v.basis) for v in verdicts] == [("mirai_ack", "model")] and verdicts[0].latency < 1.0
    session = batch(ts, ip(198, 51, 100, 7), BOARD, sport=40000, dport=8883, flags=ACK)
    assert run(session, scores=scan_scores(n, "mirai_ack"))[0] == []


def test_a_syn_flood_at_a_subnet_is_a_syn_flood_not_a_scan():
    """Mirai's syn flood at a /24 at 100 packets/s: SYNs with the kernel's option block to ever new hosts and ports,
    unanswered.  Probes they are, but no scanner's."""
    rng = np.random.default_rng(23)
    n = 1000
    ts = T0 + np.arange(n) / 100.0
    dst = ip(10, 9, 8, 0) + rng.integers(0, 256, n)
    b = batch(ts, ip(198, 51, 100, 9), dst, sport=rng_ports(rng, n), dport=rng_ports(rng, n), flags=SYN, size=74)
    b.tcp_hdr_len[:] = 40
    for scores in (benign_scores(n), scan_scores(n, "mirai_syn")):
        verdicts, labels = run(b, scores=scores)
        assert [v.label for v in verdicts] == ["mirai_syn"] and verdicts[0].latency < 1.0
        assert (labels == LABELS.index("mirai_syn")).mean() > 0.9


def test_a_syn_scan_of_open_ports_whose_answers_the_scanner_resets_is_a_scan():
    """nmap -sS at a host with every port open: each SYN-ACK answers a probe, and the scanner's kernel resets it."""
    scanner = ip(192, 168, 1, 67)
    ports = np.arange(1, 301)
    ts = T0 + np.arange(300) / 100.0
    probes = batch(ts, scanner, BOARD, sport=61000, dport=ports, flags=SYN)
    probes.tcp_hdr_len[:] = 24  # nmap's MSS option
    answers = batch(ts + 0.0003, BOARD, scanner, sport=ports, dport=61000, flags=SYNACK)
    resets = batch(ts + 0.0006, scanner, BOARD, sport=61000, dport=ports, flags=0x04)
    verdicts, _ = run(join(probes, answers, resets))
    assert [(v.label, v.basis, v.src_ip) for v in verdicts] == [("mirai_scan", "headers", "192.168.1.67")]
    # Without its resets (a client whose connections all succeed) the answers keep it from being a scan.
    assert [v for v in run(join(probes, answers))[0] if v.label == "mirai_scan"] == []


def test_a_victim_refusing_a_spoofed_ack_flood_is_no_flooder():
    """The board answers 3,000 spoofed ACKs a second with as many RSTs, and keeps its own MQTT session."""
    rng = np.random.default_rng(24)
    n = 9000
    ts = T0 + np.arange(n) / 3000.0
    src, sports, dports = rng.integers(1, 1 << 32, n), rng_ports(rng, n), rng_ports(rng, n)
    flood = batch(ts, src, BOARD, sport=sports, dport=dports, flags=ACK)
    refusals = batch(ts + 0.0002, BOARD, src, sport=dports, dport=sports, flags=0x04)
    mqtt = batch(T0 + np.arange(12) / 4.0, BOARD, ip(52, 1, 2, 3), sport=50000, dport=8883, flags=PSHACK)
    verdicts, _ = run(join(flood, refusals, mqtt))
    assert [v.src_ip for v in verdicts if v.kind == "source" and v.src_ip == "10.0.0.5"] == []


def test_a_udp_port_scan_refused_by_closed_ports_is_a_scan_and_udp_to_many_ports_of_a_peer_is_not():
    """nmap -sU: datagrams to one port after another of one host, the closed ones refused with ICMP port
    unreachable (as Linux rate-limits them: six at once).  A peer-to-peer client trying 60 ports of a peer behind
    NAT gets no refusal; a DNS client's queries to its resolver go to one port; a traceroute's are answered."""
    scanner, p2p, resolver_client = ip(192, 168, 1, 70), ip(192, 168, 1, 71), ip(192, 168, 1, 72)
    ports = np.arange(1000, 1100)
    ts = T0 + np.arange(100) / 300.0
    probes = batch(ts, scanner, BOARD, proto=17, sport=60664, dport=ports, size=42)
    refusals = batch(ts[:6] + 0.0001, BOARD, scanner, proto=1, sport=-1, dport=-1, icmp_type=3, size=70)
    peer = ip(81, 2, 3, 4)
    punches = batch(T0 + np.arange(60) / 30.0, p2p, peer, proto=17, sport=41000, dport=30000 + np.arange(60), size=62)
    dns = batch(T0 + np.arange(50) / 5.0, resolver_client, ip(192, 168, 1, 1), proto=17,
                sport=np.random.default_rng(25).integers(1024, 65536, 50), dport=53, size=80)  # fmt: skip
    # A traceroute: three datagrams per hop to ports 33434 on, answered by each router's ICMP time exceeded, the
    # last hop's by port unreachable.
    tracer, far = ip(192, 168, 1, 73), ip(93, 184, 216, 34)
    tt = T0 + 0.05 * np.arange(36)
    trace = batch(tt, tracer, far, proto=17, sport=44000, dport=33434 + np.arange(36), size=74)
    hops = batch(tt[:33] + 0.01, ip(100, 100, 0, 1) + np.arange(33) // 3, tracer, proto=1, sport=-1, dport=-1,
                 icmp_type=11, size=70)  # fmt: skip
    last = batch(tt[33:] + 0.02, far, tracer, proto=1, sport=-1, dport=-1, icmp_type=3, size=70)
    verdicts, labels = run(join(probes, refusals, punches, dns, trace, hops, last))
    assert [(v.label, v.basis, v.src_ip, v.proto) for v in verdicts] == [("mirai_scan", "headers", "192.168.1.70", 17)]
    assert verdicts[0].latency < 1.0
    # Without the refusals (filtered ports: nmap's "open|filtered") the datagrams stay unjudged.
    assert run(join(probes, punches, dns))[0] == []


def test_mirais_gre_floods_are_udp_floods_and_a_pptp_tunnel_is_not():
    """greip and greeth: GRE version 0 carrying IPv4 or Ethernet (a UDP flood inside) at 2,000 packets/s.  PPTP's
    GRE (version 1, carrying PPP) at the same rate is a VPN, and GRE carrying IPv6 a site-to-site tunnel."""
    ts = T0 + np.arange(4000) / 2000.0
    greip = batch(ts, ip(198, 51, 100, 40), BOARD, proto=47, sport=-1, dport=-1, size=574, gre_proto=0x0800)
    greeth = batch(ts + 5, ip(198, 51, 100, 41), BOARD, proto=47, sport=-1, dport=-1, size=588, gre_proto=0x6558)
    pptp = batch(ts + 10, ip(198, 51, 100, 42), BOARD, proto=47, sport=-1, dport=-1, size=574)
    six = batch(ts + 15, ip(198, 51, 100, 43), BOARD, proto=47, sport=-1, dport=-1, size=574, gre_proto=0x86DD)
    verdicts, labels = run(join(greip, greeth, pptp, six))
    assert [(v.label, v.basis, v.src_ip, v.proto) for v in verdicts] == [
        ("mirai_udp", "headers", "198.51.100.40", 47), ("mirai_udp", "headers", "198.51.100.41", 47)]
    assert all(v.latency < 1.0 for v in verdicts)
    assert (labels[:8000] == LABELS.index("mirai_udp")).mean() > 0.95 and (labels[8000:] < 0).all()


def test_an_ack_flood_through_one_socket_is_told_from_a_stream_by_its_numbers():
    """Mirai's ack flood with both ports set, at 1,300 packets/s with 256-byte payloads: random sequence and
    acknowledgement numbers (its default), or a fixed sequence number (its seqnum option, its stomp attack).  A
    download through one socket at 2,000 packets/s advances its sequence number by each payload, and the ACKs
    going back advance their acknowledgement number."""
    rng = np.random.default_rng(26)
    n = 2600
    ts = T0 + np.arange(n) / 1300.0
    rand = batch(ts, ip(198, 51, 100, 50), BOARD, sport=12345, dport=6837, flags=PSHACK, size=310,
                 seq=rng.integers(0, 1 << 32, n))  # fmt: skip
    rand.tcp_ack[:] = rng.integers(0, 1 << 32, n)
    fixed = batch(ts + 5, ip(198, 51, 100, 51), BOARD, sport=23456, dport=80, flags=PSHACK, size=310, seq=1)
    for flood in (rand, fixed):
        flood.payload_len[:] = 256
    m = 4000
    td = T0 + np.arange(m) / 2000.0
    download = batch(td, ip(151, 101, 1, 1), BOARD, sport=443, dport=50500, flags=ACK, size=1514,
                     seq=(7 + 1448 * np.arange(m)) % (1 << 32))  # fmt: skip
    download.payload_len[:] = 1448
    download.tcp_ack[:] = 99
    acks = batch(td + 0.0001, BOARD, ip(151, 101, 1, 1), sport=50500, dport=443, flags=ACK, seq=99)
    acks.tcp_ack[:] = (7 + 1448 * (np.arange(m) + 1)) % (1 << 32)
    verdicts, _ = run(join(rand, fixed, download, acks))
    assert [(v.label, v.basis, v.src_ip) for v in verdicts] == [("mirai_ack", "headers", "198.51.100.50"),
                                                                ("mirai_ack", "headers", "198.51.100.51")]  # fmt: skip
    assert all(v.latency < 1.0 for v in verdicts)


def test_an_empty_ack_flood_with_every_number_fixed_is_caught_by_its_zero_acknowledgement():
    """Mirai's ack flood with len=0, both ports, seqnum and acknum (0) set: the same empty segment 1,300 times a
    second.  A receiver's pure ACKs through one socket look much the same, but acknowledge what they received."""
    ts = T0 + np.arange(2600) / 1300.0
    flood = batch(ts, ip(198, 51, 100, 52), BOARD, sport=12345, dport=6837, flags=PSHACK, size=54, seq=1)
    flood.tcp_ack[:] = 0
    acks = batch(ts + 5, BOARD, ip(151, 101, 1, 1), sport=50500, dport=443, flags=ACK, seq=99, size=54)
    acks.tcp_ack[:] = (7 + 1448 * (np.arange(2600) + 1)) % (1 << 32)
    verdicts, labels = run(join(flood, acks))
    assert [(v.label, v.basis, v.src_ip) for v in verdicts] == [("mirai_ack", "headers", "198.51.100.52")]
    assert verdicts[0].latency < 1.0


def test_a_udp_flood_of_probe_sized_datagrams_at_random_ports_is_a_flood_not_a_port_scan():
    """Mirai's udp flood with len=64 at one host: datagrams to ever new ports, as a UDP port scan's, and refused as
    a scan's are.  But a scanner sends from one source port (nmap, masscan), the flood from a new one per packet."""
    rng = np.random.default_rng(27)
    n = 3000
    ts = T0 + np.arange(n) / 3000.0
    flood = batch(ts, ip(203, 0, 113, 10), BOARD, proto=17, sport=rng_ports(rng, n), dport=rng_ports(rng, n), size=106)
    refusals = batch(ts[:6] + 0.0001, BOARD, ip(203, 0, 113, 10), proto=1, sport=-1, dport=-1, icmp_type=3, size=70)
    verdicts, labels = run(join(flood, refusals))
    assert [(v.label, v.src_ip) for v in verdicts] == [("mirai_udp", "203.0.113.10")]
    assert verdicts[0].latency < 1.0


def test_a_syn_flood_through_one_socket_pair_is_caught_below_the_flood_rate():
    """Mirai's syn flood with both ports set at 100 packets/s: the same socket pair's SYN again and again, which
    no kernel retries faster than once a second.  A client whose SYNs go unanswered retries at 1, 3, 7, 15 s."""
    ts = T0 + np.arange(300) / 100.0
    flood = batch(ts, ip(69, 166, 85, 176), BOARD, sport=1024, dport=53, flags=SYN, size=74)
    flood.tcp_hdr_len[:] = 40
    retries = batch(T0 + np.array([0.0, 1, 3, 7, 15]), ip(192, 168, 1, 80), ip(52, 1, 2, 3), sport=50000, dport=8883,
                    flags=SYN, size=74)  # fmt: skip
    verdicts, labels = run(join(flood, retries))
    assert [(v.label, v.basis, v.src_ip) for v in verdicts] == [("mirai_syn", "headers", "69.166.85.176")]
    assert verdicts[0].latency < 1.0


@pytest.mark.parametrize("ids, named", [("random", "mirai_udp"), ("fixed", "mirai_udp"), ("counting", "mirai_udpplain"),
                                        ("zero", "mirai_udpplain")])  # fmt: skip
def test_a_udp_flood_through_one_socket_is_named_by_its_ip_ids(ids, named):
    """A UDP flood with both ports fixed, which the model finds udpplain-like (one socket, as udpplain's connected
    one): a raw socket's random IP ids, or the one its ident option fixed, make it Mirai's udp flood; a kernel's
    counting ones (or 0, with DF) its udpplain."""
    rng = np.random.default_rng(28)
    n = 2000
    flood = batch(T0 + np.arange(n) / 1000.0, ip(62, 181, 91, 112), BOARD, proto=17, sport=53, dport=25083, size=554)
    flood.ip_id[:] = {"random": rng.integers(0, 1 << 16, n), "fixed": 59311, "zero": 0,
                      "counting": (4000 + np.arange(n)) % (1 << 16)}[ids]  # fmt: skip
    verdicts, labels = run(flood, scores=scan_scores(n, "mirai_udpplain"))
    assert [(v.label, v.src_ip) for v in verdicts] == [(named, "62.181.91.112")]
    # (its first 0.1 s could be a media stream's start: Evidence.media)
    assert verdicts[0].latency < 0.15
    assert (labels == LABELS.index(named)).mean() > 0.92


def test_an_ack_flood_with_rst_among_its_flags_is_a_flood_and_bare_rsts_answer():
    """Mirai's ack flood takes any flag bits: FIN-RST-PSH-ACK-URG with 1,000-byte payloads from three bots is a
    flood.  A stack's RST is bare (RST or RST-ACK, no data): a board refusing a flood the same way is no flooder."""
    rng = np.random.default_rng(29)
    n = 3000
    ts = T0 + np.arange(n) / 1500.0
    bots = ip(70, 37, 248, 9) + np.arange(n) % 3
    flood = batch(ts, bots, BOARD, sport=rng_ports(rng, n), dport=rng_ports(rng, n), flags=0x3D, size=1054,
                  seq=2046361600)  # fmt: skip
    flood.payload_len[:] = 1000
    flood.tcp_ack[:] = rng.integers(1, 1 << 32, n)
    refusals = batch(ts + 0.0001, BOARD, bots, sport=flood.dport, dport=flood.sport, flags=0x14, size=54)
    both = join(flood, refusals)
    scores = np.where((both.src_ip_lo != np.uint64(0xFFFF_0000_0000) | np.uint64(BOARD))[:, None],
                      scan_scores(2 * n, "mirai_ack"), benign_scores(2 * n))  # fmt: skip
    verdicts, labels = run(both, scores=scores)
    assert {(v.label, v.src_ip) for v in verdicts if v.kind == "source"} == {("mirai_ack", f"70.37.248.{9 + k}")
                                                                           for k in range(3)}  # fmt: skip
    assert all(v.latency < 1.0 for v in verdicts)


def test_small_datagrams_through_one_socket_that_nothing_answers_are_a_udpplain_flood():
    """Mirai's udpplain with a short payload (32 bytes, one connected socket, counting IP ids) at 5,000 a second:
    the headers convict it though the model finds it benign.  The same rate of small datagrams on a socket pair
    the other end answers on (a QUIC download's ACKs) is no flood, nor is a camera's one-way stream of large ones."""
    n = 5000
    ts = T0 + np.arange(n) / 5000.0
    flood = batch(ts, ip(203, 8, 58, 232), BOARD, proto=17, sport=41000, dport=7777, size=74)
    flood.ip_id[:] = (100 + np.arange(n)) % (1 << 16)
    verdicts, labels = run(flood)
    assert [(v.label, v.basis, v.src_ip) for v in verdicts] == [("mirai_udpplain", "headers", "203.8.58.232")]
    # (at its 100th datagram: a small datagram's first 0.1 s is no video's key frame, which media streams are spared)
    assert verdicts[0].latency < 0.05 and (labels == LABELS.index("mirai_udpplain")).mean() > 0.9

    acks = batch(ts, BOARD, ip(142, 250, 1, 1), proto=17, sport=51000, dport=443, size=80)
    data = batch(ts + 0.0001, ip(142, 250, 1, 1), BOARD, proto=17, sport=443, dport=51000, size=1392)
    camera = batch(T0 + np.arange(n) / 1500.0, ip(192, 168, 1, 30), ip(192, 168, 1, 40), proto=17, sport=5004,
                   dport=5004, size=1300)  # fmt: skip
    assert run(join(acks, data, camera))[0] == []


def fragmented(first: PacketBatch, pieces: int = 3) -> PacketBatch:
    """Each packet of ``first`` as the first fragment of a datagram of ``pieces`` 1,514-byte frames: the later
    fragments follow it at once, with no transport header (no ports, flags or ICMP type)."""
    tails = []
    for k in range(1, pieces):
        tail = first.take(np.arange(len(first)))
        tail.ts = first.ts + 1e-6 * k
        tail.frag[:] = True
        tail.port_kind[:] = 0  # PORT_NONE
        tail.sport[:], tail.dport[:], tail.tcp_flags[:], tail.icmp_type[:] = -1, -1, 0, -1
        tails.append(tail)
    return join(first, *tails)


@pytest.mark.parametrize("proto,flags,icmp_type,label", [(6, ACK, -1, "mirai_ack"), (17, 0, -1, "mirai_udp"),
                                                          (1, 0, ECHO_REQUEST, "mirai_udp")])  # fmt: skip
def test_a_flood_of_fragmented_datagrams_has_its_protocols_shape_in_every_fragment(proto, flags, icmp_type, label):
    """hping3 ``-d 3000`` floods (the "fragmentation" floods of CIC-IoT-2023): two frames of three carry no transport
    header; they take their first fragment's, so the flood is one shape throughout and named on the headers."""
    rng = np.random.default_rng(21)
    n = 2000
    ts = T0 + np.arange(n) / 1000.0
    ports = (rng_ports(rng, n), rng_ports(rng, n)) if proto != 1 else (-1, -1)
    heads = batch(ts, ip(203, 0, 113, 60), BOARD, proto=proto, sport=ports[0], dport=ports[1], flags=flags,
                  icmp_type=icmp_type, size=1514)  # fmt: skip
    verdicts, labels = run(fragmented(heads))
    assert [(v.label, v.basis, v.src_ip) for v in verdicts] == [(label, "headers", "203.0.113.60")]
    assert verdicts[0].latency < 1.0
    assert (labels == LABELS.index(label)).mean() > 0.95  # the later fragments carry the verdict's class too


def test_large_datagrams_fragmented_through_one_socket_pair_are_no_flood():
    """A camera's 4,000-byte datagrams to one viewer port, 300 a second in 900 frames: one stream, no flood."""
    n = 3000
    ts = T0 + np.arange(n) / 300.0
    heads = batch(ts, ip(192, 168, 1, 30), ip(192, 168, 1, 10), proto=17, sport=5004, dport=5004, size=1514)
    verdicts, _ = run(fragmented(heads))
    assert verdicts == []


def test_large_datagrams_fragmented_through_one_socket_pair_at_a_floods_pace_are_a_flood():
    """Gafgyt's udp flood with a 4,000-byte packet size, through one socket to port 80 of the board: 1,000 datagrams
    a second in 3,000 frames, nothing back.  The model finds such frames benign; the headers name the flood."""
    n = 4000
    ts = T0 + np.arange(n) / 1000.0
    heads = batch(ts, ip(192, 168, 1, 66), BOARD, proto=17, sport=41234, dport=80, size=1514)
    heads.ip_id[:] = (7000 + np.arange(n)) % (1 << 16)
    verdicts, _ = run(fragmented(heads))
    assert [(v.src_ip, v.basis) for v in verdicts] == [("192.168.1.66", "headers")]
    assert verdicts[0].label in ("mirai_udp", "mirai_udpplain") and verdicts[0].latency < 1.0


def udp_scores(n: int) -> np.ndarray:
    s = np.full((n, len(LABELS)), 0.002)
    s[:, LABELS.index("mirai_udp")] = 0.99
    return s


def test_a_traceroute_is_no_flood_and_a_flood_that_dies_at_the_first_router_still_is():
    """traceroute's UDP probes (small, to a new port each, 200 a second) look like a UDP flood at random ports to
    the model; the routers answering them hop after hop with time exceeded say it is a trace.  A flood launched
    with TTL 1 draws time exceeded from the first router too, but once a second (a router's ICMP rate limit)."""
    rng = np.random.default_rng(22)
    tracer, target = ip(192, 168, 1, 40), ip(8, 8, 8, 8)
    ts = T0 + np.arange(90) * 0.005
    probes = batch(ts, tracer, target, proto=17, sport=rng_ports(rng, 90), dport=33434 + np.arange(90), size=74)
    probes.ttl[:] = 1 + np.arange(90) // 3
    hops = np.flatnonzero(probes.ttl <= 12)  # beyond hop 12 nobody answers: * * *
    routers = ip(100, 64, 0, 1) + probes.ttl[hops].astype(np.int64)
    answers = batch(ts[hops] + 0.002 * probes.ttl[hops], routers, tracer, proto=1, sport=-1, dport=-1,
                    icmp_type=11, size=70)  # fmt: skip
    trace = join(probes, answers)
    scores = np.where((trace.proto == 17)[:, None], udp_scores(len(trace)), benign_scores(len(trace)))
    verdicts, _ = run(trace, scores=scores)
    assert verdicts == []

    n = 3000
    ts = T0 + np.arange(n) / 3000.0
    flood = batch(ts, ip(192, 168, 1, 41), ip(198, 51, 100, 7), proto=17, sport=rng_ports(rng, n),
                  dport=rng_ports(rng, n), size=554)  # fmt: skip
    flood.ttl[:] = 1
    limited = np.flatnonzero(np.diff(np.floor(ts), prepend=-1) > 0)  # the first packet of each second
    limited = np.union1d(limited, np.arange(6))  # and a burst of 6 at the start
    gateway_answers = batch(ts[limited] + 0.001, ip(192, 168, 1, 1), ip(192, 168, 1, 41), proto=1, sport=-1,
                            dport=-1, icmp_type=11, size=70)  # fmt: skip
    both = join(flood, gateway_answers)
    scores = np.where((both.proto == 17)[:, None], udp_scores(len(both)), benign_scores(len(both)))
    verdicts, _ = run(both, scores=scores)
    assert [(v.label, v.src_ip) for v in verdicts] == [("mirai_udp", "192.168.1.41")]
    assert verdicts[0].latency < 1.0


def connections(ts, client: int, server: int, rng, port: int = 80) -> PacketBatch:
    """A client's complete exchanges with a server's ``port`` (HTTP by default), one per time in ``ts``: handshake,
    request, response, FIN both ways (9 packets, each connection from a new source port)."""
    n = len(ts)
    sport = rng.integers(32768, 61000, n)
    steps = [  # (delay, from client, flags, size)
        (0.0, True, SYN, 74), (0.0002, False, SYNACK, 74), (0.0004, True, ACK, 66), (0.0005, True, PSHACK, 160),
        (0.0007, False, ACK, 66), (0.0015, False, PSHACK, 700), (0.0017, True, FIN | ACK, 66),
        (0.0019, False, FIN | ACK, 66), (0.0021, True, ACK, 66),
    ]
    parts = []
    for delay, from_client, flags, size in steps:
        a, b = (client, server) if from_client else (server, client)
        ports = dict(sport=sport, dport=port) if from_client else dict(sport=port, dport=sport)
        parts.append(batch(ts + delay, a, b, flags=flags, size=size, seq=rng.integers(0, 2**32, n), **ports))
    return join(*parts)


def test_an_http_flood_is_a_connection_flood_and_a_browsers_page_loads_are_not():
    """150 complete HTTP exchanges a second from one client (an HTTP flood: SYNs only a ninth of its packets) are
    reported within 1.5 s; a browser opening 60 connections at once every 30 s is not."""
    rng = np.random.default_rng(23)
    flood = connections(T0 + np.sort(rng.uniform(0, 5, 750)), ip(203, 0, 113, 77), BOARD, rng)
    verdicts, _ = run(flood)
    assert [(v.label, v.basis, v.src_ip) for v in verdicts] == [("mirai_syn", "headers", "203.0.113.77")]
    assert verdicts[0].latency < 1.5
    loads = T0 + np.concatenate([30.0 * k + np.sort(rng.uniform(0, 1.0, 60)) for k in range(5)])
    verdicts, _ = run(connections(loads, ip(192, 168, 1, 23), ip(93, 184, 216, 34), rng))
    assert verdicts == []


@pytest.mark.parametrize("sports,named", [("kernel", "mirai_scan"), ("kernel-reusing", "mirai_scan"),
                                          ("random", "mirai_syn"), ("fixed", "mirai_syn")])  # fmt: skip
def test_full_option_syns_at_new_ports_are_a_connect_scan_only_from_a_kernels_new_ephemeral_ports(sports, named):
    """nmap -sT: the kernel's SYNs (full option block) at 1,000 ports in 20 ms, each from a new ephemeral port; the
    board refuses them.  Linux's connect() may give a port again for another destination port (41 of 1,000 in a
    real nmap -sT, one of them the tenth SYN).  Mirai's SYN flood at random ports sends the same SYNs from random
    source ports (half of them below 32768), or from the one port its option sets: a SYN flood."""
    rng = np.random.default_rng(24)
    n = 1000
    ts = T0 + np.arange(n) * 2e-5
    kernel = 40000 + 7 * np.arange(n)
    reusing = np.where(np.arange(n) % 25 == 9, np.roll(kernel, 5), kernel)  # every 25th from the 5th before
    sport = {"kernel": kernel, "kernel-reusing": reusing, "random": rng.integers(0, 65536, n), "fixed": 45000}[sports]
    attacker = ip(203, 0, 113, 80)
    probes = batch(ts, attacker, BOARD, sport=sport, dport=1 + np.arange(n), flags=SYN, size=74)
    probes.tcp_hdr_len[:] = 40
    refusals = batch(ts + 1e-4, BOARD, attacker, sport=probes.dport, dport=probes.sport, flags=RSTACK)
    verdicts, _ = run(join(probes, refusals))
    assert [(v.label, v.src_ip) for v in verdicts] == [(named, "203.0.113.80")]


@pytest.mark.parametrize("sport,payload,named", [(51000, 0, "mirai_scan"), ("random", 0, "mirai_ack"),
                                                 (51000, 512, "mirai_ack")])  # fmt: skip
def test_bare_acks_at_new_ports_from_one_source_port_are_an_ack_scan(sport, payload, named):
    """nmap -sA: empty ACKs with no options at 1,000 ports from one source port, each refused with a RST.  Mirai's
    ack flood at random ports draws a new source port per packet, and carries a payload unless told otherwise."""
    rng = np.random.default_rng(25)
    n = 1000
    ts = T0 + np.arange(n) * 5e-5
    sports = rng.integers(1024, 65536, n) if sport == "random" else sport
    attacker = ip(203, 0, 113, 81)
    probes = batch(ts, attacker, BOARD, sport=sports, dport=1 + np.arange(n), flags=ACK, size=54 + payload,
                   seq=rng.integers(0, 2**32, n))  # fmt: skip
    probes.payload_len[:] = payload
    refusals = batch(ts + 1e-4, BOARD, attacker, sport=probes.dport, dport=probes.sport, flags=0x04)
    verdicts, _ = run(join(probes, refusals))
    assert [(v.label, v.src_ip) for v in verdicts] == [(named, "203.0.113.81")]


def test_conversations_over_udp_are_no_flood_however_the_model_scores_them():
    """What a home sends that a model may take for a UDP flood (it scores every datagram mirai_udp here): a Pi-hole's
    bursts of queries to its resolver (each from a new port, each answered on its pair), a WireGuard download (one
    pair, both ends sending) and an IPTV multicast stream (at a group address: at nobody).  A flood nobody answers
    through fresh ports, at the same rates, still convicts."""
    rng = np.random.default_rng(26)
    pihole, resolver, peer, board = ip(192, 168, 1, 2), ip(1, 1, 1, 1), ip(198, 51, 100, 20), ip(192, 168, 1, 3)
    n = 1200
    ts = T0 + np.sort(rng.uniform(0, 3, n))  # 400 queries a second for 3 s
    ports = rng.integers(1024, 65536, n)
    queries = batch(ts, pihole, resolver, proto=17, sport=ports, dport=53, size=80)
    answers = batch(ts + rng.uniform(0.005, 0.03, n), resolver, pihole, proto=17, sport=53, dport=ports, size=200)
    ts = T0 + 10 + np.arange(6000) / 3000.0
    tunnel_in = batch(ts, peer, board, proto=17, sport=51820, dport=51820, size=1462)
    tunnel_out = batch(ts[::3] + 0.0003, board, peer, proto=17, sport=51820, dport=51820, size=138)
    stream = batch(T0 + 20 + np.arange(6000) / 900.0, ip(10, 20, 30, 40), ip(239, 1, 2, 3), proto=17, sport=5000,
                   dport=5000, size=1358)  # fmt: skip
    stream.dst_mac[:] = 0x01005E010203  # the group's MAC address
    benign = join(queries, answers, tunnel_in, tunnel_out, stream)
    verdicts, _ = run(benign, scores=udp_scores(len(benign)))
    assert verdicts == []
    flood = batch(T0 + np.sort(rng.uniform(0, 3, n)), pihole, resolver, proto=17, sport=rng_ports(rng, n),
                  dport=rng_ports(rng, n), size=80)  # fmt: skip
    verdicts, _ = run(flood, scores=udp_scores(n))
    assert [(v.label, v.src_ip) for v in verdicts] == [("mirai_udp", "192.168.1.2")]


def test_a_flood_forging_the_victims_own_address_is_a_spoofed_flood_at_it_and_never_its_own():
    """CIC-IoT-2023's SynonymousIP flood: SYNs whose source is the board's own address (LAND packets).  The board
    sends none of them: the flood is judged at its target, and the board is no source."""
    rng = np.random.default_rng(27)
    n = 6000
    forged = batch(T0 + np.arange(n) / 3000.0, BOARD, BOARD, sport=rng_ports(rng, n), dport=80, flags=SYN, size=60,
                   seq=rng.integers(0, 2**32, n))  # fmt: skip
    verdicts, _ = run(forged, scores=np.tile(np.eye(len(LABELS))[LABELS.index("mirai_syn")], (n, 1)))
    assert [(v.kind, v.label, v.victim_ip, v.victim_port) for v in verdicts] == [("spoofed", "mirai_syn", "10.0.0.5", 80)]
    assert verdicts[0].latency < 1.0


def test_a_peer_to_peer_client_connecting_to_many_dead_peers_is_no_connection_flood():
    """A BitTorrent client: 120 new peers a second, each a kernel connect() from a new ephemeral port, most peers
    gone (their SYNs retransmitted after 1 s and 3 s through the same socket pair).  Retransmissions are no new
    connections: over 100 SYNs a second to services tried before, yet no flood."""
    rng = np.random.default_rng(28)
    n = 600
    client = ip(192, 168, 1, 60)
    peers = ip(100, 0, 0, 0) + rng.integers(1, 2**24, n)
    t = T0 + np.sort(rng.uniform(0, 5, n))
    sport, dport = 40000 + 3 * np.arange(n), rng.choice([6881, 51413], n)
    dead = rng.random(n) < 0.6
    syns = [batch(t + back, client, peers, sport=sport, dport=dport, flags=SYN, size=74) for back in (0.0, 1.0, 3.0)]
    syns = [syns[0]] + [s.take(np.flatnonzero(dead)) for s in syns[1:]]
    live = np.flatnonzero(~dead)
    synacks = batch(t[live] + 0.05, peers[live], client, sport=dport[live], dport=sport[live], flags=SYNACK, size=74)
    acks = batch(t[live] + 0.0501, client, peers[live], sport=sport[live], dport=dport[live], flags=ACK, size=66)
    traffic = join(*syns, synacks, acks)
    traffic.tcp_hdr_len[traffic.tcp_flags == SYN] = 40  # the kernel's option block
    verdicts, _ = run(traffic)
    assert [v for v in verdicts if v.label == "mirai_syn"] == []


def test_a_bulk_tcp_stream_met_mid_way_is_no_ack_flood_however_the_model_scores_it():
    """The agent restarts while a camera uploads a clip: full-size segments in sequence through one socket pair,
    the first the agent sees mid-way, which the model scores as an ack flood.  An ack flood with the same sizes
    draws a new sequence number per packet (Mirai's default), and stays a flood."""
    n = 3000
    ts = T0 + np.arange(n) / 2500.0
    camera, cloud = ip(192, 168, 1, 70), ip(52, 1, 2, 3)
    ack_scores = np.tile(np.eye(len(LABELS))[LABELS.index("mirai_ack")], (n, 1))
    upload = batch(ts, camera, cloud, sport=45678, dport=443, flags=ACK, size=1514, seq=1000 + 1448 * np.arange(n))
    upload.payload_len[:] = 1448
    verdicts, _ = run(upload, scores=ack_scores)
    assert verdicts == []
    flood = batch(ts, camera, cloud, sport=45678, dport=443, flags=ACK, size=1514,
                  seq=np.random.default_rng(29).integers(0, 2**32, n))  # fmt: skip
    flood.payload_len[:] = 1448
    verdicts, _ = run(flood, scores=ack_scores)
    assert [(v.label, v.src_ip) for v in verdicts] == [("mirai_ack", "192.168.1.70")]


def test_a_udp_flood_at_a_server_that_answers_some_of_it_is_still_a_flood():
    """Mirai's udp flood at port 53 of a resolver (``dport=53``): random payloads, a new source port each; the
    resolver answers a third of them (NOTIMP to the ones that parse as queries).  A conversation answers most."""
    rng = np.random.default_rng(30)
    bot, resolver = ip(192, 168, 1, 80), ip(198, 51, 100, 53)
    n = 3000
    ts = T0 + np.arange(n) / 1000.0
    ports = rng_ports(rng, n)
    flood = batch(ts, bot, resolver, proto=17, sport=ports, dport=53, size=554)
    some = np.flatnonzero(rng.random(n) < 1 / 3)
    refusals = batch(ts[some] + 0.002, resolver, bot, proto=17, sport=53, dport=ports[some], size=66)
    both = join(flood, refusals)
    verdicts, _ = run(both, scores=np.where((both.src_ip_lo == flood.src_ip_lo[0])[:, None], udp_scores(len(both)),
                                            benign_scores(len(both))))  # fmt: skip
    assert [(v.label, v.src_ip) for v in verdicts] == [("mirai_udp", "192.168.1.80")]


def reflection(rng, victim: int, port: int, rate: float, seconds: float, answers: int, group: bool = False,
               t0: float = T0, refused: bool = False) -> PacketBatch:
    """Requests from ``victim`` (its address forged) to the board's UDP service ``port``, each from a new port, to the
    board or to a group (an SSDP M-SEARCH to 239.255.255.250); the board answers each ``answers`` times, unicast."""
    n = int(rate * seconds)
    ts = t0 + np.sort(rng.uniform(0, seconds, n))
    ports = rng_ports(rng, n)
    to = ip(239, 255, 255, 250) if group else BOARD
    requests = batch(ts, victim, to, proto=17, sport=ports, dport=port, size=140)
    if group:
        requests.dst_mac[:] = 0x01005E7FFFFA
    replies = [batch(ts + 0.0005 * (k + 1), BOARD, victim, proto=17, sport=port, dport=ports, size=342)
               for k in range(answers)]
    if refused:  # the victim never asked: its kernel refuses every answer (ICMP port unreachable)
        replies += [batch(r.ts + 0.0002, victim, BOARD, proto=1, icmp_type=3, size=370) for r in replies]
    return join(requests, *replies)


@pytest.mark.parametrize("port, answers, group", [(1900, 3, False), (1900, 3, True), (5683, 1, False),
                                                  (3702, 1, False), (123, 5, False), (11211, 4, False)])
def test_a_board_used_as_a_reflector_convicts_the_forged_victim_once_and_never_itself(port, answers, group):
    """SSDP, CoAP, WS-Discovery, NTP and memcached reflection through the board: requests forged with the victim's
    address at 300 a second, each answered once or several times (unicast, also to a multicast M-SEARCH).  The
    model scores every datagram a UDP flood.  The victim's address is convicted (dropping it stops the board's share
    of the flood) within a second, once, and the board, whose answers are the flood, never (the victim's kernel
    refusing them makes them no UDP port scan either)."""
    rng = np.random.default_rng(31)
    victim = ip(203, 0, 113, 9)
    attack = reflection(rng, victim, port, 300, 4, answers, group, refused=True)
    datagrams = (attack.proto == 17)[:, None]
    verdicts, _ = run(attack, scores=np.where(datagrams, udp_scores(len(attack)), benign_scores(len(attack))), chunk=1024)
    assert [(v.label, v.src_ip, v.basis) for v in verdicts] == [("mirai_udp", "203.0.113.9", "headers")]
    assert verdicts[0].latency < 1.0


def test_discovery_clients_asking_the_boards_services_are_no_reflection():
    """A phone's SSDP discovery (3 M-SEARCHes to the group every 30 s, each answered 3 times by the board), a CoAP
    client polling every second, and an NTP client's burst at start-up (8 requests in 2 s): no verdict, though the
    model scores every datagram a UDP flood."""
    rng = np.random.default_rng(32)
    phone = ip(192, 168, 1, 23)
    parts = [reflection(rng, phone, 1900, 3 / 0.3, 0.3, 3, group=True, t0=T0 + 30 * k) for k in range(4)]
    parts.append(reflection(rng, phone, 5683, 1, 120, 1))
    parts.append(reflection(rng, ip(192, 168, 1, 24), 123, 4, 2, 1))
    benign = join(*parts)
    verdicts, _ = run(benign, scores=udp_scores(len(benign)))
    assert verdicts == []


def requests_over(ts, client: int, server: int, n_conns: int, request: int = 160, response: int = 700,
                  port: int = 80) -> PacketBatch:
    """Requests at times ``ts`` over ``n_conns`` persistent connections (their handshakes before), each answered, the
    answer acknowledged: sequence numbers move on as a stack's do."""
    n = len(ts)
    conn = np.arange(n) % n_conns
    sport = 40000 + conn
    k = np.zeros(n, dtype=np.int64)  # the request's number on its connection
    for c in range(n_conns):
        k[conn == c] = np.arange((conn == c).sum())
    cseq, sseq = 1000 + request * k, 5000 + response * k
    req = batch(ts, client, server, sport=sport, dport=port, flags=PSHACK, size=66 + request, seq=cseq, ack=sseq)
    req.payload_len[:] = request
    resp = batch(ts + 0.0004, server, client, sport=port, dport=sport, flags=PSHACK, size=66 + response, seq=sseq,
                 ack=cseq + request)  # fmt: skip
    resp.payload_len[:] = response
    acks = batch(ts + 0.0008, client, server, sport=sport, dport=port, flags=ACK, size=66, seq=cseq + request,
                 ack=sseq + response)  # fmt: skip
    first = ts[0] - 0.05 + 0.001 * np.arange(n_conns)
    opens = [batch(first, client, server, sport=40000 + np.arange(n_conns), dport=port, flags=SYN, size=74),
             batch(first + 0.0005, server, client, sport=port, dport=40000 + np.arange(n_conns), flags=SYNACK, size=74),
             batch(first + 0.001, client, server, sport=40000 + np.arange(n_conns), dport=port, flags=ACK, size=66)]
    for o in opens:
        o.tcp_hdr_len[:] = 40  # a kernel's options
    return join(*opens, req, resp, acks)


@pytest.mark.parametrize("rate, conns", [(2000, 4), (500, 2), (5000, 1)])
def test_an_http_flood_over_persistent_connections_is_a_flood_and_page_loads_and_uploads_are_not(rate, conns):
    """GoldenEye, HULK, wrk and ``ab -k`` flood a web server with requests over a few connections they keep (so do
    Mirai's http attack): too few connections for a connection flood, no fresh sockets for an ack flood.  Named
    mirai_ack (ACK/PSH segments with data through established connections, as Mirai's stomp) within a second; a
    browser loading a page of 150 resources over 6 connections, a phone app polling, and an upload of full-size
    segments are not."""
    rng = np.random.default_rng(33)
    flood = requests_over(T0 + np.sort(rng.uniform(0, 4, 4 * rate)), ip(203, 0, 113, 77), BOARD, conns)
    verdicts, _ = run(flood)
    assert [(v.label, v.basis, v.src_ip) for v in verdicts] == [("mirai_ack", "headers", "203.0.113.77")]
    assert verdicts[0].latency < 1.0
    page = requests_over(T0 + np.sort(rng.uniform(0, 1.0, 150)), ip(192, 168, 1, 23), BOARD, 6)
    polling = requests_over(T0 + 5 + np.arange(600) / 10.0, ip(192, 168, 1, 24), BOARD, 1, port=8080)
    upload = requests_over(T0 + 10 + np.arange(8000) / 2000.0, ip(192, 168, 1, 25), BOARD, 1, request=1448,
                           response=0)  # fmt: skip
    verdicts, _ = run(join(page, polling, upload))
    assert verdicts == []


def test_echo_replies_nobody_asked_for_are_a_flood_and_answers_to_pings_are_not():
    """A smurf attack's victim (echo replies from many hosts that its forged broadcast ping drew) and hping3 -1 -C 0
    (echo replies from one host): replies to no echo request the board sent are a ping flood's, closest class
    mirai_udp, proto 1.  Replies to the board's own pings, at the same rate, answer it."""
    rng = np.random.default_rng(34)
    n = 3000
    ts = T0 + np.arange(n) / 1500.0
    flooder = ip(203, 0, 113, 60)
    one = batch(ts, flooder, BOARD, proto=1, sport=-1, dport=-1, icmp_type=ECHO_REPLY, size=98)
    verdicts, _ = run(one)
    assert [(v.kind, v.label, v.src_ip, v.proto) for v in verdicts] == [("source", "mirai_udp", "203.0.113.60", 1)]
    assert verdicts[0].latency < 1.0
    amplifiers = ip(198, 51, 100, 0) + rng.integers(1, 255, n)
    smurf = batch(ts, amplifiers, BOARD, proto=1, sport=-1, dport=-1, icmp_type=ECHO_REPLY, size=98)
    verdicts, _ = run(smurf)
    assert [(v.kind, v.label, v.victim_ip, v.proto) for v in verdicts] == [("spoofed", "mirai_udp", "10.0.0.5", 1)]
    host = ip(192, 168, 1, 1)
    pings = batch(ts, BOARD, host, proto=1, sport=-1, dport=-1, icmp_type=ECHO_REQUEST, size=98)
    replies = batch(ts + 0.0003, host, BOARD, proto=1, sport=-1, dport=-1, icmp_type=ECHO_REPLY, size=98)
    verdicts, _ = run(join(pings, replies))
    assert [(v.label, v.src_ip) for v in verdicts] == [("mirai_udp", "10.0.0.5")]  # the board's own ping flood


@pytest.mark.parametrize("kept, named", [(False, "mirai_syn"), (True, "mirai_ack")])
def test_a_botnets_http_flood_at_the_board_is_a_flood_at_it_and_busy_users_are_not(kept, named):
    """200 bots, each making 5 requests a second at the board's web server (1,000 a second in all): each too light
    to convict, together a flood at the board, port 80, named as the connection flood it is (a new connection per
    request) or as an ack flood (requests through connections each bot keeps).  Three people loading a page of 150
    resources at once and ten cameras uploading to the board (full-size segments) are not."""
    rng = np.random.default_rng(35)
    bots = ip(198, 18, 0, 1) + np.arange(200)
    if kept:
        flood = join(*[requests_over(T0 + np.sort(rng.uniform(0, 4, 20)), int(bot), BOARD, 1) for bot in bots])
    else:
        flood = connections(T0 + np.sort(rng.uniform(0, 4, 4000)), rng.choice(bots, 4000), BOARD, rng)
        data = flood.tcp_flags == PSHACK
        flood.payload_len[data] = flood.wire_len[data] - 66
    verdicts, _ = run(flood)
    assert [(v.kind, v.label, v.victim_ip, v.victim_port) for v in verdicts] == [("spoofed", named, "10.0.0.5", 80)]
    assert verdicts[0].latency < 1.0
    users = [requests_over(T0 + np.sort(rng.uniform(0, 1.0, 150)), ip(192, 168, 1, 20 + k), BOARD, 6) for k in range(3)]
    cameras = [requests_over(T0 + np.arange(800) / 200.0, ip(192, 168, 1, 40 + k), BOARD, 1, request=1448, response=0,
                             port=443) for k in range(10)]  # fmt: skip
    verdicts, _ = run(join(*users, *cameras))
    assert verdicts == []


def resolved(rng, client: int, ts: np.ndarray, forward: bool) -> PacketBatch:
    """``client``'s DNS queries at the board (a Pi-hole) at times ``ts``, each answered, after the board forwarded it
    upstream and the upstream resolver answered (5-30 ms) when ``forward``, else from its cache at once."""
    n = len(ts)
    ports, upstream_ports, upstream = rng_ports(rng, n), rng_ports(rng, n), ip(1, 1, 1, 1)
    queries = batch(ts, client, BOARD, proto=17, sport=ports, dport=53, size=82)
    parts, lag = [queries], np.full(n, 0.0003)
    if forward:
        lag = rng.uniform(0.005, 0.03, n)
        parts += [batch(ts + 0.0002, BOARD, upstream, proto=17, sport=upstream_ports, dport=53, size=82),
                  batch(ts + 0.0002 + lag, upstream, BOARD, proto=17, sport=53, dport=upstream_ports, size=140)]
    parts.append(batch(ts + 0.0004 + lag, BOARD, client, proto=17, sport=53, dport=ports, size=140))
    return join(*parts)


@pytest.mark.parametrize("forward", [True, False], ids=["forwarded", "cached"])
def test_a_dns_flood_at_the_boards_resolver_convicts_the_bot_never_the_forwarding_board(forward):
    """Mirai's dns attack from a LAN bot whose resolver the board is (a Pi-hole): 2,000 queries a second for random
    names, each answered (and forwarded upstream first, or answered from the cache), so the bot is in a conversation
    by the UDP rules.  The bot is convicted within a second; the board, which sends its upstream as many queries as
    it is asked, never, though the model scores every datagram a UDP flood.  A router forwarding its clients' queries
    in bursts of 300 within half a second is no flood either."""
    rng = np.random.default_rng(36)
    bot = ip(192, 168, 1, 40)
    flood = resolved(rng, bot, T0 + np.sort(rng.uniform(0, 3, 6000)), forward)
    verdicts, _ = run(flood, scores=udp_scores(len(flood)), chunk=1024)
    assert [(v.label, v.src_ip) for v in verdicts] == [("mirai_udp", "192.168.1.40")]
    assert verdicts[0].latency < 1.0
    router = ip(192, 168, 1, 1)
    bursts = np.concatenate([T0 + 5.0 * k + np.sort(rng.uniform(0, 0.5, 300)) for k in range(6)])
    verdicts, _ = run(resolved(rng, router, bursts, forward=True), scores=udp_scores(4 * len(bursts)))
    assert verdicts == []


def test_udpplain_at_a_service_that_answers_it_is_udpplain():
    """Mirai's udpplain at the board's NTP service: one connected socket (the kernel's IP ids), 1,000 datagrams a
    second, each answered.  Answered requests at a flood's rate, as a reflection's, but through one socket pair:
    udpplain, not udp."""
    n = 3000
    ts = T0 + np.arange(n) / 1000.0
    bot = ip(192, 168, 1, 80)
    flood = batch(ts, bot, BOARD, proto=17, sport=41000, dport=123, size=90)
    answers = batch(ts + 0.0003, BOARD, bot, proto=17, sport=123, dport=41000, size=90)
    verdicts, _ = run(join(flood, answers), scores=udp_scores(2 * n))
    assert [(v.label, v.src_ip) for v in verdicts] == [("mirai_udpplain", "192.168.1.80")]


def to_ipv6(b: PacketBatch, src_hi, src_lo, dst_hi: int, dst_lo: int) -> PacketBatch:
    """``b`` as IPv6 packets from ``src_hi:src_lo`` (scalars or per packet) to ``dst_hi:dst_lo``."""
    n = len(b)
    b.l3[:] = L3_IPV6
    b.src_ip_hi[:], b.src_ip_lo[:] = np.broadcast_to(np.uint64(src_hi), n), np.broadcast_to(np.uint64(src_lo), n)
    b.dst_ip_hi[:], b.dst_ip_lo[:] = np.uint64(dst_hi), np.uint64(dst_lo)
    b.src_mac[:] = (b.src_ip_lo & np.uint64(0xFFFF_FFFF_FF)) | np.uint64(2 << 40)
    return b


LINK_LOCAL = 0xFE80 << 48
ALL_NODES = (0xFF02 << 48, 1)
GROUP_MACS = {"224.0.0.251": 0x01005E0000FB, "239.255.255.250": 0x01005E7FFFFA, "224.0.0.252": 0x01005E0000FC,
              "255.255.255.255": 0xFFFFFFFFFFFF}  # fmt: skip


def icmp6(ts, icmp_type: int, size: int = 118) -> PacketBatch:
    b = batch(ts, 0, 0, proto=58, sport=-1, dport=-1, icmp_type=icmp_type, size=size)
    b.port_kind[:] = 0
    return b


@pytest.mark.parametrize("group, port", [("224.0.0.251", 5353), ("239.255.255.250", 1900), ("224.0.0.252", 5355),
                                         ("255.255.255.255", 137), ("255.255.255.255", 9999)])  # fmt: skip
def test_a_flood_of_discovery_traffic_at_a_group_convicts_its_sender(group, port):
    """One host flooding the link's discovery groups (mDNS, SSDP, LLMNR, NetBIOS's broadcasts) or its broadcast address
    at any port with 342-byte datagrams through one socket, 1,000 a second: every host on the link takes each in.  Group traffic is nobody's answer and
    the model never judges it (scores benign), so only the headers tell: its sender, within a second."""
    n = 3000
    ts = T0 + np.arange(n) / 1000.0
    a, b_, c, d = map(int, group.split("."))
    flood = batch(ts, ip(192, 168, 1, 77), ip(a, b_, c, d), proto=17, sport=port, dport=port, size=342)
    flood.dst_mac[:] = GROUP_MACS[group]
    verdicts, labels = run(flood)
    assert [(v.kind, v.label in ("mirai_udp", "mirai_udpplain"), v.src_ip, v.basis) for v in verdicts] == [
        ("source", True, "192.168.1.77", "headers")]
    assert verdicts[0].latency < 1.0
    assert (labels >= 0).mean() > 0.9


def test_forged_router_advertisements_to_every_node_are_a_flood_at_the_group():
    """THC-IPv6's flood_router6: router advertisements to ff02::1, each from a new forged router (MAC and link-local
    address), 1,000 a second.  No source is convicted (each sent one); the flood is, at the group, within a second."""
    n = 3000
    rng = np.random.default_rng(37)
    flood = to_ipv6(icmp6(T0 + np.arange(n) / 1000.0, 134), LINK_LOCAL, rng.integers(1, 2**63, n, dtype=np.uint64),
                    *ALL_NODES)  # fmt: skip
    verdicts, labels = run(flood)
    assert [(v.kind, v.label, v.victim_ip, v.proto) for v in verdicts] == [("spoofed", "mirai_udp", "ff02::1", 58)]
    assert verdicts[0].latency < 1.0
    assert (labels >= 0).mean() > 0.9


def test_a_homes_discovery_and_neighbour_discovery_are_no_group_flood():
    """A busy home's group traffic for a minute: six devices answering a phone's mDNS query burst every 10 s (20
    datagrams within 0.2 s each), a media box's SSDP announcement bursts (3 x 8 services within 0.1 s every 30 s), the
    router's advertisements every 4 s and a multicast listener query a minute, and the router resolving the absent
    hosts a flood aims at: neighbour solicitations to their solicited-node groups, 500 a second for 2 s; and 150
    devices back after a power cut, each asking DHCP twice from 0.0.0.0 within a second.  Nothing."""
    rng = np.random.default_rng(38)
    parts = []
    for k in range(6):
        for t in T0 + 10.0 * np.arange(6):
            b = batch(t + np.sort(rng.uniform(0, 0.2, 20)), ip(192, 168, 1, 30 + k), ip(224, 0, 0, 251), proto=17,
                      sport=5353, dport=5353, size=400)  # fmt: skip
            b.dst_mac[:] = GROUP_MACS["224.0.0.251"]
            parts.append(b)
    for t in T0 + 30.0 * np.arange(2):
        b = batch(t + np.sort(rng.uniform(0, 0.1, 24)), ip(192, 168, 1, 50), ip(239, 255, 255, 250), proto=17,
                  sport=1900, dport=1900, size=380)  # fmt: skip
        b.dst_mac[:] = GROUP_MACS["239.255.255.250"]
        parts.append(b)
    router = LINK_LOCAL | 1
    parts.append(to_ipv6(icmp6(T0 + 4.0 * np.arange(15), 134), LINK_LOCAL, router, *ALL_NODES))
    parts.append(to_ipv6(icmp6(np.array([T0 + 1.0]), 130, size=90), LINK_LOCAL, router, *ALL_NODES))
    absent = rng.integers(0, 2**24, 1000, dtype=np.uint64)
    resolving = to_ipv6(icmp6(T0 + 20 + np.arange(1000) / 500.0, 135, size=86), LINK_LOCAL, router, 0xFF02 << 48, 0)
    resolving.dst_ip_lo[:] = np.uint64(0x1_FF00_0000) | absent  # ff02::1:ffXX:XXXX
    parts.append(resolving)
    dhcp = batch(T0 + 40 + np.sort(rng.uniform(0, 1, 300)), 0, ip(255, 255, 255, 255), proto=17, sport=68, dport=67,
                 size=342)  # fmt: skip
    dhcp.src_mac[:] = rng.integers(1, 150, 300).astype(np.uint64) | np.uint64(2 << 40)
    dhcp.dst_mac[:] = GROUP_MACS["255.255.255.255"]
    parts.append(dhcp)
    home = join(*parts)
    verdicts, _ = run(home)
    assert verdicts == []


@pytest.mark.parametrize("port, size", [(11211, 60), (53, 512), (123, 90), (1900, 300)])
def test_a_reflection_flood_at_the_board_is_caught_at_the_board_from_its_reflectors_answers(port, size):
    """The board as a reflection flood's victim: 40 reflectors (memcached, DNS, NTP, SSDP) each answering requests
    forged with its address, 25 a second each, to one port of it, small answers among them.  No reflector sends
    enough to be judged alone, and the model scores the answers benign: the answers from an amplifying service's
    port on socket pairs the board never sent on make the flood at the board, within a second."""
    rng = np.random.default_rng(39)
    reflectors = [ip(int(a), int(b), int(c), int(d)) for a, b, c, d in rng.integers(1, 223, (40, 4))]
    flood = join(*[batch(T0 + np.sort(rng.uniform(0, 3, 75)), r, BOARD, proto=17, sport=port, dport=40123,
                         size=size + 42) for r in reflectors])  # fmt: skip
    verdicts, _ = run(flood)
    assert [(v.kind, v.label, v.victim_ip, v.proto, v.basis) for v in verdicts] == [
        ("spoofed", "mirai_udp", "10.0.0.5", 17, "headers")]
    assert verdicts[0].latency < 1.0
    # DNS answers of 3 kB (EDNS, ANY): each a first fragment and two later ones, which carry no UDP header.
    heads = flood.take(np.flatnonzero(flood.sport == 53)) if port == 53 else None
    if heads is not None:
        later = [heads.take(slice(None)) for _ in range(2)]
        for k, part in enumerate(later):
            part.ts[:] += 0.00001 * (k + 1)
            part.frag[:], part.sport[:], part.dport[:], part.wire_len[:] = True, -1, -1, 1514
        verdicts, _ = run(join(heads, *later))
        assert [(v.kind, v.label, v.victim_ip, v.basis) for v in verdicts] == [
            ("spoofed", "mirai_udp", "10.0.0.5", "headers")]


def test_answers_to_the_boards_own_requests_are_no_reflection_flood():
    """The board as a busy Pi-hole forwarding 400 queries a second to two upstream resolvers and an SNMP poller of
    30 devices, 10 a second each: every answer comes on a socket pair the board sent on first.  Nothing."""
    rng = np.random.default_rng(40)
    n = 2400
    ts = T0 + np.sort(rng.uniform(0, 6, n))
    upstream = np.where(rng.random(n) < 0.5, ip(1, 1, 1, 1), ip(9, 9, 9, 9)).astype(np.uint64)
    ports = rng_ports(rng, n)
    queries = batch(ts, BOARD, upstream, proto=17, sport=ports, dport=53, size=80)
    answers = batch(ts + 0.02, upstream, BOARD, proto=17, sport=53, dport=ports, size=400)
    devices = np.repeat([ip(192, 168, 1, 100 + k) for k in range(30)], 60).astype(np.uint64)
    polled = T0 + np.sort(rng.uniform(0, 6, len(devices)))
    polls = batch(polled, BOARD, devices, proto=17, sport=45000, dport=161, size=90)
    responses = batch(polled + 0.005, devices, BOARD, proto=17, sport=161, dport=45000, size=300)
    verdicts, _ = run(join(queries, answers, polls, responses))
    assert verdicts == []


def test_icmp_errors_that_answer_nothing_are_a_flood_and_answers_to_a_flood_are_not():
    """BlackNurse: ICMP port unreachable at the board, 2,000 a second, from a host the board never sent anything (the
    model scores ICMP benign): a flood, its sender convicted within a second.  A victim answering the board's own UDP
    flood with as many unreachables (a stack without rate limits) answers: only the board is convicted.  Routers
    answering traceroutes (time exceeded) answer probes sent to somebody else: no flood."""
    n = 4000
    ts = T0 + np.arange(n) / 2000.0
    attacker = ip(203, 0, 113, 66)
    nurse = batch(ts, attacker, BOARD, proto=1, sport=-1, dport=-1, icmp_type=3, size=70)
    nurse.port_kind[:] = PORT_ICMP
    verdicts, _ = run(nurse)
    assert [(v.label, v.src_ip, v.proto) for v in verdicts] == [("mirai_udp", "203.0.113.66", 1)]
    assert verdicts[0].latency < 1.0
    rng = np.random.default_rng(41)
    victim = ip(198, 51, 100, 7)
    flood = batch(ts, BOARD, victim, proto=17, sport=rng_ports(rng, n), dport=rng_ports(rng, n), size=554)
    refused = batch(ts + 0.0002, victim, BOARD, proto=1, sport=-1, dport=-1, icmp_type=3, size=590)
    refused.port_kind[:] = PORT_ICMP
    verdicts, _ = run(join(flood, refused))
    assert [(v.label, v.src_ip) for v in verdicts] == [("mirai_udp", "10.0.0.5")]
    # Three traceroutes of 30 hops at once (16 probes in flight, 3 per hop): 270 time exceeded within 1.5 s from 30
    # routers, none of which the board sent anything.
    routers = (ip(100, 64, 0, 1) + np.arange(30)).repeat(9).astype(np.uint64)
    traced = T0 + 10 + np.sort(rng.uniform(0, 1.5, 270))
    hops = batch(traced, routers, BOARD, proto=1, sport=-1, dport=-1, icmp_type=11, size=110)
    hops.port_kind[:] = PORT_ICMP
    verdicts, _ = run(hops)
    assert verdicts == []


def test_rsts_that_refuse_nothing_are_a_flood_and_refusals_are_not():
    """An RST flood (hping3 -R): bare RSTs at the board's port 80 from new source ports, 2,000 a second, on socket pairs
    the board never sent on: TCP without SYN at a flood's rate, an ack flood.  The board refusing a SYN flood at a closed
    port with as many RSTs refuses the flooder's SYNs: only the flooder is convicted."""
    rng = np.random.default_rng(42)
    n = 4000
    ts = T0 + np.arange(n) / 2000.0
    attacker = ip(203, 0, 113, 67)
    flood = batch(ts, attacker, BOARD, sport=rng_ports(rng, n), dport=80, flags=RST, seq=rng.integers(0, 2**32, n),
                  size=54)  # fmt: skip
    verdicts, _ = run(flood)
    assert [(v.label, v.src_ip) for v in verdicts] == [("mirai_ack", "203.0.113.67")]
    assert verdicts[0].latency < 1.0
    sports = rng_ports(rng, n)
    syns = batch(ts, attacker, BOARD, sport=sports, dport=81, flags=SYN, seq=rng.integers(0, 2**32, n), size=60)
    refusals = batch(ts + 0.0001, BOARD, attacker, sport=81, dport=sports, flags=RSTACK, size=54)
    verdicts, _ = run(join(syns, refusals))
    assert [(v.label, v.src_ip) for v in verdicts] == [("mirai_syn", "203.0.113.67")]


def test_a_udp_flood_at_a_service_that_answers_every_datagram_is_still_a_flood():
    """Mirai's udp flood with its dport option at a service of the board that answers whatever it gets (an echo
    service, a SIP stack refusing junk): 1,000 datagrams a second from new source ports, each answered.  Answered
    through a new socket pair per datagram, only a DNS client converses (the Pi-hole tests): this is a flood."""
    rng = np.random.default_rng(43)
    n = 3000
    ts = T0 + np.arange(n) / 1000.0
    bot = ip(203, 0, 113, 50)
    for port in (7, 5060):
        ports = rng_ports(rng, n)
        flood = batch(ts, bot, BOARD, proto=17, sport=ports, dport=port, size=554)
        answers = batch(ts + 0.0003, BOARD, bot, proto=17, sport=port, dport=ports, size=342)
        verdicts, _ = run(join(flood, answers))
        assert [(v.label, v.src_ip) for v in verdicts] == [("mirai_udp", "203.0.113.50")]
        assert verdicts[0].latency < 1.0


def test_connections_closed_at_once_after_a_pause_are_no_ack_flood():
    """A slowloris client holds 400 connections to the board's web server, a header line on each every few seconds;
    when it stops, its kernel closes all 400 at once and the board answers each with its own FIN-ACK, within half a
    second, on socket pairs quiet for seconds: the board's segments continue their connections (in sequence, the
    other end has sent on each pair), no ack flood of the board's, nor a flood from its MAC at many hosts."""
    n = 400
    client, sports = ip(203, 0, 113, 70), 40000 + np.arange(n)
    cseq, sseq = 1000 + 7 * np.arange(n), 90000 + 11 * np.arange(n)  # each connection's numbers after its handshake
    t0 = T0 + np.arange(n) / 400.0
    parts = [batch(t0, client, BOARD, sport=sports, dport=80, flags=SYN, seq=cseq - 1, size=74),
             batch(t0 + 0.0002, BOARD, client, sport=80, dport=sports, flags=SYNACK, seq=sseq - 1, ack=cseq, size=74),
             batch(t0 + 0.0004, client, BOARD, sport=sports, dport=80, flags=ACK, seq=cseq, ack=sseq, size=66)]
    for k in range(3):  # a header line every 5 s, acknowledged
        tk = t0 + 1 + 5 * k
        line = batch(tk, client, BOARD, sport=sports, dport=80, flags=PSHACK, seq=cseq + 20 * k, ack=sseq, size=86)
        line.payload_len[:] = 20
        parts += [line, batch(tk + 0.0002, BOARD, client, sport=80, dport=sports, flags=ACK, seq=sseq,
                              ack=cseq + 20 * (k + 1), size=66)]  # fmt: skip
    close = T0 + 20 + np.arange(n) / 1000.0
    parts += [batch(close, client, BOARD, sport=sports, dport=80, flags=FIN | ACK, seq=cseq + 60, ack=sseq, size=66),
              batch(close + 0.0002, BOARD, client, sport=80, dport=sports, flags=FIN | ACK, seq=sseq, ack=cseq + 61,
                    size=66)]  # fmt: skip
    verdicts, _ = run(join(*parts))
    assert not [v for v in verdicts if v.src_ip == "10.0.0.5" or v.src_mac == "02:00:0a:00:00:05"], verdicts


def test_a_server_keeping_up_with_its_clients_is_no_anomaly():
    """The board as an MQTT broker: a publisher sends 500 messages a second over one connection, the board answers
    each with a PUBACK, in sequence.  The anomaly detector finds every packet of both unusual (it never learned such a
    pace): the publisher, whose traffic it is, may be reported as anomalous; the board, serving it from its service's
    port, is not."""
    n = 3000
    ts = T0 + np.arange(n) / 500.0
    publisher = ip(192, 168, 1, 30)
    k = np.arange(n)
    publish = batch(ts, publisher, BOARD, sport=45000, dport=1883, flags=PSHACK, seq=1000 + 60 * k, ack=5000 + 4 * k,
                    size=126)  # fmt: skip
    publish.payload_len[:] = 60
    puback = batch(ts + 0.0003, BOARD, publisher, sport=1883, dport=45000, flags=PSHACK, seq=5000 + 4 * k,
                   ack=1000 + 60 * (k + 1), size=70)  # fmt: skip
    puback.payload_len[:] = 4
    both = join(publish, puback)
    verdicts, _ = run(both, anomaly=np.full(len(both), 5.0))
    assert [(v.label, v.src_ip) for v in verdicts] == [("anomaly", "192.168.1.30")]


def test_a_video_stream_is_no_udpplain_flood_however_the_model_scores_it_and_datagrams_of_one_size_are():
    """Large datagrams through one socket pair, nothing back on it, look like udpplain to the model, packet by packet.
    A camera's RTP video varies in size (a frame's last packet is short); a flood's datagrams are one size (Mirai's
    len option)."""
    rng = np.random.default_rng(31)
    viewer = ip(192, 168, 1, 20)
    n = 6000
    ts = T0 + np.arange(n) / 1500.0
    sizes = np.where(rng.random(n) < 0.15, rng.integers(100, 1400, n), 1442)
    video = batch(ts, BOARD, viewer, proto=17, sport=5004, dport=50000, size=sizes)
    assert run(video, scores=scan_scores(n, "mirai_udpplain"))[0] == []
    flood = batch(ts, BOARD, viewer, proto=17, sport=5004, dport=50000, size=1442)
    verdicts, _ = run(flood, scores=scan_scores(n, "mirai_udpplain"))
    assert [(v.label, v.basis, v.src_ip) for v in verdicts] == [("mirai_udpplain", "model", "10.0.0.5")]
    assert verdicts[0].latency < 0.2  # (its first 0.1 s could be a video's key frame)


def rtp_heads(n: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """The first 16 payload bytes of an RTP stream: version 2, payload type 0, sequence number and timestamp counting,
    one SSRC, then media (random)."""
    seq, stamp = np.arange(n, dtype=np.uint64) + np.uint64(7), np.arange(n, dtype=np.uint64) * np.uint64(160)
    hi = (np.uint64(0x8000) << np.uint64(48)) | (seq << np.uint64(32)) | stamp
    lo = (np.uint64(0x1234ABCD) << np.uint64(32)) | rng.integers(0, 1 << 32, n, dtype=np.uint64)
    return hi, lo


@pytest.mark.parametrize("rate, size", [(50.0, 214), (1000.0, 106), (760.0, 1358)])
def test_a_one_size_stream_with_an_applications_header_is_no_flood_and_random_or_fixed_payloads_are(rate, size):
    """G.711 over RTP (50 a second), a sensor's small frames (1,000 a second), MPEG-TS (760 a second): one size,
    one socket pair, nothing back, as udpplain; their payloads carry a header with fields that stay and fields that
    count.  A flood's payload is random throughout (Mirai's rand) or fixed throughout (rand=0, Gafgyt)."""
    rng = np.random.default_rng(32)
    hub = ip(192, 168, 1, 20)
    n = int(rate * 3)
    ts = T0 + np.arange(n) / rate

    def stream(hi, lo):
        b = batch(ts, BOARD, hub, proto=17, sport=5004, dport=40000, size=size)
        b.payload_len[:] = size - 42
        b.udp_head_hi[:], b.udp_head_lo[:], b.udp_head_ok[:] = hi, lo, True
        return b

    assert run(stream(*rtp_heads(n, rng)), scores=scan_scores(n, "mirai_udpplain"))[0] == []
    random = stream(rng.integers(0, 1 << 63, n, dtype=np.uint64), rng.integers(0, 1 << 63, n, dtype=np.uint64))
    fixed = stream(np.uint64(0x0123456789ABCDEF), np.uint64(0x0F1E2D3C4B5A6978))
    for flood in (random, fixed):
        verdicts, _ = run(flood, scores=scan_scores(n, "mirai_udpplain"))
        assert [(v.label, v.src_ip) for v in verdicts] == [("mirai_udpplain", "10.0.0.5")]
        assert verdicts[0].latency < 0.5


@pytest.mark.parametrize("payload", ["random", "zeros", "empty"])
def test_a_slow_udp_flood_without_an_applications_header_needs_no_volume(payload):
    """Mirai's udpplain at 30 datagrams/s of 64 bytes carries 3 kB/s, below a model flood's volume (8 kB/s), where
    a device's bursts of small datagrams stay.  Its payloads, random throughout or the same throughout (or none),
    carry no application's header: that convicts it within a second.  The same stream with a header does not, nor
    does an unanswered poll of one command five times a second, nor zeros three times a second."""
    rng = np.random.default_rng(33)
    bot = ip(192, 168, 1, 66)

    def stream(rate: float, heads: str) -> PacketBatch:
        n = int(rate * 10)
        b = batch(T0 + np.arange(n) / rate, bot, BOARD, proto=17, sport=41234, dport=9000, size=106)
        b.payload_len[:] = 0 if heads == "empty" else 64
        b.udp_head_ok[:] = heads != "empty"
        if heads == "random":
            b.udp_head_hi[:], b.udp_head_lo[:] = (rng.integers(0, 1 << 63, n, dtype=np.uint64) for _ in range(2))
        elif heads == "header":
            b.udp_head_hi[:], b.udp_head_lo[:] = rtp_heads(n, rng)
        elif heads == "command":  # (one command again and again, byte for byte)
            b.udp_head_hi[:], b.udp_head_lo[:] = np.uint64(0x000055AA00000007), np.uint64(0x0000000A7B226470)
        return b

    flood = stream(30.0, payload)
    verdicts, _ = run(flood, scores=scan_scores(len(flood), "mirai_udpplain"))
    assert [(v.label, v.src_ip) for v in verdicts] == [("mirai_udpplain", "192.168.1.66")]
    assert verdicts[0].latency < 1.0
    for benign in (stream(30.0, "header"), stream(5.0, "command"), stream(3.0, "zeros")):
        assert run(benign, scores=scan_scores(len(benign), "mirai_udpplain"))[0] == []


def test_noise_alone_is_a_payload_that_reads_as_no_applications_by_itself():
    """Random bytes and one byte throughout are noise; a binary header with zero fields (DNS), printable text (an
    SSDP request), a datagram of 15 bytes or an empty one, a head the capture cut off, and TCP are not."""
    from agent.detect.evidence import noise_alone

    rng = np.random.default_rng(37)
    noise = lambda: tuple(int(w[0]) for w in random_heads(rng, 1))  # noqa: E731
    heads = [noise(), (0, 0), (0xABAB_ABAB_ABAB_ABAB, 0xABAB_ABAB_ABAB_ABAB),
             (0x1F2E_0100_0001_0000, 0x0000_0000_0377_7777), (int.from_bytes(b"M-SEARCH"), int.from_bytes(b" * HTTP/")),
             noise(), (0, 0), noise(), noise()]  # fmt: skip
    b = batch(T0 + np.arange(len(heads)), BOARD, ip(192, 168, 1, 9), proto=17, size=100)
    b.proto[-1] = 6
    for i, (hi, lo) in enumerate(heads):
        b.udp_head_hi[i], b.udp_head_lo[i] = np.uint64(hi), np.uint64(lo)
    b.udp_head_ok[:] = True
    b.payload_len[5], b.payload_len[6], b.udp_head_ok[7] = 15, 0, False
    assert noise_alone(b).tolist() == [True, True, True, False, False, False, False, False, False]


# The first 16 payload bytes of a protocol's datagram that opens a socket pair (random fields drawn from a fixed
# sequence): none reads as noise by itself.  (Some do, which the decision stage meets by comparing a datagram with
# the one before it from its sender, not by itself alone: QUIC v2's Initial, whose version has no zero byte; a CoAP
# request's random token; an SNMP request; RTP's first datagram; a VPN's discovery ping; an app's XOR-scrambled
# commands to a smart plug.)
_R = bytes(np.random.default_rng(38).integers(0, 256, 16, dtype=np.uint8))
PROTOCOL_HEADS = {
    "dns query": bytes.fromhex("1f2e01000001000000000000") + b"\x03www",
    "ntp request": bytes([0x23, 0, 6, 0xEC]) + bytes(12),
    "stun binding request": bytes.fromhex("000100002112a442") + _R[:8],
    "quic v1 initial": bytes([0xC3, 0, 0, 0, 1, 8]) + _R[:8] + bytes([0, 0x44]),
    "dtls 1.2 record": bytes([0x17, 0xFE, 0xFD, 0, 1]) + _R[:6] + bytes([0, 100]) + _R[6:9],
    "wireguard handshake": bytes([1, 0, 0, 0]) + _R[:12],
    "wireguard data": bytes([4, 0, 0, 0]) + _R[:4] + bytes([77, 0, 0, 0, 0, 0, 0, 0]),
    "openvpn reset": bytes([0x38]) + _R[:8] + bytes(5) + _R[8:10],
    "dhcp discover": bytes([1, 1, 6, 0]) + _R[:4] + bytes(8),
    "tftp read request": b"\x00\x01firmware.bin\x00o",
    "utp syn": bytes([0x41, 0]) + _R[:6] + bytes(4) + _R[6:10],
    "bittorrent dht": b"d1:ad2:id20:" + _R[:4],
    "tuya lan": bytes.fromhex("000055aa00000001000000130000006c"),
    "miio hello": bytes.fromhex("21310020") + b"\xff" * 12,
    "lifx": bytes.fromhex("2400003434120000") + bytes(8),
    "sip options": b"OPTIONS sip:100@",
    "syslog": b"<13>Dec  7 22:01",
    "mdns query": bytes.fromhex("000000000001000000000000") + b"\x05_ho",
    "ubiquiti discovery": bytes([1, 0, 0, 0]) + bytes(12),
    "memcached": b"\x00\x01\x00\x00\x00\x01\x00\x00stats\r\n\x00",
}


@pytest.mark.parametrize("name", sorted(PROTOCOL_HEADS))
def test_a_protocols_first_datagram_is_no_noise_by_itself(name):
    from agent.detect.evidence import noise_alone

    head = PROTOCOL_HEADS[name]
    b = batch([T0], BOARD, ip(192, 168, 1, 9), proto=17, size=100)
    b.udp_head_hi[0], b.udp_head_lo[0] = (np.uint64(int.from_bytes(head[i : i + 8], "big")) for i in (0, 8))
    b.udp_head_ok[0] = True
    assert len(head) == 16 and not noise_alone(b)[0]


def random_heads(rng, n: int) -> tuple[np.ndarray, np.ndarray]:
    return tuple(rng.integers(0, 1 << 63, n, dtype=np.uint64) | (rng.integers(0, 2, n, dtype=np.uint64) << 63)
                 for _ in range(2))


@pytest.mark.parametrize("payload", ["random", "zeros", "dns", "uncaptured"])
def test_a_slow_udp_flood_at_random_hosts_and_ports_is_named_on_its_payloads_whatever_the_model_says(payload):
    """Mirai's udp at 20 datagrams/s from the board at random hosts and ports of a /24 (a new socket pair each), its
    payloads random (rand, the default) or zeros (rand=0), while the board keeps its app's TLS session up: the model
    scores the datagrams benign, and their volume is no flood's; no application sends one-way datagrams with no
    header of its own, so the headers convict it within a second, as Mirai's udp.  A DNS client's queries from
    random ports, as many, are no flood; nor is a capture whose snapshot length cut the payloads off."""
    rng = np.random.default_rng(35)
    n = 40
    ts = T0 + 1.0 + np.arange(n) / 20.0
    flood = batch(ts, BOARD, ip(203, 0, 113, 0) + rng.integers(1, 255, n), proto=17, sport=rng_ports(rng, n),
                  dport=rng_ports(rng, n), size=362)  # fmt: skip
    flood.ip_id[:] = rng.integers(0, 1 << 16, n)
    if payload == "random":
        flood.udp_head_hi[:], flood.udp_head_lo[:] = random_heads(rng, n)
    elif payload == "dns":  # (a random id, the flags and one question: 0x0100 0001 0000 0000 0000, then the name)
        flood.udp_head_hi[:] = (rng.integers(0, 1 << 16, n, dtype=np.uint64) << np.uint64(48)) | np.uint64(0x0100_0001_0000)
        flood.udp_head_lo[:] = np.uint64(0x0000_0000_0377_7777)
    flood.udp_head_ok[:] = payload != "uncaptured"
    app = batch(T0 + np.arange(0, 3, 0.1), BOARD, ip(52, 1, 2, 3), sport=50000, dport=8883, flags=PSHACK, size=120)
    verdicts, _ = run(join(flood, app))
    if payload in ("dns", "uncaptured"):
        assert verdicts == []
    else:
        assert [(v.label, v.basis, v.src_ip) for v in verdicts] == [("mirai_udp", "headers", "10.0.0.5")]
        assert verdicts[0].decided_at - ts[0] < 1.0


def test_a_slow_udpplain_flood_beside_a_cameras_stream_is_named_on_its_payloads():
    """A camera streams RTP video (30 datagrams/s) and floods a target through one connected socket at 20
    datagrams/s (Mirai's udpplain: a kernel's counting IP ids), random payloads: the stream spares the flood
    nothing, and the flood is udpplain.  A discovery client pinging a VPN peer's every address (one magic
    number and key in each datagram, a new socket pair each) is no flood, nor is a hub polling 20 dead sensors by
    CoAP (a random token each) and SNMP in turn, whose requests read as random one by one."""
    rng = np.random.default_rng(36)
    camera, vpn, hub = ip(192, 168, 1, 30), ip(192, 168, 1, 31), ip(192, 168, 1, 32)
    video_ts = T0 + np.arange(0, 4, 1 / 30.0)
    video = batch(video_ts, camera, ip(192, 168, 1, 2), proto=17, sport=5004, dport=40000, size=1242)
    video.payload_len[:], video.udp_head_ok[:] = 1200, True
    video.udp_head_hi[:], video.udp_head_lo[:] = rtp_heads(len(video_ts), rng)
    ts = T0 + 1.0 + np.arange(40) / 20.0
    flood = batch(ts, camera, ip(198, 51, 100, 7), proto=17, sport=41000, dport=9000, size=554)
    flood.ip_id[:] = 1000 + np.arange(40)
    flood.udp_head_hi[:], flood.udp_head_lo[:] = random_heads(rng, 40)
    flood.udp_head_ok[:] = True
    pings = batch(ts, vpn, ip(100, 64, 0, 0) + rng.integers(1, 1 << 16, 40), proto=17, sport=41641,
                  dport=rng_ports(rng, 40), size=134)  # fmt: skip
    pings.udp_head_hi[:], pings.udp_head_lo[:] = np.uint64(0x5453F09F92AC9A3B), np.uint64(0x51E2C47D08F6B3A1)
    pings.udp_head_ok[:] = True
    coap = np.array([0x4401, 0xB474656D]) << np.array([48, 0])  # (ver, CON, GET; msgid, token; Uri-Path "tem")
    polls = batch(ts, hub, ip(192, 168, 1, 100) + np.arange(40) % 20, proto=17, sport=40000,
                  dport=np.where(np.arange(40) % 2, 161, 5683), size=80)  # fmt: skip
    polls.udp_head_hi[:] = np.where(np.arange(40) % 2, 0x302902010104_0670, coap[0] | rng.integers(0, 1 << 48, 40))
    polls.udp_head_lo[:] = np.where(np.arange(40) % 2, 0x75626C6963A01C02, (rng.integers(0, 1 << 31, 40) << 32) | coap[1])
    polls.udp_head_ok[:] = True
    verdicts, _ = run(join(video, flood, pings, polls))
    assert [(v.label, v.basis, v.src_ip) for v in verdicts] == [("mirai_udpplain", "headers", "192.168.1.30")]
    assert verdicts[0].decided_at - ts[0] < 1.0


@pytest.mark.parametrize("heads", ["sensor", "random"])
def test_a_hub_hearing_its_sensors_after_a_restart_is_no_spoofed_floods_target(heads):
    """100 sensors report to a hub once a second; the agent restarts and hears them all within a second, each a
    never-seen source, as a spoofed flood's are, and the model scores them like a UDP flood.  Their datagrams
    carry one protocol's header (a magic number, each sensor's id, a counter): no flood.  The same datagrams with
    random payloads are a spoofed flood's."""
    rng = np.random.default_rng(34)
    n = 100
    t = T0 + np.sort(rng.uniform(0, 1, n))
    ts, sensor = np.concatenate([t, t + 1, t + 2]), np.tile(np.arange(n), 3)
    b = batch(ts, ip(192, 168, 2, 0) + sensor, BOARD, proto=17, sport=40000 + sensor, dport=9000, size=162)
    b.payload_len[:], b.udp_head_ok[:] = 120, True
    if heads == "sensor":
        b.udp_head_hi[:] = (np.uint64(0x534E5352) << np.uint64(32)) | sensor.astype(np.uint64)
        b.udp_head_lo[:] = ((ts - T0).astype(np.uint64) << np.uint64(32)) | rng.integers(0, 1 << 32, 3 * n, np.uint64)
    else:
        b.udp_head_hi[:], b.udp_head_lo[:] = (rng.integers(0, 1 << 63, 3 * n, dtype=np.uint64) for _ in range(2))
    verdicts, _ = run(b, scores=udp_scores(3 * n))
    if heads == "sensor":
        assert verdicts == []
    else:
        assert [(v.kind, v.label, v.victim_ip) for v in verdicts][:1] == [("spoofed", "mirai_udp", "10.0.0.5")]


def test_a_udp_flood_whose_scores_the_model_splits_between_udp_and_udpplain_is_still_a_flood():
    """Mirai's two UDP floods overlap; the model may give a one-socket flood 55% udpplain and 40% udp, packet after
    packet, so that neither class alone reaches the threshold.  Together they do; the headers name it (a kernel's
    counting IP ids through one socket: udpplain)."""
    n = 3000
    flood = batch(T0 + np.arange(n) / 1000.0, ip(192, 168, 1, 66), BOARD, proto=17, sport=41234, dport=80, size=554)
    flood.ip_id[:] = (100 + np.arange(n)) % (1 << 16)
    scores = np.full((n, len(LABELS)), 0.01)
    scores[:, LABELS.index("mirai_udpplain")], scores[:, LABELS.index("mirai_udp")] = 0.55, 0.4
    verdicts, _ = run(flood, scores=scores)
    assert [(v.label, v.basis, v.src_ip) for v in verdicts] == [("mirai_udpplain", "model", "192.168.1.66")]
    assert verdicts[0].latency < 0.3
