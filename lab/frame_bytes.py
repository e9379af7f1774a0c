"""Frames built byte by byte with struct, independently of the parser's header tables.

Ethernet (with VLAN tags), IPv4, IPv6 and its extension headers, TCP, UDP, ICMP echo, ARP and LLDP: the
parser's tests, the link-type tests and the capture fuzzer build their inputs with these.
"""

from __future__ import annotations

import ipaddress
import struct

SRC_MAC, DST_MAC = 0x02AABBCCDD01, 0x02AABBCCDD02


def mac_bytes(mac: int) -> bytes:
    return mac.to_bytes(6, "big")


def ethernet(ethertype: int, payload: bytes, tags: tuple[tuple[int, int], ...] = ()) -> bytes:
    """tags: (TPID, VLAN id) from the outermost in."""
    head = mac_bytes(DST_MAC) + mac_bytes(SRC_MAC)
    for tpid, vid in tags:
        head += struct.pack("!HH", tpid, (3 << 13) | vid)  # priority 3, so the id has to be masked
    return head + struct.pack("!H", ethertype) + payload


def ipv4(src: str, dst: str, proto: int, payload: bytes, *, options: bytes = b"", ttl: int = 64, ident: int = 0x1234,
         flags_fragment: int = 0, total_len: int | None = None, version_ihl: int | None = None) -> bytes:
    ihl = 5 + len(options) // 4
    total = 20 + len(options) + len(payload) if total_len is None else total_len
    head = struct.pack("!BBHHHBBH4s4s", (4 << 4 | ihl) if version_ihl is None else version_ihl, 0, total, ident,
                       flags_fragment, ttl, proto, 0, ipaddress.IPv4Address(src).packed,
                       ipaddress.IPv4Address(dst).packed)
    return head + options + payload


def ipv6(src: str, dst: str, next_header: int, payload: bytes, hop_limit: int = 57) -> bytes:
    return (struct.pack("!IHBB", 6 << 28 | 0xABCDE, len(payload), next_header, hop_limit)
            + ipaddress.IPv6Address(src).packed + ipaddress.IPv6Address(dst).packed + payload)


def ext_options(next_header: int, units: int) -> bytes:
    """Hop-by-hop or destination options (8 * (units + 1) bytes, PadN filled)."""
    body = bytes([1, 8 * (units + 1) - 4]) + b"\0" * (8 * (units + 1) - 4)
    return bytes([next_header, units]) + body


def ext_routing(next_header: int) -> bytes:
    return bytes([next_header, 2, 0, 0]) + b"\0" * 4 + b"\x20\x01" + b"\0" * 14  # type 0, one address


def ext_fragment(next_header: int, offset: int, more: bool, ident: int = 77) -> bytes:
    return struct.pack("!BBHI", next_header, 0, offset << 3 | int(more), ident)


def ext_ah(next_header: int) -> bytes:
    return bytes([next_header, 4, 0, 0]) + struct.pack("!II", 0x100, 1) + b"\0" * 12  # (4 + 2) * 4 = 24 bytes


def tcp(sport: int, dport: int, *, seq: int = 0x11223344, ack: int = 0x55667788, flags: int = 0x18,
        window: int = 29200, options: bytes = b"", payload: bytes = b"") -> bytes:
    offset = (20 + len(options)) // 4
    return struct.pack("!HHIIBBHHH", sport, dport, seq, ack, offset << 4, flags, window, 0, 0) + options + payload


def udp(sport: int, dport: int, payload: bytes = b"") -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def icmp_echo(payload: bytes = b"ping") -> bytes:
    return struct.pack("!BBHHH", 8, 0, 0, 1, 1) + payload


def arp(spa: str, tpa: str, op: int = 1) -> bytes:
    return (struct.pack("!HHBBH", 1, 0x0800, 6, 4, op) + mac_bytes(SRC_MAC) + ipaddress.IPv4Address(spa).packed
            + b"\0" * 6 + ipaddress.IPv4Address(tpa).packed)


def lldp() -> bytes:
    tlvs = struct.pack("!H", 1 << 9 | 7) + b"\x04" + mac_bytes(SRC_MAC)  # chassis id
    tlvs += struct.pack("!H", 2 << 9 | 2) + b"\x07\x01"  # port id
    tlvs += struct.pack("!H", 3 << 9 | 2) + b"\x00\x78"  # TTL
    return ethernet(0x88CC, tlvs + b"\0\0")
