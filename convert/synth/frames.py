"""Vectorised frame building: many packets of one shape at once.

Header layouts are the agent's (``agent.capture.headers``): one (field, struct
format, default) table per header, which the parser reads frames with.  ``pack``
turns n sets of field values (scalars or length-n arrays) into an (n, size)
uint8 array through a numpy structured dtype, so building a million headers is
a handful of array writes.  The TCP options and the payload layouts
(payloads.py) are declared the same way.

``tcp_frames``/``udp_frames``/``icmp_frames``/``arp_frames`` stack Ethernet, IPv4 and
the L4 header over a payload matrix and fill in the IPv4 and TCP/UDP/ICMP checksums,
all rows at once.  Frames captured on a host other than the sender carry the
Ethernet padding to 60 bytes (``pad=True``); the sender's own capture does not.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

from agent.capture.headers import (
    ARP,
    ETHERNET,
    ETHERTYPE_ARP,
    ETHERTYPE_IPV4,
    ICMP,
    IP_DF,
    IP_PROTO_ICMP,
    IP_PROTO_TCP,
    IP_PROTO_UDP,
    IPV4,
    TCP,
    UDP,
    Field,
    Header,
)

ETH_MIN_FRAME = 60  # minimum Ethernet frame without FCS: shorter frames are padded on the wire
BROADCAST_MAC = 0xFFFF_FFFF_FFFF

_NUMPY_FORMAT = {"B": "u1", "H": ">u2", "I": ">u4", "Q": ">u8"}
_MASK = {"B": 0xFF, "H": 0xFFFF, "I": 0xFFFF_FFFF, "Q": None}


@cache
def _dtype(header: Header) -> np.dtype:
    """The numpy structured dtype of a header: Ns fields as N uint8, integers big-endian."""
    parts = []
    for f in header.fields:
        if f.fmt.endswith("s"):
            parts.append((f.name, "u1", (int(f.fmt[:-1]),)))
        else:
            parts.append((f.name, _NUMPY_FORMAT[f.fmt]))
    return np.dtype(parts)


def pack(header: Header, n: int, **values: object) -> np.ndarray:
    """n headers as an (n, size) uint8 array; fields not given take their default.

    Ns fields take bytes, a (n, N) uint8 array or integers (6s: MAC addresses held as uint64).
    """
    unknown = set(values) - {f.name for f in header.fields}
    if unknown:
        raise TypeError(f"{header.name} has no field(s) {sorted(unknown)}")
    rec = np.zeros(n, dtype=_dtype(header))
    for f in header.fields:
        value = values.get(f.name, f.default)
        if f.fmt.endswith("s"):
            rec[f.name] = _bytes_field(value, int(f.fmt[:-1]), n)
        elif _MASK[f.fmt] is None:
            rec[f.name] = np.asarray(value, dtype=np.uint64)
        else:
            # Sequence numbers and counters arrive as int64 sums: wrap them like the wire does.
            rec[f.name] = np.asarray(value, dtype=np.int64) & _MASK[f.fmt]
    return rec.view(np.uint8).reshape(n, header.size)


def _bytes_field(value: object, width: int, n: int) -> np.ndarray:
    if isinstance(value, (bytes, bytearray)):
        raw = np.frombuffer(bytes(value).ljust(width, b"\0")[:width], dtype=np.uint8)
        return np.broadcast_to(raw, (n, width))
    arr = np.asarray(value)
    if arr.dtype == np.uint8 and arr.shape[-1:] == (width,):
        return arr
    # integers (MAC addresses): big-endian bytes of the low `width` bytes
    shifts = np.arange(8 * (width - 1), -8, -8, dtype=np.uint64)
    return ((arr.astype(np.uint64)[..., None] >> shifts) & np.uint64(0xFF)).astype(np.uint8)


# TCP options of a Linux SYN / SYN-ACK, in Linux's order (Mirai's SYN flood copies it).
TCP_SYN_OPTIONS = Header("tcp_syn_options", (
    Field("mss_kind", "B", 2),
    Field("mss_len", "B", 4),
    Field("mss", "H", 1460),
    Field("sackok_kind", "B", 4),
    Field("sackok_len", "B", 2),
    Field("ts_kind", "B", 8),
    Field("ts_len", "B", 10),
    Field("tsval", "I"),
    Field("tsecr", "I"),
    Field("nop", "B", 1),
    Field("ws_kind", "B", 3),
    Field("ws_len", "B", 3),
    Field("ws", "B", 7),
))

# Every later segment of a connection that negotiated timestamps.
TCP_TS_OPTIONS = Header("tcp_ts_options", (
    Field("nop1", "B", 1),
    Field("nop2", "B", 1),
    Field("ts_kind", "B", 8),
    Field("ts_len", "B", 10),
    Field("tsval", "I"),
    Field("tsecr", "I"),
))

# Small embedded stacks (lwIP and friends): MSS only, no timestamps.
TCP_MSS_OPTION = Header("tcp_mss_option", (
    Field("mss_kind", "B", 2),
    Field("mss_len", "B", 4),
    Field("mss", "H", 1460),
))


@dataclass
class Frames:
    """n frames of one kind: rows zero-filled past each frame's end, plus each frame's length."""

    rows: np.ndarray  # uint8 (n, width)
    length: np.ndarray  # int64 (n,): captured length = wire length

    def __len__(self) -> int:
        return len(self.length)

    @classmethod
    def empty(cls) -> Frames:
        return cls(np.zeros((0, ETH_MIN_FRAME), dtype=np.uint8), np.zeros(0, dtype=np.int64))

    def take(self, sel: np.ndarray) -> Frames:
        return Frames(self.rows[sel], self.length[sel])


# ---------------------------------------------------------------- payloads


def payload_matrix(items: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """Byte strings of different lengths as a zero-filled (n, longest) matrix and their lengths."""
    lengths = np.fromiter((len(p) for p in items), dtype=np.int64, count=len(items))
    width = int(lengths.max()) if len(items) else 0
    joined = np.frombuffer(b"".join(p.ljust(width, b"\0") for p in items), dtype=np.uint8)
    return joined.reshape(len(items), width), lengths


def random_payload(rng: np.random.Generator, lengths: np.ndarray | int, n: int | None = None) -> np.ndarray:
    """Random bytes, one row per packet, zero past each row's length (encrypted or compressed data)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    if lengths.ndim == 0:
        lengths = np.full(n if n is not None else 1, int(lengths), dtype=np.int64)
    width = int(lengths.max()) if len(lengths) else 0
    rows = np.frombuffer(rng.bytes(len(lengths) * width), dtype=np.uint8).reshape(len(lengths), width).copy()
    if len(lengths) and lengths.min() < width:
        rows[np.arange(width) >= lengths[:, None]] = 0
    return rows


# ---------------------------------------------------------------- checksums


def ones_complement_sum(rows: np.ndarray) -> np.ndarray:
    """16-bit one's complement sum of each row of a uint8 matrix (odd widths padded with a zero byte)."""
    if rows.shape[1] % 2:
        rows = np.concatenate([rows, np.zeros((rows.shape[0], 1), dtype=np.uint8)], axis=1)
    words = np.ascontiguousarray(rows).view(">u2")
    total = words.sum(axis=1, dtype=np.uint64)
    return _fold(total)


def _fold(total: np.ndarray) -> np.ndarray:
    total = total.astype(np.uint64)
    for _ in range(3):  # enough for any sum below 2**48
        total = (total & np.uint64(0xFFFF)) + (total >> np.uint64(16))
    return total


def _put16(rows: np.ndarray, col: int, value: np.ndarray) -> None:
    rows[:, col] = (value >> 8) & 0xFF
    rows[:, col + 1] = value & 0xFF


def _fill_ipv4_checksum(rows: np.ndarray, at: int = 0) -> None:
    """Write the header checksum of the IPv4 header at column ``at`` of every row (over its other fields)."""
    col = at + IPV4.offset("checksum")
    _put16(rows, col, np.zeros(len(rows), dtype=np.uint64))
    _put16(rows, col, ~ones_complement_sum(rows[:, at : at + IPV4.size]) & np.uint64(0xFFFF))


# ---------------------------------------------------------------- frame builders


def _ipv4_frames(
    *,
    proto: int,
    l4: np.ndarray,
    payload: np.ndarray | None,
    payload_len: np.ndarray | int | None,
    checksum_at: int | None,
    pseudo_header: bool,
    src_mac,
    dst_mac,
    src_ip,
    dst_ip,
    ttl=64,
    ip_id=0,
    df=False,
    tos=0,
    pad: bool = False,
) -> Frames:
    """Ethernet + IPv4 + an already packed L4 header + payload, with every checksum filled in."""
    n = l4.shape[0]
    if payload is None:
        payload = np.zeros((n, 0), dtype=np.uint8)
    if payload_len is None:
        payload_len = payload.shape[1]
    payload_len = np.broadcast_to(np.asarray(payload_len, dtype=np.int64), (n,))
    l4_len = l4.shape[1] + payload_len
    ip_len = IPV4.size + l4_len
    eth = pack(ETHERNET, n, dst=dst_mac, src=src_mac, type=ETHERTYPE_IPV4)
    flags_fragment = np.where(np.broadcast_to(np.asarray(df, dtype=bool), (n,)), IP_DF, 0)
    ip = pack(
        IPV4, n, tos=tos, total_len=ip_len, ident=ip_id, flags_fragment=flags_fragment, ttl=ttl, proto=proto,
        src=src_ip, dst=dst_ip,
    )
    _fill_ipv4_checksum(ip)
    rows = np.concatenate([eth, ip, l4, payload], axis=1)
    if checksum_at is not None:
        start = ETHERNET.size + IPV4.size
        total = ones_complement_sum(rows[:, start:])  # zeros past the datagram's end add nothing
        if pseudo_header:
            src = np.broadcast_to(np.asarray(src_ip, dtype=np.uint64), (n,))
            dst = np.broadcast_to(np.asarray(dst_ip, dtype=np.uint64), (n,))
            m = np.uint64(0xFFFF)
            total = total + (src >> np.uint64(16)) + (src & m) + (dst >> np.uint64(16)) + (dst & m)
            total = total + np.uint64(proto) + l4_len.astype(np.uint64)
        check = ~_fold(total) & np.uint64(0xFFFF)
        if proto == IP_PROTO_UDP:
            check[check == 0] = 0xFFFF  # UDP: a computed zero is sent as all ones
        _put16(rows, start + checksum_at, check)
    length = ETHERNET.size + ip_len
    return _padded(rows, length, pad)


def _padded(rows: np.ndarray, length: np.ndarray, pad: bool) -> Frames:
    length = np.asarray(length, dtype=np.int64)
    if pad:
        length = np.maximum(length, ETH_MIN_FRAME)
        if rows.shape[1] < ETH_MIN_FRAME:
            rows = np.concatenate([rows, np.zeros((rows.shape[0], ETH_MIN_FRAME - rows.shape[1]), np.uint8)], axis=1)
    return Frames(np.ascontiguousarray(rows), length.copy())


def tcp_frames(
    n: int,
    *,
    tcp: dict,
    options: np.ndarray | None = None,
    payload: np.ndarray | None = None,
    payload_len: np.ndarray | int | None = None,
    **ip: object,
) -> Frames:
    """n TCP segments: ``tcp`` holds TCP field values, ``ip`` the Ethernet/IPv4 ones (see _ipv4_frames)."""
    opt_len = 0 if options is None else options.shape[1]
    if opt_len % 4:
        raise ValueError(f"TCP options must fill whole 32-bit words, got {opt_len} bytes")
    header = pack(TCP, n, data_offset=((TCP.size + opt_len) // 4) << 4, **tcp)
    if options is not None:
        header = np.concatenate([header, np.broadcast_to(options, (n, opt_len))], axis=1)
    return _ipv4_frames(
        proto=IP_PROTO_TCP, l4=header, payload=payload, payload_len=payload_len, checksum_at=TCP.offset("checksum"),
        pseudo_header=True, **ip,
    )


def udp_frames(n: int, *, sport, dport, payload: np.ndarray | None = None, payload_len=None, **ip: object) -> Frames:
    if payload is None:
        payload = np.zeros((n, 0), dtype=np.uint8)
    plen = payload.shape[1] if payload_len is None else payload_len
    header = pack(UDP, n, sport=sport, dport=dport, len=UDP.size + np.asarray(plen, dtype=np.int64))
    return _ipv4_frames(
        proto=IP_PROTO_UDP, l4=header, payload=payload, payload_len=plen, checksum_at=UDP.offset("checksum"),
        pseudo_header=True, **ip,
    )


def icmp_frames(n: int, *, icmp: dict, payload: np.ndarray, payload_len=None, **ip: object) -> Frames:
    header = pack(ICMP, n, **icmp)
    return _ipv4_frames(
        proto=IP_PROTO_ICMP, l4=header, payload=payload, payload_len=payload_len, checksum_at=ICMP.offset("checksum"),
        pseudo_header=False, **ip,
    )


def arp_frames(n: int, *, src_mac, dst_mac, pad: bool = False, **arp: object) -> Frames:
    """ARP over Ethernet (42 bytes, 60 once padded by a sender's NIC)."""
    eth = pack(ETHERNET, n, dst=dst_mac, src=src_mac, type=ETHERTYPE_ARP)
    rows = np.concatenate([eth, pack(ARP, n, **arp)], axis=1)
    return _padded(rows, np.full(n, rows.shape[1]), pad)


def multicast_mac(group_ip: int) -> int:
    """The Ethernet address of an IPv4 multicast group (01:00:5e + low 23 bits)."""
    return 0x01005E000000 | (int(group_ip) & 0x7FFFFF)


IP_MF = 0x2000  # IPv4 flags_fragment: more fragments


def ipv4_fragments(frames: Frames, mtu: int = 1500) -> list[Frames]:
    """IPv4 datagrams of one length too large for ``mtu``, each split as a sender's kernel does: the pieces, in
    order, as one Frames per piece position (piece k of every datagram), each with its own total length, fragment
    offset, MF flag and header checksum."""
    lengths = np.unique(frames.length)
    if len(lengths) != 1:
        raise ValueError("ipv4_fragments splits datagrams of one length")
    ip_at, n = ETHERNET.size, len(frames)
    data_len = int(lengths[0]) - ip_at - IPV4.size  # the datagram's bytes after its IP header
    step = (mtu - IPV4.size) // 8 * 8
    pieces = []
    for offset in range(0, data_len, step):
        size = min(step, data_len - offset)
        rows = np.concatenate([frames.rows[:, : ip_at + IPV4.size],
                               frames.rows[:, ip_at + IPV4.size + offset : ip_at + IPV4.size + offset + size]],
                              axis=1)  # fmt: skip
        more = IP_MF if offset + size < data_len else 0
        _put16(rows, ip_at + IPV4.offset("total_len"), np.full(n, IPV4.size + size, dtype=np.uint64))
        _put16(rows, ip_at + IPV4.offset("flags_fragment"), np.full(n, more | offset // 8, dtype=np.uint64))
        _fill_ipv4_checksum(rows, ip_at)
        pieces.append(Frames(np.ascontiguousarray(rows), np.full(n, rows.shape[1], dtype=np.int64)))
    return pieces
