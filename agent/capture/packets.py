"""The two batch types that flow through the pipeline.

``FrameBatch`` is what a capture source (pcap/pcapng file or AF_PACKET ring)
hands over: raw frames concatenated in one byte buffer.  ``PacketBatch`` is
what the parser makes of it: one numpy array per header field, one element per
decoded packet.  Every later stage (filter, features, model, decide) works on
``PacketBatch`` columns only.

Addresses are kept as two uint64 words (``*_hi``, ``*_lo``) holding a 16-byte
address: IPv6 as is, IPv4 (and ARP protocol addresses) as IPv4-mapped IPv6
(``::ffff:a.b.c.d``), so one code path serves both families.  For frames with
neither IP nor ARP, ``src_ip``/``dst_ip`` are the MAC addresses (DESIGN 4),
marked by ``l3 == L3_OTHER``.

Frames of every supported link type come out as if they had been captured on
Ethernet (parse.py): ``wire_len`` is the length of the Ethernet frame, and the
MACs are what the link header tells (0 where it has none).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, fields

import numpy as np

# Link types we decode (pcap LINKTYPE_*, https://www.tcpdump.org/linktypes.html); parse.py declares their
# headers and how each maps onto what an Ethernet header would have said.
LINKTYPE_NULL = 0  # BSD loopback: 4-byte address family in the capturing host's byte order
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101  # raw IP, version from the first nibble
LINKTYPE_LOOP = 108  # OpenBSD loopback: 4-byte address family in network byte order
LINKTYPE_LINUX_SLL = 113  # Linux cooked capture v1 (tcpdump -i any)
LINKTYPE_IPV4 = 228  # raw IPv4
LINKTYPE_IPV6 = 229  # raw IPv6
LINKTYPE_LINUX_SLL2 = 276  # Linux cooked capture v2
SUPPORTED_LINKTYPES = frozenset({
    LINKTYPE_NULL, LINKTYPE_ETHERNET, LINKTYPE_RAW, LINKTYPE_LOOP, LINKTYPE_LINUX_SLL, LINKTYPE_IPV4,
    LINKTYPE_IPV6, LINKTYPE_LINUX_SLL2,
})

# Values of PacketBatch.l3
L3_OTHER = 0  # Ethernet frame with neither IP nor ARP: addresses are the MACs
L3_IPV4 = 1
L3_IPV6 = 2
L3_ARP = 3

# Values of PacketBatch.port_kind (the N-BaIoT "port" of a packet)
PORT_NONE = 0  # no ports: the empty string in Kitsune's keys
PORT_NUMBER = 1  # TCP or UDP: sport/dport hold the numbers
PORT_ARP = 2  # the word "arp"
PORT_ICMP = 3  # the word "icmp" (ICMPv4 only)

IPV4_MAPPED_HI = np.uint64(0)
IPV4_MAPPED_LO_PREFIX = np.uint64(0xFFFF_0000_0000)

# Class names, in the model's output order (DESIGN 1).
LABELS = ("benign", "mirai_ack", "mirai_scan", "mirai_syn", "mirai_udp", "mirai_udpplain")
ANOMALY = "anomaly"  # the anomaly detector's verdict label, beside the model's classes
VERDICT_LABELS = LABELS + (ANOMALY,)


@dataclass
class FrameBatch:
    """Raw frames from a capture source, concatenated in ``buf``."""

    index: np.ndarray  # int64: 0-based record position in the source, counting undecodable records
    ts: np.ndarray  # float64 seconds
    wire_len: np.ndarray  # int64: original length on the wire
    cap_len: np.ndarray  # int64: bytes actually captured (present in buf)
    offset: np.ndarray  # int64: start of each frame in buf
    linktype: np.ndarray  # uint16: pcap link type of each frame
    buf: np.ndarray  # uint8: all frames back to back

    def __len__(self) -> int:
        return len(self.ts)

    def split(self, size: int) -> "Iterator[FrameBatch]":
        """Consecutive batches of at most ``size`` frames, sharing this batch's buffer (no copy)."""
        for lo in range(0, len(self), max(1, size)):
            hi = lo + size
            yield FrameBatch(index=self.index[lo:hi], ts=self.ts[lo:hi], wire_len=self.wire_len[lo:hi],
                             cap_len=self.cap_len[lo:hi], offset=self.offset[lo:hi], linktype=self.linktype[lo:hi],
                             buf=self.buf)  # fmt: skip

    def frame(self, i: int) -> bytes:
        start = int(self.offset[i])
        return self.buf[start : start + int(self.cap_len[i])].tobytes()

    @classmethod
    def from_frames(
        cls,
        frames: list[bytes],
        ts: list[float] | np.ndarray,
        wire_len: list[int] | np.ndarray | None = None,
        index: list[int] | np.ndarray | None = None,
        linktype: int = LINKTYPE_ETHERNET,
    ) -> "FrameBatch":
        """Build a batch from Python byte strings (tests, synthesiser, live capture)."""
        n = len(frames)
        cap = np.fromiter((len(f) for f in frames), dtype=np.int64, count=n)
        offset = np.zeros(n, dtype=np.int64)
        if n:
            offset[1:] = np.cumsum(cap)[:-1]
        return cls(
            index=np.arange(n, dtype=np.int64) if index is None else np.asarray(index, dtype=np.int64),
            ts=np.asarray(ts, dtype=np.float64),
            wire_len=cap.copy() if wire_len is None else np.asarray(wire_len, dtype=np.int64),
            cap_len=cap,
            offset=offset,
            linktype=np.full(n, linktype, dtype=np.uint16),
            buf=np.frombuffer(b"".join(frames), dtype=np.uint8),
        )


@dataclass
class PacketBatch:
    """Decoded packets, one array element per packet (column layout)."""

    index: np.ndarray  # int64, as FrameBatch.index
    ts: np.ndarray  # float64
    wire_len: np.ndarray  # int64: the frame's length on Ethernet (the record's, for Ethernet captures)
    src_mac: np.ndarray  # uint64 (48 bits used); 0 where the link header carries no MAC
    dst_mac: np.ndarray  # uint64
    vlan: np.ndarray  # int32: outermost 802.1Q VLAN id, -1 when untagged
    l3: np.ndarray  # uint8: L3_*
    src_ip_hi: np.ndarray  # uint64
    src_ip_lo: np.ndarray  # uint64
    dst_ip_hi: np.ndarray  # uint64
    dst_ip_lo: np.ndarray  # uint64
    proto: np.ndarray  # uint8: IP protocol number (0 when not IP)
    port_kind: np.ndarray  # uint8: PORT_*
    sport: np.ndarray  # int32: TCP/UDP source port, -1 otherwise
    dport: np.ndarray  # int32
    ttl: np.ndarray  # uint8: IPv4 TTL / IPv6 hop limit
    ip_id: np.ndarray  # uint16: IPv4 identification (0 for IPv6)
    df: np.ndarray  # bool: IPv4 don't-fragment
    frag: np.ndarray  # bool: IPv4/IPv6 non-first fragment (no L4 header)
    ip_len: np.ndarray  # int32: IPv4 total length / IPv6 40 + payload length
    tcp_flags: np.ndarray  # uint8
    tcp_seq: np.ndarray  # uint32
    tcp_ack: np.ndarray  # uint32
    tcp_win: np.ndarray  # uint16
    tcp_hdr_len: np.ndarray  # uint8: TCP header length in bytes (0 when not TCP)
    payload_len: np.ndarray  # int32: L4 payload bytes by the headers' own lengths
    icmp_type: np.ndarray  # int16: ICMP/ICMPv6 type, -1 when not ICMP (or its header is cut off)
    gre_proto: np.ndarray  # int32: the protocol GRE version 0 carries (0x0800 IPv4, ...), -1 otherwise
    udp_head_hi: np.ndarray  # uint64: a UDP payload's bytes 0-7 (big-endian), 0 unless 16 of its bytes were captured
    udp_head_lo: np.ndarray  # uint64: its bytes 8-15
    udp_head_ok: np.ndarray  # bool: those 16 bytes were captured (a zero head is then zeros, not a short snaplen)

    def __len__(self) -> int:
        return len(self.ts)

    def take(self, sel: np.ndarray) -> "PacketBatch":
        """A new batch with the packets selected by a boolean mask or index array."""
        return PacketBatch(**{f.name: getattr(self, f.name)[sel] for f in fields(self)})

    @classmethod
    def concat(cls, batches: list["PacketBatch"]) -> "PacketBatch":
        return cls(**{f.name: np.concatenate([getattr(b, f.name) for b in batches]) for f in fields(cls)})

    @property
    def src_ipv4(self) -> np.ndarray:
        """uint32 IPv4 source (meaningful where l3 is IPv4 or ARP)."""
        return (self.src_ip_lo & np.uint64(0xFFFF_FFFF)).astype(np.uint32)

    @property
    def dst_ipv4(self) -> np.ndarray:
        return (self.dst_ip_lo & np.uint64(0xFFFF_FFFF)).astype(np.uint32)


@dataclass
class DecodeStats:
    """Counts of records that could not be decoded, per reason (reported, never fatal)."""

    decoded: int = 0
    skipped: Counter = field(default_factory=Counter)

    def add(self, reason: str, count: int = 1) -> None:
        if count:
            self.skipped[reason] += int(count)

    def merge(self, other: "DecodeStats") -> None:
        self.decoded += other.decoded
        self.skipped.update(other.skipped)

    @property
    def total_skipped(self) -> int:
        return sum(self.skipped.values())

    def summary(self) -> str:
        """One line for the user: e.g. "0 packets decoded, 568 records skipped: unsupported_linktype:113 568"."""
        if not self.skipped:
            return f"{self.decoded} packets decoded, none skipped"
        by_count = sorted(self.skipped.items(), key=lambda item: (-item[1], item[0]))
        reasons = ", ".join(f"{reason} {n}" for reason, n in by_count)
        return f"{self.decoded} packets decoded, {self.total_skipped} records skipped: {reasons}"


def format_ip(hi: int, lo: int) -> str:
    """Text form of a 16-byte address held as two words (IPv4-mapped shown as dotted quad)."""
    import ipaddress

    value = (int(hi) << 64) | int(lo)
    addr = ipaddress.IPv6Address(value)
    return str(addr.ipv4_mapped) if addr.ipv4_mapped is not None else str(addr)


def ip_words(address) -> tuple[int, int]:
    """An address (text or an ``ipaddress`` address) as the two words PacketBatch holds it in, IPv4 mapped into
    IPv6: the inverse of ``format_ip``."""
    import ipaddress

    addr = ipaddress.ip_address(address)
    value = int(ipaddress.IPv6Address(f"::ffff:{addr}")) if addr.version == 4 else int(addr)
    return value >> 64, value & (2**64 - 1)


def format_mac(mac: int) -> str:
    return ":".join(f"{(int(mac) >> s) & 0xFF:02x}" for s in range(40, -8, -8))
