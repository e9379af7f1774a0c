"""Decode a FrameBatch of captured frames into PacketBatch columns, vectorised over the batch.

Each header is declared once below as a table of fields (name, byte offset,
format, default).  ``Header.read`` gathers the whole header of every frame
that has one with a single numpy fancy-index (frame offset + header position
+ 0..size-1) and slices the fields out of that block; frames without the
header get the field's default.  There is no per-packet Python loop: the only
loops are over VLAN tags (2 rounds) and IPv6 extension headers (a few
rounds), each vectorised over the batch.

Link layers (``LINK_LAYERS``): Ethernet, Linux cooked v1/v2 (SLL, SLL2:
``tcpdump -i any``), raw IP (101, 228, 229), BSD null and OpenBSD loopback.
Each is one table entry saying where its payload starts, where the payload's
EtherType and the MACs come from, and how long the frame would have been on
Ethernet; ``_decode_link`` turns every frame into those four things, and from
there on every link type goes through the same code.  The model was trained
on Ethernet, so the same packet must give the same row whatever it was
captured with:

* ``wire_len`` = record's original length - link header + 14.  A VLAN tag
  inside a cooked payload is part of the payload, so it is already counted.
  Ethernet pads frames to 60 bytes: a cooked packet that an Ethernet
  interface (ARPHRD 1) received (packet type 0-3: to us, broadcast,
  multicast, to another host) counts at least 60, one it sent (type 4) is not
  padded, as in a sender's Ethernet capture.  Linux keeps the padding of
  received frames, so for real Ethernet NICs the minimum changes nothing; it
  matters for Wi-Fi, where there is none.  Loopback (ARPHRD 772), raw IP and
  null/loopback captures have no direction or no Ethernet behind them: not
  padded.
* MACs: SLL/SLL2 carry the sender's address, used as the source MAC when it
  is 6 bytes long; the destination MAC is the broadcast address for packet
  type 1 (broadcast) and 0 otherwise (unknown).  Raw IP and null/loopback
  have no MACs (0).  MAC-keyed features (MI_dir, ARP's HpHp, frames with
  neither IP nor ARP) use what the header gives.

Decoded above the link layer: up to two 802.1Q/802.1ad tags; IPv4 (any
header length 20..60); IPv6 with hop-by-hop, routing, fragment,
destination-options and AH extension headers; ARP for IPv4 over Ethernet;
TCP, UDP, ICMP.  Any other EtherType (LLDP, EAPOL, 802.3/LLC on Ethernet, ...)
is kept as ``L3_OTHER`` with its MACs as addresses (DESIGN 4).

A frame whose headers are cut short or inconsistent is dropped and counted in
``DecodeStats`` under one reason: truncated_ethernet / truncated_sll /
truncated_sll2 / truncated_null / truncated_loop (shorter than its link
header), unsupported_linktype:N, unsupported_arphrd:N (a cooked packet from
a device other than Ethernet or loopback), unsupported_sll_protocol:0xNNNN (a
cooked protocol below 0x0600, which is not an EtherType: 802.2 LLC, CAN, ...),
unsupported_address_family:N (null/loopback other than IPv4/IPv6),
bad_address_family (a family above 65535: garbage, not counted per value),
truncated_ip, bad_ip_version (also raw IP whose first nibble is not 4 or 6),
bad_ip_header_length, truncated_arp, truncated_l4 (the captured bytes, or the
IP length, do not hold the fixed TCP/UDP header the IP header announces),
bad_frame_bounds (a FrameBatch whose offsets point outside its buffer).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from agent.capture.packets import (
    IPV4_MAPPED_LO_PREFIX,
    L3_ARP,
    L3_IPV4,
    L3_IPV6,
    L3_OTHER,
    LINKTYPE_ETHERNET,
    LINKTYPE_IPV4,
    LINKTYPE_IPV6,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    LINKTYPE_LOOP,
    LINKTYPE_NULL,
    LINKTYPE_RAW,
    PORT_ARP,
    PORT_ICMP,
    PORT_NONE,
    PORT_NUMBER,
    DecodeStats,
    FrameBatch,
    PacketBatch,
)

# --- Header layouts ---------------------------------------------------------------------------

# Formats: big-endian unsigned integers of 1, 2, 4 or 8 bytes, and "6s" for a MAC address.
FORMAT_WIDTH = {"B": 1, "H": 2, "I": 4, "Q": 8, "6s": 6}


@dataclass(frozen=True)
class Field:
    name: str
    offset: int  # bytes from the start of the header
    fmt: str  # a key of FORMAT_WIDTH
    default: int = 0  # the value for frames that do not carry this header


@dataclass(frozen=True)
class Header:
    name: str
    fields: tuple[Field, ...]

    @property
    def size(self) -> int:
        """Bytes that must be present to read every field."""
        return max(f.offset + FORMAT_WIDTH[f.fmt] for f in self.fields)

    def read(self, buf: np.ndarray, start: np.ndarray, present: np.ndarray) -> dict[str, np.ndarray]:
        """Every field for all frames: read at ``buf[start]`` where ``present``, the default elsewhere.

        The caller guarantees ``start + size`` bytes are captured wherever ``present`` is set.
        Integer fields come back as int64, 8-byte fields and MACs as uint64.
        """
        rows = np.flatnonzero(present)
        block = buf[start[rows, None] + np.arange(self.size)]  # (rows, size) uint8: one gather
        out = {}
        for f in self.fields:
            width = FORMAT_WIDTH[f.fmt]
            dtype = np.uint64 if width > 4 else np.int64
            column = np.full(len(start), f.default, dtype=dtype)
            column[rows] = _big_endian(block[:, f.offset : f.offset + width])
            out[f.name] = column
        return out


def _big_endian(columns: np.ndarray) -> np.ndarray:
    """Big-endian unsigned value of each row of a (n, width) uint8 array."""
    n, width = columns.shape
    if width not in (1, 2, 4, 8):  # a MAC: left-pad to 8 bytes
        padded = np.zeros((n, 8), dtype=np.uint8)
        padded[:, 8 - width :] = columns
        columns, width = padded, 8
    return np.ascontiguousarray(columns).view(f">u{width}")[:, 0]


ETHERNET = Header("ethernet", (
    Field("dst", 0, "6s"),
    Field("src", 6, "6s"),
    Field("type", 12, "H"),
))
# Linux cooked capture v1 (LINKTYPE_LINUX_SLL), 16 bytes.
SLL = Header("sll", (
    Field("packet_type", 0, "H"),  # PACKET_HOST, ... (see SLL_RECEIVED)
    Field("arphrd", 2, "H"),  # the device type: ARPHRD_*
    Field("addr_len", 4, "H"),
    Field("addr", 6, "6s"),  # the sender's link-layer address: the first 6 of 8 bytes ...
    Field("addr_rest", 12, "H"),  # ... and the last 2 (unused by a MAC)
    Field("protocol", 14, "H"),  # an EtherType, or a Linux pseudo-protocol below 0x0600
))
# Linux cooked capture v2 (LINKTYPE_LINUX_SLL2), 20 bytes: the same fields, protocol first.
SLL2 = Header("sll2", (
    Field("protocol", 0, "H"),
    Field("reserved", 2, "H"),
    Field("ifindex", 4, "I"),
    Field("arphrd", 8, "H"),
    Field("packet_type", 10, "B"),
    Field("addr_len", 11, "B"),
    Field("addr", 12, "6s"),
    Field("addr_rest", 18, "H"),
))
# BSD null (LINKTYPE_NULL: the capturing host's byte order) and OpenBSD loopback (LINKTYPE_LOOP: network
# byte order): a 4-byte address family.  Read big-endian; _decode_link swaps it where the order is open.
NULL = Header("null", (Field("family", 0, "I"),))
LOOP = Header("loop", (Field("family", 0, "I"),))
# Raw IP (LINKTYPE_RAW) has no header; its first byte, the IP version nibble, says IPv4 or IPv6.
RAW_IP = Header("ip", (Field("version_ihl", 0, "B"),))
# An 802.1Q/802.1ad tag sits where the EtherType was; its own "type" is the next EtherType.
VLAN_TAG = Header("vlan", (
    Field("tci", 0, "H"),
    Field("type", 2, "H"),
))
IPV4 = Header("ipv4", (
    Field("version_ihl", 0, "B"),
    Field("total_len", 2, "H"),
    Field("ident", 4, "H"),
    Field("flags_fragment", 6, "H"),
    Field("ttl", 8, "B"),
    Field("proto", 9, "B"),
    Field("src", 12, "I"),
    Field("dst", 16, "I"),
))
IPV6 = Header("ipv6", (
    Field("version_class_flow", 0, "I"),
    Field("payload_len", 4, "H"),
    Field("next_header", 6, "B"),
    Field("hop_limit", 7, "B"),
    Field("src_hi", 8, "Q"),
    Field("src_lo", 16, "Q"),
    Field("dst_hi", 24, "Q"),
    Field("dst_lo", 32, "Q"),
))
# The first 8 bytes of every IPv6 extension header we follow.
IPV6_EXTENSION = Header("ipv6_extension", (
    Field("next_header", 0, "B"),
    Field("len", 1, "B"),  # units depend on the header type (see _extension_size)
    Field("fragment", 2, "H"),  # fragment header only: offset << 3 | flags
))
ARP = Header("arp", (
    Field("htype", 0, "H"),
    Field("ptype", 2, "H"),
    Field("hlen", 4, "B"),
    Field("plen", 5, "B"),
))
ARP_ETHERNET_IPV4 = Header("arp_ethernet_ipv4", (
    Field("sender_ip", 14, "I"),
    Field("target_ip", 24, "I"),
))
# Only the fixed 20 bytes: options are not needed for any column.
TCP = Header("tcp", (
    Field("sport", 0, "H", -1),
    Field("dport", 2, "H", -1),
    Field("seq", 4, "I"),
    Field("ack", 8, "I"),
    Field("data_offset", 12, "B"),  # header length in 32-bit words, high nibble
    Field("flags", 13, "B"),
    Field("window", 14, "H"),
    Field("checksum", 16, "H"),
    Field("urgent", 18, "H"),
))
UDP = Header("udp", (
    Field("sport", 0, "H", -1),
    Field("dport", 2, "H", -1),
    Field("len", 4, "H"),
    Field("checksum", 6, "H"),
))
# ICMP and ICMPv6 share their first two bytes; only the type is needed (echo requests vs replies and errors).
ICMP = Header("icmp", (
    Field("type", 0, "B", -1),
    Field("code", 1, "B", -1),
))
# GRE (RFC 2784): flags and version, then the carried protocol.  Mirai's greip and greeth floods send version 0
# carrying IPv4 (0x0800) or Ethernet (0x6558); PPTP's tunnels send version 1 carrying PPP.
GRE = Header("gre", (
    Field("flags_version", 0, "H", -1),
    Field("proto", 2, "H", -1),
))

ETHERTYPE_IPV4, ETHERTYPE_ARP, ETHERTYPE_IPV6 = 0x0800, 0x0806, 0x86DD
VLAN_TPIDS = (0x8100, 0x88A8, 0x9100)  # 802.1Q, 802.1ad, the older QinQ value
MAX_VLAN_TAGS = 2
IP_PROTO_ICMP, IP_PROTO_TCP, IP_PROTO_UDP, IP_PROTO_GRE, IP_PROTO_ICMPV6 = 1, 6, 17, 47, 58
EXT_HOP_BY_HOP, EXT_ROUTING, EXT_FRAGMENT, EXT_AH, EXT_DEST_OPTS = 0, 43, 44, 51, 60
IPV6_EXTENSIONS = (EXT_HOP_BY_HOP, EXT_ROUTING, EXT_FRAGMENT, EXT_AH, EXT_DEST_OPTS)
MAX_IPV6_EXTENSIONS = 8  # a longer chain is decoded at L3 only (proto = the last header type)


# How each link type maps onto an Ethernet header (see the module docstring).


@dataclass(frozen=True)
class LinkLayer:
    name: str  # frames shorter than the header are counted as truncated_<name>
    header: Header | None  # what is read at the start of the frame (None: nothing)
    length: int  # bytes before the payload (raw IP: 0, its first byte is only peeked at)
    # Where the payload's EtherType comes from: a fixed value, or the header field holding it: "type" and
    # "protocol" hold an EtherType, "version_ihl" an IP version nibble, "family" a BSD address family.
    ethertype: str | int
    cooked: bool = False  # Linux SLL/SLL2: ARPHRD, packet type and sender address fields
    family_either_order: bool = False  # BSD null: the family is in the capturing host's byte order


LINK_LAYERS: dict[int, LinkLayer] = {
    LINKTYPE_ETHERNET: LinkLayer("ethernet", ETHERNET, 14, "type"),
    LINKTYPE_LINUX_SLL: LinkLayer("sll", SLL, 16, "protocol", cooked=True),
    LINKTYPE_LINUX_SLL2: LinkLayer("sll2", SLL2, 20, "protocol", cooked=True),
    LINKTYPE_RAW: LinkLayer("ip", RAW_IP, 0, "version_ihl"),  # an empty packet: truncated_ip
    LINKTYPE_IPV4: LinkLayer("ip", None, 0, ETHERTYPE_IPV4),
    LINKTYPE_IPV6: LinkLayer("ip", None, 0, ETHERTYPE_IPV6),
    LINKTYPE_NULL: LinkLayer("null", NULL, 4, "family", family_either_order=True),
    LINKTYPE_LOOP: LinkLayer("loop", LOOP, 4, "family"),
}
ETHERNET_HEADER_LEN = 14
ETHERNET_MIN_FRAME = 60  # without the frame check sequence, as captures record it
BROADCAST_MAC = 0xFFFF_FFFF_FFFF
ARPHRD_ETHER, ARPHRD_LOOPBACK = 1, 772
COOKED_ARPHRDS = (ARPHRD_ETHER, ARPHRD_LOOPBACK)  # others (tunnels, PPP, CAN, Wi-Fi monitor, ...): skipped
SLL_BROADCAST = 1  # packet type: broadcast by somebody else
SLL_RECEIVED = (0, 1, 2, 3)  # to us, broadcast, multicast, to another host (4: sent by us)
MIN_ETHERTYPE = 0x0600  # smaller SLL protocols are Linux pseudo-protocols (802.3, 802.2 LLC, CAN, ...)
FAMILY_ETHERTYPE = {2: ETHERTYPE_IPV4, 24: ETHERTYPE_IPV6, 28: ETHERTYPE_IPV6, 30: ETHERTYPE_IPV6}  # AF_INET,
# AF_INET6 on NetBSD/OpenBSD, FreeBSD, macOS


def _extension_size(kind: np.ndarray, length: np.ndarray) -> np.ndarray:
    """Bytes taken by an IPv6 extension header: fixed 8 for fragment, 4-byte units for AH, else 8-byte units."""
    return np.where(kind == EXT_FRAGMENT, 8, np.where(kind == EXT_AH, (length + 2) * 4, (length + 1) * 8))


# --- The decoder ----------------------------------------------------------------------------------


class _Drops:
    """The frames still alive, and per-reason counts of those dropped."""

    def __init__(self, n: int, stats: DecodeStats) -> None:
        self.alive = np.ones(n, dtype=bool)
        self.stats = stats

    def drop(self, mask: np.ndarray, reason: str) -> None:
        mask = mask & self.alive
        self.stats.add(reason, int(mask.sum()))
        self.alive &= ~mask

    def drop_each(self, mask: np.ndarray, values: np.ndarray, reason: str) -> None:
        """Drop ``mask``, counted per distinct value: ``reason`` is a format string, e.g. "unsupported_linktype:{}"."""
        mask = mask & self.alive
        if mask.any():
            for value in np.unique(values[mask]).tolist():
                self.drop(mask & (values == value), reason.format(value))


def parse_frames(frames: FrameBatch, stats: DecodeStats | None = None) -> PacketBatch:
    """Decode every frame of the batch; frames that cannot be decoded are counted in ``stats`` and left out."""
    stats = stats if stats is not None else DecodeStats()
    n = len(frames)
    buf = frames.buf
    start = frames.offset.astype(np.int64)
    end = start + frames.cap_len.astype(np.int64)  # one past the last captured byte
    drops = _Drops(n, stats)
    drops.drop((start < 0) | (end < start) | (end > len(buf)), "bad_frame_bounds")

    # The link layer, as Ethernet would have said it; then up to two VLAN tags.
    link = _decode_links(frames, buf, start, end, drops)
    ethertype = link["ethertype"]
    l3 = link["l3"]
    vlan = np.full(n, -1, dtype=np.int64)
    for _ in range(MAX_VLAN_TAGS):
        tagged = drops.alive & np.isin(ethertype, VLAN_TPIDS)
        if not tagged.any():
            break
        drops.drop(tagged & (l3 + VLAN_TAG.size > end), "truncated_ethernet")
        tagged &= drops.alive
        tag = VLAN_TAG.read(buf, l3, tagged)
        vlan = np.where(tagged & (vlan < 0), tag["tci"] & 0x0FFF, vlan)  # the outermost tag's id
        ethertype = np.where(tagged, tag["type"], ethertype)
        l3 = l3 + VLAN_TAG.size * tagged

    ip4 = _decode_ipv4(buf, l3, end, drops.alive & (ethertype == ETHERTYPE_IPV4), drops)
    ip6 = _decode_ipv6(buf, l3, end, drops.alive & (ethertype == ETHERTYPE_IPV6), drops)
    arp = _decode_arp(buf, l3, end, drops.alive & (ethertype == ETHERTYPE_ARP), drops)
    is4, is6 = ip4["is"] & drops.alive, ip6["is"] & drops.alive

    # Columns shared by both IP versions: exactly one of ip4/ip6 holds a non-default value per row.
    is_ip = is4 | is6
    proto = np.where(is4, ip4["proto"], ip6["proto"])
    l4 = np.where(is4, ip4["l4"], ip6["l4"])
    ip_end = np.where(is4, ip4["end"], ip6["end"])  # end of the IP packet by its length field
    frag = np.where(is4, ip4["frag"], ip6["frag"])
    l4_room = np.minimum(ip_end, end) - l4  # L4 bytes both declared and captured

    has_l4 = is_ip & ~frag
    is_tcp = has_l4 & (proto == IP_PROTO_TCP)
    is_udp = has_l4 & (proto == IP_PROTO_UDP)
    drops.drop((is_tcp & (l4_room < TCP.size)) | (is_udp & (l4_room < UDP.size)), "truncated_l4")
    is_tcp &= drops.alive
    is_udp &= drops.alive
    tcp = TCP.read(buf, l4, is_tcp)
    udp = UDP.read(buf, l4, is_udp)
    # A truncated ICMP header is no reason to skip the packet: its type is then unknown (-1).
    is_icmp = has_l4 & drops.alive & np.isin(proto, (IP_PROTO_ICMP, IP_PROTO_ICMPV6)) & (l4_room >= ICMP.size)
    icmp = ICMP.read(buf, l4, is_icmp)
    is_gre = has_l4 & drops.alive & (proto == IP_PROTO_GRE) & (l4_room >= GRE.size)
    gre = GRE.read(buf, l4, is_gre)
    gre_proto = np.where(is_gre & (gre["flags_version"] & 7 == 0), gre["proto"], -1)
    tcp_hdr_len = (tcp["data_offset"] >> 4) * 4
    l4_header = np.where(is_tcp, tcp_hdr_len, np.where(is_udp, UDP.size, 0))
    payload_len = np.where(is_ip, np.maximum(ip_end - l4 - l4_header, 0), 0)

    is_arp = arp["is"] & drops.alive
    l3_kind = np.select([is4, is6, is_arp], [L3_IPV4, L3_IPV6, L3_ARP], L3_OTHER)
    port_kind = np.select(
        [is_tcp | is_udp, is_arp, has_l4 & is4 & (proto == IP_PROTO_ICMP)],
        [PORT_NUMBER, PORT_ARP, PORT_ICMP],
        PORT_NONE,
    )
    ipv4_like = is4 | is_arp  # addresses stored IPv4-mapped
    src_v4 = np.where(is4, ip4["src"], arp["src"]).astype(np.uint64)
    dst_v4 = np.where(is4, ip4["dst"], arp["dst"]).astype(np.uint64)
    # Frames with neither IP nor ARP are keyed by their MACs (DESIGN 4).
    src_lo = np.select([ipv4_like, is6], [IPV4_MAPPED_LO_PREFIX | src_v4, ip6["src_lo"]], link["src_mac"])
    dst_lo = np.select([ipv4_like, is6], [IPV4_MAPPED_LO_PREFIX | dst_v4, ip6["dst_lo"]], link["dst_mac"])

    keep = np.flatnonzero(drops.alive)
    stats.decoded += len(keep)

    def column(values: np.ndarray, dtype: type) -> np.ndarray:
        return np.asarray(values)[keep].astype(dtype)

    return PacketBatch(
        index=column(frames.index, np.int64),
        ts=column(frames.ts, np.float64),
        wire_len=column(link["wire_len"], np.int64),
        src_mac=column(link["src_mac"], np.uint64),
        dst_mac=column(link["dst_mac"], np.uint64),
        vlan=column(vlan, np.int32),
        l3=column(l3_kind, np.uint8),
        src_ip_hi=column(np.where(is6, ip6["src_hi"], 0), np.uint64),
        src_ip_lo=column(src_lo, np.uint64),
        dst_ip_hi=column(np.where(is6, ip6["dst_hi"], 0), np.uint64),
        dst_ip_lo=column(dst_lo, np.uint64),
        proto=column(np.where(is_ip, proto, 0), np.uint8),
        port_kind=column(port_kind, np.uint8),
        sport=column(np.where(is_tcp, tcp["sport"], udp["sport"]), np.int32),
        dport=column(np.where(is_tcp, tcp["dport"], udp["dport"]), np.int32),
        ttl=column(np.where(is4, ip4["ttl"], ip6["ttl"]), np.uint8),
        ip_id=column(ip4["ident"], np.uint16),
        df=column(is4 & ip4["df"], bool),
        frag=column(is_ip & frag, bool),
        ip_len=column(np.where(is4, ip4["ip_len"], ip6["ip_len"]), np.int32),
        tcp_flags=column(tcp["flags"], np.uint8),
        tcp_seq=column(tcp["seq"], np.uint32),
        tcp_ack=column(tcp["ack"], np.uint32),
        tcp_win=column(tcp["window"], np.uint16),
        tcp_hdr_len=column(tcp_hdr_len, np.uint8),
        payload_len=column(payload_len, np.int32),
        icmp_type=column(icmp["type"], np.int16),
        gre_proto=column(gre_proto, np.int32),
    )


# --- Link layer -----------------------------------------------------------------------------------


def _decode_links(frames: FrameBatch, buf: np.ndarray, start: np.ndarray, end: np.ndarray, drops: _Drops) -> dict:
    """Per frame: the payload's EtherType, where the payload starts, the MACs and the Ethernet wire length.

    A batch is nearly always of one link type (a pcap file has one; pcapng one per interface), which
    is decoded for the whole batch at once; a mixed batch is decoded once per link type present.
    """
    linktype = frames.linktype
    mixed = len(linktype) > 0 and not (linktype == linktype[0]).all()
    present = np.unique(linktype).tolist() if mixed else linktype[:1].tolist()
    out = None
    for value in present:
        rows = drops.alive & (linktype == value) if mixed else drops.alive
        layer = LINK_LAYERS.get(value)
        if layer is None:
            drops.drop(rows, f"unsupported_linktype:{value}")
            continue
        part = _decode_link(layer, buf, start, end, np.asarray(frames.wire_len, dtype=np.int64), rows, drops)
        if out is None:
            out = part
        else:
            out = {name: np.where(linktype == value, part[name], out[name]) for name in out}
    if out is None:  # an empty batch, or nothing of a link type we read
        zeros = np.zeros(len(linktype), dtype=np.int64)
        return {"ethertype": zeros, "l3": start, "src_mac": zeros.astype(np.uint64),
                "dst_mac": zeros.astype(np.uint64), "wire_len": zeros}
    return out


def _decode_link(
    layer: LinkLayer, buf: np.ndarray, start: np.ndarray, end: np.ndarray, wire: np.ndarray, rows: np.ndarray,
    drops: _Drops,
) -> dict:
    """One link type's frames (``rows``) normalised to Ethernet; full-length columns, meaningful in ``rows``."""
    n = len(start)
    head: dict[str, np.ndarray] = {}
    if layer.header is not None:
        drops.drop(rows & (end - start < layer.header.size), f"truncated_{layer.name}")
        rows = rows & drops.alive
        head = layer.header.read(buf, start, rows)
    no_mac = np.zeros(n, dtype=np.uint64)
    src_mac, dst_mac = head.get("src", no_mac), head.get("dst", no_mac)

    if isinstance(layer.ethertype, int):
        ethertype = np.full(n, layer.ethertype, dtype=np.int64)
    elif layer.ethertype == "version_ihl":
        version = head["version_ihl"] >> 4
        drops.drop(rows & (version != 4) & (version != 6), "bad_ip_version")
        ethertype = np.where(version == 6, ETHERTYPE_IPV6, ETHERTYPE_IPV4)
    elif layer.ethertype == "family":
        family = head["family"]
        if layer.family_either_order:  # written by a little-endian host: swap where that gives a known family
            swapped = family.astype(">u4").view("<u4").astype(np.int64)
            family = np.where(np.isin(family, list(FAMILY_ETHERTYPE)), family, np.minimum(family, swapped))
        known = np.isin(family, list(FAMILY_ETHERTYPE))
        drops.drop(rows & ~known & (family > 0xFFFF), "bad_address_family")  # one reason, not 2**32
        drops.drop_each(rows & ~known, family, "unsupported_address_family:{}")
        ethertype = np.where(family == 2, ETHERTYPE_IPV4, ETHERTYPE_IPV6)
    else:
        ethertype = head[layer.ethertype]

    if layer.length != ETHERNET_HEADER_LEN:
        wire = wire - layer.length + ETHERNET_HEADER_LEN
    if layer.cooked:
        arphrd, packet_type, protocol = head["arphrd"], head["packet_type"], head["protocol"]
        drops.drop_each(rows & ~np.isin(arphrd, COOKED_ARPHRDS), arphrd, "unsupported_arphrd:{}")
        drops.drop_each(rows & (protocol < MIN_ETHERTYPE), protocol, "unsupported_sll_protocol:0x{:04x}")
        src_mac = np.where(head["addr_len"] == 6, head["addr"], no_mac)  # the sender's MAC
        dst_mac = np.where(packet_type == SLL_BROADCAST, np.uint64(BROADCAST_MAC), no_mac)
        # Received by an Ethernet interface: the frame on the wire was padded to the minimum.
        padded = (arphrd == ARPHRD_ETHER) & np.isin(packet_type, SLL_RECEIVED)
        wire = np.where(padded, np.maximum(wire, ETHERNET_MIN_FRAME), wire)
    return {"ethertype": ethertype, "l3": start + layer.length, "src_mac": src_mac, "dst_mac": dst_mac,
            "wire_len": wire}


# --- Layer 3 -----------------------------------------------------------------------------------------
# Each returns full-length columns (defaults where the frame is not of that kind) and drops what it
# cannot decode.  "is" marks the frames of that kind; callers AND it with drops.alive.


def _decode_ipv4(buf: np.ndarray, l3: np.ndarray, end: np.ndarray, is4: np.ndarray, drops: _Drops) -> dict:
    drops.drop(is4 & (l3 + IPV4.size > end), "truncated_ip")
    is4 = is4 & drops.alive
    ip = IPV4.read(buf, l3, is4)
    version, ihl = ip["version_ihl"] >> 4, (ip["version_ihl"] & 0x0F) * 4
    drops.drop(is4 & (version != 4), "bad_ip_version")
    # A header shorter than 20 bytes, or longer than the packet it is in, is corrupt ...
    drops.drop(is4 & ((ihl < IPV4.size) | (ip["total_len"] < ihl)), "bad_ip_header_length")
    # ... one longer than what was captured (options cut by the snapshot length) is truncated.
    drops.drop(is4 & (l3 + ihl > end), "truncated_ip")
    is4 = is4 & drops.alive
    flags_fragment = ip["flags_fragment"]
    return {
        "is": is4,
        "src": ip["src"],
        "dst": ip["dst"],
        "proto": ip["proto"],
        "ttl": ip["ttl"],
        "ident": ip["ident"],
        "df": (flags_fragment & 0x4000) != 0,
        "frag": is4 & ((flags_fragment & 0x1FFF) != 0),  # non-first fragment: no L4 header
        "ip_len": ip["total_len"],
        "l4": l3 + ihl,
        "end": l3 + ip["total_len"],
    }


def _decode_ipv6(buf: np.ndarray, l3: np.ndarray, end: np.ndarray, is6: np.ndarray, drops: _Drops) -> dict:
    drops.drop(is6 & (l3 + IPV6.size > end), "truncated_ip")
    is6 = is6 & drops.alive
    ip = IPV6.read(buf, l3, is6)
    drops.drop(is6 & ((ip["version_class_flow"] >> 28) != 6), "bad_ip_version")
    is6 = is6 & drops.alive
    payload = ip["payload_len"]
    # Payload length 0 with data behind it is a jumbogram: the captured bytes are all we know.
    ip_end = np.where(payload > 0, l3 + IPV6.size + payload, end)
    next_header = ip["next_header"]
    pos = l3 + IPV6.size
    frag = np.zeros(len(l3), dtype=bool)
    for _ in range(MAX_IPV6_EXTENSIONS):
        chain = is6 & drops.alive & ~frag & np.isin(next_header, IPV6_EXTENSIONS)
        if not chain.any():
            break
        drops.drop(chain & (pos + IPV6_EXTENSION.size > np.minimum(end, ip_end)), "truncated_ip")
        chain &= drops.alive
        ext = IPV6_EXTENSION.read(buf, pos, chain)
        is_fragment = chain & (next_header == EXT_FRAGMENT)
        frag |= is_fragment & ((ext["fragment"] >> 3) != 0)  # non-first fragment: stop, no L4 header
        pos = np.where(chain, pos + _extension_size(next_header, ext["len"]), pos)
        next_header = np.where(chain, ext["next_header"], next_header)
    drops.drop(is6 & (pos > np.minimum(end, ip_end)), "truncated_ip")  # a header running past the data
    return {
        "is": is6 & drops.alive,
        "src_hi": ip["src_hi"],
        "src_lo": ip["src_lo"],
        "dst_hi": ip["dst_hi"],
        "dst_lo": ip["dst_lo"],
        "proto": next_header,
        "ttl": ip["hop_limit"],
        "frag": frag,
        "ip_len": np.where(is6, IPV6.size + payload, 0),
        "l4": pos,
        "end": ip_end,
    }


def _decode_arp(buf: np.ndarray, l3: np.ndarray, end: np.ndarray, is_arp: np.ndarray, drops: _Drops) -> dict:
    drops.drop(is_arp & (l3 + ARP.size > end), "truncated_arp")
    is_arp = is_arp & drops.alive
    arp = ARP.read(buf, l3, is_arp)
    # Only ARP for IPv4 over Ethernet carries the addresses we key on; other ARP stays L3_OTHER.
    ether_ipv4 = is_arp & (arp["htype"] == 1) & (arp["ptype"] == ETHERTYPE_IPV4)
    ether_ipv4 &= (arp["hlen"] == 6) & (arp["plen"] == 4)
    drops.drop(ether_ipv4 & (l3 + ARP_ETHERNET_IPV4.size > end), "truncated_arp")
    ether_ipv4 &= drops.alive
    addresses = ARP_ETHERNET_IPV4.read(buf, l3, ether_ipv4)
    return {"is": ether_ipv4, "src": addresses["sender_ip"], "dst": addresses["target_ip"]}
