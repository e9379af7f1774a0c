"""agent.capture.pcap: pcap/pcapng reading (crafted and real files), malformed input, write_pcap.

Capture files are built byte by byte with struct (lab/capture_bytes.py), independently of the
code under test; real captures are compared with dpkt.
"""

from __future__ import annotations

import logging
import struct

import dpkt
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.capture import pcap as capture_file
from agent.capture.packets import DecodeStats, FrameBatch
from agent.capture.parse import parse_frames
from agent.capture.pcap import CaptureFormatError, read_capture, write_pcap
from lab.capture_bytes import block, epb, idb, pcap_bytes, shb, spb

# --- Builders ---------------------------------------------------------------------------------


def ether_frame(i: int, size: int = 60) -> bytes:
    """An Ethernet/IPv4/UDP frame of ``size`` bytes whose contents depend on ``i``."""
    payload = bytes((i + k) % 256 for k in range(max(size - 42, 0)))
    udp = struct.pack("!HHHH", 1000 + i, 53, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), i, 0, 64, 17, 0,
                     bytes([10, 0, 0, i % 250 + 1]), bytes([10, 0, 1, 1])) + udp
    return (bytes([2, 0, 0, 0, 0, 1]) + bytes([2, 0, 0, 0, 0, 2]) + b"\x08\x00" + ip)[:size]


def read_all(path, **kw) -> tuple[list[FrameBatch], DecodeStats]:
    stats = DecodeStats()
    batches = list(read_capture(path, stats=stats, **kw))
    return batches, stats


def flatten(batches: list[FrameBatch]) -> dict[str, list]:
    out = {"index": [], "ts": [], "wire_len": [], "cap_len": [], "frame": []}
    for b in batches:
        assert len(b.index) == len(b.ts) == len(b.wire_len) == len(b.cap_len) == len(b.offset) == len(b.linktype)
        assert (b.linktype == 1).all()
        out["index"] += b.index.tolist()
        out["ts"] += b.ts.tolist()
        out["wire_len"] += b.wire_len.tolist()
        out["cap_len"] += b.cap_len.tolist()
        out["frame"] += [b.frame(i) for i in range(len(b))]
    return out


# --- Classic pcap -----------------------------------------------------------------------------


@pytest.mark.parametrize("endian", ["<", ">"])
@pytest.mark.parametrize("nano", [False, True])
def test_pcap_byte_orders_and_resolutions(tmp_path, endian, nano):
    units = 1e9 if nano else 1e6
    frames = [ether_frame(i, 60 + 7 * i) for i in range(5)]
    records = [(1_600_000_000 + i, 123_456 * (i + 1), f, len(f) + 3 * i, None) for i, f in enumerate(frames)]
    path = tmp_path / "a.pcap"
    path.write_bytes(pcap_bytes(records, endian, nano))
    batches, stats = read_all(path)
    got = flatten(batches)
    assert got["index"] == [0, 1, 2, 3, 4]
    assert got["frame"] == frames
    assert got["cap_len"] == [len(f) for f in frames]
    assert got["wire_len"] == [len(f) + 3 * i for i, f in enumerate(frames)]
    assert got["ts"] == [sec + frac / units for sec, frac, *_ in records]
    assert stats.total_skipped == 0


@pytest.mark.parametrize("big_endian", [False, True])
@pytest.mark.parametrize("nanosecond", [False, True])
def test_write_pcap_round_trip(tmp_path, big_endian, nanosecond):
    frames = [ether_frame(i, 42 + i) for i in range(30)]
    ts = [1_566_411_407.841604 + 0.013 * i for i in range(30)]
    wire = [len(f) + (i % 3) for i, f in enumerate(frames)]
    path = tmp_path / "w.pcap"
    n = write_pcap(path, FrameBatch.from_frames(frames, ts, wire_len=wire), nanosecond=nanosecond, big_endian=big_endian)
    assert n == 30
    got = flatten(read_all(path)[0])
    assert got["frame"] == frames and got["wire_len"] == wire
    assert np.allclose(got["ts"], ts, rtol=0, atol=1e-6)
    if not nanosecond:
        # An independent reader sees the same records.
        with open(path, "rb") as fh:
            ref = list(dpkt.pcap.Reader(fh))
        assert [bytes(b) for _, b in ref] == frames
        assert [float(t) for t, _ in ref] == got["ts"]


def test_write_pcap_accepts_tuples_and_batches(tmp_path):
    frames = [ether_frame(i) for i in range(4)]
    items = [(1.5, frames[0]), (2.25, frames[1], 1000), FrameBatch.from_frames(frames[2:], [3.0, 4.0])]
    path = tmp_path / "t.pcap"
    assert write_pcap(path, items) == 4
    got = flatten(read_all(path)[0])
    assert got["frame"] == frames
    assert got["ts"] == [1.5, 2.25, 3.0, 4.0]
    assert got["wire_len"] == [60, 1000, 60, 60]


def test_batches_split_and_chunk_boundaries(tmp_path, monkeypatch):
    """Records straddling read chunks and batch limits come out whole and in order."""
    frames = [ether_frame(i, 14 + (i * 37) % 300) for i in range(40)]
    records = [(100 + i, i, f, None, None) for i, f in enumerate(frames)]
    path = tmp_path / "c.pcap"
    path.write_bytes(pcap_bytes(records))
    monkeypatch.setattr(capture_file, "CHUNK_SIZE", 97)  # smaller than many records
    batches, stats = read_all(path, batch_size=3)
    assert all(1 <= len(b) <= 3 for b in batches)
    got = flatten(batches)
    assert got["frame"] == frames and got["index"] == list(range(40))
    assert stats.total_skipped == 0


# --- pcapng -----------------------------------------------------------------------------------


def multi_interface_pcapng() -> tuple[bytes, list[tuple[int, float, bytes, int]]]:
    """Two sections (little then big endian); several interfaces; EPB, SPB, ignored and unknown blocks.

    Returns the file and the expected (index, ts, frame, wire_len) of the Ethernet records.
    """
    le, be = "<", ">"
    f = [ether_frame(i, 60 + i) for i in range(8)]
    data = b"".join([
        shb(le),
        idb(le, linktype=1, snaplen=0),  # 0: Ethernet, microseconds by default
        idb(le, linktype=105, snaplen=0, tsresol=9),  # 1: IEEE 802.11 (unsupported), nanoseconds
        idb(le, linktype=1, snaplen=64, tsresol=0x80 | 20, tsoffset=100),  # 2: Ethernet, 2**-20 s, +100 s
        epb(le, 0, 1_600_000_000_250_000, f[0]),  # record 0
        epb(le, 1, 1_600_000_001_000_000_000, f[1]),  # record 1: unsupported link type
        block(le, 5, b"\0" * 16),  # interface statistics: skipped silently
        epb(le, 2, (7 << 20) + (1 << 19), f[2], wire=900),  # record 2: 7.5 s + 100
        spb(le, f[3]),  # record 3: interface 0, previous timestamp
        block(le, 0x0000_0777, b"mystery"),  # unknown block: counted, skipped
        epb(le, 7, 5, f[4]),  # record 4: no interface 7
        shb(be),  # a new section: interfaces start again
        idb(be, linktype=1, snaplen=0, tsresol=3),  # 0: milliseconds
        epb(be, 0, 1_700_000_000_123, f[5]),  # record 5
        epb(be, 0, 1_700_000_000_124, f[6], wire=1514),  # record 6
    ])
    expected = [
        (0, 1_600_000_000_250_000 / 1e6, f[0], len(f[0])),
        (2, 100 + ((7 << 20) + (1 << 19)) / 2**20, f[2], 900),
        (3, 100 + ((7 << 20) + (1 << 19)) / 2**20, f[3], len(f[3])),
        (5, 1_700_000_000_123 / 1e3, f[5], len(f[5])),
        (6, 1_700_000_000_124 / 1e3, f[6], 1514),
    ]
    return data, expected


@pytest.mark.parametrize("chunk", [None, 50])
def test_pcapng_interfaces_sections_and_blocks(tmp_path, monkeypatch, chunk):
    if chunk:
        monkeypatch.setattr(capture_file, "CHUNK_SIZE", chunk)
    data, expected = multi_interface_pcapng()
    path = tmp_path / "m.pcapng"
    path.write_bytes(data)
    batches, stats = read_all(path)
    got = flatten(batches)
    assert got["index"] == [e[0] for e in expected]
    assert got["ts"] == [e[1] for e in expected]
    assert got["frame"] == [e[2] for e in expected]
    assert got["wire_len"] == [e[3] for e in expected]
    assert dict(stats.skipped) == {"unsupported_linktype:105": 1, "unknown_block": 1, "unknown_interface": 1}


def test_pcapng_simple_packet_block_uses_interface_snaplen(tmp_path):
    le = "<"
    frame = ether_frame(1, 100)
    data = shb(le) + idb(le, snaplen=64) + spb(le, frame[:64], wire=100) + spb(le, frame[:40], wire=40)
    path = tmp_path / "s.pcapng"
    path.write_bytes(data)
    got = flatten(read_all(path)[0])
    assert got["cap_len"] == [64, 40] and got["wire_len"] == [100, 40]
    assert got["frame"] == [frame[:64], frame[:40]]
    assert got["ts"] == [0.0, 0.0]  # no timestamp before them


# --- Real captures against dpkt -----------------------------------------------------------------


def independent_wire_lengths(raw: bytes) -> list[int]:
    """Original lengths straight from the record headers (little-endian files only, as the real ones are)."""
    out = []
    if raw[:4] == b"\x0a\x0d\x0d\x0a":
        pos = 0
        while pos + 12 <= len(raw):
            block_type, length = struct.unpack_from("<II", raw, pos)
            if block_type == 6:
                out.append(struct.unpack_from("<I", raw, pos + 24)[0])
            pos += length
    else:
        pos = 24
        while pos + 16 <= len(raw):
            cap, wire = struct.unpack_from("<II", raw, pos + 8)
            out.append(wire)
            pos += 16 + cap
    return out


def test_real_captures_match_dpkt(shared_data):
    files = sorted((shared_data / "real").glob("*.pcap"))
    assert len(files) >= 3
    kinds = set()
    for path in files:
        raw = path.read_bytes()
        kinds.add(raw[:4] == b"\x0a\x0d\x0d\x0a")
        with open(path, "rb") as fh:
            reader = dpkt.pcapng.Reader(fh) if raw[:4] == b"\x0a\x0d\x0d\x0a" else dpkt.pcap.Reader(fh)
            ref = list(reader)
        batches, stats = read_all(path)
        got = flatten(batches)
        assert stats.total_skipped == 0, (path.name, stats.summary())
        assert got["index"] == list(range(len(ref))), path.name
        assert got["ts"] == [float(t) for t, _ in ref], path.name
        assert got["frame"] == [bytes(b) for _, b in ref], path.name
        assert got["wire_len"] == independent_wire_lengths(raw), path.name
    assert kinds == {True, False}  # both formats were exercised


# --- Malformed input ---------------------------------------------------------------------------


def five_records(overrides: dict | None = None) -> list:
    records = [[1_000 + i, i, ether_frame(i, 60 + i), None, None] for i in range(5)]
    for i, (field, value) in (overrides or {}).items():
        records[i][{"wire": 3, "cap": 4}[field]] = value
    return [tuple(r) for r in records]


def test_truncated_last_record(tmp_path):
    data = pcap_bytes(five_records())
    for cut in (10, 30):  # inside the last record's data, inside its header
        path = tmp_path / f"t{cut}.pcap"
        path.write_bytes(data[: len(data) - (64 - cut if cut > 16 else 80 - cut)])
        batches, stats = read_all(path)
        assert flatten(batches)["index"] == [0, 1, 2, 3]
        assert dict(stats.skipped) == {"truncated_record": 1}


def test_absurd_record_length_stops_reading(tmp_path):
    path = tmp_path / "a.pcap"
    path.write_bytes(pcap_bytes(five_records({2: ("cap", 0x7FFF_0000)})))
    batches, stats = read_all(path)
    assert flatten(batches)["index"] == [0, 1]
    assert dict(stats.skipped) == {"corrupt_record": 1}


def test_absurd_length_in_last_record_header(tmp_path):
    records = five_records()
    data = pcap_bytes(records) + struct.pack("<IIII", 1, 2, 1 << 30, 60) + b"x" * 8
    path = tmp_path / "b.pcap"
    path.write_bytes(data)
    batches, stats = read_all(path)
    assert len(flatten(batches)["index"]) == 5
    assert dict(stats.skipped) == {"corrupt_record": 1}


def test_record_longer_than_wire_is_skipped_and_longer_than_snaplen_read_whole(tmp_path, caplog):
    """A writer's snaplen may be below what it writes (dpkt's default 1500 for 1514-byte frames): Wireshark reads
    such records whole, and so do we; a captured length above the wire length is damage."""
    records = five_records({1: ("wire", 10)})  # cap_len 61 > wire_len 10
    records[3] = (5, 0, ether_frame(3, 150), None, None)  # 150 > snaplen 100
    path = tmp_path / "s.pcap"
    path.write_bytes(pcap_bytes(records, snaplen=100))
    with caplog.at_level(logging.INFO, logger="agent.capture.pcap"):
        batches, stats = read_all(path)
    assert flatten(batches)["index"] == [0, 2, 3, 4]
    assert flatten(batches)["cap_len"][2] == len(ether_frame(3, 150))
    assert dict(stats.skipped) == {"bad_record_length": 1}
    assert "1 records longer than the file's snapshot length 100, read whole" in caplog.text


def test_unsupported_linktype_is_counted(tmp_path):
    path = tmp_path / "wifi.pcap"
    path.write_bytes(pcap_bytes(five_records(), linktype=105))  # IEEE 802.11
    batches, stats = read_all(path)
    assert batches == []
    assert dict(stats.skipped) == {"unsupported_linktype:105": 5}


def test_unusual_pcap_version_is_still_read(tmp_path, caplog):
    path = tmp_path / "v.pcap"
    path.write_bytes(pcap_bytes(five_records(), version=(3, 0)))
    batches, stats = read_all(path)
    assert len(flatten(batches)["index"]) == 5 and stats.total_skipped == 0
    assert "unusual pcap version" in caplog.text


def pcapng_records(n: int = 5, epb_kw: dict | None = None) -> list[bytes]:
    le = "<"
    return [shb(le), idb(le)] + [epb(le, 0, 10_000_000 * (i + 1), ether_frame(i), **(epb_kw or {}).get(i, {}))
                                 for i in range(n)]


@pytest.mark.parametrize("corruption", [
    {"length": 0x1235},  # not a multiple of 4
    {"length": 12},  # below the minimum for an EPB
    {"trailer": 0x40},  # trailer disagrees with the header
    {"length": 0x00FF_FFF0},  # huge but plausible: resolved at end of file
])
def test_pcapng_corrupt_block_length_resyncs(tmp_path, corruption):
    blocks = pcapng_records(epb_kw={2: corruption})
    path = tmp_path / "c.pcapng"
    path.write_bytes(b"".join(blocks))
    batches, stats = read_all(path)
    got = flatten(batches)
    assert got["index"] == [0, 1, 3, 4]  # record 2 lost, still counted
    assert got["frame"] == [ether_frame(i) for i in (0, 1, 3, 4)]
    assert dict(stats.skipped) == {"corrupt_block": 1}


def test_pcapng_truncated_last_block(tmp_path):
    data = b"".join(pcapng_records())
    path = tmp_path / "t.pcapng"
    path.write_bytes(data[:-20])
    batches, stats = read_all(path)
    assert flatten(batches)["index"] == [0, 1, 2, 3]
    assert dict(stats.skipped) == {"truncated_record": 1}


def test_pcapng_captured_length_beyond_block(tmp_path):
    blocks = pcapng_records()
    bad = bytearray(blocks[3])  # record 1
    struct.pack_into("<I", bad, 20, 500)  # cap_len 500 in a 92-byte block
    blocks[3] = bytes(bad)
    path = tmp_path / "b.pcapng"
    path.write_bytes(b"".join(blocks))
    batches, stats = read_all(path)
    assert flatten(batches)["index"] == [0, 2, 3, 4]
    assert dict(stats.skipped) == {"corrupt_block": 1}


@pytest.mark.parametrize("content, why", [
    (b"", "empty file"),
    (b"hello, this is a text file\n" * 3, "not a pcap or pcapng file"),
    (b"\xd4\xc3\xb2\xa1\x02\x00\x04\x00", "truncated pcap file header"),
    (b"\x0a\x0d\x0d\x0a\x1c\x00\x00\x00\x00\x00\x00\x00" + b"\0" * 16, "bad byte-order magic"),
    (b"\x0a\x0d", "too short"),
])
def test_not_a_capture(tmp_path, content, why):
    path = tmp_path / "not_a_capture.bin"
    path.write_bytes(content)
    with pytest.raises(CaptureFormatError, match=why) as info:
        read_capture(path)  # raised by the call itself, before iteration
    assert "not_a_capture.bin" in str(info.value)


def test_unreadable_paths(tmp_path):
    with pytest.raises(CaptureFormatError, match="missing.pcap: cannot read"):
        read_capture(tmp_path / "missing.pcap")
    with pytest.raises(CaptureFormatError, match="cannot read"):
        read_capture(tmp_path)  # a directory


# --- Property: mutated captures never crash the reader or the parser ---------------------------------

BASE_PCAP = pcap_bytes([(1_000 + i, i * 1000, ether_frame(i, 40 + 9 * i), None, None) for i in range(8)])
BASE_PCAPNG = b"".join(
    [shb("<"), idb("<", tsresol=9), idb("<", linktype=113)]
    + [epb("<", i % 2, 10**9 * i, ether_frame(i, 40 + 9 * i)) for i in range(6)]
    + [spb("<", ether_frame(9, 50)), block("<", 5, b"\0" * 8)]
)


@pytest.mark.slow
@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    base=st.sampled_from([BASE_PCAP, BASE_PCAPNG]),
    mutations=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=6),
    cut=st.one_of(st.none(), st.integers(0, 10**6)),
)
def test_mutated_captures_never_crash(tmp_path_factory, base, mutations, cut):
    data = bytearray(base)
    for pos, value in mutations:
        data[pos % len(data)] = value
    if cut is not None:
        data = data[: cut % (len(data) + 1)]
    path = tmp_path_factory.getbasetemp() / "mutated.cap"
    path.write_bytes(bytes(data))
    stats = DecodeStats()
    try:
        batches = read_capture(path, stats=stats)
    except CaptureFormatError:
        return
    last_index = -1
    for frames in batches:  # nothing may raise from here on
        assert len(frames) > 0
        assert (np.diff(frames.index) > 0).all() and frames.index[0] > last_index
        last_index = int(frames.index[-1])
        assert (frames.cap_len <= frames.wire_len).all()
        assert (frames.offset + frames.cap_len <= len(frames.buf)).all()
        packets = parse_frames(frames, stats)
        assert len(packets) <= len(frames)


def test_frame_batches_split_into_views_of_one_buffer():
    from agent.capture.packets import FrameBatch

    frames = [bytes([k]) * (60 + k) for k in range(10)]
    batch = FrameBatch.from_frames(frames, ts=np.arange(10.0))
    parts = list(batch.split(4))
    assert [len(p) for p in parts] == [4, 4, 2]
    assert all(p.buf is batch.buf for p in parts)
    assert [p.frame(i) for p in parts for i in range(len(p))] == frames
    assert np.concatenate([p.index for p in parts]).tolist() == list(range(10))
