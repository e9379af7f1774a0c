"""Every link type the agent reads gives the packets, features and labels of the same traffic on Ethernet.

Captures in Linux cooked v1/v2, raw IP, BSD null and OpenBSD loopback are made from Ethernet captures
(tests/link_layers.py: strip the Ethernet header, prepend the other one, adjust the lengths) and run
through the whole pipeline next to the Ethernet capture of the same frames.  What the other link type
cannot know, by design (agent/capture/parse.py):

* cooked (SLL/SLL2): the destination MAC, except for broadcasts; the only features keyed on it are the
  HpHp columns of ARP (srcMAC -> dstMAC), so those differ for unicast ARP and nothing else does;
* raw IP and null/loopback: both MACs; the MI_dir columns are then keyed (0, srcIP), which makes them
  equal to the H columns, and they differ from Ethernet only where one IP was seen with several MACs.

Files are read in one chunk (CHUNK_SIZE) so both captures are cut into the same batches: the batch
engine's last bits depend on where batches start, and that is not what these tests are about.
"""

from __future__ import annotations

import random
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import dpkt
import numpy as np
import pytest

from agent.capture import pcap as capture_file
from agent.capture.packets import L3_ARP, DecodeStats, FrameBatch, PacketBatch
from agent.capture.parse import parse_frames
from agent.capture.pcap import read_capture
from agent.features.columns import COLUMNS
from agent.pipeline import features_from_capture
from lab import REPO
from lab.capture_fuzz import random_frame
from lab.capture_oracle import PACKET_COLUMNS, reference_decode
from lab.frame_bytes import ethernet, ipv4, ipv6, tcp, udp
from lab.link_layers import (
    AF_INET,
    AF_INET6_BSD,
    AF_INET6_FREEBSD,
    ARPHRD_LOOPBACK,
    BROADCAST,
    LINKTYPE_ETHERNET,
    LINKTYPE_IPV4,
    LINKTYPE_IPV6,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    LINKTYPE_LOOP,
    LINKTYPE_NULL,
    LINKTYPE_RAW,
    PACKET_BROADCAST,
    PACKET_HOST,
    PACKET_OUTGOING,
    as_ethernet,
    from_ethernet,
    pcap_bytes,
    pcapng_bytes,
    sll2_header,
    sll_header,
)

COOKED_TYPES = (LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2)
NO_MAC_TYPES = (LINKTYPE_RAW, LINKTYPE_IPV4, LINKTYPE_IPV6, LINKTYPE_NULL, LINKTYPE_LOOP)
GROUP = np.array([c.split("_L")[0] for c in COLUMNS])
HPHP, MI_DIR, H = GROUP == "HpHp", GROUP == "MI_dir", GROUP == "H"
# (link type, byte order of the null family, AF_INET6 value): null is written in both byte orders.
VARIANTS = {
    "sll": (LINKTYPE_LINUX_SLL, "<", 30), "sll2": (LINKTYPE_LINUX_SLL2, "<", 30), "raw": (LINKTYPE_RAW, "<", 30),
    "ipv4": (LINKTYPE_IPV4, "<", 30), "ipv6": (LINKTYPE_IPV6, "<", 30), "null-le": (LINKTYPE_NULL, "<", AF_INET6_BSD),
    "null-be": (LINKTYPE_NULL, ">", AF_INET6_FREEBSD), "loop": (LINKTYPE_LOOP, ">", 30),
}

Records = list[tuple[float, bytes, int]]  # (ts, Ethernet frame, original length)


# --- Fixtures and helpers ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def synth_records() -> Records:
    from convert.synth import OptionSpace, synthesise

    frames = synthesise("mixed", 20, 1, options=OptionSpace(defaults=True)).frames
    return [(float(frames.ts[i]), frames.frame(i), int(frames.wire_len[i])) for i in range(len(frames))]


@pytest.fixture(scope="module")
def real_records(request) -> Records:
    data = request.getfixturevalue("shared_data")
    with open(data / "real" / "ndpi_coap_mqtt.pcap", "rb") as fh:
        return [(ts, bytes(buf), len(buf)) for ts, buf in dpkt.pcap.Reader(fh)]


@pytest.fixture(scope="module")
def classifier():
    from agent.detect.model import Classifier, installed_runtimes, load_bundle

    if not installed_runtimes():
        pytest.skip("no TFLite runtime installed")
    return Classifier(load_bundle())


@pytest.fixture(autouse=True)
def one_chunk(monkeypatch):
    monkeypatch.setattr(capture_file, "CHUNK_SIZE", 1 << 30)


def senders(records: Records) -> set[bytes]:
    """The capturing host's MACs: only a sender's capture holds frames shorter than Ethernet's 60 bytes."""
    return {frame[6:12] for _, frame, wire in records if wire < 60}


def convert(records: Records, variant: str) -> tuple[Records, Records]:
    """(the Ethernet records the link type can carry, the same records in that link type)."""
    linktype, order, af6 = VARIANTS[variant]
    us = senders(records)
    eth, other = [], []
    for ts, frame, wire in records:
        converted = from_ethernet(linktype, frame, wire, us, null_order=order, af_inet6=af6)
        if converted is not None:
            eth.append((ts, frame, wire))
            other.append((ts, *converted))
    return eth, other


@dataclass
class Pair:
    """An Ethernet capture and the same frames in another link type, with their packets and features."""

    linktype: int
    us: set[bytes]  # the capturing host's MACs
    count: int  # records in the other link type
    eth_path: Path | None = None
    other_path: Path | None = None
    eth: tuple | None = None  # (PacketBatch, features, DecodeStats)
    other: tuple | None = None


@pytest.fixture(scope="module")
def pairs(tmp_path_factory, request):
    """Pairs made once per module: the feature runs are what takes time, and Ethernet references are shared."""
    made: dict[tuple[str, str], Pair] = {}
    references: dict[tuple[str, int], tuple[Path, tuple]] = {}

    def get(name: str, variant: str) -> Pair:
        if (name, variant) in made:
            return made[name, variant]
        records = request.getfixturevalue(f"{name}_records")
        eth_records, other_records = convert(records, variant)
        pair = made[name, variant] = Pair(VARIANTS[variant][0], senders(records), len(other_records))
        if other_records:
            directory = tmp_path_factory.mktemp("pairs")
            key = (name, hash(tuple(ts for ts, _, _ in eth_records)))  # the same frames, the same reference
            if key not in references:
                path = write(directory, f"{name}-eth", LINKTYPE_ETHERNET, eth_records)
                references[key] = (path, features(path))
            pair.eth_path, pair.eth = references[key]
            pair.other_path = write(directory, f"{name}-{variant}", pair.linktype, other_records)
            pair.other = features(pair.other_path)
        return pair

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(capture_file, "CHUNK_SIZE", 1 << 30)
        yield get


def write(tmp_path: Path, name: str, linktype: int, records: Records) -> Path:
    path = tmp_path / f"{name}.pcap"
    path.write_bytes(pcap_bytes(linktype, records))
    return path


def features(path: Path) -> tuple[PacketBatch, np.ndarray, DecodeStats]:
    stats = DecodeStats()
    batches = list(features_from_capture(path, stats))
    assert batches, f"nothing decoded from {path}: {stats.summary()}"
    return PacketBatch.concat([b.packets for b in batches]), np.concatenate([b.features for b in batches]), stats


def known_dst(eth_packets: PacketBatch, us: set[bytes]) -> np.ndarray:
    """Rows whose destination MAC a cooked capture tells: broadcasts received (packet type 1)."""
    ours = np.isin(eth_packets.src_mac, [int.from_bytes(mac, "big") for mac in us])
    return (eth_packets.dst_mac == int.from_bytes(BROADCAST, "big")) & ~ours


def unknown_cells(linktype: int, eth_packets: PacketBatch, us: set[bytes]) -> np.ndarray:
    """(rows, columns) mask of the features a capture of ``linktype`` cannot know (module docstring)."""
    mask = np.zeros((len(eth_packets), len(COLUMNS)), dtype=bool)
    if linktype in COOKED_TYPES:
        arp_to_unknown = (eth_packets.l3 == L3_ARP) & ~known_dst(eth_packets, us)
        mask[np.ix_(arp_to_unknown, HPHP)] = True
    elif linktype in NO_MAC_TYPES:
        mask[:, MI_DIR] = True
    return mask


def assert_same_traffic(linktype: int, eth: tuple, other: tuple, us: set[bytes]) -> np.ndarray:
    """Packets and features of ``other`` equal ``eth``'s except where the link type cannot know; returns the
    rows whose features differ."""
    (pe, fe, se), (po, fo, so) = eth, other
    assert so.total_skipped == 0 and se.total_skipped == 0, so.summary()
    for name in ("index", "ts", "wire_len") + PACKET_COLUMNS:
        got, want = getattr(po, name), getattr(pe, name)
        if name == "src_mac" and linktype in NO_MAC_TYPES or name == "dst_mac":
            continue
        if name in ("src_ip_lo", "dst_ip_lo"):  # frames with neither IP nor ARP are keyed by MACs
            keep = pe.l3 != 0
            got, want = got[keep], want[keep]
        np.testing.assert_array_equal(got, want, err_msg=name)
    if linktype in COOKED_TYPES:
        np.testing.assert_array_equal(po.dst_mac, np.where(known_dst(pe, us), pe.dst_mac, 0))
    else:
        assert not po.src_mac.any() and not po.dst_mac.any()
    unknown = unknown_cells(linktype, pe, us)
    assert np.array_equal(np.where(unknown, 0.0, fe), np.where(unknown, 0.0, fo)), "features differ from Ethernet"
    if linktype in NO_MAC_TYPES:  # no MAC: MI_dir is keyed by the source IP alone, as H is
        np.testing.assert_array_equal(fo[:, MI_DIR], fo[:, H])
    return np.flatnonzero((fe != fo).any(axis=1))


# --- The same features and labels as on Ethernet ---------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_synthesised_capture_same_features(pairs, variant):
    pair = pairs("synth", variant)
    if pair.linktype == LINKTYPE_IPV6:
        assert pair.count == 0  # the synthesiser writes IPv4 only: nothing to compare (see the real capture)
        return
    assert pair.count > 70_000
    differ = assert_same_traffic(pair.linktype, pair.eth, pair.other, pair.us)
    assert len(differ) <= 10  # the unicast ARP replies, or the few IPs seen behind several MACs


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_real_capture_same_features(pairs, variant):
    pair = pairs("real", variant)
    assert pair.count > 0
    assert_same_traffic(pair.linktype, pair.eth, pair.other, pair.us)


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["sll", "raw"])
def test_same_labels_and_verdicts(pairs, classifier, variant):
    from agent.detect.decide import DecisionLayer
    from agent.pipeline import detect_capture

    pair = pairs("synth", variant)
    differ = assert_same_traffic(pair.linktype, pair.eth, pair.other, pair.us)
    a = detect_capture(pair.eth_path, classifier, DecisionLayer())
    b = detect_capture(pair.other_path, classifier, DecisionLayer())
    same = np.ones(len(a.labels), dtype=bool)
    same[differ] = False
    np.testing.assert_array_equal(a.labels[same], b.labels[same])
    np.testing.assert_array_equal(a.final_labels()[same], b.final_labels()[same])
    assert {"mirai_syn", "mirai_udp", "mirai_ack"} <= {v.label for v in b.verdicts}

    def who(v):  # without MACs, no verdict on what one Ethernet sender puts on the wire (decide's "links")
        mac = (v.src_mac,) if variant == "sll" else ()
        return (v.kind, v.label, v.src_ip, v.victim_ip, v.packets, v.decided_at) + mac

    want = [who(v) for v in a.verdicts if variant == "sll" or not (v.kind == "spoofed" and v.victim_ip is None)]
    assert [who(v) for v in b.verdicts] == want


@pytest.mark.slow
@pytest.mark.parametrize("second", [LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2, LINKTYPE_RAW])
def test_pcapng_with_two_link_types(tmp_path, synth_records, pairs, second):
    """Odd records on a second interface of another link type; the file reads as the Ethernet capture."""
    us = senders(synth_records)
    rows = []
    for i, (ts, frame, wire) in enumerate(synth_records):
        converted = from_ethernet(second, frame, wire, us) if i % 2 else None
        rows.append((0, ts, frame, wire) if converted is None else (1, ts, *converted))
    path = tmp_path / "two.pcapng"
    path.write_bytes(pcapng_bytes([LINKTYPE_ETHERNET, second], rows))
    seen = set()
    for batch in read_capture(path):
        seen |= set(np.unique(batch.linktype).tolist())
    assert seen == {LINKTYPE_ETHERNET, second}

    eth = pairs("synth", "sll").eth  # the whole capture on Ethernet
    mixed = features(path)
    pe, po = eth[0], mixed[0]
    on_second = np.array([iface == 1 for iface, *_ in rows])[pe.index]
    # An ARP stream (srcMAC -> dstMAC) or a MI_dir stream (srcMAC, srcIP) split between the interfaces differs
    # on both: for the packets of the second interface the header does not tell the destination (cooked)
    # or any MAC (raw).
    unknown = unknown_cells(second, pe, us) & on_second[:, None]
    if second in COOKED_TYPES:
        unknown[np.ix_(pe.l3 == L3_ARP, HPHP)] = True
    else:
        unknown[:, MI_DIR] = True
    assert mixed[2].total_skipped == 0
    np.testing.assert_array_equal(po.index, pe.index)
    np.testing.assert_array_equal(po.wire_len, pe.wire_len)
    assert np.array_equal(np.where(unknown, 0.0, eth[1]), np.where(unknown, 0.0, mixed[1]))


# --- The link-layer rules, record by record ----------------------------------------------------------

SRC, DST = bytes.fromhex("020000000001"), bytes.fromhex("020000000002")
SMALL_IP = ipv4("10.0.0.1", "10.0.0.2", 17, udp(1000, 53))  # 28 bytes: a 42-byte frame before padding


def parse_one(linktype: int, record: bytes, wire: int | None = None) -> tuple[PacketBatch, DecodeStats]:
    batch = FrameBatch.from_frames([record], [1.0], wire_len=None if wire is None else [wire], linktype=linktype)
    stats = DecodeStats()
    return parse_frames(batch, stats), stats


@pytest.mark.parametrize("linktype,header", [
    (LINKTYPE_LINUX_SLL, lambda kind, arphrd, addr: sll_header(kind, 0x0800, addr, arphrd)),
    (LINKTYPE_LINUX_SLL2, lambda kind, arphrd, addr: sll2_header(kind, 0x0800, addr, arphrd)),
])
@pytest.mark.parametrize("kind,arphrd,addr,wire,src,dst", [
    (PACKET_HOST, 1, SRC, 60, SRC, bytes(6)),  # received on Ethernet: padded to 60
    (3, 1, SRC, 60, SRC, bytes(6)),  # to another host (promiscuous): received, padded
    (PACKET_BROADCAST, 1, SRC, 60, SRC, BROADCAST),  # broadcast: the destination is known
    (PACKET_OUTGOING, 1, SRC, 42, SRC, bytes(6)),  # sent by us: not padded, as in a sender's capture
    (PACKET_HOST, ARPHRD_LOOPBACK, bytes(6), 42, bytes(6), bytes(6)),  # loopback: no Ethernet, no padding
    (PACKET_HOST, 1, b"", 60, bytes(6), bytes(6)),  # no sender address
    (PACKET_HOST, 1, SRC + b"\1\2", 60, bytes(6), bytes(6)),  # an 8-byte address is no MAC
])
def test_cooked_macs_and_padding(linktype, header, kind, arphrd, addr, wire, src, dst):
    p, stats = parse_one(linktype, header(kind, arphrd, addr) + SMALL_IP)
    assert stats.decoded == 1, stats.summary()
    assert p.wire_len.tolist() == [wire]
    assert (int(p.src_mac[0]), int(p.dst_mac[0])) == (int.from_bytes(src, "big"), int.from_bytes(dst, "big"))
    assert (p.sport[0], p.dport[0], p.ip_len[0]) == (1000, 53, 28)


def test_cooked_long_packet_and_vlan():
    """Wire length = original - cooked header + 14, and a VLAN tag inside the payload counts as payload."""
    packet = ipv4("10.0.0.1", "10.0.0.2", 6, tcp(40000, 80, payload=b"x" * 100))
    tagged = struct.pack(">HH", 0x0005, 0x0800) + packet  # VLAN 5, then IPv4
    p, stats = parse_one(LINKTYPE_LINUX_SLL, sll_header(PACKET_HOST, 0x8100, SRC) + tagged, wire=16 + len(tagged) + 50)
    assert stats.decoded == 1 and p.vlan.tolist() == [5] and p.dport.tolist() == [80]
    assert p.wire_len.tolist() == [14 + len(tagged) + 50]
    eth, _ = parse_one(LINKTYPE_ETHERNET, ethernet(0x0800, packet, tags=((0x8100, 5),)))
    assert eth.wire_len.tolist() == [14 + len(tagged)]


@pytest.mark.parametrize("linktype,header", [
    (LINKTYPE_RAW, b""), (LINKTYPE_IPV4, b""), (LINKTYPE_NULL, struct.pack("<I", AF_INET)),
    (LINKTYPE_NULL, struct.pack(">I", AF_INET)), (LINKTYPE_LOOP, struct.pack(">I", AF_INET)),
])
def test_no_mac_link_types_are_not_padded(linktype, header):
    p, stats = parse_one(linktype, header + SMALL_IP)
    assert stats.decoded == 1 and p.wire_len.tolist() == [42]
    assert p.src_mac.tolist() == [0] and p.dst_mac.tolist() == [0] and p.sport.tolist() == [1000]


@pytest.mark.parametrize("linktype,header", [
    (LINKTYPE_RAW, b""), (LINKTYPE_IPV6, b""), (LINKTYPE_NULL, struct.pack("<I", 30)),
    (LINKTYPE_NULL, struct.pack(">I", 28)), (LINKTYPE_LOOP, struct.pack(">I", 24)),
    (LINKTYPE_LINUX_SLL2, sll2_header(PACKET_OUTGOING, 0x86DD, SRC)),
])
def test_ipv6_on_every_link_type(linktype, header):
    packet = ipv6("2001:db8::1", "2001:db8::2", 17, udp(5683, 5683, b"coap"))
    p, stats = parse_one(linktype, header + packet)
    assert stats.decoded == 1 and p.l3.tolist() == [2] and p.wire_len.tolist() == [14 + len(packet)]


def read_records(tmp_path: Path, linktype: int, records: list[bytes]) -> tuple[int, dict]:
    """(packets decoded, skip counts) of a pcap of these records."""
    from agent.pipeline import packets_from_capture

    path = write(tmp_path, f"linktype{linktype}", linktype, [(1.0 + i, r, len(r)) for i, r in enumerate(records)])
    stats = DecodeStats()
    return sum(len(p) for p in packets_from_capture(path, stats)), dict(stats.skipped)


GOOD = ipv4("10.0.0.1", "10.0.0.2", 17, udp(1000, 53, b"q" * 30))


def test_cooked_records_that_cannot_be_read_are_counted_by_reason(tmp_path):
    cooked = [
        sll_header(PACKET_HOST, 0x0800, SRC) + GOOD,
        sll_header(PACKET_HOST, 0x0800, b"", arphrd=65534) + GOOD,  # ARPHRD_NONE: a tun device
        sll_header(PACKET_HOST, 0x0800, b"", arphrd=65534) + GOOD,
        sll_header(PACKET_HOST, 0x000C, b"", arphrd=280) + b"\0" * 16,  # ARPHRD_CAN
        sll_header(PACKET_HOST, 0x0004, SRC) + b"\x42\x42\x03" + b"\0" * 40,  # an 802.2 LLC frame (STP)
        sll_header(PACKET_HOST, 0x0800, SRC)[:9],  # cut inside the header
        sll_header(PACKET_HOST, 0x0800, SRC) + GOOD[:12],  # cut inside the IP header
    ]
    assert read_records(tmp_path, LINKTYPE_LINUX_SLL, cooked) == (1, {
        "unsupported_arphrd:65534": 2, "unsupported_arphrd:280": 1, "unsupported_sll_protocol:0x0004": 1,
        "truncated_sll": 1, "truncated_ip": 1})
    assert read_records(tmp_path, LINKTYPE_LINUX_SLL2, [sll2_header(PACKET_HOST, 0x0800, SRC)[:19]]) == (
        0, {"truncated_sll2": 1})


def test_other_records_that_cannot_be_read_are_counted_by_reason(tmp_path):
    null = [struct.pack("<I", AF_INET) + GOOD, struct.pack("<I", 10) + GOOD,  # Linux's AF_INET6: not a BSD value
            struct.pack("<I", 7) + GOOD, b"\2\0", b"\xde\xad\xbe\xef" + GOOD]
    assert read_records(tmp_path, LINKTYPE_NULL, null) == (1, {
        "unsupported_address_family:10": 1, "unsupported_address_family:7": 1, "truncated_null": 1,
        "bad_address_family": 1})
    loop = [struct.pack(">I", AF_INET) + GOOD, struct.pack("<I", AF_INET) + GOOD]  # LOOP is big-endian only
    assert read_records(tmp_path, LINKTYPE_LOOP, loop) == (1, {"bad_address_family": 1})
    raw = [GOOD, b"\x55" + GOOD[1:], b""]  # IP version 5; an empty packet
    assert read_records(tmp_path, LINKTYPE_RAW, raw) == (1, {"bad_ip_version": 1, "truncated_ip": 1})
    assert read_records(tmp_path, LINKTYPE_IPV6, [GOOD]) == (0, {"bad_ip_version": 1})  # IPv4 on link type 229
    assert read_records(tmp_path, 105, [GOOD] * 3) == (0, {"unsupported_linktype:105": 3})  # IEEE 802.11


def test_written_headers_read_back_with_dpkt():
    """The converter's headers are what dpkt, an independent reader, finds in them."""
    frame = ethernet(0x0800, SMALL_IP)
    frame = DST + SRC + frame[12:]
    sll, _ = from_ethernet(LINKTYPE_LINUX_SLL, frame, len(frame), {SRC})
    d = dpkt.sll.SLL(sll)
    assert (d.type, d.hrd, d.hlen, d.hdr[:6], d.ethtype) == (PACKET_OUTGOING, 1, 6, SRC, 0x0800)
    assert isinstance(d.data, dpkt.ip.IP) and d.data.udp.dport == 53
    sll2, _ = from_ethernet(LINKTYPE_LINUX_SLL2, BROADCAST + SRC + frame[12:], len(frame))
    d = dpkt.sll2.SLL2(sll2)
    assert (d.ethtype, d.mbz, d.hrd, d.type, d.hlen, d.hdr[:6]) == (0x0800, 0, 1, PACKET_BROADCAST, 6, SRC)
    assert isinstance(d.data, dpkt.ip.IP)
    for order in "<>":
        null, _ = from_ethernet(LINKTYPE_NULL, frame, len(frame), null_order=order)
        d = dpkt.loopback.Loopback(null)
        assert d.family == AF_INET and isinstance(d.data, dpkt.ip.IP)


# --- The vectorised link layer against the scalar rule -----------------------------------------------


def random_record(rng: random.Random) -> tuple[int, bytes, int]:
    """(link type, record, original length): a random, possibly damaged frame behind a random header."""
    payload = random_frame(rng).data[14:]
    linktype = rng.choice((LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2, LINKTYPE_RAW, LINKTYPE_IPV4, LINKTYPE_IPV6,
                           LINKTYPE_NULL, LINKTYPE_LOOP, LINKTYPE_ETHERNET, 105))
    if linktype in COOKED_TYPES:
        build = sll_header if linktype == LINKTYPE_LINUX_SLL else sll2_header
        protocol = rng.choice((0x0800, 0x86DD, 0x0806, 0x8100, 0x88CC, 0x0004, 0x0001))
        header = build(rng.choice((0, 1, 2, 3, 4, 5, 7)), protocol, rng.randbytes(rng.choice((6, 6, 0, 8))),
                       rng.choice((1, 1, 1, 772, 65534, 280)))
    elif linktype in (LINKTYPE_NULL, LINKTYPE_LOOP):
        header = struct.pack(rng.choice("<>") + "I", rng.choice((2, 2, 24, 28, 30, 10, 7)))
    elif linktype == LINKTYPE_ETHERNET:
        header = rng.randbytes(12) + rng.choice((b"\x08\x00", b"\x86\xdd", b"\x81\x00"))
    else:
        header = b""
    record = header + payload
    if rng.random() < 0.15:
        record = record[: rng.randrange(len(record) + 1)]
    return linktype, record, len(record) + rng.choice((0, 0, 0, 4, 1000))


@pytest.mark.parametrize("seed", range(20))
def test_link_layer_matches_the_scalar_rule(seed):
    """A mixed batch of every link type decodes as tests/link_layers.as_ethernet says, row by row."""
    rng = random.Random(seed)
    records = [random_record(rng) for _ in range(200)]
    batch = FrameBatch.from_frames([r for _, r, _ in records], [float(i) for i in range(len(records))],
                                   wire_len=[w for _, _, w in records])
    batch.linktype[:] = [lt for lt, _, _ in records]
    stats = DecodeStats()
    packets = parse_frames(batch, stats)
    want_rows, want_reasons = [], {}
    for i, (linktype, record, wire) in enumerate(records):
        converted = as_ethernet(linktype, record, wire)
        row = reference_decode(converted[0]) if isinstance(converted, tuple) else converted
        if isinstance(row, str):
            want_reasons[row] = want_reasons.get(row, 0) + 1
        else:
            want_rows.append((i, converted[1], row))
    assert dict(stats.skipped) == want_reasons
    assert packets.index.tolist() == [i for i, _, _ in want_rows]
    assert packets.wire_len.tolist() == [w for _, w, _ in want_rows]
    for name in PACKET_COLUMNS:
        assert getattr(packets, name).tolist() == [row[name] for _, _, row in want_rows], name


# --- What the user sees ------------------------------------------------------------------------------


def run_agent(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agent", *args], cwd=REPO, capture_output=True, text=True, timeout=300)


def test_summary_line_names_every_reason():
    stats = DecodeStats()
    stats.add("unsupported_linktype:113", 568)
    stats.add("truncated_ip", 2)
    assert stats.summary() == "0 packets decoded, 570 records skipped: unsupported_linktype:113 568, truncated_ip 2"


def test_cli_reads_cooked_captures_and_prints_every_skip_reason(tmp_path, real_records):
    eth_records, sll_records = convert(real_records, "sll")
    sll_records.append((2e9, sll_header(PACKET_HOST, 0x0800, b"", arphrd=65534) + b"\x45" + bytes(19), 36))
    path = write(tmp_path, "any", LINKTYPE_LINUX_SLL, sll_records)
    done = run_agent("features", str(path), "-o", str(tmp_path / "f.csv"))
    assert done.returncode == 0, done.stderr
    assert f"{len(eth_records)} packets decoded, 1 records skipped: unsupported_arphrd:65534 1" in done.stderr
    assert len((tmp_path / "f.csv").read_text().splitlines()) == len(eth_records) + 1


def test_cli_detect_says_why_nothing_was_decoded(tmp_path):
    frame = ethernet(0x0800, SMALL_IP)
    path = write(tmp_path, "wifi", 105, [(1.0 + i, frame, len(frame)) for i in range(568)])
    done = run_agent("detect", str(path))
    assert done.returncode == 0, done.stderr
    assert "summary: 0 packets (568 skipped)" in done.stdout
    assert "0 packets decoded, 568 records skipped: unsupported_linktype:105 568" in done.stderr
