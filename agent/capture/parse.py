"""Decode a FrameBatch of captured frames into PacketBatch columns, vectorised over the batch.

Each header is declared once, in agent/capture/headers.py, as a table of
fields (name, format, default) shared with the synthesiser.  ``_read`` gathers
the whole header of every frame that has one with a single numpy fancy-index
(frame offset + header position + 0..size-1) and slices the fields out of that
block at the table's offsets; frames without the header read 0 (when agent/native is
built, its compiled reader does the same in one pass, given the table's offsets and widths).
There is no per-packet Python loop: the only loops are over VLAN tags (2 rounds) and IPv6 extension headers (a few
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
from functools import cache

import numpy as np

from agent import native
from agent.capture.headers import (
    ARP,
    ETHERNET,
    ETHERTYPE_ARP,
    ETHERTYPE_IPV4,
    ETHERTYPE_IPV6,
    GRE,
    ICMP,
    IP_PROTO_GRE,
    IP_PROTO_ICMP,
    IP_PROTO_ICMPV6,
    IP_PROTO_TCP,
    IP_PROTO_UDP,
    IPV4,
    IPV6,
    IPV6_EXTENSION,
    LOOP,
    NULL,
    SLL,
    SLL2,
    TCP,
    UDP,
    UDP_PAYLOAD_HEAD,
    VLAN_TAG,
    Header,
)
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

# --- Reading headers ---------------------------------------------------------------------------
# The layouts are in agent/capture/headers.py, shared with the synthesiser.


def _read(header: Header, buf: np.ndarray, start: np.ndarray, present: np.ndarray) -> dict[str, np.ndarray]:
    """Every field of ``header`` for all frames: read at ``buf[start]`` where ``present``, 0 elsewhere.

    The caller guarantees ``start + header.size`` bytes are captured wherever ``present`` is set.
    Integer fields come back as int64, 8-byte fields and MACs as uint64.  The compiled reader
    (agent/native/capture.c) runs when it is built; the numpy gather below is its fallback and the
    tests hold the two to the same columns.
    """
    out = _read_native(header, buf, start, present)
    if out is not None:
        return out
    rows = np.flatnonzero(present)
    block = buf[start[rows, None] + np.arange(header.size)]  # (rows, size) uint8: one gather
    out = {}
    for name, offset, width in header.spans:
        column = np.zeros(len(start), dtype=np.uint64 if width > 4 else np.int64)
        column[rows] = _big_endian(block[:, offset : offset + width])
        out[name] = column
    return out


# iotguard_read_header_fields (agent/native/capture.c): buf, buf_len, n, start, present, nfields, offsets, widths,
# size, out (nfields, n), status.
_READ_SIGNATURE = [native.u8, native.n, native.n, native.i64, native.u8, native.n, native.i64, native.i64,
                   native.n, native.i64, native.i64]


@cache
def _span_arrays(header: Header) -> tuple[np.ndarray, np.ndarray]:
    """The offsets and widths of ``header``'s fields, as the compiled reader takes them."""
    return (np.array([offset for _, offset, _ in header.spans], dtype=np.int64),
            np.array([width for _, _, width in header.spans], dtype=np.int64))


def _read_native(header: Header, buf: np.ndarray, start: np.ndarray, present: np.ndarray) -> dict | None:
    """``_read`` through the compiled reader, or None (not built, arrays it does not take, a frame out of bounds:
    the numpy gather then runs and behaves as it always has)."""
    kernel = native.function("iotguard_read_header_fields", _READ_SIGNATURE)
    if kernel is None:
        return None
    n = len(start)
    plain = (buf.dtype == np.uint8 and buf.ndim == 1 and buf.flags.c_contiguous and start.dtype == np.int64
             and start.ndim == 1 and start.flags.c_contiguous and present.dtype == bool and present.shape == (n,))
    if not plain:
        return None
    offsets, widths = _span_arrays(header)
    if not present.any():  # nothing to read: every field 0
        out = np.zeros((len(offsets), n), dtype=np.int64)
        return _columns(header, out)
    out = np.empty((len(offsets), n), dtype=np.int64)
    status = np.ones(1, dtype=np.int64)
    kernel(buf, len(buf), n, start, np.ascontiguousarray(present).view(np.uint8), len(offsets), offsets, widths,
           header.size, out, status)
    if status[0] != 0:
        return None
    return _columns(header, out)


def _columns(header: Header, out: np.ndarray) -> dict[str, np.ndarray]:
    """The rows of the reader's (fields, n) output by field name: uint64 for 8-byte fields and MACs, else int64."""
    return {name: out[k].view(np.uint64) if width > 4 else out[k] for k, (name, _, width) in enumerate(header.spans)}


def _big_endian(columns: np.ndarray) -> np.ndarray:
    """Big-endian unsigned value of each row of a (n, width) uint8 array."""
    n, width = columns.shape
    if width not in (1, 2, 4, 8):  # a MAC: left-pad to 8 bytes
        padded = np.zeros((n, 8), dtype=np.uint8)
        padded[:, 8 - width :] = columns
        columns, width = padded, 8
    return np.ascontiguousarray(columns).view(f">u{width}")[:, 0]


# Where only the start of a header is needed (and so must be captured).
RAW_IP = IPV4.prefix("version_ihl")  # raw IP: the first byte's high nibble is the version, IPv4's or IPv6's
ARP_FIXED = ARP.prefix("plen")  # the hardware and protocol types and lengths: which ARP this is
ICMP_TYPE = ICMP.prefix("code")  # echo requests vs replies and errors

VLAN_TPIDS = (0x8100, 0x88A8, 0x9100)  # 802.1Q, 802.1ad, the older QinQ value
MAX_VLAN_TAGS = 2
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
ETHERNET_HEADER_LEN = ETHERNET.size
ETHERNET_MIN_FRAME = 60  # without the frame check sequence, as captures record it
BROADCAST_MAC = 0xFFFF_FFFF_FFFF
ARPHRD_ETHER, ARPHRD_LOOPBACK = 1, 772
COOKED_ARPHRDS = (ARPHRD_ETHER, ARPHRD_LOOPBACK)  # others (tunnels, PPP, CAN, Wi-Fi monitor, ...): skipped
SLL_BROADCAST = 1  # packet type: broadcast by somebody else
SLL_RECEIVED = (0, 1, 2, 3)  # to us, broadcast, multicast, to another host (4: sent by us)
MIN_ETHERTYPE = 0x0600  # smaller SLL protocols are Linux pseudo-protocols (802.3, 802.2 LLC, CAN, ...)
FAMILY_ETHERTYPE = {2: ETHERTYPE_IPV4, 24: ETHERTYPE_IPV6, 28: ETHERTYPE_IPV6, 30: ETHERTYPE_IPV6}  # AF_INET,
# AF_INET6 on NetBSD/OpenBSD, FreeBSD, macOS


def _one_of(values: np.ndarray, choices: tuple[int, ...]) -> np.ndarray:
    """``np.isin(values, choices)`` for a few integer choices, without isin's set machinery (called per batch)."""
    out = values == choices[0]
    for choice in choices[1:]:
        out |= values == choice
    return out


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
    buf = frames.buf
    start = frames.offset.astype(np.int64)
    end = start + frames.cap_len.astype(np.int64)  # one past the last captured byte
    drops = _Drops(len(frames), stats)
    drops.drop((start < 0) | (end < start) | (end > len(buf)), "bad_frame_bounds")

    # The link layer, as Ethernet would have said it; then up to two VLAN tags.
    link = _decode_links(frames, buf, start, end, drops)
    ethertype, l3, vlan = _decode_vlan_tags(buf, link["ethertype"], link["l3"], end, drops)

    ip4 = _decode_ipv4(buf, l3, end, drops.alive & (ethertype == ETHERTYPE_IPV4), drops)
    ip6 = _decode_ipv6(buf, l3, end, drops.alive & (ethertype == ETHERTYPE_IPV6), drops)
    arp = _decode_arp(buf, l3, end, drops.alive & (ethertype == ETHERTYPE_ARP), drops)
    for layer in (ip4, ip6, arp):
        layer["is"] = layer["is"] & drops.alive
    ip = _either_ip_version(ip4, ip6)
    l4 = _decode_l4(buf, ip, end, drops)

    keep = np.flatnonzero(drops.alive)
    stats.decoded += len(keep)
    return _packet_batch(frames, keep, link, vlan, ip4, ip6, arp, ip, l4)


def _decode_vlan_tags(
    buf: np.ndarray, ethertype: np.ndarray, l3: np.ndarray, end: np.ndarray, drops: _Drops
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Step over up to two VLAN tags: the inner EtherType, where L3 starts, and the outermost tag's id (-1: none)."""
    vlan = np.full(len(l3), -1, dtype=np.int64)
    for _ in range(MAX_VLAN_TAGS):
        tagged = drops.alive & _one_of(ethertype, VLAN_TPIDS)
        if not tagged.any():
            break
        drops.drop(tagged & (l3 + VLAN_TAG.size > end), "truncated_ethernet")
        tagged &= drops.alive
        tag = _read(VLAN_TAG, buf, l3, tagged)
        vlan = np.where(tagged & (vlan < 0), tag["tci"] & 0x0FFF, vlan)
        ethertype = np.where(tagged, tag["type"], ethertype)
        l3 = l3 + VLAN_TAG.size * tagged
    return ethertype, l3, vlan


def _either_ip_version(ip4: dict, ip6: dict) -> dict:
    """The columns both IP versions have, each frame's from the version it carries (the other holds 0)."""
    is4, is6 = ip4["is"], ip6["is"]
    shared = ("proto", "l4", "end", "frag", "ttl", "ip_len")  # "end": where the IP packet ends by its length field
    return {"is4": is4, "is6": is6, "is": is4 | is6} | {name: np.where(is4, ip4[name], ip6[name]) for name in shared}


def _decode_l4(buf: np.ndarray, ip: dict, end: np.ndarray, drops: _Drops) -> dict:
    """TCP, UDP, ICMP and GRE headers of IP packets that start one (not non-first fragments); payload lengths."""
    l4, proto = ip["l4"], ip["proto"]
    l4_room = np.minimum(ip["end"], end) - l4  # L4 bytes both declared and captured
    has_l4 = ip["is"] & ~ip["frag"]
    is_tcp = has_l4 & (proto == IP_PROTO_TCP)
    is_udp = has_l4 & (proto == IP_PROTO_UDP)
    drops.drop((is_tcp & (l4_room < TCP.size)) | (is_udp & (l4_room < UDP.size)), "truncated_l4")
    is_tcp &= drops.alive
    is_udp &= drops.alive
    tcp = _read(TCP, buf, l4, is_tcp)
    udp = _read(UDP, buf, l4, is_udp)
    head_ok = is_udp & (l4_room >= UDP.size + UDP_PAYLOAD_HEAD.size)
    head = _read(UDP_PAYLOAD_HEAD, buf, l4 + UDP.size, head_ok)
    # A truncated ICMP header is no reason to skip the packet: its type is then unknown (-1).
    is_icmp = has_l4 & drops.alive & _one_of(proto, (IP_PROTO_ICMP, IP_PROTO_ICMPV6)) & (l4_room >= ICMP_TYPE.size)
    icmp = _read(ICMP_TYPE, buf, l4, is_icmp)
    is_gre = has_l4 & drops.alive & (proto == IP_PROTO_GRE) & (l4_room >= GRE.size)
    gre = _read(GRE, buf, l4, is_gre)
    tcp_hdr_len = (tcp["data_offset"] >> 4) * 4
    l4_header = np.where(is_tcp, tcp_hdr_len, np.where(is_udp, UDP.size, 0))
    return {
        "has_l4": has_l4,
        "has_ports": is_tcp | is_udp,
        "sport": np.select([is_tcp, is_udp], [tcp["sport"], udp["sport"]], -1),
        "dport": np.select([is_tcp, is_udp], [tcp["dport"], udp["dport"]], -1),
        "tcp": tcp,
        "tcp_hdr_len": tcp_hdr_len,
        "payload_len": np.where(ip["is"], np.maximum(ip["end"] - l4 - l4_header, 0), 0),
        "icmp_type": np.where(is_icmp, icmp["type"], -1),
        "gre_proto": np.where(is_gre & (gre["flags_version"] & 7 == 0), gre["proto"], -1),
        "udp_head_hi": head["head_hi"],
        "udp_head_lo": head["head_lo"],
        "udp_head_ok": head_ok,
    }


def _packet_batch(
    frames: FrameBatch, keep: np.ndarray, link: dict, vlan: np.ndarray, ip4: dict, ip6: dict, arp: dict, ip: dict,
    l4: dict,
) -> PacketBatch:
    """The decoded columns of the frames kept."""
    is4, is6, is_ip, is_arp = ip["is4"], ip["is6"], ip["is"], arp["is"]
    proto = ip["proto"]
    l3_kind = np.select([is4, is6, is_arp], [L3_IPV4, L3_IPV6, L3_ARP], L3_OTHER)
    port_kind = np.select(
        [l4["has_ports"], is_arp, l4["has_l4"] & is4 & (proto == IP_PROTO_ICMP)],
        [PORT_NUMBER, PORT_ARP, PORT_ICMP],
        PORT_NONE,
    )
    ipv4_like = is4 | is_arp  # addresses stored IPv4-mapped
    src_v4 = np.where(is4, ip4["src"], arp["src"]).astype(np.uint64)
    dst_v4 = np.where(is4, ip4["dst"], arp["dst"]).astype(np.uint64)
    # Frames with neither IP nor ARP are keyed by their MACs (DESIGN 4).
    src_lo = np.select([ipv4_like, is6], [IPV4_MAPPED_LO_PREFIX | src_v4, ip6["src_lo"]], link["src_mac"])
    dst_lo = np.select([ipv4_like, is6], [IPV4_MAPPED_LO_PREFIX | dst_v4, ip6["dst_lo"]], link["dst_mac"])
    tcp = l4["tcp"]

    everything = len(keep) == len(frames)  # nothing dropped: the columns need no gather, only a copy

    def column(values: np.ndarray, dtype: type) -> np.ndarray:
        values = np.asarray(values)
        return values.astype(dtype) if everything else values[keep].astype(dtype)

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
        sport=column(l4["sport"], np.int32),
        dport=column(l4["dport"], np.int32),
        ttl=column(ip["ttl"], np.uint8),
        ip_id=column(ip4["ident"], np.uint16),
        df=column(is4 & ip4["df"], bool),
        frag=column(is_ip & ip["frag"], bool),
        ip_len=column(ip["ip_len"], np.int32),
        tcp_flags=column(tcp["flags"], np.uint8),
        tcp_seq=column(tcp["seq"], np.uint32),
        tcp_ack=column(tcp["ack"], np.uint32),
        tcp_win=column(tcp["window"], np.uint16),
        tcp_hdr_len=column(l4["tcp_hdr_len"], np.uint8),
        payload_len=column(l4["payload_len"], np.int32),
        icmp_type=column(l4["icmp_type"], np.int16),
        gre_proto=column(l4["gre_proto"], np.int32),
        udp_head_hi=column(l4["udp_head_hi"], np.uint64),
        udp_head_lo=column(l4["udp_head_lo"], np.uint64),
        udp_head_ok=column(l4["udp_head_ok"], bool),
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
        head = _read(layer.header, buf, start, rows)
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
    ip = _read(IPV4, buf, l3, is4)
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
    ip = _read(IPV6, buf, l3, is6)
    drops.drop(is6 & ((ip["version_class_flow"] >> 28) != 6), "bad_ip_version")
    is6 = is6 & drops.alive
    payload = ip["payload_len"]
    # Payload length 0 with data behind it is a jumbogram: the captured bytes are all we know.
    ip_end = np.where(payload > 0, l3 + IPV6.size + payload, end)
    next_header = ip["next_header"]
    pos = l3 + IPV6.size
    frag = np.zeros(len(l3), dtype=bool)
    for _ in range(MAX_IPV6_EXTENSIONS):
        chain = is6 & drops.alive & ~frag & _one_of(next_header, IPV6_EXTENSIONS)
        if not chain.any():
            break
        drops.drop(chain & (pos + IPV6_EXTENSION.size > np.minimum(end, ip_end)), "truncated_ip")
        chain &= drops.alive
        ext = _read(IPV6_EXTENSION, buf, pos, chain)
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
    drops.drop(is_arp & (l3 + ARP_FIXED.size > end), "truncated_arp")
    is_arp = is_arp & drops.alive
    kind = _read(ARP_FIXED, buf, l3, is_arp)
    # Only ARP for IPv4 over Ethernet carries the addresses we key on; other ARP stays L3_OTHER.
    ether_ipv4 = is_arp & (kind["htype"] == 1) & (kind["ptype"] == ETHERTYPE_IPV4)
    ether_ipv4 &= (kind["hlen"] == 6) & (kind["plen"] == 4)
    drops.drop(ether_ipv4 & (l3 + ARP.size > end), "truncated_arp")
    ether_ipv4 &= drops.alive
    arp = _read(ARP, buf, l3, ether_ipv4)
    return {"is": ether_ipv4, "src": arp["sender_ip"], "dst": arp["target_ip"]}
