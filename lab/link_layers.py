"""Link types for tests, written from the pcap link-type definitions (tcpdump.org/linktypes), not from parse.py.

* ``from_ethernet``: the record a capture of another link type holds for an Ethernet frame (strip the
  Ethernet header, prepend the cooked/null header, adjust the lengths); ``None`` when that link type
  cannot carry the frame (raw IP and null/loopback carry only IP).
* ``as_ethernet``: the scalar statement of the rule in agent/capture/parse.py: which Ethernet frame (and wire
  length) the parser must treat a record of any link type as, or the reason it must skip it.
* ``write_pcap_records`` / ``pcapng_bytes``: capture files of any link type, built with struct.

Byte layouts (all fields big-endian):
  SLL  (113, 16 bytes): packet type (2), ARPHRD (2), address length (2), address (8), protocol (2)
  SLL2 (276, 20 bytes): protocol (2), reserved (2), interface index (4), ARPHRD (2), packet type (1),
                        address length (1), address (8)
  NULL (0): address family (4) in the writing host's byte order; LOOP (108): the same, big-endian
  RAW (101): the IP packet; 228: IPv4 packet; 229: IPv6 packet
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

LINKTYPE_NULL, LINKTYPE_ETHERNET, LINKTYPE_RAW, LINKTYPE_LOOP = 0, 1, 101, 108
LINKTYPE_LINUX_SLL, LINKTYPE_IPV4, LINKTYPE_IPV6, LINKTYPE_LINUX_SLL2 = 113, 228, 229, 276
COOKED = {LINKTYPE_LINUX_SLL: 16, LINKTYPE_LINUX_SLL2: 20}  # header lengths

# SLL packet types
PACKET_HOST, PACKET_BROADCAST, PACKET_MULTICAST, PACKET_OTHERHOST, PACKET_OUTGOING = 0, 1, 2, 3, 4
ARPHRD_ETHER, ARPHRD_LOOPBACK = 1, 772
AF_INET = 2
AF_INET6_BSD, AF_INET6_FREEBSD, AF_INET6_DARWIN = 24, 28, 30
ETHERTYPE_IPV4, ETHERTYPE_IPV6 = 0x0800, 0x86DD
BROADCAST = b"\xff" * 6


def sll_header(packet_type: int, protocol: int, addr: bytes = b"", arphrd: int = ARPHRD_ETHER,
               addr_len: int | None = None) -> bytes:
    return struct.pack(">HHH8sH", packet_type, arphrd, len(addr) if addr_len is None else addr_len,
                       addr.ljust(8, b"\0"), protocol)


def sll2_header(packet_type: int, protocol: int, addr: bytes = b"", arphrd: int = ARPHRD_ETHER,
                addr_len: int | None = None, ifindex: int = 2) -> bytes:
    return struct.pack(">HHiHBB8s", protocol, 0, ifindex, arphrd, packet_type,
                       len(addr) if addr_len is None else addr_len, addr.ljust(8, b"\0"))


def packet_type_of(frame: bytes, us: set[bytes]) -> int:
    """What Linux would record for this Ethernet frame on a host whose MACs are ``us``."""
    dst, src = frame[0:6], frame[6:12]
    if src in us:
        return PACKET_OUTGOING
    if dst == BROADCAST:
        return PACKET_BROADCAST
    if dst[0] & 1:
        return PACKET_MULTICAST
    return PACKET_HOST if dst in us else PACKET_OTHERHOST


def from_ethernet(linktype: int, frame: bytes, wire: int, us: set[bytes] = frozenset(), *,
                  null_order: str = "<", af_inet6: int = AF_INET6_DARWIN) -> tuple[bytes, int] | None:
    """(record bytes, original length) of ``frame`` captured with ``linktype``, or None if it cannot carry it.

    The payload, Ethernet padding included, is kept as it is: Linux hands received frames to packet
    sockets with their padding, so a cooked capture holds it too.
    """
    src, (ethertype,), payload = frame[6:12], struct.unpack_from(">H", frame, 12), frame[14:]
    if linktype == LINKTYPE_ETHERNET:
        return frame, wire
    if linktype in COOKED:
        kind = packet_type_of(frame, us)
        build = sll_header if linktype == LINKTYPE_LINUX_SLL else sll2_header
        header = build(kind, ethertype, src)
    elif linktype == LINKTYPE_RAW and ethertype in (ETHERTYPE_IPV4, ETHERTYPE_IPV6):
        header = b""
    elif (linktype, ethertype) in ((LINKTYPE_IPV4, ETHERTYPE_IPV4), (LINKTYPE_IPV6, ETHERTYPE_IPV6)):
        header = b""
    elif linktype in (LINKTYPE_NULL, LINKTYPE_LOOP) and ethertype in (ETHERTYPE_IPV4, ETHERTYPE_IPV6):
        family = AF_INET if ethertype == ETHERTYPE_IPV4 else af_inet6
        header = struct.pack((null_order if linktype == LINKTYPE_NULL else ">") + "I", family)
    else:
        return None
    return header + payload, wire - 14 + len(header)


def as_ethernet(linktype: int, record: bytes, wire: int) -> tuple[bytes, int] | str:
    """The Ethernet frame and wire length the parser must make of a record, or its skip reason.

    Cooked: the sender's address is the source MAC when 6 bytes long, the destination is the
    broadcast MAC for packet type 1 and zeros otherwise; a packet that an Ethernet interface received
    (types 0-3) counts at least 60 bytes.  Raw IP and null/loopback: zero MACs, never padded.
    """
    eth = 14
    if linktype == LINKTYPE_ETHERNET:
        return record, wire
    if linktype in COOKED:
        size = COOKED[linktype]
        if len(record) < size:
            return "truncated_sll" if linktype == LINKTYPE_LINUX_SLL else "truncated_sll2"
        if linktype == LINKTYPE_LINUX_SLL:
            kind, arphrd, addr_len, addr, protocol = struct.unpack_from(">HHH8sH", record)
        else:
            protocol, _, _, arphrd, kind, addr_len, addr = struct.unpack_from(">HHiHBB8s", record)
        if arphrd not in (ARPHRD_ETHER, ARPHRD_LOOPBACK):
            return f"unsupported_arphrd:{arphrd}"
        if protocol < 0x0600:
            return f"unsupported_sll_protocol:0x{protocol:04x}"
        src = addr[:6] if addr_len == 6 else bytes(6)
        dst = BROADCAST if kind == PACKET_BROADCAST else bytes(6)
        length = wire - size + eth
        if arphrd == ARPHRD_ETHER and kind <= PACKET_OTHERHOST:
            length = max(length, 60)
        return dst + src + struct.pack(">H", protocol) + record[size:], length
    if linktype in (LINKTYPE_RAW, LINKTYPE_IPV4, LINKTYPE_IPV6):
        if linktype == LINKTYPE_RAW:
            if not record:
                return "truncated_ip"
            version = record[0] >> 4
            if version not in (4, 6):
                return "bad_ip_version"
            ethertype = ETHERTYPE_IPV4 if version == 4 else ETHERTYPE_IPV6
        else:
            ethertype = ETHERTYPE_IPV4 if linktype == LINKTYPE_IPV4 else ETHERTYPE_IPV6
        return bytes(12) + struct.pack(">H", ethertype) + record, wire + eth
    if linktype in (LINKTYPE_NULL, LINKTYPE_LOOP):
        if len(record) < 4:
            return "truncated_null" if linktype == LINKTYPE_NULL else "truncated_loop"
        orders = (">", "<") if linktype == LINKTYPE_NULL else (">",)
        families = [struct.unpack_from(order + "I", record)[0] for order in orders]
        ipv6 = (AF_INET6_BSD, AF_INET6_FREEBSD, AF_INET6_DARWIN)
        known = [f for f in families if f == AF_INET or f in ipv6]
        if not known:
            return "bad_address_family" if min(families) > 0xFFFF else f"unsupported_address_family:{min(families)}"
        ethertype = ETHERTYPE_IPV4 if known[0] == AF_INET else ETHERTYPE_IPV6
        return bytes(12) + struct.pack(">H", ethertype) + record[4:], wire - 4 + eth
    return f"unsupported_linktype:{linktype}"


# --- Capture files --------------------------------------------------------------------------------


def pcap_bytes(linktype: int, records: Iterable[tuple[float, bytes, int]], endian: str = "<") -> bytes:
    """Classic pcap (microseconds) of (ts, record bytes, original length) records."""
    out = [struct.pack(endian + "IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, linktype)]
    for ts, data, wire in records:
        sec = int(ts)
        usec = round((ts - sec) * 1e6)
        if usec >= 1_000_000:
            sec, usec = sec + 1, usec - 1_000_000
        out.append(struct.pack(endian + "IIII", sec, usec, len(data), wire))
        out.append(data)
    return b"".join(out)


def _block(block_type: int, body: bytes) -> bytes:
    body += b"\0" * (-len(body) % 4)
    return struct.pack("<II", block_type, 12 + len(body)) + body + struct.pack("<I", 12 + len(body))


def pcapng_bytes(linktypes: list[int], records: Iterable[tuple[int, float, bytes, int]]) -> bytes:
    """Little-endian pcapng: one interface per link type (microseconds), (interface, ts, bytes, length) records."""
    out = [_block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))]
    out += [_block(1, struct.pack("<HHI", linktype, 0, 0)) for linktype in linktypes]
    for iface, ts, data, wire in records:
        units = round(ts * 1e6)
        out.append(_block(6, struct.pack("<IIIII", iface, units >> 32, units & 0xFFFFFFFF, len(data), wire) + data))
    return b"".join(out)
