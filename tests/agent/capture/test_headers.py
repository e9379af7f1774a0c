"""agent.capture.headers: the header tables the parser reads and the synthesiser writes.

Offsets and sizes are checked against the RFCs' layouts, and one header packed
from the table is read back by the parser.
"""

from __future__ import annotations

import struct

from agent.capture import headers as h
from agent.capture.packets import LINKTYPE_ETHERNET, DecodeStats, FrameBatch
from agent.capture.parse import parse_frames


def test_sizes_and_offsets_follow_the_rfcs():
    assert (h.ETHERNET.size, h.VLAN_TAG.size, h.SLL.size, h.SLL2.size) == (14, 4, 16, 20)
    assert (h.IPV4.size, h.IPV6.size, h.ARP.size) == (20, 40, 28)
    assert (h.TCP.size, h.UDP.size, h.ICMP.size, h.GRE.size) == (20, 8, 8, 4)
    assert [h.IPV4.offset(f) for f in ("ttl", "proto", "src", "dst")] == [8, 9, 12, 16]  # RFC 791
    assert [h.TCP.offset(f) for f in ("seq", "ack", "data_offset", "flags", "window")] == [4, 8, 12, 13, 14]  # RFC 9293
    assert h.IPV6.offset("next_header") == 6 and h.IPV6.offset("src_hi") == 8 and h.IPV6.offset("dst_lo") == 32
    assert h.TCP.prefix("dport").size == 4


def pack(header: h.Header, **values) -> bytes:
    """A header packed field by field from the table, defaults where no value is given."""
    return b"".join(struct.pack(">" + f.fmt, values.get(f.name, f.default)) for f in header.fields)


def test_a_frame_packed_from_the_tables_is_read_back_by_the_parser():
    tcp = pack(h.TCP, sport=4444, dport=23, seq=0xC0A80001, flags=h.SYN)
    ip = pack(h.IPV4, total_len=h.IPV4.size + len(tcp), ttl=55, src=0xC0000201, dst=0xC0A80001)
    eth = pack(h.ETHERNET, dst=b"\x02" * 6, src=b"\x02\x00\x00\x00\x00\x09", type=h.ETHERTYPE_IPV4)
    frame = eth + ip + tcp
    batch = FrameBatch.from_frames([frame], [1.0], linktype=LINKTYPE_ETHERNET)
    p = parse_frames(batch, DecodeStats())
    assert len(p) == 1
    assert (int(p.sport[0]), int(p.dport[0]), int(p.proto[0]), int(p.tcp_flags[0])) == (4444, 23, h.IP_PROTO_TCP, h.SYN)
    assert int(p.ttl[0]) == 55 and int(p.src_ip_lo[0]) & 0xFFFF_FFFF == 0xC0000201
