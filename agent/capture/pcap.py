"""Read pcap and pcapng capture files as FrameBatch objects; write classic pcap.

Python + numpy; the classic pcap record walk runs compiled when agent/native is built
(agent/native/capture.c, ``_walk_records``), with the Python loop as its fallback.
``read_capture`` checks the file header at call time (a file that is not a capture raises
``CaptureFormatError`` before anything is yielded) and returns an iterator of ``FrameBatch``.  Everything wrong *inside*
a capture (truncated or corrupt records, unknown blocks, link types the
parser does not read) is counted in ``DecodeStats`` under a reason and
skipped; reading goes on wherever the file structure still allows it.  Every
frame carries its record's link type (pcap: the file's; pcapng: its
interface's), which the parser decodes (``agent.capture.parse.LINK_LAYERS``).

Both formats are read in large chunks.  A batch's ``buf`` is a zero-copy view
of the chunk it came from (record headers included); ``offset`` points at each
frame's first byte, so no per-record ``bytes`` objects are made.
"""

from __future__ import annotations

import logging
import struct
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agent import native
from agent.capture.packets import LINKTYPE_ETHERNET, SUPPORTED_LINKTYPES, DecodeStats, FrameBatch

log = logging.getLogger(__name__)

CHUNK_SIZE = 8 * 1024 * 1024  # bytes per read (module level so tests can shrink it)
MAX_FRAME_LEN = 256 * 1024  # a larger captured length means a corrupt record header
MAX_BLOCK_LEN = 16 * 1024 * 1024  # a larger pcapng block length means a corrupt block


class CaptureFormatError(Exception):
    """The file is not a capture at all (unreadable, empty, unknown magic, truncated file header)."""


# --- Header layouts: (field, struct format, default), in file order ---------------------------
# The byte order is given per file, so formats carry none; the defaults are what write_pcap writes.

Layout = tuple[tuple[str, str, int], ...]

PCAP_FILE_HEADER: Layout = (
    ("magic", "I", 0xA1B2C3D4),
    ("version_major", "H", 2),
    ("version_minor", "H", 4),
    ("thiszone", "i", 0),
    ("sigfigs", "I", 0),
    ("snaplen", "I", MAX_FRAME_LEN),
    ("linktype", "I", LINKTYPE_ETHERNET),
)
PCAP_RECORD_HEADER: Layout = (
    ("ts_sec", "I", 0),
    ("ts_frac", "I", 0),  # microseconds or nanoseconds, by the file's magic
    ("cap_len", "I", 0),
    ("wire_len", "I", 0),
)

# pcapng: every block starts with (type, total length) and ends with the total length again.
BLOCK_HEADER: Layout = (("block_type", "I", 0), ("block_len", "I", 0))
SHB_BODY: Layout = (("byte_order_magic", "I", 0x1A2B3C4D), ("version_major", "H", 1),
                    ("version_minor", "H", 0), ("section_len", "q", -1))
IDB_BODY: Layout = (("linktype", "H", LINKTYPE_ETHERNET), ("reserved", "H", 0), ("snaplen", "I", 0))
EPB_BODY: Layout = (("interface_id", "I", 0), ("ts_high", "I", 0), ("ts_low", "I", 0),
                    ("cap_len", "I", 0), ("wire_len", "I", 0))
PB_BODY: Layout = (("interface_id", "H", 0), ("drops", "H", 0), ("ts_high", "I", 0), ("ts_low", "I", 0),
                   ("cap_len", "I", 0), ("wire_len", "I", 0))  # obsolete Packet Block
SPB_BODY: Layout = (("wire_len", "I", 0),)
OPTION_HEADER: Layout = (("code", "H", 0), ("length", "H", 0))


def layout_struct(layout: Layout, endian: str) -> struct.Struct:
    return struct.Struct(endian + "".join(fmt for _, fmt, _ in layout))


def layout_dtype(layout: Layout, endian: str) -> np.dtype:
    return np.dtype([(name, endian + fmt) for name, fmt, _ in layout])


def layout_pack(layout: Layout, endian: str, **values: int) -> bytes:
    return layout_struct(layout, endian).pack(*(values.get(name, default) for name, _, default in layout))


PCAP_FILE_HEADER_LEN = layout_struct(PCAP_FILE_HEADER, "<").size  # 24
PCAP_RECORD_HEADER_LEN = layout_struct(PCAP_RECORD_HEADER, "<").size  # 16

# Classic pcap magic as it appears in the file -> (byte order, fraction units per second).
PCAP_MAGICS: dict[bytes, tuple[str, int]] = {
    b"\xd4\xc3\xb2\xa1": ("<", 1_000_000),
    b"\xa1\xb2\xc3\xd4": (">", 1_000_000),
    b"\x4d\x3c\xb2\xa1": ("<", 1_000_000_000),
    b"\xa1\xb2\x3c\x4d": (">", 1_000_000_000),
}

BT_SHB = 0x0A0D0D0A  # the same bytes in both byte orders
BT_IDB, BT_PB, BT_SPB, BT_NRB, BT_ISB, BT_EPB = 1, 2, 3, 4, 5, 6
# Blocks we know and skip without counting: name resolution, statistics, journal export,
# decryption secrets, custom blocks.
BT_IGNORED = {BT_NRB, BT_ISB, 9, 0x0A, 0x0BAD, 0x40000BAD}
BT_PACKETS = {BT_EPB, BT_SPB, BT_PB}
BT_KNOWN = {BT_SHB, BT_IDB} | BT_PACKETS | BT_IGNORED
MIN_BLOCK_LEN = {BT_SHB: 28, BT_IDB: 20, BT_EPB: 32, BT_PB: 32, BT_SPB: 16}
BYTE_ORDER_MAGIC = 0x1A2B3C4D
OPT_END, OPT_IF_TSRESOL, OPT_IF_TSOFFSET = 0, 9, 14


# --- Opening --------------------------------------------------------------------------------------


def read_capture(
    path: str | Path, batch_size: int = 65536, stats: DecodeStats | None = None
) -> Iterator[FrameBatch]:
    """Iterate over the frames of a pcap or pcapng file in batches of up to ``batch_size``.

    Raises CaptureFormatError here, before iteration, when the file is not a capture.
    ``FrameBatch.index`` counts every packet record of the file, skipped ones included.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    path = Path(path)
    stats = stats if stats is not None else DecodeStats()
    head = _read_head(path, PCAP_FILE_HEADER_LEN)
    if len(head) < 4:
        raise CaptureFormatError(f"{path}: too short to be a capture ({len(head)} bytes)")
    if head[:4] in PCAP_MAGICS:
        return _read_pcap(path, _pcap_header(path, head), batch_size, stats)
    if head[:4] == struct.pack("<I", BT_SHB):
        if len(head) < 12:
            raise CaptureFormatError(f"{path}: truncated pcapng section header ({len(head)} bytes)")
        if _section_byte_order(head, 0) is None:
            raise CaptureFormatError(f"{path}: pcapng section header has a bad byte-order magic")
        return _read_pcapng(path, batch_size, stats)
    raise CaptureFormatError(f"{path}: not a pcap or pcapng file (starts with {head[:4].hex(' ')})")


def _read_head(path: Path, size: int) -> bytes:
    try:
        with open(path, "rb") as f:
            head = f.read(size)
    except OSError as exc:
        raise CaptureFormatError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    if not head:
        raise CaptureFormatError(f"{path}: empty file")
    return head


@dataclass(frozen=True)
class _PcapHeader:
    endian: str
    units_per_second: int
    snaplen: int
    linktype: int


def _pcap_header(path: Path, head: bytes) -> _PcapHeader:
    endian, units = PCAP_MAGICS[head[:4]]
    if len(head) < PCAP_FILE_HEADER_LEN:
        raise CaptureFormatError(f"{path}: truncated pcap file header ({len(head)} of {PCAP_FILE_HEADER_LEN} bytes)")
    fields = dict(zip((name for name, _, _ in PCAP_FILE_HEADER), layout_struct(PCAP_FILE_HEADER, endian).unpack(head)))
    if fields["version_major"] != 2:
        # libpcap refuses these; we read on, since the record layout has not changed since 2.x.
        log.warning("%s: unusual pcap version %d.%d", path, fields["version_major"], fields["version_minor"])
    # Bits 16..31 of the link type carry FCS information in newer writers.
    return _PcapHeader(endian, units, fields["snaplen"], fields["linktype"] & 0xFFFF)


def _section_byte_order(data: bytes, pos: int) -> str | None:
    """Byte order of the pcapng section whose header block starts at data[pos], or None if corrupt."""
    if len(data) < pos + 12:
        return None
    magic = struct.unpack_from("<I", data, pos + 8)[0]
    if magic == BYTE_ORDER_MAGIC:
        return "<"
    if magic == struct.unpack("<I", struct.pack(">I", BYTE_ORDER_MAGIC))[0]:
        return ">"
    return None


# --- Shared batch assembly --------------------------------------------------------------------------


def _batches(
    buf: np.ndarray,
    index: np.ndarray,
    ts: np.ndarray,
    wire_len: np.ndarray,
    cap_len: np.ndarray,
    offset: np.ndarray,
    linktype: np.ndarray,
    batch_size: int,
) -> Iterator[FrameBatch]:
    """Cut the (already filtered) frames of one chunk into FrameBatch objects sharing ``buf``."""
    linktype = linktype.astype(np.uint16)
    for lo in range(0, len(index), batch_size):
        hi = lo + batch_size
        yield FrameBatch(
            index=index[lo:hi],
            ts=ts[lo:hi],
            wire_len=wire_len[lo:hi],
            cap_len=cap_len[lo:hi],
            offset=offset[lo:hi],
            linktype=linktype[lo:hi],
            buf=buf,
        )


def _note_over_snaplen(path: Path, count: int, snaplen: int) -> None:
    """Records longer than the file's snapshot length are read whole, as Wireshark reads them (libpcap keeps the
    first snaplen bytes): some writers put a smaller figure there than they write (dpkt's default is 1500, below
    a full Ethernet frame's 1514), and dropping their largest frames would hide a flood of large datagrams."""
    if count:
        log.info("%s: %d records longer than the file's snapshot length %d, read whole", path, count, snaplen)


# --- Classic pcap -------------------------------------------------------------------------------------


def _locate_records(data: bytes, endian: str) -> tuple[np.ndarray, int]:
    """Start positions of the complete records in ``data`` and the position after the last one.

    This is the one per-record Python loop: each record's position depends on the previous
    record's length.  It reads only the captured-length field (about 8 M records/s).  The fallback of
    the compiled walk (``_walk_records``).
    """
    cap_len_at = struct.Struct(endian + "I").unpack_from
    starts = array("q")
    append = starts.append
    end = len(data)
    last_header = end - PCAP_RECORD_HEADER_LEN
    pos = 0
    while pos <= last_header:
        after = pos + PCAP_RECORD_HEADER_LEN + cap_len_at(data, pos + 8)[0]
        if after > end:
            break
        append(pos)
        pos = after
    return np.frombuffer(starts, dtype=np.int64), pos


# The record header's fields as the walk returns them (all 4-byte unsigned, PCAP_RECORD_HEADER).
RECORD_FIELDS = ("ts_sec", "ts_frac", "cap_len", "wire_len")
# int64 on 32-bit boards too (the compiled walk reads them as such)
_RECORD_FIELD_AT = np.array([layout_dtype(PCAP_RECORD_HEADER, "<").fields[name][1] for name in RECORD_FIELDS],
                            dtype=np.int64)
assert all(fmt == "I" for name, fmt, _ in PCAP_RECORD_HEADER if name in RECORD_FIELDS)
# iotguard_pcap_records (agent/native/capture.c): the same walk as _locate_records, header fields included.
_RECORDS_SIGNATURE = [native.u8, native.n, native.i32, native.n, native.i64, native.n, native.n,
                      native.i64, native.i64, native.i64, native.i64, native.i64, native.i64]


def _walk_records(data: bytes, buf: np.ndarray, endian: str) -> tuple[np.ndarray, dict[str, np.ndarray], int]:
    """The complete, sane records at the start of ``data`` (``buf``: the same bytes as uint8).

    Returns their start positions, their header fields (int64, ``RECORD_FIELDS``) and where the walk
    stopped: after the last record, or at the first record whose captured length exceeds MAX_FRAME_LEN
    (a corrupt header: the caller stops there).  The compiled walk runs when it is built; this loop is the
    fallback, and the tests hold the two to the same results.
    """
    kernel = native.function("iotguard_pcap_records", _RECORDS_SIGNATURE)
    if kernel is not None:
        capacity = len(data) // PCAP_RECORD_HEADER_LEN  # every record takes at least its header
        columns = np.empty((1 + len(RECORD_FIELDS), capacity), dtype=np.int64)
        result = np.zeros(3, dtype=np.int64)
        kernel(buf, len(data), int(endian == ">"), PCAP_RECORD_HEADER_LEN, _RECORD_FIELD_AT, MAX_FRAME_LEN,
               capacity, *columns, result)
        if result[2] == 0:
            count = int(result[0])
            fields = {name: columns[1 + k, :count] for k, name in enumerate(RECORD_FIELDS)}
            return columns[0, :count], fields, int(result[1])
    starts, end = _locate_records(data, endian)
    record = layout_dtype(PCAP_RECORD_HEADER, endian)
    hdr = buf[starts[:, None] + np.arange(PCAP_RECORD_HEADER_LEN)].view(record).reshape(-1)
    fields = {name: hdr[name].astype(np.int64) for name in RECORD_FIELDS}
    absurd = np.flatnonzero(fields["cap_len"] > MAX_FRAME_LEN)
    if len(absurd):
        cut = int(absurd[0])
        end = int(starts[cut])
        starts, fields = starts[:cut], {name: column[:cut] for name, column in fields.items()}
    return starts, fields, end


def _read_pcap(path: Path, header: _PcapHeader, batch_size: int, stats: DecodeStats) -> Iterator[FrameBatch]:
    cap_len_at = struct.Struct(header.endian + "I").unpack_from
    over_snaplen = 0
    supported = header.linktype in SUPPORTED_LINKTYPES
    next_index = 0
    with open(path, "rb") as f:
        f.seek(PCAP_FILE_HEADER_LEN)
        tail = b""
        while True:
            chunk = f.read(CHUNK_SIZE)
            data = tail + chunk if tail else chunk
            buf = np.frombuffer(data, dtype=np.uint8)
            starts, fields, end = _walk_records(data, buf, header.endian)
            # A record whose captured length is absurd means the header is garbage; nothing after
            # it can be trusted (there is no marker to resync on), so the walk stops there, and so do we.
            corrupt = end + PCAP_RECORD_HEADER_LEN <= len(data) and cap_len_at(data, end + 8)[0] > MAX_FRAME_LEN
            cap, wire = fields["cap_len"], fields["wire_len"]
            n = len(starts)
            index = np.arange(next_index, next_index + n, dtype=np.int64)
            next_index += n
            keep = cap <= wire
            if 0 < header.snaplen < MAX_FRAME_LEN:
                over_snaplen += int(np.count_nonzero(keep & (cap > header.snaplen)))
            stats.add("bad_record_length", n - int(keep.sum()))
            if not supported:
                stats.add(f"unsupported_linktype:{header.linktype}", int(keep.sum()))
                keep[:] = False
            kept = int(keep.sum())
            if kept:
                ts = fields["ts_sec"].astype(np.float64) + fields["ts_frac"] / header.units_per_second
                if kept < n:  # (nearly always every record is kept: no gather then)
                    index, ts, wire, cap, starts = index[keep], ts[keep], wire[keep], cap[keep], starts[keep]
                yield from _batches(
                    buf, index, ts, wire, cap, starts + PCAP_RECORD_HEADER_LEN, np.full(kept, header.linktype),
                    batch_size,
                )
            if corrupt:
                stats.add("corrupt_record")
                log.warning("%s: corrupt record header after record %d; stopped reading", path, next_index - 1)
                break
            tail = data[end:]
            if not chunk:
                if tail:
                    stats.add("truncated_record")
                    log.warning("%s: last record truncated (%d bytes)", path, len(tail))
                break
    _note_over_snaplen(path, over_snaplen, header.snaplen)


# --- pcapng --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Interface:
    linktype: int
    snaplen: int
    units_per_second: float = 1e6  # if_tsresol; microseconds when absent
    ts_offset: int = 0  # if_tsoffset, seconds


class _PcapngParser:
    """Walks the blocks of a pcapng byte stream and collects packet records.

    One instance per file; ``feed`` handles the complete blocks at the start of a buffer and
    says where it stopped, so the caller can read more and call again.
    """

    def __init__(self, path: Path, stats: DecodeStats) -> None:
        self.path = path
        self.stats = stats
        self.endian = "<"
        self.interfaces: list[_Interface] = []
        self.next_index = 0
        self.last_ts = 0.0  # simple packet blocks carry no timestamp: they reuse the previous one
        self.resyncing = False  # after a corrupt block: looking for the next plausible block
        self.corrupt_blocks = 0
        self.frames: dict[str, list] = {}
        self._reset_frames()

    def _reset_frames(self) -> None:
        self.frames = {"index": [], "ts": [], "wire_len": [], "cap_len": [], "offset": [], "linktype": []}

    def take_frames(self) -> dict[str, np.ndarray]:
        dtypes = {"ts": np.float64}
        out = {k: np.array(v, dtype=dtypes.get(k, np.int64)) for k, v in self.frames.items()}
        self._reset_frames()
        return out

    # -- block walking --

    def feed(self, data: bytes, pos: int, at_eof: bool) -> tuple[int, int]:
        """Handle complete blocks from data[pos:]; return (stop position, bytes needed to go on)."""
        while True:
            if self.resyncing:
                found, need = self._find_block(data, pos, at_eof)
                if found is None:
                    # Keep the unscanned tail (a block header may straddle the read boundary).
                    scanned = max(0, (len(data) - pos - 12) // 4 + 1)
                    return pos + 4 * scanned, 12
                if need:
                    return found, need  # check this candidate again with more data
                pos = found
                self.resyncing = False
            if len(data) - pos < 12:
                return pos, 12
            block_type = struct.unpack_from(self.endian + "I", data, pos)[0]
            if block_type == BT_SHB:
                endian = _section_byte_order(data, pos)
                if endian is None:
                    pos = self._corrupt(pos, block_type)
                    continue
                # Type and byte-order magic mark a new section even if its length turns out corrupt:
                # the old section's interface ids must go with its byte order, or the new section's
                # packets would be read with the old link types and timestamp units.
                self.endian = endian
                self.interfaces = []
            block_len = struct.unpack_from(self.endian + "I", data, pos + 4)[0]
            if not self._plausible_length(block_type, block_len):
                pos = self._corrupt(pos, block_type)
                continue
            if pos + block_len > len(data):
                if not at_eof:
                    return pos, block_len
                # The block runs past the end of the file: a truncated last block, or a
                # corrupt length in the middle; a valid block further on tells which.
                if self._find_block(data, pos + 4, at_eof=True)[0] is not None:
                    pos = self._corrupt(pos, block_type)
                    continue
                truncated_packet = block_type in BT_PACKETS
                self.stats.add("truncated_record" if truncated_packet else "truncated_block")
                self.next_index += truncated_packet
                log.warning("%s: last block truncated", self.path)
                return len(data), 0
            trailer = struct.unpack_from(self.endian + "I", data, pos + block_len - 4)[0]
            if trailer != block_len:
                pos = self._corrupt(pos, block_type)
                continue
            self._handle_block(block_type, data, pos, block_len)
            pos += block_len

    def _plausible_length(self, block_type: int, block_len: int) -> bool:
        return block_len % 4 == 0 and MIN_BLOCK_LEN.get(block_type, 12) <= block_len <= MAX_BLOCK_LEN

    def _corrupt(self, pos: int, block_type: int) -> int:
        """Count a block whose length cannot be trusted; return where to start looking for the next one."""
        self.stats.add("corrupt_block")
        self.corrupt_blocks += 1
        self.next_index += block_type in BT_PACKETS  # it still held a record, as far as its type says
        log.debug("%s: corrupt pcapng block after record %d", self.path, self.next_index - 1)
        self.resyncing = True
        return pos + 4

    def _find_block(self, data: bytes, pos: int, at_eof: bool) -> tuple[int | None, int]:
        """First position from ``pos`` (in 4-byte steps) where a valid block starts.

        Returns (position, 0) for a block whose trailer confirms its length, (position, length)
        for a candidate that runs past the data read so far, or (None, 0).
        """
        count = (len(data) - pos - 12) // 4 + 1  # positions with room for type, length, magic
        if count <= 0:
            return None, 0
        # Every 4-byte word from pos, at once; a candidate is a word holding a known block type.
        words = np.frombuffer(data, dtype=self.endian + "u4", count=count, offset=pos)
        candidates = np.flatnonzero(np.isin(words, list(BT_KNOWN)))
        for k in candidates.tolist():
            start = pos + 4 * k
            block_type = int(words[k])
            endian = _section_byte_order(data, start) if block_type == BT_SHB else self.endian
            if endian is None:
                continue
            block_len = struct.unpack_from(endian + "I", data, start + 4)[0]
            if not self._plausible_length(block_type, block_len):
                continue
            if start + block_len > len(data):
                if at_eof:
                    continue
                return start, block_len
            if struct.unpack_from(endian + "I", data, start + block_len - 4)[0] == block_len:
                return start, 0
        return None, 0

    # -- blocks --

    def _handle_block(self, block_type: int, data: bytes, pos: int, block_len: int) -> None:
        if block_type == BT_SHB:
            pass  # interface ids are per section: feed() already dropped the old ones
        elif block_type == BT_IDB:
            self.interfaces.append(self._interface(data, pos, block_len))
        elif block_type == BT_EPB:
            iface, high, low, cap, wire = layout_struct(EPB_BODY, self.endian).unpack_from(data, pos + 8)
            self._packet(iface, (high << 32) | low, cap, wire, pos + 28, block_len - 32)
        elif block_type == BT_PB:
            iface, _drops, high, low, cap, wire = layout_struct(PB_BODY, self.endian).unpack_from(data, pos + 8)
            self._packet(iface, (high << 32) | low, cap, wire, pos + 28, block_len - 32)
        elif block_type == BT_SPB:
            (wire,) = layout_struct(SPB_BODY, self.endian).unpack_from(data, pos + 8)
            cap = min(wire, block_len - 16)
            if self.interfaces and self.interfaces[0].snaplen:
                cap = min(cap, self.interfaces[0].snaplen)
            self._packet(0, None, cap, wire, pos + 12, block_len - 16)
        elif block_type not in BT_IGNORED:
            self.stats.add("unknown_block")

    def _interface(self, data: bytes, pos: int, block_len: int) -> _Interface:
        linktype, _reserved, snaplen = layout_struct(IDB_BODY, self.endian).unpack_from(data, pos + 8)
        units, offset = 1e6, 0
        option = layout_struct(OPTION_HEADER, self.endian)
        at, end = pos + 16, pos + block_len - 4
        while at + 4 <= end:
            code, length = option.unpack_from(data, at)
            value_at = at + 4
            if code == OPT_END or value_at + length > end:
                break
            if code == OPT_IF_TSRESOL and length >= 1:
                # High bit set: a negative power of 2; otherwise a negative power of 10.
                resol = data[value_at]
                units = float(2 ** (resol & 0x7F)) if resol & 0x80 else float(10 ** (resol & 0x7F))
            elif code == OPT_IF_TSOFFSET and length >= 8:
                offset = struct.unpack_from(self.endian + "q", data, value_at)[0]
            at = value_at + (length + 3) // 4 * 4
        return _Interface(linktype, snaplen, units, offset)

    def _packet(self, iface_id: int, ts_units: int | None, cap: int, wire: int, data_at: int, room: int) -> None:
        index = self.next_index
        self.next_index += 1
        if iface_id >= len(self.interfaces):
            self.stats.add("unknown_interface")
            return
        iface = self.interfaces[iface_id]
        if ts_units is not None:
            # units / divisor, as dpkt and Wireshark compute it: correctly rounded below 2**53 units.
            self.last_ts = iface.ts_offset + ts_units / iface.units_per_second
        if cap > room:
            self.stats.add("corrupt_block")
            return
        if cap > wire:
            self.stats.add("bad_record_length")
            return
        if iface.linktype not in SUPPORTED_LINKTYPES:
            self.stats.add(f"unsupported_linktype:{iface.linktype}")
            return
        frames = self.frames
        frames["index"].append(index)
        frames["ts"].append(self.last_ts)
        frames["wire_len"].append(wire)
        frames["cap_len"].append(cap)
        frames["offset"].append(data_at)
        frames["linktype"].append(iface.linktype)


def _read_pcapng(path: Path, batch_size: int, stats: DecodeStats) -> Iterator[FrameBatch]:
    parser = _PcapngParser(path, stats)
    with open(path, "rb") as f:
        data, pos, need, at_eof = b"", 0, 0, False
        while True:
            chunk = f.read(max(CHUNK_SIZE, need))
            at_eof = not chunk
            data = data[pos:] + chunk
            pos, need = parser.feed(data, 0, at_eof)
            frames = parser.take_frames()
            if len(frames["index"]):
                buf = np.frombuffer(data, dtype=np.uint8)
                yield from _batches(
                    buf, frames["index"], frames["ts"], frames["wire_len"], frames["cap_len"],
                    frames["offset"], frames["linktype"], batch_size,
                )
            if at_eof:
                if pos < len(data) and not parser.resyncing:
                    stats.add("truncated_block")
                    log.warning("%s: %d stray bytes at the end", path, len(data) - pos)
                if parser.corrupt_blocks:
                    log.warning("%s: %d corrupt pcapng blocks skipped", path, parser.corrupt_blocks)
                return


# --- Writing classic pcap --------------------------------------------------------------------------------


def write_pcap(
    path: str | Path,
    frames: FrameBatch | Iterable[FrameBatch | tuple],
    *,
    nanosecond: bool = False,
    big_endian: bool = False,
    snaplen: int = MAX_FRAME_LEN,
    linktype: int = LINKTYPE_ETHERNET,
) -> int:
    """Write frames as a classic pcap file; return the number of records written.

    ``frames`` is a FrameBatch, or an iterable of FrameBatch objects and/or
    ``(ts, frame_bytes)`` / ``(ts, frame_bytes, wire_len)`` tuples.
    """
    endian = ">" if big_endian else "<"
    units = 1_000_000_000 if nanosecond else 1_000_000
    magic = 0xA1B23C4D if nanosecond else 0xA1B2C3D4
    written = 0
    with open(path, "wb") as f:
        f.write(layout_pack(PCAP_FILE_HEADER, endian, magic=magic, snaplen=snaplen, linktype=linktype))
        for batch in _as_batches(frames):
            if len(batch) and int(batch.cap_len.max()) > snaplen:
                raise ValueError(f"a frame of {int(batch.cap_len.max())} bytes exceeds snaplen {snaplen}")
            f.write(_pcap_records(batch, endian, units))
            written += len(batch)
    return written


def _as_batches(frames: FrameBatch | Iterable[FrameBatch | tuple], group: int = 65536) -> Iterator[FrameBatch]:
    if isinstance(frames, FrameBatch):
        yield frames
        return
    pending: list[tuple] = []

    def flush() -> FrameBatch:
        batch = FrameBatch.from_frames(
            [bytes(p[1]) for p in pending],
            [p[0] for p in pending],
            wire_len=[p[2] if len(p) > 2 else len(p[1]) for p in pending],
        )
        pending.clear()
        return batch

    for item in frames:
        if isinstance(item, FrameBatch):
            if pending:
                yield flush()
            yield item
        else:
            pending.append(tuple(item))
            if len(pending) >= group:
                yield flush()
    if pending:
        yield flush()


def _pcap_records(batch: FrameBatch, endian: str, units: int) -> bytes:
    n = len(batch)
    sec = np.floor(batch.ts)
    frac = np.rint((batch.ts - sec) * units).astype(np.int64)
    carry = frac >= units  # rounding may reach a whole second
    sec = sec.astype(np.int64) + carry
    frac[carry] -= units
    header = np.zeros(n, dtype=layout_dtype(PCAP_RECORD_HEADER, endian))
    header["ts_sec"] = sec
    header["ts_frac"] = frac
    header["cap_len"] = batch.cap_len
    header["wire_len"] = batch.wire_len
    headers = memoryview(header.tobytes())
    frame_bytes = memoryview(np.ascontiguousarray(batch.buf))
    parts: list[memoryview] = []
    step = PCAP_RECORD_HEADER_LEN
    for i, (start, length) in enumerate(zip(batch.offset.tolist(), batch.cap_len.tolist())):
        parts.append(headers[i * step : (i + 1) * step])
        parts.append(frame_bytes[start : start + length])
    return b"".join(parts)
