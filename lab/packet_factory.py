"""Random PacketBatches for feature tests (few hosts, so streams and pairs repeat often) and a spoofed SYN flood."""

from __future__ import annotations

import numpy as np

from agent.capture.packets import (
    L3_ARP,
    L3_IPV4,
    L3_IPV6,
    L3_OTHER,
    PORT_ARP,
    PORT_ICMP,
    PORT_NONE,
    PORT_NUMBER,
    PacketBatch,
)


def random_batch(
    n: int,
    seed: int = 0,
    hosts: int = 6,
    ports: int = 4,
    t0: float = 1.6e9,
    mean_gap: float = 0.05,
    long_gaps: bool = True,
    disorder: float = 0.0,
) -> PacketBatch:
    rng = np.random.default_rng(seed)
    gaps = rng.exponential(mean_gap, n)
    if long_gaps:  # a few idle periods long enough to exercise the block carry of decayed_sums
        gaps[rng.random(n) < 0.01] = rng.uniform(50, 400, size=None)
    ts = t0 + np.cumsum(gaps)
    if disorder:  # some timestamps step backwards, as merged pcapng interfaces can
        back = rng.random(n) < disorder
        ts[back] -= rng.uniform(0, 0.2, back.sum())
    macs = rng.integers(1, 2**48, hosts, dtype=np.uint64) & ~np.uint64(1 << 40)  # unicast: no group bit
    ips = (np.uint64(0xFFFF_0000_0000) | rng.integers(1, 2**32, hosts, dtype=np.uint64))
    src, dst = rng.integers(0, hosts, n), rng.integers(0, hosts, n)
    l3 = rng.choice([L3_IPV4, L3_IPV4, L3_IPV4, L3_IPV6, L3_ARP, L3_OTHER], n).astype(np.uint8)
    kind = np.where(l3 == L3_ARP, PORT_ARP, np.where(l3 == L3_OTHER, PORT_NONE,
                    rng.choice([PORT_NUMBER, PORT_NUMBER, PORT_NUMBER, PORT_ICMP, PORT_NONE], n))).astype(np.uint8)
    port_pool = rng.integers(1, 65536, ports)
    sport = np.where(kind == PORT_NUMBER, port_pool[rng.integers(0, ports, n)], -1).astype(np.int32)
    dport = np.where(kind == PORT_NUMBER, port_pool[rng.integers(0, ports, n)], -1).astype(np.int32)
    hi = np.where(l3 == L3_IPV6, np.uint64(0x2001_0DB8_0000_0000), np.uint64(0))
    z = np.zeros(n)
    return PacketBatch(
        index=np.arange(n, dtype=np.int64), ts=ts, wire_len=rng.choice([60, 74, 554, 566, 90, 1514], n).astype(np.int64),
        src_mac=macs[src], dst_mac=macs[dst], vlan=np.full(n, -1, np.int32), l3=l3,
        src_ip_hi=hi, src_ip_lo=ips[src], dst_ip_hi=hi.copy(), dst_ip_lo=ips[dst],
        proto=np.where(kind == PORT_NUMBER, 6, 0).astype(np.uint8), port_kind=kind, sport=sport, dport=dport,
        ttl=np.full(n, 64, np.uint8), ip_id=z.astype(np.uint16), df=z.astype(bool), frag=z.astype(bool),
        ip_len=z.astype(np.int32), tcp_flags=z.astype(np.uint8), tcp_seq=z.astype(np.uint32), tcp_ack=z.astype(np.uint32),
        tcp_win=z.astype(np.uint16), tcp_hdr_len=z.astype(np.uint8), payload_len=z.astype(np.int32),
        icmp_type=np.full(n, -1, np.int16), gre_proto=np.full(n, -1, np.int32),
        udp_head_hi=z.astype(np.uint64), udp_head_lo=z.astype(np.uint64), udp_head_ok=z.astype(bool),
    )


def spoofed_syn_flood(n: int, seed: int, t0: float) -> PacketBatch:
    """n SYNs to one victim from a new random source per packet (as a spoofing bot sends them)."""
    rng = np.random.default_rng(seed)
    packets = random_batch(n, seed, hosts=2, long_gaps=False, mean_gap=1e-5, t0=t0)
    packets.l3[:] = 1
    packets.port_kind[:] = 1
    packets.src_ip_lo = np.uint64(0xFFFF_0000_0000) | rng.integers(0, 2**32, n, dtype=np.uint64)
    packets.dst_ip_lo[:] = np.uint64(0xFFFF_0A00_0001)
    packets.src_ip_hi[:] = 0
    packets.dst_ip_hi[:] = 0
    packets.sport = rng.integers(1024, 65536, n).astype(np.int32)
    packets.dport[:] = 80
    packets.wire_len[:] = 74
    return packets
