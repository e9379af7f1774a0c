"""Fuzzing regressions: replay tests/data/fuzz_corpus, pin the bugs the fuzzer found, and a short property test.

The generators and invariant checks are those of benchmarks/fuzz_capture.py (they live in
lab/capture_fuzz.py and lab/capture_oracle.py).  Every file in the corpus is replayed through the reader and the parser with the
general invariants (CaptureFormatError only for an unusable header, nothing escaping, every record index
delivered or counted, the same result in tiny read chunks, every frame decoded exactly as the scalar
reference decoder says); the files listed in EXPECTED also have their exact outcome pinned.
"""

from __future__ import annotations

import random
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.capture.packets import DecodeStats, FrameBatch
from agent.capture.parse import parse_frames
from lab import TEST_DATA
from lab.capture_bytes import epb, idb, shb
from lab.capture_fuzz import frame_batch, random_capture
from lab.capture_oracle import check_capture, check_parsed, read_file
from lab.frame_bytes import ethernet, ipv4, udp

CORPUS = TEST_DATA / "fuzz_corpus"
CORPUS_FILES = sorted(p for p in CORPUS.iterdir() if p.suffix in (".pcap", ".pcapng", ".frame"))

# Found by the fuzzer (seed search over small generated files): a pcapng section header whose type and
# byte-order magic are intact but whose block length is corrupt.  The reader switched to the new byte
# order but kept the previous section's interfaces, so the new section's packets were read with the old
# link types and timestamp units.  (index, ts, wire_len, link type) of the delivered frames, and the skip
# counts, as the generator's model predicted them and as checked by hand against a dump of each file's blocks:
EXPECTED = {
    # New section: IDB 0 raw IP (101), IDB 1 Ethernet (tsresol 0: seconds), IDB 2 Ethernet (microseconds).
    # A packet block on interface 2 is delivered in microseconds; a simple packet block (interface 0) is raw IP.
    # Before the fix both were delivered as Ethernet, the first with a timestamp a million times too large.
    "pcapng-damaged-section-header-keeps-old-interfaces-1.pcapng": (
        [(0, 427486391295423095 / 1e6, 1360, 1), (1, 427486391295423095 / 1e6, 42, 101)], {"corrupt_block": 1}),
    # New section: one IDB of link type 0; its packet was delivered as Ethernet through the old interface 0.
    "pcapng-damaged-section-header-keeps-old-interfaces-2.pcapng": (
        [(0, 0.0, 17, 1), (2, 311397492.252997, 58, 101), (3, 8780749367310796800.0, 66, 0)],
        {"unknown_interface": 1, "corrupt_block": 1}),
    # New section: IDB 0 link type 228, IDB 1 Ethernet; the Ethernet packet was dropped as link type 0.
    "pcapng-damaged-section-header-keeps-old-interfaces-3.pcapng": (
        [(0, -8.258203318996458e+17, 142, 228), (1, -8.258203318996458e+17, 170, 228),
         (2, 952027839941858925 / 1e6, 73, 1)], {"corrupt_block": 1}),
}


def test_pinned_corpus_files_exist():
    """Files the benchmark adds later (found-*) are replayed with the general invariants only."""
    assert set(EXPECTED) <= {p.name for p in CORPUS_FILES}


@pytest.mark.parametrize("path", CORPUS_FILES, ids=[p.name for p in CORPUS_FILES])
def test_corpus_replays(path):
    if path.suffix == ".frame":  # one raw Ethernet frame
        batch = FrameBatch.from_frames([path.read_bytes()], [0.0])
        stats = DecodeStats()
        check_parsed(batch, parse_frames(batch, stats), stats)
        return
    result = check_capture(path, None, random.Random(0))
    if path.name in EXPECTED:
        delivered, skipped = EXPECTED[path.name]
        linktypes = [int(lt) for b in result.reading.batches for lt in b.linktype]
        assert [(*d[:3], lt) for d, lt in zip(result.reading.delivered, linktypes)] == delivered
        assert dict(result.reading.stats.skipped) == skipped


def test_damaged_section_header_still_starts_a_new_section(tmp_path):
    """The corpus bug, built by hand: after a section header with a corrupt length, the new section's
    interface table is used, not the old one."""
    frame = ethernet(0x0800, ipv4("10.0.0.1", "10.0.0.2", 17, udp(1000, 53, b"x" * 18)))
    second = bytearray(shb(">"))
    struct.pack_into(">I", second, 4, len(second) + 2)  # not a multiple of 4: the block is corrupt
    data = (shb("<") + idb("<", linktype=105, tsresol=9) + epb("<", 0, 5 * 10**9, frame)  # 802.11, nanoseconds
            + bytes(second) + idb(">", linktype=1) + epb(">", 0, 1_600_000_000_250_000, frame))  # Ethernet, us
    path = tmp_path / "two_sections.pcapng"
    path.write_bytes(data)
    reading = read_file(path)
    assert [d[:3] for d in reading.delivered] == [(1, 1_600_000_000.25, len(frame))]
    assert dict(reading.stats.skipped) == {"unsupported_linktype:105": 1, "corrupt_block": 1}


# Seeds rather than st.randoms(): the generators draw thousands of values per input, which makes
# hypothesis-controlled randomness several times slower and overruns its buffer on large files.
@pytest.mark.slow
@settings(max_examples=1000, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**64 - 1))
def test_generated_inputs_keep_the_invariants(tmp_path_factory, seed):
    """The benchmark's generators and checks on a thousand small inputs: a capture file (pcap or pcapng,
    possibly damaged) checked against its model, and a batch of damaged frames against the reference."""
    rng = random.Random(seed)
    capture = random_capture(rng, records=rng.randrange(1, 25))
    path = tmp_path_factory.getbasetemp() / f"generated{capture.suffix}"
    path.write_bytes(capture.data)
    check_capture(path, capture, rng)
    batch, _ = frame_batch(rng, 32)
    stats = DecodeStats()
    check_parsed(batch, parse_frames(batch, stats), stats)
