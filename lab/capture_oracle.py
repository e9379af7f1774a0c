"""The invariants the capture reader and the packet parser must keep on any input, checked.

The fuzzer's oracle (lab/capture_fuzz.py generates the inputs), in three kinds:

* the model: for each generated capture the generator wrote down what the reader must deliver or count,
  record by record; ``check_reading`` compares (only the undamaged prefix when the model is not exact);
* a scalar reference decoder (``reference_decode``) written from parse.py's documented rules: every
  frame's PacketBatch row, or the reason it was skipped, must match it;
* metamorphic and contract checks: the same file read in tiny chunks gives the same result, every
  record index is delivered or counted, every column holds a value the PacketBatch contract allows.

A broken invariant raises ``InvariantError``; any other exception out of the reader or the parser is a bug
(``ReaderError``, ``ParserError``).
"""

from __future__ import annotations

import itertools
import random
import struct
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agent.capture import pcap as capture_file
from agent.capture.packets import (
    IPV4_MAPPED_LO_PREFIX,
    L3_ARP,
    L3_IPV4,
    L3_IPV6,
    L3_OTHER,
    PORT_ARP,
    PORT_ICMP,
    PORT_NONE,
    PORT_NUMBER,
    SUPPORTED_LINKTYPES,
    DecodeStats,
    FrameBatch,
    PacketBatch,
)
from agent.capture.parse import parse_frames
from agent.capture.pcap import MAX_FRAME_LEN, CaptureFormatError, read_capture
from lab.capture_fuzz import (
    BYTE_ORDER_BYTES,
    EXT_AH,
    EXT_DEST,
    EXT_FRAGMENT,
    EXT_HOP,
    EXT_ROUTING,
    PCAP_MAGIC_BYTES,
    SHB_BYTES,
    TPIDS,
    Capture,
)
from lab.link_layers import as_ethernet


class InvariantError(AssertionError):
    """The reader or the parser returned something its contract forbids; ``check`` names the invariant."""

    def __init__(self, check: str, detail: str = "") -> None:
        super().__init__(f"{check}: {detail}" if detail else check)
        self.check = check


def expect(condition: object, check: str, detail: object = "") -> None:
    """Raise InvariantError(check) unless ``condition``; ``detail`` (a string, or a callable making one) explains."""
    if not condition:
        raise InvariantError(check, detail() if callable(detail) else str(detail))


# Skip reasons the reader and the parser document (plus unsupported_linktype:N from both, and the parser's
# reasons for cooked and null headers it cannot read).
READER_REASONS = {"bad_record_length", "corrupt_record", "truncated_record", "corrupt_block", "truncated_block",
                  "unknown_block", "unknown_interface"}
PARSER_REASONS = {"truncated_ethernet", "truncated_ip", "bad_ip_version", "bad_ip_header_length", "truncated_arp",
                  "truncated_l4", "bad_frame_bounds", "truncated_sll", "truncated_sll2", "truncated_null",
                  "truncated_loop", "bad_address_family", "unsupported_arphrd:", "unsupported_sll_protocol:",
                  "unsupported_address_family:"}


def is_named_reason(reason: str, names: set[str]) -> bool:
    name, _, value = reason.partition(":")
    if not value:
        return reason in names
    number = value[2:] if value.startswith("0x") else value
    return (name == "unsupported_linktype" or f"{name}:" in names) and number.isalnum()


# --- The reference decoder ---------------------------------------------------------------------------------

PACKET_COLUMNS = ("src_mac", "dst_mac", "vlan", "l3", "src_ip_hi", "src_ip_lo", "dst_ip_hi", "dst_ip_lo", "proto",
                  "port_kind", "sport", "dport", "ttl", "ip_id", "df", "frag", "ip_len", "tcp_flags", "tcp_seq",
                  "tcp_ack", "tcp_win", "tcp_hdr_len", "payload_len", "icmp_type", "gre_proto")
DEFAULT_ROW = dict.fromkeys(PACKET_COLUMNS, 0) | {"vlan": -1, "sport": -1, "dport": -1, "df": False, "frag": False,
                                                  "icmp_type": -1, "gre_proto": -1}
IPV6_EXTENSIONS = {EXT_HOP, EXT_ROUTING, EXT_FRAGMENT, EXT_AH, EXT_DEST}
MAPPED = int(IPV4_MAPPED_LO_PREFIX)


def reference_decode(frame: bytes) -> str | dict:
    """The skip reason for one Ethernet frame, or its PacketBatch row, decoded one field at a time.

    Written from the rules in parse.py's docstring and comments, not from its code: up to two VLAN tags;
    IPv4 (header 20..60 bytes, within the total length); IPv6 following at most 8 extension headers and
    stopping after a non-first fragment header; payload length 0 meaning "up to the captured end";
    ARP for IPv4 over Ethernet; TCP/UDP need their fixed header inside both the capture and the IP length.
    """
    n = len(frame)
    if n < 14:
        return "truncated_ethernet"
    row = dict(DEFAULT_ROW)
    row["dst_mac"], row["src_mac"] = int.from_bytes(frame[0:6], "big"), int.from_bytes(frame[6:12], "big")
    (ethertype,) = struct.unpack_from("!H", frame, 12)
    l3 = 14
    for _ in range(2):
        if ethertype not in TPIDS:
            break
        if l3 + 4 > n:
            return "truncated_ethernet"
        tci, ethertype = struct.unpack_from("!HH", frame, l3)
        row["vlan"] = tci & 0x0FFF if row["vlan"] < 0 else row["vlan"]
        l3 += 4
    if ethertype == 0x0800:
        if l3 + 20 > n:
            return "truncated_ip"
        version_ihl, _, total, ident, flags_fragment, ttl, proto, _, src, dst = struct.unpack_from(
            "!BBHHHBBHII", frame, l3)
        ihl = (version_ihl & 0x0F) * 4
        if version_ihl >> 4 != 4:
            return "bad_ip_version"
        if ihl < 20 or total < ihl:
            return "bad_ip_header_length"
        if l3 + ihl > n:
            return "truncated_ip"
        row.update(l3=L3_IPV4, src_ip_lo=MAPPED | src, dst_ip_lo=MAPPED | dst, ttl=ttl, ip_id=ident, ip_len=total,
                   df=bool(flags_fragment & 0x4000), frag=(flags_fragment & 0x1FFF) != 0)
        l4, ip_end = l3 + ihl, l3 + total
    elif ethertype == 0x86DD:
        if l3 + 40 > n:
            return "truncated_ip"
        version_class_flow, payload, proto, hop_limit, src_hi, src_lo, dst_hi, dst_lo = struct.unpack_from(
            "!IHBBQQQQ", frame, l3)
        if version_class_flow >> 28 != 6:
            return "bad_ip_version"
        ip_end = l3 + 40 + payload if payload else n
        limit, l4, frag = min(n, ip_end), l3 + 40, False
        for _ in range(8):
            if proto not in IPV6_EXTENSIONS:
                break
            if l4 + 8 > limit:
                return "truncated_ip"
            next_header, length, fragment = struct.unpack_from("!BBH", frame, l4)
            if proto == EXT_FRAGMENT:
                l4, frag = l4 + 8, fragment >> 3 != 0
            else:
                l4 += (length + 2) * 4 if proto == EXT_AH else (length + 1) * 8
            proto = next_header
            if frag:
                break
        if l4 > limit:
            return "truncated_ip"
        row.update(l3=L3_IPV6, src_ip_hi=src_hi, src_ip_lo=src_lo, dst_ip_hi=dst_hi, dst_ip_lo=dst_lo, ttl=hop_limit,
                   frag=frag, ip_len=40 + payload)
    elif ethertype == 0x0806:
        if l3 + 6 > n:
            return "truncated_arp"
        if struct.unpack_from("!HHBB", frame, l3) == (1, 0x0800, 6, 4):
            if l3 + 28 > n:
                return "truncated_arp"
            row.update(l3=L3_ARP, port_kind=PORT_ARP, src_ip_lo=MAPPED | struct.unpack_from("!I", frame, l3 + 14)[0],
                       dst_ip_lo=MAPPED | struct.unpack_from("!I", frame, l3 + 24)[0])
            return row
    if row["l3"] == L3_OTHER:  # neither IP nor ARP: keyed by the MACs
        row["src_ip_lo"], row["dst_ip_lo"] = row["src_mac"], row["dst_mac"]
        return row
    row["proto"] = proto
    room, header = min(ip_end, n) - l4, 0
    if not row["frag"] and proto == 6:
        if room < 20:
            return "truncated_l4"
        sport, dport, seq, ack, data_offset, flags, window = struct.unpack_from("!HHIIBBH", frame, l4)
        header = (data_offset >> 4) * 4
        row.update(port_kind=PORT_NUMBER, sport=sport, dport=dport, tcp_seq=seq, tcp_ack=ack, tcp_flags=flags,
                   tcp_win=window, tcp_hdr_len=header)
    elif not row["frag"] and proto == 17:
        if room < 8:
            return "truncated_l4"
        row["sport"], row["dport"] = struct.unpack_from("!HH", frame, l4)
        row["port_kind"], header = PORT_NUMBER, 8
    elif not row["frag"] and proto == 1 and row["l3"] == L3_IPV4:
        row["port_kind"] = PORT_ICMP
    if not row["frag"] and proto in (1, 58) and room >= 2:  # ICMP or ICMPv6, on either IP version
        row["icmp_type"] = frame[l4]
    if not row["frag"] and proto == 47 and room >= 4:  # GRE, version 0 only
        flags_version, carried = struct.unpack_from("!HH", frame, l4)
        row["gre_proto"] = carried if flags_version & 7 == 0 else -1
    row["payload_len"] = max(ip_end - l4 - header, 0)
    return row


def reference_batch(frames: FrameBatch) -> list[str | dict]:
    """reference_decode for every row of a batch, bounds and link type first, as parse_frames checks them.

    Other link types are first turned into the Ethernet frame the parser must treat them as
    (link_layers.as_ethernet); rows carry the wire length the parser must report.
    """
    buf = frames.buf.tobytes()
    out: list[str | dict] = []
    rows = zip(frames.offset.tolist(), frames.cap_len.tolist(), frames.linktype.tolist(), frames.wire_len.tolist())
    for offset, cap, linktype, wire in rows:
        if offset < 0 or cap < 0 or offset + cap > len(buf):
            out.append("bad_frame_bounds")
            continue
        converted = as_ethernet(linktype, buf[offset : offset + cap], wire)
        row = converted if isinstance(converted, str) else reference_decode(converted[0])
        out.append(row if isinstance(row, str) else row | {"wire_len": converted[1]})
    return out


def check_parsed(frames: FrameBatch, packets: PacketBatch, stats: DecodeStats) -> None:
    """``packets`` and ``stats`` (fresh for this call) are what parse_frames made of ``frames``."""
    expect(stats.decoded + stats.total_skipped == len(frames), "parser: decoded + skipped != frames",
           f"{stats.decoded} + {stats.total_skipped} != {len(frames)}")
    expect(len(packets) == stats.decoded, "parser: packets != decoded", f"{len(packets)} != {stats.decoded}")
    expect(all(is_named_reason(r, PARSER_REASONS) for r in stats.skipped), "parser: unnamed skip reason",
           dict(stats.skipped))
    check_packet_contract(packets)
    reference = reference_batch(frames)
    want_reasons = Counter(r for r in reference if isinstance(r, str))
    expect(want_reasons == stats.skipped, "parser: skip reasons differ from the reference",
           f"{dict(stats.skipped)} != {dict(want_reasons)}")
    rows = [i for i, r in enumerate(reference) if not isinstance(r, str)]
    expect(packets.index.tolist() == frames.index[rows].tolist(), "parser: decoded rows differ from the reference")
    expect(packets.ts.tolist() == frames.ts[rows].tolist(), "parser: ts not carried over from the frame")
    expect(packets.wire_len.tolist() == [reference[i]["wire_len"] for i in rows], "parser: wire_len differs")
    for name in PACKET_COLUMNS:
        got = getattr(packets, name).tolist()
        want = [reference[i][name] for i in rows]
        if got != want:
            bad = next(k for k in range(len(got)) if got[k] != want[k])
            raise InvariantError(f"parser: column {name} differs from the reference",
                                 f"frame {int(frames.index[rows[bad]])}: {got[bad]} != {want[bad]}")


def check_packet_contract(p: PacketBatch) -> None:
    """Values the PacketBatch field comments allow, whatever the input (independent of the reference)."""
    is_ip = (p.l3 == L3_IPV4) | (p.l3 == L3_IPV6)
    ip4, arp_rows = p.l3 == L3_IPV4, p.l3 == L3_ARP
    numbered, icmp = p.port_kind == PORT_NUMBER, p.port_kind == PORT_ICMP
    tcp_rows = numbered & (p.proto == 6)
    ip6 = (p.l3 == L3_IPV6) & (p.ip_len > 40)  # payload length 0 (a jumbogram) is measured by the capture
    checks = {
        "l3 out of range": np.isin(p.l3, (L3_OTHER, L3_IPV4, L3_IPV6, L3_ARP)),
        "port_kind out of range": np.isin(p.port_kind, (PORT_NONE, PORT_NUMBER, PORT_ARP, PORT_ICMP)),
        "port out of range": (p.sport >= -1) & (p.sport <= 65535) & (p.dport >= -1) & (p.dport <= 65535),
        "ports without PORT_NUMBER": ((p.sport >= 0) == numbered) & ((p.dport >= 0) == numbered),
        "PORT_NUMBER on a non-TCP/UDP packet": ~numbered | (is_ip & np.isin(p.proto, (6, 17))),
        "PORT_ARP and L3_ARP disagree": (p.port_kind == PORT_ARP) == arp_rows,
        "PORT_ICMP on a non-ICMPv4 packet": ~icmp | (ip4 & (p.proto == 1)),
        "vlan out of range": (p.vlan >= -1) & (p.vlan <= 4095),
        "IP fields on a non-IP packet": is_ip | ((p.proto == 0) & ~p.frag & (p.ip_len == 0) & (p.payload_len == 0)),
        "df on a non-IPv4 packet": ~p.df | ip4,
        "ports on a non-first fragment": ~(p.frag & numbered),
        "high address word on a non-IPv6 packet": ((p.src_ip_hi == 0) & (p.dst_ip_hi == 0)) | (p.l3 == L3_IPV6),
        "IPv4 address not IPv4-mapped": ~(ip4 | arp_rows) | ((p.src_ip_lo >> np.uint64(32)) == 0xFFFF),
        "MAC wider than 48 bits": (p.src_mac < 2**48) & (p.dst_mac < 2**48),
        "TCP fields on a non-TCP packet": tcp_rows | ((p.tcp_hdr_len == 0) & (p.tcp_flags == 0)),
        "tcp_hdr_len not 0..60 in words": (p.tcp_hdr_len % 4 == 0) & (p.tcp_hdr_len <= 60),
        "negative payload_len": p.payload_len >= 0,
        "IPv4 lengths": ~ip4 | ((p.ip_len <= 65535) & (p.payload_len <= p.ip_len - 20)),
        "IPv6 lengths": ~ip6 | ((p.ip_len <= 65535 + 40) & (p.payload_len <= p.ip_len - 40)),
    }
    for name, ok in checks.items():
        expect(ok.all(), f"contract: {name}", lambda ok=ok: f"first bad packet index {int(p.index[~ok][0])}")
    expect((np.diff(p.index) > 0).all(), "contract: packet indexes not increasing")


# --- Reading and checking a capture ------------------------------------------------------------------------


@contextmanager
def chunk_size(size: int | None) -> Iterator[None]:
    """Read in chunks of ``size`` bytes (None: the module default) while the block runs."""
    saved = capture_file.CHUNK_SIZE
    capture_file.CHUNK_SIZE = size or saved
    try:
        yield
    finally:
        capture_file.CHUNK_SIZE = saved


@dataclass
class Reading:
    """Everything the reader delivered for one file, flattened, and what it counted."""

    rejected: str | None  # the CaptureFormatError message, when the file was refused
    delivered: list[tuple[int, float, int, bytes]]  # (index, ts, wire_len, frame)
    stats: DecodeStats
    batches: list[FrameBatch]


class ReaderError(Exception):
    """An exception other than CaptureFormatError escaped read_capture, or any exception escaped iteration."""


def read_file(path: Path, batch_size: int = 65536, chunk: int | None = None) -> Reading:
    stats = DecodeStats()
    with chunk_size(chunk):
        try:
            batches_iter = read_capture(path, batch_size=batch_size, stats=stats)
        except CaptureFormatError as exc:
            return Reading(str(exc), [], stats, [])
        except Exception as exc:
            raise ReaderError(f"read_capture() raised {type(exc).__name__}: {exc}") from exc
        try:
            batches = list(batches_iter)
        except Exception as exc:
            raise ReaderError(f"iterating the reader raised {type(exc).__name__}: {exc}") from exc
    delivered = []
    for b in batches:
        expect(len(b) > 0, "reader: an empty batch was yielded")
        expect(len(b.index) == len(b.ts) == len(b.wire_len) == len(b.cap_len) == len(b.offset) == len(b.linktype),
               "reader: batch columns of different lengths")
        expect(len(b) <= batch_size and np.isin(b.linktype, list(SUPPORTED_LINKTYPES)).all(),
               "reader: batch too large or of a link type the parser does not read")
        inside = (b.offset >= 0) & (b.cap_len >= 0) & (b.offset + b.cap_len <= len(b.buf))
        expect(inside.all(), "reader: frame outside buf")
        expect((b.cap_len <= b.wire_len).all() and (b.cap_len <= MAX_FRAME_LEN).all(), "reader: cap_len too large")
        expect(np.isfinite(b.ts).all(), "reader: non-finite timestamp")
        delivered += [(int(b.index[i]), float(b.ts[i]), int(b.wire_len[i]), b.frame(i)) for i in range(len(b))]
    return Reading(None, delivered, stats, batches)


def header_usable(data: bytes) -> bool:
    """Whether read_capture must accept the file (its documented CaptureFormatError cases, from the bytes)."""
    if data[:4] in PCAP_MAGIC_BYTES:
        return len(data) >= 24
    return data[:4] == SHB_BYTES and data[8:12] in BYTE_ORDER_BYTES


def check_reading(capture: Capture | None, data: bytes, reading: Reading) -> None:
    """The reader's result for ``data`` against the model (when there is one) and the general invariants."""
    expect((reading.rejected is None) == header_usable(data), "reader: CaptureFormatError iff the header is unusable",
           lambda: f"usable {header_usable(data)}, refused: {reading.rejected}")
    skipped = reading.stats.skipped
    expect(all(is_named_reason(r, READER_REASONS) for r in skipped), "reader: unnamed skip reason", dict(skipped))
    indexes = [d[0] for d in reading.delivered]
    expect(all(a < b for a, b in itertools.pairwise(indexes)), "reader: record indexes not increasing")
    if indexes:  # every index below the last delivered one was delivered or counted
        missing = indexes[-1] + 1 - len(indexes)
        expect(missing <= reading.stats.total_skipped, "reader: records neither delivered nor counted",
               lambda: f"{missing} missing before index {indexes[-1]}, {dict(skipped)} counted")
    if capture is None or reading.rejected is not None:
        return
    if capture.exact:
        want = [(i, o) for i, o in enumerate(o for o in capture.outcomes if o.record)]
        want_delivered = [(i, o.ts, o.wire, o.frame) for i, o in want if o.reason is None]
        expect(reading.delivered == want_delivered, "reader: delivered records differ from the model",
               lambda: _first_difference(reading.delivered, want_delivered))
        want_skipped = Counter(o.reason for o in capture.outcomes if o.reason)
        expect(skipped == want_skipped, "reader: skip counts differ from the model",
               f"{dict(skipped)} != {dict(want_skipped)}")
        return
    prefix = [o for o in capture.outcomes if o.end <= capture.trusted_until]
    records = [o for o in prefix if o.record]
    want_delivered = [(i, o.ts, o.wire, o.frame) for i, o in enumerate(records) if o.reason is None]
    got = [d for d in reading.delivered if d[0] < len(records)]
    expect(got == want_delivered, "reader: undamaged prefix delivered differently",
           lambda: _first_difference(got, want_delivered))
    for reason, count in Counter(o.reason for o in prefix if o.reason).items():
        expect(skipped[reason] >= count, "reader: undamaged prefix counted differently",
               f"{count} x {reason} expected, {skipped[reason]} counted")


def _first_difference(got: list, want: list) -> str:
    for k, (a, b) in enumerate(zip(got, want)):
        if a != b:
            return f"record {k}: (index, ts, wire) {a[:3]} frame {a[3][:16].hex()}, want {b[:3]} {b[3][:16].hex()}"
    return f"delivered {len(got)} records, want {len(want)}"


@dataclass
class CaptureResult:
    reading: Reading
    parser_stats: DecodeStats
    frames: int


def check_capture(path: Path, capture: Capture | None, rng: random.Random | None = None) -> CaptureResult:
    """Read ``path`` (holding ``capture.data``), check the reading, re-read it in small chunks, parse every batch.

    ``capture`` may be None (a corpus file without a model): the general invariants still apply.
    """
    data = path.read_bytes()
    rng = rng or random.Random(len(data))
    batch_size = rng.choice((65536, 65536, rng.randrange(1, 64)))
    reading = read_file(path, batch_size)
    check_reading(capture, data, reading)
    small = read_file(path, batch_size, chunk=rng.choice((12, 16, 37, 64, 100, 512, 4096)))
    expect(small.delivered == reading.delivered and small.stats.skipped == reading.stats.skipped,
           "reader: small read chunks change the result", lambda: f"counted {dict(small.stats.skipped)} vs "
           f"{dict(reading.stats.skipped)}, {len(small.delivered)} vs {len(reading.delivered)} delivered")
    parser_stats, frames = DecodeStats(), 0
    for batch in reading.batches:
        stats = DecodeStats()
        packets = parse_checked(batch, stats)
        check_parsed(batch, packets, stats)
        parser_stats.merge(stats)
        frames += len(batch)
    return CaptureResult(reading, parser_stats, frames)


class ParserError(Exception):
    """An exception escaped parse_frames."""


def parse_checked(frames: FrameBatch, stats: DecodeStats) -> PacketBatch:
    try:
        return parse_frames(frames, stats)
    except Exception as exc:
        raise ParserError(f"parse_frames raised {type(exc).__name__}: {exc}") from exc
