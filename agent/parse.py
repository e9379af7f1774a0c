"""Decode a FrameBatch of Ethernet frames into PacketBatch columns, vectorised over the batch.

Each header is declared once below as a table of fields (name, byte offset,
format, default).  ``Header.read`` gathers the whole header of every frame
that has one with a single numpy fancy-index (frame offset + header position
+ 0..size-1) and slices the fields out of that block; frames without the
header get the field's default.  There is no per-packet Python loop: the only
loops are over VLAN tags (2 rounds) and IPv6 extension headers (a few
rounds), each vectorised over the batch.

Decoded: Ethernet II with up to two 802.1Q/802.1ad tags; IPv4 (any header
length 20..60); IPv6 with hop-by-hop, routing, fragment, destination-options
and AH extension headers; ARP for IPv4 over Ethernet; TCP, UDP, ICMP.  Any
other Ethernet frame (LLDP, EAPOL, 802.3/LLC, ...) is kept as ``L3_OTHER``
with its MACs as addresses (DESIGN 4).

A frame whose headers are cut short or inconsistent is dropped and counted in
``DecodeStats`` under one reason: truncated_ethernet, truncated_ip,
bad_ip_version, bad_ip_header_length, truncated_arp, truncated_l4 (the
captured bytes, or the IP length, do not hold the fixed TCP/UDP header the IP
header announces), unsupported_linktype:N, bad_frame_bounds (a FrameBatch
whose offsets point outside its buffer).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .packets import (
    IPV4_MAPPED_LO_PREFIX,
    L3_ARP,
    L3_IPV4,
    L3_IPV6,
    L3_OTHER,
    LINKTYPE_ETHERNET,
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

ETHERTYPE_IPV4, ETHERTYPE_ARP, ETHERTYPE_IPV6 = 0x0800, 0x0806, 0x86DD
VLAN_TPIDS = (0x8100, 0x88A8, 0x9100)  # 802.1Q, 802.1ad, the older QinQ value
MAX_VLAN_TAGS = 2
IP_PROTO_ICMP, IP_PROTO_TCP, IP_PROTO_UDP = 1, 6, 17
EXT_HOP_BY_HOP, EXT_ROUTING, EXT_FRAGMENT, EXT_AH, EXT_DEST_OPTS = 0, 43, 44, 51, 60
IPV6_EXTENSIONS = (EXT_HOP_BY_HOP, EXT_ROUTING, EXT_FRAGMENT, EXT_AH, EXT_DEST_OPTS)
MAX_IPV6_EXTENSIONS = 8  # a longer chain is decoded at L3 only (proto = the last header type)


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


def parse_frames(frames: FrameBatch, stats: DecodeStats | None = None) -> PacketBatch:
    """Decode every frame of the batch; frames that cannot be decoded are counted in ``stats`` and left out."""
    stats = stats if stats is not None else DecodeStats()
    n = len(frames)
    buf = frames.buf
    start = frames.offset.astype(np.int64)
    end = start + frames.cap_len.astype(np.int64)  # one past the last captured byte
    drops = _Drops(n, stats)
    drops.drop((start < 0) | (end < start) | (end > len(buf)), "bad_frame_bounds")
    linktype = frames.linktype.astype(np.int64)
    for value in np.unique(linktype[linktype != LINKTYPE_ETHERNET]).tolist():
        drops.drop(linktype == value, f"unsupported_linktype:{value}")

    # Ethernet, then up to two VLAN tags.
    drops.drop(end - start < ETHERNET.size, "truncated_ethernet")
    eth = ETHERNET.read(buf, start, drops.alive)
    ethertype = eth["type"]
    l3 = start + ETHERNET.size
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
    src_lo = np.select([ipv4_like, is6], [IPV4_MAPPED_LO_PREFIX | src_v4, ip6["src_lo"]], eth["src"])
    dst_lo = np.select([ipv4_like, is6], [IPV4_MAPPED_LO_PREFIX | dst_v4, ip6["dst_lo"]], eth["dst"])

    keep = np.flatnonzero(drops.alive)
    stats.decoded += len(keep)

    def column(values: np.ndarray, dtype: type) -> np.ndarray:
        return np.asarray(values)[keep].astype(dtype)

    return PacketBatch(
        index=column(frames.index, np.int64),
        ts=column(frames.ts, np.float64),
        wire_len=column(frames.wire_len, np.int64),
        src_mac=column(eth["src"], np.uint64),
        dst_mac=column(eth["dst"], np.uint64),
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
    )


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
