"""The decision layer: per-source verdicts from per-packet scores, and spoofed floods."""

from __future__ import annotations

import numpy as np

from agent.capture.packets import LABELS
from agent.detect.decide import DecisionConfig, DecisionLayer
from lab.packet_factory import random_batch

SYN = LABELS.index("mirai_syn")
ACK = LABELS.index("mirai_ack")


def scores_for(labels, strength=0.95):
    s = np.full((len(labels), len(LABELS)), (1 - strength) / (len(LABELS) - 1))
    s[np.arange(len(labels)), labels] = strength
    return s


def one_source(n, t0=1.6e9, rate=1000.0, proto=6):
    """IPv4 from 192.0.2.7 to two hosts over a few sockets: empty TCP segments (PSH-ACK, 60-byte frames), or UDP.
    No header rule judges these (no fresh sockets, no SYNs): what the model's scores say decides."""
    b = random_batch(n, 0, hosts=2, long_gaps=False)
    b.src_ip_hi[:] = 0
    b.src_ip_lo[:] = 0xFFFF_C000_0207  # 192.0.2.7
    b.dst_ip_hi[:] = 0
    b.l3[:] = 1
    b.proto[:] = proto
    b.port_kind[:] = 1
    b.tcp_flags[:] = 0x18 if proto == 6 else 0
    b.tcp_hdr_len[:] = 32 if proto == 6 else 0
    b.tcp_ack[:] = 0x1234_5678 if proto == 6 else 0  # what the peer sent so far (a stack never acks 0)
    if proto == 6:
        b.wire_len[:] = 60  # (a data stream in sequence is no flood, whatever the model says: no payload here)
    b.ts = t0 + np.arange(n) / rate
    return b


def test_single_odd_packet_raises_nothing():
    b = one_source(200)
    labels = np.zeros(200, dtype=int)
    labels[50] = SYN  # one packet the model got wrong
    d = DecisionLayer()
    assert d.update(b, scores_for(labels)) == []


def test_sustained_attack_gives_one_verdict_after_min_packets():
    b = one_source(500)
    d = DecisionLayer(DecisionConfig(min_packets=10))
    verdicts = d.update(b, scores_for(np.full(500, ACK)))
    assert len(verdicts) == 1
    v = verdicts[0]
    assert (v.kind, v.label, v.src_ip) == ("source", "mirai_ack", "192.0.2.7")
    assert v.packets == 500 and 0 < v.latency < 0.1  # decided at the 10th packet, 1 ms apart
    # The same source in later batches raises no second verdict while it stays hostile.
    b2 = one_source(500, t0=b.ts[-1] + 0.001)
    assert d.update(b2, scores_for(np.full(500, ACK))) == []


def test_benign_traffic_raises_nothing():
    b = random_batch(5000, 4)
    d = DecisionLayer()
    assert d.update(b, scores_for(np.zeros(5000, dtype=int), 0.9)) == []


def test_spoofed_flood_is_reported_per_target_and_sources_stay_bounded():
    n = 20000
    rng = np.random.default_rng(1)
    b = random_batch(n, 5, long_gaps=False)
    b.l3[:] = 1
    b.src_ip_hi[:] = 0
    b.src_ip_lo = np.uint64(0xFFFF_0000_0000) | rng.integers(1, 2**32, n, dtype=np.uint64)
    b.dst_ip_hi[:] = 0
    b.dst_ip_lo[:] = 0xFFFF_0A00_0005  # 10.0.0.5
    b.proto[:] = 6
    b.port_kind[:] = 1
    b.dport[:] = 80
    b.ts = 1.6e9 + np.arange(n) * 1e-5
    d = DecisionLayer(DecisionConfig(max_sources=1000))
    verdicts = []
    for lo in range(0, n, 4096):
        verdicts += d.update(b.take(slice(lo, lo + 4096)), scores_for(np.full(min(4096, n - lo), SYN)))
    assert [(v.kind, v.victim_ip, v.victim_port, v.label) for v in verdicts] == [("spoofed", "10.0.0.5", 80, "mirai_syn")]
    assert len(d.sources.table) <= 1000


def test_verdict_is_reissued_when_the_evidence_changes_class():
    """A bot floods with UDP through one socket, then with TCP segments."""
    b = one_source(600)
    udp = one_source(40, proto=17)
    for name in ("proto", "port_kind", "tcp_flags", "tcp_hdr_len", "sport", "dport", "wire_len"):
        getattr(b, name)[:40] = getattr(udp, name)
    labels = np.full(600, ACK)
    labels[:40] = LABELS.index("mirai_udpplain")
    d = DecisionLayer(DecisionConfig(min_packets=10))
    verdicts = d.update(b.take(slice(0, 100)), scores_for(labels[:100])) + d.update(b.take(slice(100, 600)), scores_for(labels[100:]))
    assert [v.label for v in verdicts] == ["mirai_udpplain", "mirai_ack"]


def _spoofed(n, syn_share=1.0, rate=5000.0, seed=2):
    rng = np.random.default_rng(seed)
    b = random_batch(n, seed, long_gaps=False)
    b.l3[:] = 1
    b.src_ip_hi[:] = 0
    b.src_ip_lo = np.uint64(0xFFFF_0000_0000) | rng.integers(1, 2**32, n, dtype=np.uint64)
    b.dst_ip_hi[:] = 0
    b.dst_ip_lo[:] = 0xFFFF_0A00_0005
    b.proto[:] = 6
    b.port_kind[:] = 1
    b.dport[:] = 25565
    b.tcp_flags[:] = np.where(rng.random(n) < syn_share, 0x02, 0x18)
    b.ts = 1.6e9 + np.arange(n) / rate
    return b


def test_spoofed_syn_flood_is_caught_on_headers_when_the_model_sees_nothing():
    d = DecisionLayer()
    verdicts = d.update(_spoofed(3000), scores_for(np.zeros(3000, dtype=int), 0.99))
    assert [(v.kind, v.label, v.basis, v.victim_port) for v in verdicts] == [("spoofed", "mirai_syn", "headers", 25565)]


def test_new_sources_of_mixed_shapes_or_low_rate_are_no_flood():
    benign = scores_for(np.zeros(3000, dtype=int), 0.99)
    assert DecisionLayer().update(_spoofed(3000, syn_share=0.5), benign) == []  # a busy server's clients
    assert DecisionLayer().update(_spoofed(3000, rate=20.0), benign) == []  # 20 new clients per second


def test_one_new_attacker_at_a_target_quiet_for_a_while_is_a_source_not_a_spoofed_flood():
    """Found in the soak run: a busy target, quiet for two minutes, then one attacker whose first packet
    the model calls hostile and the rest benign (the victim's replies change its features)."""
    d = DecisionLayer(DecisionConfig(min_packets=10))
    history = random_batch(3000, 7, long_gaps=False)
    history.l3[:] = 1
    history.dst_ip_hi[:] = 0
    history.dst_ip_lo[:] = 0xFFFF_0A00_0005
    history.proto[:] = 6
    history.ts = 1.6e9 + np.arange(3000) / 100.0
    assert d.update(history, scores_for(np.zeros(3000, dtype=int), 0.99)) == []
    attack = one_source(60, t0=history.ts[-1] + 120.0, rate=1000.0)
    attack.dst_ip_hi[:] = 0
    attack.dst_ip_lo[:] = 0xFFFF_0A00_0005
    attack.proto[:] = 6
    labels = np.zeros(60, dtype=int)
    labels[:12] = SYN
    verdicts = d.update(attack, scores_for(labels, 0.99))
    assert [v.kind for v in verdicts if v.kind == "spoofed"] == []


def test_a_slow_flood_from_a_busy_bot_is_judged_on_what_it_sends_its_victim():
    """An infected camera streams 600 packets/s to its NVR and floods another host at 60 packets/s: over all its
    traffic the flood is a tenth, too little to convict; what it sends the victim is all flood."""
    stream_n, flood_n = 3000, 300
    stream = one_source(stream_n, rate=600.0)
    stream.dst_ip_lo[:] = 0xFFFF_C0A8_0164  # the NVR
    flood = one_source(flood_n, t0=1.6e9 + 0.5, rate=60.0, proto=17)
    flood.dst_ip_lo[:] = 0xFFFF_C0A8_0142  # the victim
    b = stream.concat([stream, flood])
    b = b.take(np.argsort(b.ts, kind="stable"))
    udpplain = LABELS.index("mirai_udpplain")
    truth = np.where(b.dst_ip_lo == 0xFFFF_C0A8_0142, udpplain, 0)
    verdicts = DecisionLayer().update(b, scores_for(truth))
    assert [(v.label, v.src_ip, v.victim_ip) for v in verdicts] == [("mirai_udpplain", "192.0.2.7", "192.168.1.66")]
    assert verdicts[0].decided_at - 1.6e9 - 0.5 < 1.0
