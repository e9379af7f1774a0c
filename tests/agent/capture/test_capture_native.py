"""The compiled capture kernels (agent/native/capture.c) against the Python/numpy reader and parser.

Every case runs twice, once with the library compiled here from the checkout's sources (so never a stale
build) and once with the kernels switched off (IOTGUARD_NATIVE=off), and requires the same FrameBatch
arrays, the same PacketBatch arrays (values and dtypes) and the same DecodeStats: on every real capture, on
the fuzz corpus, on generated damaged captures (lab/capture_fuzz.py), on hand-made truncated and corrupt
files, on every link type the reader supports, and on frame batches with impossible bounds.
"""

from __future__ import annotations

import random
import struct
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest

from agent import native
from agent.capture import pcap as capture_file
from agent.capture.headers import ETHERNET, IPV4, VLAN_TAG
from agent.capture.packets import SUPPORTED_LINKTYPES, DecodeStats, FrameBatch, PacketBatch
from agent.capture.parse import _read, parse_frames
from agent.capture.pcap import MAX_FRAME_LEN, PCAP_RECORD_HEADER_LEN, CaptureFormatError, read_capture, write_pcap
from lab import SHARED_DATA, TEST_DATA
from lab.capture_fuzz import frame_batch, random_capture, random_frame
from lab.link_layers import from_ethernet, pcap_bytes, pcapng_bytes
from lab.native_build import use_library
from tests.agent.capture.test_linktypes import random_record

REAL = sorted(p.name for p in (SHARED_DATA / "real").glob("*.pcap*")) if (SHARED_DATA / "real").is_dir() else []
CORPUS = sorted(p for p in (TEST_DATA / "fuzz_corpus").iterdir() if p.suffix in (".pcap", ".pcapng", ".frame"))
KERNELS = ("iotguard_pcap_records", "iotguard_read_header_fields")


@pytest.fixture
def both(native_library, monkeypatch):
    """``both(run)``: (what ``run()`` returns with the compiled kernels, what it returns without them)."""

    def run_both(run):
        use_library(monkeypatch, native_library)
        assert all(native.function(name, []) is not None for name in KERNELS), "the kernels were not built"
        compiled = run()
        use_library(monkeypatch, None)
        assert native.load() is None
        python = run()
        return compiled, python

    yield run_both
    native.load.cache_clear()


# --- comparing -------------------------------------------------------------------------------------------


def assert_same_arrays(got, want, what: str) -> None:
    for f in fields(want):
        a, b = getattr(got, f.name), getattr(want, f.name)
        assert a.dtype == b.dtype, f"{what}.{f.name}: dtype {a.dtype} != {b.dtype}"
        assert a.shape == b.shape and np.array_equal(a, b), f"{what}.{f.name} differs"


def read_and_parse(path: Path, batch_size: int = 65536):
    """Everything the reader and the parser make of a file: (frame batches, packet batches, stats) or the error."""
    stats = DecodeStats()
    try:
        frames = list(read_capture(path, batch_size=batch_size, stats=stats))
    except CaptureFormatError as exc:
        return str(exc)
    read_stats = DecodeStats()
    read_stats.merge(stats)
    packets = [parse_frames(batch, stats) for batch in frames]
    return frames, packets, read_stats, stats


def assert_same_result(got, want) -> None:
    if isinstance(want, str) or isinstance(got, str):
        assert got == want
        return
    (frames_c, packets_c, read_c, stats_c), (frames_py, packets_py, read_py, stats_py) = got, want
    assert read_c == read_py, "the reader's DecodeStats differ"
    assert stats_c == stats_py, "the parser's DecodeStats differ"
    assert len(frames_c) == len(frames_py) and len(packets_c) == len(packets_py)
    for k, (a, b) in enumerate(zip(frames_c, frames_py)):
        assert_same_arrays(a, b, f"FrameBatch {k}")
        assert [a.frame(i) for i in range(len(a))] == [b.frame(i) for i in range(len(b))]
    for k, (a, b) in enumerate(zip(packets_c, packets_py)):
        assert_same_arrays(a, b, f"PacketBatch {k}")


def compare_file(both, path: Path, batch_size: int = 65536):
    got, want = both(lambda: read_and_parse(path, batch_size))
    assert_same_result(got, want)
    return want


def compare_frames(both, frames: FrameBatch) -> tuple[PacketBatch, DecodeStats]:
    def run():
        stats = DecodeStats()
        return parse_frames(frames, stats), stats

    (got, got_stats), (want, want_stats) = both(run)
    assert got_stats == want_stats
    assert_same_arrays(got, want, "PacketBatch")
    return want, want_stats


# --- real captures, the fuzz corpus, generated damaged captures ---------------------------------------------


@pytest.mark.parametrize("name", REAL or ["(none)"])
@pytest.mark.parametrize("chunk", [None, 4096, 333])
def test_real_captures(both, shared_data, monkeypatch, name, chunk):
    if not REAL:
        pytest.skip("no real captures")
    if chunk:  # records straddle the reads: the tail of one chunk joins the next
        monkeypatch.setattr(capture_file, "CHUNK_SIZE", chunk)
    frames, packets, _, stats = compare_file(both, shared_data / "real" / name)
    assert sum(map(len, packets)) == stats.decoded > 0


@pytest.mark.parametrize("path", CORPUS, ids=[p.name for p in CORPUS])
def test_fuzz_corpus(both, path):
    if path.suffix == ".frame":
        compare_frames(both, FrameBatch.from_frames([path.read_bytes()], [0.0]))
    else:
        compare_file(both, path)


@pytest.mark.parametrize("seed", range(40))
def test_generated_damaged_captures(both, tmp_path, monkeypatch, seed):
    rng = random.Random(seed)
    monkeypatch.setattr(capture_file, "CHUNK_SIZE", rng.choice((64, 1000, 1 << 20)))
    for k in range(8):
        capture = random_capture(rng)
        path = tmp_path / f"{k}{capture.suffix}"
        path.write_bytes(capture.data)
        compare_file(both, path, batch_size=rng.choice((1, 7, 65536)))


# --- hand-made truncated and corrupt classic pcap -----------------------------------------------------------


def _frames(n: int, seed: int = 0) -> list[bytes]:
    rng = random.Random(seed)
    return [random_frame(rng, damage=False).data for _ in range(n)]


def _pcap(endian: str = "<", linktype: int = 1, records=(), nanosecond: bool = False, snaplen: int = 262144) -> bytes:
    magic = 0xA1B23C4D if nanosecond else 0xA1B2C3D4
    out = [struct.pack(endian + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)]
    for sec, frac, data, cap, wire in records:
        out.append(struct.pack(endian + "IIII", sec, frac, cap, wire) + data)
    return b"".join(out)


def _records(frames: list[bytes], seed: int = 1) -> list[tuple]:
    rng = random.Random(seed)
    return [(rng.randrange(2**32), rng.randrange(10**6), f, len(f), len(f) + rng.choice((0, 0, 4))) for f in frames]


CORRUPT_CASES = {
    "intact": lambda recs: _pcap(records=recs),
    "big_endian": lambda recs: _pcap(">", records=recs),
    "nanoseconds": lambda recs: _pcap(records=recs, nanosecond=True),
    "header_only": lambda recs: _pcap(),
    "truncated_in_last_payload": lambda recs: _pcap(records=recs)[:-5],
    "truncated_in_last_header": lambda recs: _pcap(records=recs) + b"\x01" * 9,
    # A captured length beyond MAX_FRAME_LEN: the reader stops at that record (corrupt_record).
    "absurd_length_in_the_middle": lambda recs: _pcap(
        records=recs[:30] + [(1, 2, b"x" * 64, MAX_FRAME_LEN + 1, 70)] + recs[30:]),
    "absurd_length_last_header": lambda recs: _pcap(records=recs) + struct.pack("<IIII", 1, 2, 2**32 - 1, 5),
    "absurd_length_fits_the_file": lambda recs: _pcap(
        records=recs[:5] + [(1, 2, b"y" * (MAX_FRAME_LEN + 8), MAX_FRAME_LEN + 8, MAX_FRAME_LEN + 8)] + recs[5:]),
    "longest_frame": lambda recs: _pcap(records=recs[:3] + [(1, 2, b"z" * MAX_FRAME_LEN, MAX_FRAME_LEN,
                                                             MAX_FRAME_LEN)] + recs[3:]),
    # Captured longer than the snapshot length, or than the original: bad_record_length, reading goes on.
    "beyond_snaplen": lambda recs: _pcap(records=recs, snaplen=100),
    "captured_beyond_wire": lambda recs: _pcap(records=[(s, f, d, c, c - 1) for s, f, d, c, _ in recs]),
    "zero_length_records": lambda recs: _pcap(records=[(1, 1, b"", 0, 0)] * 7 + recs[:4] + [(2, 2, b"", 0, 60)]),
    "unsupported_linktype": lambda recs: _pcap(linktype=105, records=recs),
    "linktype_with_fcs_bits": lambda recs: _pcap(linktype=0x10000001, records=recs),
    "garbage_after_header": lambda recs: _pcap() + random.Random(5).randbytes(3000),
}


@pytest.mark.parametrize("case", sorted(CORRUPT_CASES))
@pytest.mark.parametrize("chunk", [None, 100, 1000])
def test_truncated_and_corrupt_pcap(both, tmp_path, monkeypatch, case, chunk):
    if chunk:
        monkeypatch.setattr(capture_file, "CHUNK_SIZE", chunk)
    path = tmp_path / f"{case}.pcap"
    path.write_bytes(CORRUPT_CASES[case](_records(_frames(80))))
    result = compare_file(both, path)
    _, _, read_stats, _ = result
    if "absurd" in case:
        assert read_stats.skipped["corrupt_record"] == 1
    if "truncated" in case:
        assert read_stats.skipped["truncated_record"] == 1


def test_not_a_capture(both, tmp_path):
    for k, data in enumerate((b"\xd4\xc3\xb2\xa1" + b"\0" * 10, b"nope" * 10)):
        path = tmp_path / f"{k}.pcap"
        path.write_bytes(data)
        got, want = both(lambda: read_and_parse(path))
        assert isinstance(want, str) and got == want


@pytest.mark.parametrize("seed", range(6))
def test_record_walk_on_random_bytes(both, seed):
    """The compiled walk and the Python loop agree on bytes that are mostly garbage (small random lengths)."""
    rng = random.Random(seed)
    parts = []
    for _ in range(300):
        cap = rng.choice((0, 1, 14, 60, rng.randrange(200), rng.randrange(2**32)))
        parts.append(struct.pack("<IIII", rng.randrange(2**32), rng.randrange(2**32), cap, rng.randrange(2**32)))
        parts.append(rng.randbytes(rng.randrange(220)))
    data = b"".join(parts)
    for endian in "<>":
        for cut in (len(data), len(data) // 3, 17, 15, 0):
            chunk = data[:cut]
            buf = np.frombuffer(chunk, dtype=np.uint8)
            (starts_c, fields_c, end_c), (starts_py, fields_py, end_py) = both(
                lambda: capture_file._walk_records(chunk, buf, endian))
            assert end_c == end_py and np.array_equal(starts_c, starts_py) and starts_c.dtype == starts_py.dtype
            assert fields_c.keys() == fields_py.keys()
            for name in fields_py:
                assert fields_c[name].dtype == fields_py[name].dtype == np.int64
                assert np.array_equal(fields_c[name], fields_py[name]), name
            assert end_py <= len(chunk) and all(s + PCAP_RECORD_HEADER_LEN <= end_py for s in starts_py.tolist())


# --- every link type ----------------------------------------------------------------------------------------


def _linktype_records(linktype: int, seed: int, n: int = 150) -> list[tuple[float, bytes, int]]:
    rng = random.Random(seed)
    out = []
    while len(out) < n:
        frame = random_frame(rng).data  # sometimes damaged
        if len(frame) < ETHERNET.size:
            continue
        converted = from_ethernet(linktype, frame, len(frame) + rng.choice((0, 0, 7)))
        if converted is not None:
            record, wire = converted
            if rng.random() < 0.1:  # cut anywhere, the link header included
                record = record[: rng.randrange(len(record) + 1)]
            out.append((rng.uniform(0, 2e9), record, max(wire, len(record))))
    return out


@pytest.mark.parametrize("linktype", sorted(SUPPORTED_LINKTYPES))
@pytest.mark.parametrize("endian", "<>")
def test_every_link_type_pcap(both, tmp_path, linktype, endian):
    path = tmp_path / f"{linktype}.pcap"
    path.write_bytes(pcap_bytes(linktype, _linktype_records(linktype, linktype), endian))
    _, packets, _, stats = compare_file(both, path)
    assert stats.decoded > 0


def test_every_link_type_in_one_pcapng(both, tmp_path):
    linktypes = sorted(SUPPORTED_LINKTYPES) + [105]
    records = [(k, ts, record, wire) for k, linktype in enumerate(linktypes)
               for ts, record, wire in _linktype_records(linktype if linktype != 105 else 1, k, 60)]
    random.Random(3).shuffle(records)
    path = tmp_path / "mixed.pcapng"
    path.write_bytes(pcapng_bytes(linktypes, records))
    _, _, _, stats = compare_file(both, path, batch_size=97)
    assert stats.skipped["unsupported_linktype:105"] == 60


@pytest.mark.parametrize("seed", range(10))
def test_mixed_link_types_in_one_batch(both, seed):
    """Random (sometimes damaged or truncated) records of every link type and an unsupported one, one batch."""
    rng = random.Random(seed)
    records = [random_record(rng) for _ in range(400)]
    batch = FrameBatch.from_frames([r for _, r, _ in records], [float(i) for i in range(len(records))],
                                   wire_len=[w for _, _, w in records])
    batch.linktype[:] = [lt for lt, _, _ in records]
    packets, stats = compare_frames(both, batch)
    assert stats.total_skipped > 0 and len(packets) > 0


# --- the parser on hostile frame batches ---------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(15))
def test_damaged_frames_and_impossible_bounds(both, seed):
    batch, _ = frame_batch(random.Random(seed), 1500)
    compare_frames(both, batch)


def test_frames_written_and_read_back(both, tmp_path):
    frames = _frames(500, seed=9)
    path = tmp_path / "w.pcap"
    write_pcap(path, [(1.5e9 + i / 7, f) for i, f in enumerate(frames)], nanosecond=True, big_endian=True)
    _, packets, _, stats = compare_file(both, path)
    assert stats.decoded + stats.total_skipped == 500 and stats.decoded > 450


def test_field_reader_out_of_bounds_behaves_as_numpy(both):
    """A start the caller should never pass: the compiled reader refuses it and numpy's gather runs, as before."""
    buf = np.frombuffer(bytes(range(1, 31)), dtype=np.uint8)
    present = np.array([True, False, True])
    # Negative: numpy indexes from the end of the buffer; the compiled path must give the same values.
    got, want = both(lambda: _read(VLAN_TAG, buf, np.array([-3, 5, 2], dtype=np.int64), present))
    assert got.keys() == want.keys() and all(np.array_equal(got[k], want[k]) for k in want)
    # Past the end: numpy raises IndexError, and so must the compiled path (it falls back).
    for start in ([0, 0, 27], [0, 0, 30], [0, 0, 2**40]):
        def read(start=start):
            try:
                return _read(IPV4, buf, np.array(start, dtype=np.int64), present)
            except IndexError:
                return "IndexError"
        got, want = both(read)
        assert got == want == "IndexError"


def test_field_reader_values(both):
    rng = np.random.default_rng(4)
    buf = rng.integers(0, 256, 5000, dtype=np.uint8)
    start = rng.integers(0, 5000 - IPV4.size, 800).astype(np.int64)
    present = rng.random(800) < 0.7
    for header in (ETHERNET, IPV4, VLAN_TAG):
        got, want = both(lambda: _read(header, buf, start, present))
        for name in want:
            assert got[name].dtype == want[name].dtype and np.array_equal(got[name], want[name]), name
        assert got["dst" if header is ETHERNET else header.spans[0][0]][~present].sum() == 0
