"""agent.capture.parse: crafted frames of every decoded protocol checked field by field, malformed frames
counted per reason, the real captures against the golden feature files, and a fuzz property.

Frames are built with struct (lab/frame_bytes.py), independently of the parser's header tables.
"""

from __future__ import annotations

import csv
import gzip
import ipaddress
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.capture.packets import (
    L3_ARP,
    L3_IPV4,
    L3_IPV6,
    L3_OTHER,
    PORT_ARP,
    PORT_ICMP,
    PORT_NONE,
    PORT_NUMBER,
    DecodeStats,
    FrameBatch,
    PacketBatch,
)
from agent.capture.parse import parse_frames
from agent.capture.pcap import read_capture
from lab.frame_bytes import (
    DST_MAC,
    SRC_MAC,
    arp,
    ethernet,
    ext_ah,
    ext_fragment,
    ext_options,
    ext_routing,
    icmp_echo,
    ipv4,
    ipv6,
    lldp,
    mac_bytes,
    tcp,
    udp,
)

# --- Helpers ---------------------------------------------------------------------------------


def parse(frames: list[bytes], wire_len: list[int] | None = None) -> tuple[PacketBatch, DecodeStats]:
    stats = DecodeStats()
    batch = FrameBatch.from_frames(frames, [1000.0 + i for i in range(len(frames))], wire_len=wire_len)
    return parse_frames(batch, stats), stats


def mapped(addr: str) -> int:
    return 0xFFFF_0000_0000 | int(ipaddress.IPv4Address(addr))


def v6_words(addr: str) -> tuple[int, int]:
    value = int(ipaddress.IPv6Address(addr))
    return value >> 64, value & (2**64 - 1)


def row(p: PacketBatch, i: int = 0) -> dict:
    return {name: getattr(p, name)[i].item() for name in p.__dataclass_fields__}


# --- Each protocol, field by field --------------------------------------------------------------


def test_ipv4_tcp_every_column():
    frame = ethernet(0x0800, ipv4("192.0.2.10", "198.51.100.7", 6,
                                  tcp(40000, 443, flags=0x12, options=b"\x02\x04\x05\xb4" * 2, payload=b"x" * 11),
                                  ttl=63, ident=0xBEEF, flags_fragment=0x4000))
    p, stats = parse([frame], wire_len=[len(frame) + 4])
    assert row(p) == {
        "index": 0, "ts": 1000.0, "wire_len": len(frame) + 4, "src_mac": SRC_MAC, "dst_mac": DST_MAC,
        "vlan": -1, "l3": L3_IPV4, "src_ip_hi": 0, "src_ip_lo": mapped("192.0.2.10"),
        "dst_ip_hi": 0, "dst_ip_lo": mapped("198.51.100.7"), "proto": 6, "port_kind": PORT_NUMBER,
        "sport": 40000, "dport": 443, "ttl": 63, "ip_id": 0xBEEF, "df": True, "frag": False,
        "ip_len": 20 + 28 + 11, "tcp_flags": 0x12, "tcp_seq": 0x11223344, "tcp_ack": 0x55667788,
        "tcp_win": 29200, "tcp_hdr_len": 28, "payload_len": 11, "icmp_type": -1, "gre_proto": -1,
        "udp_head_hi": 0, "udp_head_lo": 0, "udp_head_ok": False,
    }
    assert stats.decoded == 1 and stats.total_skipped == 0
    assert p.src_ip_lo.dtype == np.uint64 and p.sport.dtype == np.int32 and p.l3.dtype == np.uint8


@pytest.mark.parametrize("option_words", [0, 1, 4, 10])
def test_ipv4_options_udp(option_words):
    options = b"\x01" * (4 * option_words)  # NOPs: IHL 5 + option_words, up to 15
    frame = ethernet(0x0800, ipv4("10.0.0.1", "10.0.0.2", 17, udp(5353, 53, b"q" * 30), options=options))
    p, stats = parse([frame])
    r = row(p)
    assert stats.total_skipped == 0
    assert (r["sport"], r["dport"], r["port_kind"], r["proto"]) == (5353, 53, PORT_NUMBER, 17)
    assert r["ip_len"] == 20 + 4 * option_words + 38 and r["payload_len"] == 30
    assert r["tcp_hdr_len"] == 0 and r["tcp_flags"] == 0 and r["tcp_seq"] == 0


def test_udp_payload_head_is_its_first_16_bytes_where_captured():
    """A datagram's first 16 payload bytes (an application's header: see DecisionLayer._payload_kinds), read
    big-endian; 0 when fewer are captured (a short datagram, a short snaplen) or the packet is no UDP."""
    head = bytes(range(0xA0, 0xB0))
    frames = [ethernet(0x0800, ipv4("10.0.0.1", "10.0.0.2", 17, udp(5004, 40000, head + b"media" * 40))),
              ethernet(0x0800, ipv4("10.0.0.1", "10.0.0.2", 17, udp(5004, 40000, head[:15]))),
              ethernet(0x0800, ipv4("10.0.0.1", "10.0.0.2", 6, tcp(80, 9999, payload=head))),
              ethernet(0x86DD, ipv6("2001:db8::1", "2001:db8::2", 17, udp(5004, 40000, head)))]
    p, stats = parse(frames[:2] + [frames[0][:14 + 20 + 8 + 12]] + frames[2:], wire_len=None)
    assert stats.total_skipped == 0
    assert p.udp_head_hi.tolist() == [0xA0A1A2A3A4A5A6A7, 0, 0, 0, 0xA0A1A2A3A4A5A6A7]
    assert p.udp_head_lo.tolist() == [0xA8A9AAABACADAEAF, 0, 0, 0, 0xA8A9AAABACADAEAF]
    assert p.udp_head_ok.tolist() == [True, False, False, False, True]


def test_icmpv4_and_short_frame_padding():
    """A 42-byte echo request padded to 60 bytes: payload_len follows the IP length, not the padding."""
    frame = ethernet(0x0800, ipv4("10.0.0.1", "10.0.0.2", 1, icmp_echo(b"")))
    frame += b"\0" * (60 - len(frame))
    p, _ = parse([frame])
    r = row(p)
    assert (r["port_kind"], r["sport"], r["dport"], r["proto"], r["payload_len"]) == (PORT_ICMP, -1, -1, 1, 8)
    assert r["icmp_type"] == 8


def test_vlan_tags():
    inner = ipv4("10.1.1.1", "10.2.2.2", 17, udp(1, 2))
    frames = [
        ethernet(0x0800, inner, tags=((0x8100, 42),)),
        ethernet(0x0800, inner, tags=((0x88A8, 100), (0x8100, 200))),
        ethernet(0x0800, inner, tags=((0x8100, 1), (0x8100, 2), (0x8100, 3))),  # a third tag: not followed
    ]
    p, stats = parse(frames)
    assert p.vlan.tolist() == [42, 100, 1]
    assert p.l3.tolist() == [L3_IPV4, L3_IPV4, L3_OTHER]
    assert p.sport.tolist() == [1, 1, -1]
    assert p.src_ip_lo.tolist()[:2] == [mapped("10.1.1.1")] * 2
    assert p.src_ip_lo[2] == SRC_MAC and p.dst_ip_lo[2] == DST_MAC
    assert stats.total_skipped == 0


def test_ipv6_extension_header_chain():
    payload = tcp(22, 51000, flags=0x10, payload=b"abc")
    chain = ext_options(43, 1) + ext_routing(51) + ext_ah(60) + ext_options(6, 0) + payload
    frame = ethernet(0x86DD, ipv6("2001:db8::1", "2001:db8:ffff::2", 0, chain))
    p, _ = parse([frame])
    r = row(p)
    assert (r["src_ip_hi"], r["src_ip_lo"]) == v6_words("2001:db8::1")
    assert (r["dst_ip_hi"], r["dst_ip_lo"]) == v6_words("2001:db8:ffff::2")
    assert (r["l3"], r["proto"], r["sport"], r["dport"], r["port_kind"]) == (L3_IPV6, 6, 22, 51000, PORT_NUMBER)
    assert (r["ttl"], r["ip_id"], r["df"], r["frag"]) == (57, 0, False, False)
    assert r["ip_len"] == 40 + len(chain) and r["payload_len"] == 3 and r["tcp_flags"] == 0x10


def test_ipv6_fragments_and_icmpv6():
    first = ethernet(0x86DD, ipv6("fe80::1", "ff02::fb", 44, ext_fragment(17, 0, True) + udp(5353, 5353, b"m" * 20)))
    later = ethernet(0x86DD, ipv6("fe80::1", "ff02::fb", 44, ext_fragment(17, 3, False) + b"m" * 16))
    icmp6 = ethernet(0x86DD, ipv6("fe80::1", "ff02::1", 58, bytes([135, 0, 0, 0]) + b"\0" * 20, hop_limit=255))
    p, stats = parse([first, later, icmp6])
    assert p.frag.tolist() == [False, True, False]
    assert p.port_kind.tolist() == [PORT_NUMBER, PORT_NONE, PORT_NONE]  # ICMPv6 has no "icmp" port
    assert p.sport.tolist() == [5353, -1, -1]
    assert p.proto.tolist() == [17, 17, 58]
    assert p.payload_len.tolist() == [20, 16, 24]
    assert p.ttl.tolist() == [57, 57, 255]
    assert p.icmp_type.tolist() == [-1, -1, 135]
    assert stats.total_skipped == 0


def test_ipv4_fragments():
    data = udp(1111, 2222, b"d" * 40)
    frames = [
        ethernet(0x0800, ipv4("10.0.0.1", "10.0.0.2", 17, data[:24], flags_fragment=0x2000)),  # first, MF
        ethernet(0x0800, ipv4("10.0.0.1", "10.0.0.2", 17, data[24:], flags_fragment=3)),  # offset 24
        ethernet(0x0800, ipv4("10.0.0.1", "10.0.0.2", 1, b"\0" * 8, flags_fragment=1)),  # ICMP, not first
    ]
    p, _ = parse(frames)
    assert p.frag.tolist() == [False, True, True]
    assert p.port_kind.tolist() == [PORT_NUMBER, PORT_NONE, PORT_NONE]
    assert p.sport.tolist() == [1111, -1, -1]
    assert p.payload_len.tolist() == [16, 24, 8]
    assert p.icmp_type.tolist() == [-1, -1, -1]  # a later ICMP fragment starts with data, not a type
    assert p.df.tolist() == [False, False, False]


def test_arp():
    p, _ = parse([ethernet(0x0806, arp("192.168.1.20", "192.168.1.1"))])
    r = row(p)
    assert (r["l3"], r["port_kind"], r["proto"], r["sport"], r["ttl"]) == (L3_ARP, PORT_ARP, 0, -1, 0)
    assert (r["src_ip_hi"], r["src_ip_lo"]) == (0, mapped("192.168.1.20"))
    assert (r["dst_ip_hi"], r["dst_ip_lo"]) == (0, mapped("192.168.1.1"))
    assert (r["ip_len"], r["payload_len"]) == (0, 0)


def test_frames_without_ip_or_arp_use_macs():
    llc = mac_bytes(DST_MAC) + mac_bytes(SRC_MAC) + struct.pack("!H", 38) + b"\x42\x42\x03" + b"\0" * 35  # 802.3
    eapol = ethernet(0x888E, b"\x02\x00\x00\x05\x01\x01\x00\x05\x01")
    odd_arp = ethernet(0x0806, struct.pack("!HHBBH", 6, 0x0800, 6, 4, 1) + b"\0" * 20)  # not Ethernet hardware
    p, stats = parse([lldp(), llc, eapol, odd_arp])
    assert p.l3.tolist() == [L3_OTHER] * 4
    assert p.src_ip_lo.tolist() == [SRC_MAC] * 4 and p.dst_ip_lo.tolist() == [DST_MAC] * 4
    assert p.src_ip_hi.tolist() == [0] * 4 and p.dst_ip_hi.tolist() == [0] * 4
    assert p.port_kind.tolist() == [PORT_NONE] * 4 and p.proto.tolist() == [0] * 4
    assert stats.total_skipped == 0


def test_snaplen_cut_payload_still_decodes():
    frame = ethernet(0x0800, ipv4("10.0.0.1", "10.0.0.2", 6, tcp(80, 9999, payload=b"p" * 500)))
    p, stats = parse([frame[:54]], wire_len=[len(frame)])
    assert (p.sport[0], p.payload_len[0], p.ip_len[0], p.wire_len[0]) == (80, 500, 540, len(frame))
    assert stats.total_skipped == 0


# --- Malformed frames -----------------------------------------------------------------------------


def test_malformed_frames_counted_per_reason_and_rest_decoded():
    good = ethernet(0x0800, ipv4("10.0.0.1", "10.0.0.2", 17, udp(7, 9)))
    tcp_frame = ethernet(0x0800, ipv4("10.0.0.1", "10.0.0.2", 6, tcp(1, 2)))
    cases = [
        (good, None),
        (good[:10], "truncated_ethernet"),
        (ethernet(0x0800, b"", tags=((0x8100, 5),))[:16], "truncated_ethernet"),  # tag cut short
        (ethernet(0x0800, ipv4("10.0.0.1", "10.0.0.2", 17, b""))[:30], "truncated_ip"),
        (ethernet(0x0800, ipv4("10.0.0.1", "10.0.0.2", 17, udp(1, 2), options=b"\1" * 8))[:38], "truncated_ip"),
        (ethernet(0x86DD, ipv6("::1", "::2", 17, udp(1, 2)))[:50], "truncated_ip"),
        (ethernet(0x86DD, ipv6("::1", "::2", 0, ext_options(17, 3)[:8]) + b"\0" * 8), "truncated_ip"),
        (ethernet(0x0800, ipv4("10.0.0.1", "10.0.0.2", 17, udp(1, 2), version_ihl=0x65)), "bad_ip_version"),
        (ethernet(0x86DD, ipv4("10.0.0.1", "10.0.0.2", 17, udp(1, 2)) + b"\0" * 20), "bad_ip_version"),
        (ethernet(0x0800, ipv4("10.0.0.1", "10.0.0.2", 17, udp(1, 2), version_ihl=0x43)), "bad_ip_header_length"),
        (ethernet(0x0800, ipv4("10.0.0.1", "10.0.0.2", 17, udp(1, 2) + b"\0" * 40, version_ihl=0x4F,
                               total_len=40)), "bad_ip_header_length"),
        (tcp_frame[:14 + 20 + 12], "truncated_l4"),
        (ethernet(0x0800, ipv4("10.0.0.1", "10.0.0.2", 17, udp(1, 2), total_len=24)), "truncated_l4"),
        (ethernet(0x86DD, ipv6("::1", "::2", 6, b"\0" * 12)), "truncated_l4"),
        (ethernet(0x0806, arp("10.0.0.1", "10.0.0.2"))[:14 + 20], "truncated_arp"),
        (ethernet(0x0806, b"\0\1")[:16], "truncated_arp"),
        (tcp_frame, None),
    ]
    p, stats = parse([frame for frame, _ in cases])
    expected_reasons: dict[str, int] = {}
    for _, reason in cases:
        if reason:
            expected_reasons[reason] = expected_reasons.get(reason, 0) + 1
    assert dict(stats.skipped) == expected_reasons
    assert p.index.tolist() == [0, len(cases) - 1]
    assert p.sport.tolist() == [7, 1]
    assert stats.decoded == 2


def test_bad_link_type_and_bounds():
    good = ethernet(0x0800, ipv4("10.0.0.1", "10.0.0.2", 17, udp(7, 9)))
    batch = FrameBatch.from_frames([good, good, good], [1.0, 2.0, 3.0])
    batch.linktype[1] = 105  # IEEE 802.11: not read
    batch.offset[2] = len(batch.buf) - 5  # runs past the buffer
    stats = DecodeStats()
    p = parse_frames(batch, stats)
    assert p.index.tolist() == [0]
    assert dict(stats.skipped) == {"unsupported_linktype:105": 1, "bad_frame_bounds": 1}


def test_empty_batch():
    p, stats = parse([])
    assert len(p) == 0 and stats.decoded == 0 and p.src_ip_lo.dtype == np.uint64


# --- Real captures ----------------------------------------------------------------------------------

GOLDEN = [
    ("esnet_masscan_tcp_0_1000_20190821", "esnet_masscan_tcp_0_1000_20190821.pcap"),
    ("ndpi_coap_mqtt", "ndpi_coap_mqtt.pcap"),
    ("tjoconnor_lockly-hub-01.first5000", "tjoconnor_lockly-hub-01.pcap"),
]


def parse_capture(path) -> tuple[PacketBatch, DecodeStats]:
    stats = DecodeStats()
    return PacketBatch.concat([parse_frames(b, stats) for b in read_capture(path, stats=stats)]), stats


@pytest.mark.parametrize("golden, capture", GOLDEN)
def test_decodes_exactly_the_golden_records(shared_data, golden, capture):
    with gzip.open(shared_data / "golden" / f"{golden}.features.csv.gz", "rt") as fh:
        rows = csv.reader(fh)
        assert next(rows)[:3] == ["index", "timestamp", "wire_len"]
        want = np.array([(int(r[0]), float(r[1]), int(r[2])) for r in rows], dtype=object)
    packets, _ = parse_capture(shared_data / "real" / capture)
    packets = packets.take(packets.index <= want[-1, 0])  # "first5000": a prefix of the capture
    assert packets.index.tolist() == want[:, 0].tolist()
    assert packets.ts.tolist() == want[:, 1].tolist()
    assert packets.wire_len.tolist() == want[:, 2].tolist()


def test_real_captures_decode_completely(shared_data):
    mix = {}
    for path in sorted((shared_data / "real").glob("*.pcap")):
        packets, stats = parse_capture(path)
        assert stats.total_skipped == 0, (path.name, stats.summary())
        for kind in np.unique(packets.l3).tolist():
            mix[kind] = mix.get(kind, 0) + int((packets.l3 == kind).sum())
        assert ((packets.port_kind == PORT_NUMBER) == (packets.sport >= 0)).all()
    assert set(mix) == {L3_IPV4, L3_IPV6, L3_ARP, L3_OTHER}  # the real files exercise every kind


# --- Property: arbitrary damage never crashes the parser ---------------------------------------------

SEEDS = [
    ethernet(0x0800, ipv4("10.0.0.1", "10.0.0.2", 6, tcp(1, 2, options=b"\1" * 4, payload=b"z" * 7), options=b"\1" * 4)),
    ethernet(0x0800, ipv4("10.0.0.1", "10.0.0.2", 17, udp(1, 2, b"y" * 9)), tags=((0x8100, 7), (0x8100, 8))),
    ethernet(0x86DD, ipv6("::1", "::2", 0, ext_options(44, 0) + ext_fragment(6, 0, True) + tcp(5, 6))),
    ethernet(0x0806, arp("10.0.0.1", "10.0.0.2")),
    lldp(),
]


@pytest.mark.slow
@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(
    st.tuples(st.sampled_from(SEEDS), st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=4),
              st.integers(0, 200)),
    min_size=1, max_size=6,
))
def test_damaged_frames_never_crash(damaged):
    frames = []
    for seed, mutations, cut in damaged:
        frame = bytearray(seed)
        for pos, value in mutations:
            frame[pos % len(frame)] = value
        frames.append(bytes(frame[:cut]))
    p, stats = parse(frames)
    assert len(p) + stats.total_skipped == len(frames) == stats.decoded + stats.total_skipped
    assert (np.diff(p.index) > 0).all()
    assert ((p.port_kind == PORT_NUMBER) == (p.sport >= 0)).all()
    assert (p.payload_len >= 0).all()


def test_gre_version_0_gives_its_carried_protocol_and_other_versions_none():
    """Mirai's greip (GRE 0 carrying IPv4) and greeth (Ethernet); PPTP's GRE is version 1 (flags 0x3001)."""
    def frame(gre: bytes) -> bytes:
        ip_header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(gre), 1, 0, 64, 47, 0, bytes([198, 51, 100, 9]),
                                bytes([10, 0, 0, 5]))  # fmt: skip
        return bytes(6) + bytes([2, 0, 0, 0, 0, 7]) + b"\x08\x00" + ip_header + gre

    frames = [frame(struct.pack("!HH", 0, 0x0800) + bytes(28)), frame(struct.pack("!HH", 0, 0x6558) + bytes(42)),
              frame(struct.pack("!HH", 0x3001, 0x880B) + bytes(30)), frame(b"\x00\x00")]  # fmt: skip
    p = parse_frames(FrameBatch.from_frames(frames, [1.0, 2.0, 3.0, 4.0]), DecodeStats())
    assert p.gre_proto.tolist() == [0x0800, 0x6558, -1, -1] and p.proto.tolist() == [47] * 4
