"""Capture files built byte by byte with struct, independently of agent/capture/pcap.py.

Classic pcap (``pcap_bytes``) and pcapng blocks: section and interface headers, enhanced and simple
packet blocks, options.  Used by the reader's tests and the capture fuzzer.
"""

from __future__ import annotations

import struct


def pcap_bytes(records, endian="<", nano=False, snaplen=65535, linktype=1, version=(2, 4)) -> bytes:
    """records: (ts_sec, ts_frac, frame, wire_len or None, cap_len override or None)."""
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    out = [struct.pack(endian + "IHHiIII", magic, *version, 0, 0, snaplen, linktype)]
    for sec, frac, frame, wire, cap in records:
        out.append(struct.pack(endian + "IIII", sec, frac, len(frame) if cap is None else cap,
                               len(frame) if wire is None else wire))
        out.append(frame)
    return b"".join(out)


def pad4(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def block(endian: str, block_type: int, body: bytes, length: int | None = None, trailer: int | None = None) -> bytes:
    body = pad4(body)
    total = 12 + len(body)
    return (struct.pack(endian + "II", block_type, total if length is None else length) + body
            + struct.pack(endian + "I", total if trailer is None else trailer))


def option(endian: str, code: int, value: bytes) -> bytes:
    return struct.pack(endian + "HH", code, len(value)) + pad4(value)


def shb(endian: str) -> bytes:
    body = struct.pack(endian + "IHHq", 0x1A2B3C4D, 1, 0, -1) + option(endian, 4, b"test") + option(endian, 0, b"")
    return block(endian, 0x0A0D0D0A, body)


def idb(endian: str, linktype: int = 1, snaplen: int = 0, tsresol: int | None = None, tsoffset: int | None = None) -> bytes:
    opts = b""
    if tsresol is not None:
        opts += option(endian, 9, bytes([tsresol]))
    if tsoffset is not None:
        opts += option(endian, 14, struct.pack(endian + "q", tsoffset))
    if opts:
        opts += option(endian, 0, b"")
    return block(endian, 1, struct.pack(endian + "HHI", linktype, 0, snaplen) + opts)


def epb(endian: str, iface: int, units: int, frame: bytes, wire: int | None = None, **kw) -> bytes:
    body = struct.pack(endian + "IIIII", iface, units >> 32, units & 0xFFFFFFFF, len(frame),
                       len(frame) if wire is None else wire) + frame
    return block(endian, 6, body, **kw)


def spb(endian: str, frame: bytes, wire: int | None = None) -> bytes:
    return block(endian, 3, struct.pack(endian + "I", len(frame) if wire is None else wire) + frame)
