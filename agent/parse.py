"""Vectorised decoding of Ethernet frames into PacketBatch columns.

Each header is declared once as a table of (field, byte offset, width); one
numpy gather per field reads it for every frame of the batch at that frame's
header offset.  Frames that cannot be decoded (truncated or inconsistent
headers) are dropped and counted per reason in ``DecodeStats``.

Decoded: Ethernet II with up to two 802.1Q/802.1ad tags, IPv4 (any header
length), IPv6 (hop-by-hop, routing, fragment, destination-options and AH
extension headers), ARP, TCP, UDP, ICMP.  Anything else on Ethernet is kept
as an ``L3_OTHER`` frame whose addresses are its MACs (DESIGN 4).
"""

from __future__ import annotations

import numpy as np

from .packets import (
    IPV4_MAPPED_LO_PREFIX,
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

# Header layouts: field -> (offset from the header start, width in bytes).
ETHERNET = {"dst": (0, 6), "src": (6, 6), "type": (12, 2)}
VLAN_TAG = {"tci": (0, 2), "type": (2, 2)}  # after the 0x8100 or 0x88a8 tag type
IPV4 = {
    "ver_ihl": (0, 1),
    "total_len": (2, 2),
    "ident": (4, 2),
    "flags_frag": (6, 2),
    "ttl": (8, 1),
    "proto": (9, 1),
    "src": (12, 4),
    "dst": (16, 4),
}
IPV6 = {"ver": (0, 1), "payload_len": (4, 2), "next": (6, 1), "hop_limit": (7, 1), "src_hi": (8, 8), "src_lo": (16, 8), "dst_hi": (24, 8), "dst_lo": (32, 8)}
ARP = {"htype": (0, 2), "ptype": (2, 2), "hlen": (4, 1), "plen": (5, 1), "spa": (14, 4), "tpa": (24, 4)}
TCP = {"sport": (0, 2), "dport": (2, 2), "seq": (4, 4), "ack": (8, 4), "off": (12, 1), "flags": (13, 1), "win": (14, 2)}
UDP = {"sport": (0, 2), "dport": (2, 2)}
MIN_LEN = {"ethernet": 14, "ipv4": 20, "ipv6": 40, "arp": 28, "tcp": 20, "udp": 8}

ETH_IPV4, ETH_IPV6, ETH_ARP, ETH_VLAN, ETH_QINQ = 0x0800, 0x86DD, 0x0806, 0x8100, 0x88A8
IPV6_EXTENSIONS = (0, 43, 44, 51, 60)  # hop-by-hop, routing, fragment, AH, destination options
MAX_EXTENSIONS = 8
PAD = 64  # zero bytes after the buffer, so gathers past a short frame stay in bounds


class _Reader:
    """Big-endian field gathers from every frame at per-frame positions."""

    def __init__(self, frames: FrameBatch) -> None:
        self.buf = np.concatenate([frames.buf, np.zeros(PAD, dtype=np.uint8)])
        self.limit = len(frames.buf) + PAD - 8

    def field(self, pos: np.ndarray, spec: tuple[int, int]) -> np.ndarray:
        offset, width = spec
        at = np.minimum(pos + offset, self.limit)  # positions of invalid frames are masked later
        value = self.buf[at].astype(np.uint64)
        for k in range(1, width):
            value = (value << np.uint64(8)) | self.buf[at + k]
        return value


def parse_frames(frames: FrameBatch, stats: DecodeStats | None = None) -> PacketBatch:
    stats = stats if stats is not None else DecodeStats()
    n = len(frames)
    rd = _Reader(frames)
    start = frames.offset.astype(np.int64)
    end = start + frames.cap_len.astype(np.int64)  # one past each frame's last captured byte
    ok = frames.linktype == 1
    stats.add("unsupported_linktype", int((~ok).sum()))
    bad = np.zeros(n, dtype=bool)

    def reject(mask: np.ndarray, reason: str) -> None:
        mask = mask & ok & ~bad
        stats.add(reason, int(mask.sum()))
        bad[mask] = True

    # --- Ethernet and VLAN tags -----------------------------------------------
    reject(end - start < MIN_LEN["ethernet"], "truncated_ethernet")
    dst_mac = rd.field(start, ETHERNET["dst"])
    src_mac = rd.field(start, ETHERNET["src"])
    etype = rd.field(start, ETHERNET["type"]).astype(np.int64)
    l3 = start + 14
    vlan = np.full(n, -1, dtype=np.int32)
    for _ in range(2):
        tagged = (etype == ETH_VLAN) | (etype == ETH_QINQ)
        if not tagged.any():
            break
        reject(tagged & (l3 + 4 > end), "truncated_ethernet")
        tci = rd.field(l3, VLAN_TAG["tci"]).astype(np.int32) & 0x0FFF
        vlan = np.where(tagged & (vlan < 0), tci, vlan)
        etype = np.where(tagged, rd.field(l3, VLAN_TAG["type"]).astype(np.int64), etype)
        l3 = np.where(tagged, l3 + 4, l3)

    is4, is6, isarp = etype == ETH_IPV4, etype == ETH_IPV6, etype == ETH_ARP
    kind = np.full(n, L3_OTHER, dtype=np.uint8)
    kind[is4], kind[is6], kind[isarp] = L3_IPV4, L3_IPV6, L3_ARP
    zeros64 = np.zeros(n, dtype=np.uint64)
    src_hi, src_lo, dst_hi, dst_lo = zeros64.copy(), src_mac.copy(), zeros64.copy(), dst_mac.copy()
    proto = np.zeros(n, dtype=np.uint8)
    ttl = np.zeros(n, dtype=np.uint8)
    ip_id = np.zeros(n, dtype=np.uint16)
    df = np.zeros(n, dtype=bool)
    frag = np.zeros(n, dtype=bool)
    ip_len = np.zeros(n, dtype=np.int32)
    l4 = np.zeros(n, dtype=np.int64)
    l4_end = end.copy()  # where the L4 payload ends by the IP length fields

    # --- IPv4 -----------------------------------------------------------------
    reject(is4 & (l3 + MIN_LEN["ipv4"] > end), "truncated_ip")
    ver_ihl = rd.field(l3, IPV4["ver_ihl"]).astype(np.int64)
    reject(is4 & (ver_ihl >> 4 != 4), "bad_ip_version")
    ihl = (ver_ihl & 0x0F) * 4
    total = rd.field(l3, IPV4["total_len"]).astype(np.int64)
    reject(is4 & ((ihl < 20) | (l3 + ihl > end) | (total < ihl)), "bad_ip_header_length")
    flags_frag = rd.field(l3, IPV4["flags_frag"]).astype(np.int64)
    v4 = is4 & ~bad
    src_lo = np.where(v4, IPV4_MAPPED_LO_PREFIX | rd.field(l3, IPV4["src"]), src_lo)
    dst_lo = np.where(v4, IPV4_MAPPED_LO_PREFIX | rd.field(l3, IPV4["dst"]), dst_lo)
    proto = np.where(v4, rd.field(l3, IPV4["proto"]), proto).astype(np.uint8)
    ttl = np.where(v4, rd.field(l3, IPV4["ttl"]), ttl).astype(np.uint8)
    ip_id = np.where(v4, rd.field(l3, IPV4["ident"]), ip_id).astype(np.uint16)
    df = np.where(v4, (flags_frag & 0x4000) != 0, df)
    frag = np.where(v4, (flags_frag & 0x1FFF) != 0, frag)
    ip_len = np.where(v4, total, ip_len).astype(np.int32)
    l4 = np.where(v4, l3 + ihl, l4)
    l4_end = np.where(v4, np.minimum(end, l3 + total), l4_end)

    # --- IPv6 and its extension headers ---------------------------------------
    reject(is6 & (l3 + MIN_LEN["ipv6"] > end), "truncated_ip")
    reject(is6 & (rd.field(l3, IPV6["ver"]).astype(np.int64) >> 4 != 6), "bad_ip_version")
    v6 = is6 & ~bad
    if v6.any():
        src_hi = np.where(v6, rd.field(l3, IPV6["src_hi"]), src_hi)
        src_lo = np.where(v6, rd.field(l3, IPV6["src_lo"]), src_lo)
        dst_hi = np.where(v6, rd.field(l3, IPV6["dst_hi"]), dst_hi)
        dst_lo = np.where(v6, rd.field(l3, IPV6["dst_lo"]), dst_lo)
        ttl = np.where(v6, rd.field(l3, IPV6["hop_limit"]), ttl).astype(np.uint8)
        payload = rd.field(l3, IPV6["payload_len"]).astype(np.int64)
        ip_len = np.where(v6, 40 + payload, ip_len).astype(np.int32)
        l4_end = np.where(v6, np.minimum(end, l3 + 40 + payload), l4_end)
        nxt = rd.field(l3, IPV6["next"]).astype(np.int64)
        pos = l3 + 40
        for _ in range(MAX_EXTENSIONS):
            ext = v6 & ~bad & ~frag & np.isin(nxt, IPV6_EXTENSIONS)
            if not ext.any():
                break
            reject(ext & (pos + 8 > end), "truncated_ip")
            ext &= ~bad
            hdr_len = rd.field(pos, (1, 1)).astype(np.int64)
            size = np.where(nxt == 44, 8, np.where(nxt == 51, (hdr_len + 2) * 4, (hdr_len + 1) * 8))
            frag_off = rd.field(pos, (2, 2)).astype(np.int64) >> 3
            frag = np.where(ext & (nxt == 44) & (frag_off != 0), True, frag)
            new_nxt = rd.field(pos, (0, 1)).astype(np.int64)
            nxt = np.where(ext, new_nxt, nxt)
            pos = np.where(ext, pos + size, pos)
        reject(v6 & np.isin(nxt, IPV6_EXTENSIONS) & ~frag, "ipv6_extension_chain_too_long")
        proto = np.where(v6, nxt, proto).astype(np.uint8)
        l4 = np.where(v6, pos, l4)

    # --- ARP --------------------------------------------------------------------
    reject(isarp & (l3 + MIN_LEN["arp"] > end), "truncated_arp")
    arp_ip = isarp & ~bad & (rd.field(l3, ARP["ptype"]) == ETH_IPV4) & (rd.field(l3, ARP["plen"]) == 4) & (rd.field(l3, ARP["hlen"]) == 6)
    src_lo = np.where(arp_ip, IPV4_MAPPED_LO_PREFIX | rd.field(l3, ARP["spa"]), src_lo)
    dst_lo = np.where(arp_ip, IPV4_MAPPED_LO_PREFIX | rd.field(l3, ARP["tpa"]), dst_lo)
    kind = np.where(isarp & ~arp_ip, L3_OTHER, kind).astype(np.uint8)  # ARP for other protocols: MACs only

    # --- TCP, UDP, ICMP ---------------------------------------------------------
    is_ip = (kind == L3_IPV4) | (kind == L3_IPV6)
    has_l4 = is_ip & ~frag & ~bad
    is_tcp = has_l4 & (proto == 6)
    is_udp = has_l4 & (proto == 17)
    reject(is_tcp & (l4 + MIN_LEN["tcp"] > end), "truncated_l4")
    reject(is_udp & (l4 + MIN_LEN["udp"] > end), "truncated_l4")
    tcp_off = (rd.field(l4, TCP["off"]).astype(np.int64) >> 4) * 4
    reject(is_tcp & ((tcp_off < 20) | (l4 + tcp_off > end)), "bad_tcp_header_length")
    is_tcp &= ~bad
    is_udp &= ~bad
    ported = is_tcp | is_udp
    port_kind = np.full(n, PORT_NONE, dtype=np.uint8)
    port_kind[ported] = PORT_NUMBER
    port_kind[has_l4 & ~bad & (kind == L3_IPV4) & (proto == 1)] = PORT_ICMP
    port_kind[kind == L3_ARP] = PORT_ARP
    sport = np.where(ported, rd.field(l4, TCP["sport"]).astype(np.int64), -1).astype(np.int32)
    dport = np.where(ported, rd.field(l4, TCP["dport"]).astype(np.int64), -1).astype(np.int32)
    l4_hdr = np.where(is_tcp, tcp_off, np.where(is_udp, 8, 0))
    payload_len = np.where(ported, np.maximum(l4_end - l4 - l4_hdr, 0), 0).astype(np.int32)

    keep = ok & ~bad
    stats.decoded += int(keep.sum())
    take = np.flatnonzero(keep)

    def col(a, dtype=None):
        a = a[take]
        return a.astype(dtype) if dtype is not None else a

    return PacketBatch(
        index=col(frames.index, np.int64),
        ts=col(frames.ts, np.float64),
        wire_len=col(frames.wire_len, np.int64),
        src_mac=col(src_mac),
        dst_mac=col(dst_mac),
        vlan=col(vlan),
        l3=col(kind),
        src_ip_hi=col(src_hi, np.uint64),
        src_ip_lo=col(src_lo, np.uint64),
        dst_ip_hi=col(dst_hi, np.uint64),
        dst_ip_lo=col(dst_lo, np.uint64),
        proto=col(proto),
        port_kind=col(port_kind),
        sport=col(sport),
        dport=col(dport),
        ttl=col(ttl),
        ip_id=col(ip_id),
        df=col(df),
        frag=col(frag),
        ip_len=col(ip_len),
        tcp_flags=col(np.where(is_tcp, rd.field(l4, TCP["flags"]), 0), np.uint8),
        tcp_seq=col(np.where(is_tcp, rd.field(l4, TCP["seq"]), 0), np.uint32),
        tcp_ack=col(np.where(is_tcp, rd.field(l4, TCP["ack"]), 0), np.uint32),
        tcp_win=col(np.where(is_tcp, rd.field(l4, TCP["win"]), 0), np.uint16),
        tcp_hdr_len=col(np.where(is_tcp, tcp_off, 0), np.uint8),
        payload_len=col(payload_len),
    )
