"""Header layouts, declared once as data: the parser reads frames with them, the synthesiser builds frames with them.

In the spirit of dpkt's ``__hdr__`` tables, a header is a sequence of (field, struct
format, default); each field's offset is the sum of the widths before it, all in
network byte order.  ``agent.capture.parse`` gathers fields at those offsets, a whole
batch at once; ``convert.synth.frames`` packs headers field by field from the same
tables, so both sides agree on every name, offset and size by construction.

A field's default is what a freshly built header holds (the synthesiser's starting
point).  The parser does not use it: where a frame lacks a header, its fields read 0.

Formats: B, H, I, Q (unsigned integers of 1, 2, 4, 8 bytes) and Ns (N raw bytes;
a 6s MAC address is read as an integer).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

ETHERTYPE_IPV4, ETHERTYPE_ARP, ETHERTYPE_IPV6 = 0x0800, 0x0806, 0x86DD
IP_PROTO_ICMP, IP_PROTO_TCP, IP_PROTO_UDP, IP_PROTO_GRE, IP_PROTO_ICMPV6 = 1, 6, 17, 47, 58
IP_DF = 0x4000  # IPv4 flags_fragment: don't fragment
FIN, SYN, RST, PSH, ACK, URG = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20  # TCP flags


@dataclass(frozen=True)
class Field:
    name: str
    fmt: str  # struct format of one value, without byte order
    default: int | bytes = 0

    @property
    def width(self) -> int:
        return struct.calcsize(">" + self.fmt)


@dataclass(frozen=True)
class Header:
    name: str
    fields: tuple[Field, ...]
    # (name, offset, width) of every field, computed once: readers walk it for every batch.
    spans: tuple[tuple[str, int, int], ...] = field(init=False, repr=False, compare=False)
    size: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        spans, at = [], 0
        for f in self.fields:
            spans.append((f.name, at, f.width))
            at += f.width
        object.__setattr__(self, "spans", tuple(spans))
        object.__setattr__(self, "size", at)

    def offset(self, name: str) -> int:
        return next(offset for field_name, offset, _ in self.spans if field_name == name)

    def prefix(self, last: str) -> Header:
        """The fields up to and including ``last``: for a reader that needs (and so requires captured) only those."""
        names = [f.name for f in self.fields]
        return Header(self.name, self.fields[: names.index(last) + 1])


# --- Link layers ------------------------------------------------------------------------------------

ETHERNET = Header("ethernet", (
    Field("dst", "6s"),
    Field("src", "6s"),
    Field("type", "H", ETHERTYPE_IPV4),
))
# Linux cooked capture v1 (LINKTYPE_LINUX_SLL), 16 bytes.
SLL = Header("sll", (
    Field("packet_type", "H"),  # PACKET_HOST, ... (see parse.SLL_RECEIVED)
    Field("arphrd", "H"),  # the device type: ARPHRD_*
    Field("addr_len", "H"),
    Field("addr", "6s"),  # the sender's link-layer address: the first 6 of 8 bytes ...
    Field("addr_rest", "H"),  # ... and the last 2 (unused by a MAC)
    Field("protocol", "H"),  # an EtherType, or a Linux pseudo-protocol below 0x0600
))
# Linux cooked capture v2 (LINKTYPE_LINUX_SLL2), 20 bytes: the same fields, protocol first.
SLL2 = Header("sll2", (
    Field("protocol", "H"),
    Field("reserved", "H"),
    Field("ifindex", "I"),
    Field("arphrd", "H"),
    Field("packet_type", "B"),
    Field("addr_len", "B"),
    Field("addr", "6s"),
    Field("addr_rest", "H"),
))
# BSD null (LINKTYPE_NULL: the capturing host's byte order) and OpenBSD loopback (LINKTYPE_LOOP: network
# byte order): a 4-byte address family.  Read big-endian; the parser swaps it where the order is open.
NULL = Header("null", (Field("family", "I"),))
LOOP = Header("loop", (Field("family", "I"),))
# An 802.1Q/802.1ad tag sits where the EtherType was; its own "type" is the next EtherType.
VLAN_TAG = Header("vlan", (
    Field("tci", "H"),
    Field("type", "H"),
))

# --- Layer 3 -------------------------------------------------------------------------------------------

IPV4 = Header("ipv4", (
    Field("version_ihl", "B", 0x45),  # version 4, header length in 32-bit words
    Field("tos", "B"),
    Field("total_len", "H", 20),
    Field("ident", "H"),
    Field("flags_fragment", "H"),  # DF (IP_DF), MF and the fragment offset in 8-byte units
    Field("ttl", "B", 64),
    Field("proto", "B", IP_PROTO_TCP),
    Field("checksum", "H"),
    Field("src", "I"),
    Field("dst", "I"),
))
IPV6 = Header("ipv6", (
    Field("version_class_flow", "I"),
    Field("payload_len", "H"),
    Field("next_header", "B"),
    Field("hop_limit", "B"),
    Field("src_hi", "Q"),
    Field("src_lo", "Q"),
    Field("dst_hi", "Q"),
    Field("dst_lo", "Q"),
))
# The first 4 bytes of every IPv6 extension header the parser follows.
IPV6_EXTENSION = Header("ipv6_extension", (
    Field("next_header", "B"),
    Field("len", "B"),  # units depend on the header type (see parse._extension_size)
    Field("fragment", "H"),  # fragment header only: offset << 3 | flags
))
ARP = Header("arp", (
    Field("htype", "H", 1),  # Ethernet
    Field("ptype", "H", ETHERTYPE_IPV4),
    Field("hlen", "B", 6),
    Field("plen", "B", 4),
    Field("op", "H", 1),  # 1 request, 2 reply
    Field("sender_mac", "6s"),  # the address fields as laid out for IPv4 over Ethernet
    Field("sender_ip", "I"),
    Field("target_mac", "6s"),
    Field("target_ip", "I"),
))

# --- Layer 4 -------------------------------------------------------------------------------------------

# Only the fixed 20 bytes; options follow when data_offset says so.
TCP = Header("tcp", (
    Field("sport", "H"),
    Field("dport", "H"),
    Field("seq", "I"),
    Field("ack", "I"),
    Field("data_offset", "B", 5 << 4),  # header length in 32-bit words, high nibble
    Field("flags", "B", SYN),
    Field("window", "H"),
    Field("checksum", "H"),
    Field("urgent", "H"),
))
UDP = Header("udp", (
    Field("sport", "H"),
    Field("dport", "H"),
    Field("len", "H", 8),
    Field("checksum", "H"),
))
# The first 16 bytes of a UDP payload, where captured: an application's header, in which some bytes stay from one
# datagram of a stream to the next (a version, an SSRC, a magic number) and some move on (a sequence number, a clock),
# where a flood's payload is random throughout or the same throughout (see DecisionLayer._payload_kinds).
UDP_PAYLOAD_HEAD = Header("udp_payload_head", (
    Field("head_hi", "Q"),
    Field("head_lo", "Q"),
))
# ICMP and ICMPv6 share this layout; "rest" is the echo identifier and sequence, or unused for errors.
ICMP = Header("icmp", (
    Field("type", "B", 3),  # destination unreachable ...
    Field("code", "B", 3),  # ... port unreachable
    Field("checksum", "H"),
    Field("rest", "I"),
))
# GRE (RFC 2784): flags and version, then the carried protocol.  Mirai's greip and greeth floods send version 0
# carrying IPv4 (0x0800) or Ethernet (0x6558); PPTP's tunnels send version 1 carrying PPP.
GRE = Header("gre", (
    Field("flags_version", "H"),
    Field("proto", "H"),
))
