"""Random damaged capture files and frames, each with the model of what the reader must make of it.

Shared by benchmarks/fuzz_capture.py (a million inputs) and tests/agent/capture/test_fuzz_regressions.py
(a hypothesis property and the regression corpus), so both exercise exactly the same generators; the
checks they run on the results live in lab/capture_oracle.py.

Generation is structure-aware first: valid frames and files are built with the byte-level builders of
lab/frame_bytes.py and lab/capture_bytes.py, then single fields are set to awkward values (header
lengths, captured lengths, block lengths, interface ids, ...), and finally some inputs get plain byte
damage (bit flips, overwrites, truncation, splicing, insertion, deletion).  Every generator takes a
``random.Random``, so a seed reproduces a run (the hypothesis test draws the seeds).

For each generated capture the generator writes down what the reader must deliver or count, record by
record (``Capture.outcomes``).  Where byte damage (or a pcapng resync that could land on a false block)
makes the rest unpredictable, only the undamaged prefix is modelled exactly (``Capture.trusted_until``).
"""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass, field

from agent.capture.packets import SUPPORTED_LINKTYPES, FrameBatch
from agent.capture.pcap import BT_KNOWN, MAX_BLOCK_LEN, MAX_FRAME_LEN, MIN_BLOCK_LEN
from lab.capture_bytes import block, option, pad4, pcap_bytes, shb, spb
from lab.frame_bytes import (
    arp,
    ethernet,
    ext_ah,
    ext_fragment,
    ext_options,
    ext_routing,
    icmp_echo,
    ipv4,
    ipv6,
    lldp,
    tcp,
    udp,
)

# --- Frames ---------------------------------------------------------------------------------------------

ADDRS4 = ("10.0.0.1", "192.168.1.20", "0.0.0.0", "255.255.255.255", "198.51.100.7")
ADDRS6 = ("::1", "fe80::1", "2001:db8::1", "ff02::fb", "::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")
TPIDS = (0x8100, 0x88A8, 0x9100)
EXT_HOP, EXT_ROUTING, EXT_FRAGMENT, EXT_AH, EXT_DEST = 0, 43, 44, 51, 60
FRAME_KINDS = ("ipv4_tcp", "ipv4_udp", "ipv4_icmp", "ipv4_fragment", "ipv4_other", "ipv6", "arp", "other", "garbage")
FRAME_WEIGHTS = (6, 4, 2, 4, 1, 8, 2, 2, 1)
FIELD_VALUES = {"B": (0, 1, 0x0F, 0x40, 0x45, 0x4F, 0x60, 0xFF), "H": (0, 1, 8, 19, 20, 40, 0x0800, 0x0806, 0x86DD,
                                                                       0x8100, 0x88A8, 0xFFFF)}


@dataclass
class Frame:
    """A generated frame, the offsets of the fields worth damaging, and labels saying how it was made."""

    data: bytes
    fields: dict[str, tuple[int, str]] = field(default_factory=dict)  # name -> (offset, struct format)
    cuts: list[int] = field(default_factory=list)  # header boundaries: good places to truncate
    labels: list[str] = field(default_factory=list)


def _payload(rng: random.Random) -> bytes:
    size = rng.choice((0, 1, 7, 8, 19, 20, rng.randrange(64), rng.randrange(64), rng.randrange(1500)))
    return rng.randbytes(size)


def _transport(rng: random.Random, proto: int) -> bytes:
    if proto == 6:
        return tcp(rng.randrange(65536), rng.randrange(65536), seq=rng.getrandbits(32), ack=rng.getrandbits(32),
                   flags=rng.randrange(256), window=rng.randrange(65536), options=b"\x01" * 4 * rng.randrange(11),
                   payload=_payload(rng))
    if proto == 17:
        return udp(rng.randrange(65536), rng.randrange(65536), _payload(rng))
    if proto == 1:
        return icmp_echo(_payload(rng))
    return _payload(rng)


def _l4_fields(proto: int, l4: int) -> dict[str, tuple[int, str]]:
    if proto == 6:
        return {"tcp_data_offset": (l4 + 12, "B")}
    if proto == 17:
        return {"udp_len": (l4 + 4, "H")}
    return {}


def _ipv4(rng: random.Random, kind: str, l3: int) -> tuple[bytes, Frame]:
    proto = {"ipv4_tcp": 6, "ipv4_udp": 17, "ipv4_icmp": 1}.get(kind) or rng.choice((6, 17, 1, 2, 47, 51, 255))
    body = _transport(rng, proto)
    flags_fragment, labels = rng.choice((0, 0x4000)), []
    if kind == "ipv4_fragment":  # offsets in 8-byte units; "overlap" reuses a range an earlier fragment covered
        role = rng.choice(("first", "middle", "last", "overlap", "tiny_first"))
        offset = {"first": 0, "tiny_first": 0, "middle": rng.randrange(1, 8192), "last": rng.randrange(1, 8192),
                  "overlap": rng.randrange(1, 4)}[role]
        more = role in ("first", "tiny_first", "middle", "overlap")
        flags_fragment = (0x2000 if more else 0) | offset
        if role == "tiny_first":
            body = body[:8]  # the TCP/UDP header split across fragments
        elif offset:
            body = body[8 * rng.randrange(4):]
        labels.append(f"fragment:{role}")
    options = rng.choice((b"", b"", b"\x01" * 4, b"\x01" * 4 * rng.randrange(11)))
    packet = ipv4(rng.choice(ADDRS4), rng.choice(ADDRS4), proto, body, options=options, ttl=rng.randrange(256),
                  ident=rng.randrange(65536), flags_fragment=flags_fragment)
    l4 = l3 + 20 + len(options)
    fields = {"ipv4_version_ihl": (l3, "B"), "ipv4_total_len": (l3 + 2, "H"), "ipv4_flags_fragment": (l3 + 6, "H"),
              "ipv4_proto": (l3 + 9, "B"), **_l4_fields(proto, l4)}
    return packet, Frame(b"", fields, [l3 + 20, l4, l4 + 8, l4 + 20], labels)


def _ipv6(rng: random.Random, l3: int) -> tuple[bytes, Frame]:
    """IPv6 with a chain of 0..11 extension headers (longer than the parser follows, now and then)."""
    chain = [rng.choice((EXT_HOP, EXT_ROUTING, EXT_FRAGMENT, EXT_AH, EXT_DEST)) for _ in range(
        rng.choice((0, 0, 1, 2, 3, rng.randrange(12))))]
    proto = rng.choice((6, 6, 17, 17, 58, 59, 253))
    payload = _transport(rng, proto)
    labels = [f"ipv6_chain:{min(len(chain), 9)}"]
    parts = []
    for kind, nh in zip(chain, chain[1:] + [proto]):  # each header names the one after it
        if kind in (EXT_HOP, EXT_DEST):
            parts.append(ext_options(nh, rng.choice((0, 0, 1, rng.randrange(4)))))
        elif kind == EXT_ROUTING:
            parts.append(ext_routing(nh))
        elif kind == EXT_AH:
            parts.append(ext_ah(nh))
        else:
            role = rng.choice(("first", "later", "atomic"))
            labels.append(f"ipv6_fragment:{role}")
            parts.append(ext_fragment(nh, rng.randrange(1, 8192) if role == "later" else 0, role != "atomic"))
    packet = ipv6(rng.choice(ADDRS6), rng.choice(ADDRS6), chain[0] if chain else proto, b"".join(parts) + payload,
                  hop_limit=rng.randrange(256))
    fields = {"ipv6_version": (l3, "B"), "ipv6_payload_len": (l3 + 4, "H"), "ipv6_next_header": (l3 + 6, "B")}
    cuts, at = [l3 + 40], l3 + 40
    for i, part in enumerate(parts):
        fields[f"ext{i}_next"], fields[f"ext{i}_len"] = (at, "B"), (at + 1, "B")
        if chain[i] == EXT_FRAGMENT:
            fields[f"ext{i}_fragment"] = (at + 2, "H")
        at += len(part)
        cuts.append(at)
    fields.update(_l4_fields(proto, at))
    return packet, Frame(b"", fields, cuts + [at + 8, at + 20], labels)


def random_frame(rng: random.Random, damage: bool = True) -> Frame:
    """One Ethernet frame: valid, or with field damage, a cut, padding, or byte damage (labels say which)."""
    kind = rng.choices(FRAME_KINDS, FRAME_WEIGHTS)[0]
    if kind == "garbage":
        return Frame(rng.randbytes(rng.randrange(80)), labels=["garbage"])
    tags = tuple((rng.choice(TPIDS), rng.randrange(4096)) for _ in range(rng.choice((0, 0, 0, 1, 1, 2, 3))))
    l3 = 14 + 4 * len(tags)
    if kind.startswith("ipv4"):
        ethertype, (packet, frame) = 0x0800, _ipv4(rng, kind, l3)
    elif kind == "ipv6":
        ethertype, (packet, frame) = 0x86DD, _ipv6(rng, l3)
    elif kind == "arp":
        fields = {"arp_htype": (l3, "H"), "arp_ptype": (l3 + 2, "H"),
                  "arp_hlen": (l3 + 4, "B"), "arp_plen": (l3 + 5, "B")}
        ethertype, frame = 0x0806, Frame(b"", fields, [l3 + 6, l3 + 28])
        packet = arp(rng.choice(ADDRS4), rng.choice(ADDRS4), rng.choice((1, 2)))
    else:
        ethertype, frame = rng.choice((0x88CC, 0x888E, 0x0042, 0xFFFF)), Frame(b"")
        packet = lldp()[14:] if ethertype == 0x88CC else _payload(rng)
    frame.data = ethernet(ethertype, packet, tags)
    frame.fields["ethertype"] = (12 + 4 * len(tags), "H")
    for i in range(len(tags)):
        frame.fields[f"vlan{i}_tpid"] = (12 + 4 * i, "H")
    frame.cuts += [14, l3]
    frame.labels.insert(0, kind)
    if tags:
        frame.labels.append(f"vlan_tags:{len(tags)}")  # 2: QinQ; 3: more than the parser follows
    if damage:
        _damage_frame(rng, frame)
    return frame


def _set_field(rng: random.Random, frame: Frame, name: str) -> None:
    offset, fmt = frame.fields[name]
    if offset + struct.calcsize("!" + fmt) > len(frame.data):
        return
    if name == "tcp_data_offset":
        value = rng.randrange(16) << 4  # 0..60 bytes: "absurd" below 20 or past the segment
    elif name == "ipv4_version_ihl":
        value = rng.choice((0x40 | rng.randrange(16), rng.randrange(256)))
    elif name.endswith("_fragment"):
        value = rng.randrange(65536)
    else:
        value = rng.choice(FIELD_VALUES[fmt] + (rng.randrange(256 if fmt == "B" else 65536),))
    data = bytearray(frame.data)
    struct.pack_into("!" + fmt, data, offset, value)
    frame.data = bytes(data)
    if name.startswith(("ext", "vlan")):  # ext3_len -> ipv6_ext_len, vlan1_tpid -> vlan_tpid
        name = ("ipv6_ext_" if name.startswith("ext") else "vlan_") + name.split("_", 1)[1]
    frame.labels.append(f"field:{name}")


def _damage_frame(rng: random.Random, frame: Frame) -> None:
    roll = rng.random()
    if roll < 0.35:
        return
    if roll < 0.75:  # structure-aware: one or two fields, maybe a cut at a header boundary, maybe padding
        for name in rng.sample(sorted(frame.fields), min(len(frame.fields), rng.choice((1, 1, 2)))):
            _set_field(rng, frame, name)
        if rng.random() < 0.3:
            cut = max(0, rng.choice(frame.cuts) + rng.randrange(-3, 4))
            frame.data = frame.data[:cut]
            frame.labels.append("cut")
        if rng.random() < 0.1:
            frame.data += rng.randbytes(rng.randrange(1, 40))
            frame.labels.append("padding")
        return
    frame.data, label = mutate_bytes(rng, frame.data, lambda: random_frame(rng, damage=False).data)
    frame.labels.append(label)


def mutate_bytes(rng: random.Random, data: bytes, other) -> tuple[bytes, str]:
    """Plain byte damage: bit flips, overwrites, truncation, splicing with ``other()``, insertion, deletion."""
    kind = rng.choice(("bitflip", "overwrite", "truncate", "splice", "insert", "delete"))
    out = bytearray(data)
    if kind == "bitflip" and out:
        for _ in range(rng.randrange(1, 9)):
            out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
    elif kind == "overwrite" and out:
        at = rng.randrange(len(out))
        out[at : at + 4] = rng.randbytes(min(4, len(out) - at))
    elif kind == "truncate":
        del out[rng.randrange(len(out) + 1):]
    elif kind == "splice":
        donor = other()
        out = out[: rng.randrange(len(out) + 1)] + donor[rng.randrange(len(donor) + 1):]
    elif kind == "insert":
        at = rng.randrange(len(out) + 1)
        out[at:at] = rng.randbytes(rng.randrange(1, 64))
    elif kind == "delete" and out:
        at = rng.randrange(len(out))
        del out[at : at + rng.randrange(1, 64)]
    return bytes(out), kind


def frame_batch(rng: random.Random, n: int) -> tuple[FrameBatch, list[str]]:
    """``n`` random frames in one batch; a few rows get impossible bounds or a foreign link type."""
    frames = [random_frame(rng) for _ in range(n)]
    batch = FrameBatch.from_frames([f.data for f in frames], [rng.uniform(0, 2e9) for _ in range(n)])
    labels = [label for f in frames for label in f.labels]
    for i in range(n):
        roll = rng.random()
        if roll < 0.003:
            batch.offset[i] = rng.choice((-1, -100, len(batch.buf) - 3, len(batch.buf) + 10))
            labels.append("bounds:offset")
        elif roll < 0.006:
            batch.cap_len[i] = rng.choice((-1, -60, len(batch.buf) + 1))
            labels.append("bounds:cap_len")
        elif roll < 0.009:
            batch.linktype[i] = rng.choice((0, 101, 113, 276, 105, 65535))  # an Ethernet frame read as another
            labels.append("linktype")
    return batch, labels


# --- Capture files and what the reader must make of them ----------------------------------------------------


AT_EOF = 2**62  # Outcome.end of what depends on where the file ends (a truncated last record, say)


@dataclass
class Outcome:
    """One counted or delivered item of a capture, as the model predicts it."""

    end: int  # file offset one past the last byte that decides this outcome
    reason: str | None  # the reader's skip reason; None: delivered
    record: bool = True  # consumes a record index (packet records, corrupt or truncated packet blocks)
    ts: float = 0.0
    wire: int = 0
    frame: bytes = b""


@dataclass
class Capture:
    """A generated capture file and the model of what reading it gives."""

    data: bytes
    fmt: str  # "pcap" or "pcapng"
    outcomes: list[Outcome]
    exact: bool = True  # the outcomes describe the whole file
    trusted_until: int = 0  # outcomes ending at or before this offset hold even when not exact
    labels: list[str] = field(default_factory=list)
    records_generated: int = 0  # packet records written (before any byte damage)

    @property
    def suffix(self) -> str:
        return "." + self.fmt


PCAP_MAGIC_BYTES = {b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d"}
SHB_BYTES = b"\x0a\x0d\x0d\x0a"
BYTE_ORDER_BYTES = {b"\x4d\x3c\x2b\x1a": "<", b"\x1a\x2b\x3c\x4d": ">"}


def snap_limit(snaplen: int) -> int:
    return snaplen if 0 < snaplen < MAX_FRAME_LEN else MAX_FRAME_LEN


def random_pcap(rng: random.Random, records: int) -> Capture:
    """Classic pcap, either byte order, micro- or nanoseconds, with awkward snaplen/linktype and record damage."""
    endian, nano = rng.choice("<>"), rng.random() < 0.3
    units = 10**9 if nano else 10**6
    snaplen = rng.choice((65535, 65535, 262144, 0, 64, 96, 1518, 2**32 - 1, rng.randrange(1, 2000)))
    linktype = 1 if rng.random() < 0.9 else rng.choice((0, 101, 113, 105, 0x0001_0001))  # FCS bits + Ethernet
    version = (2, 4) if rng.random() < 0.95 else rng.choice(((1, 0), (3, 0), (0, 0)))
    labels = ["pcap", f"pcap:{'be' if endian == '>' else 'le'}", f"pcap:{'nsec' if nano else 'usec'}",
              f"pcap:snaplen:{snaplen if snaplen in (0, 65535, 262144, 2**32 - 1) else 'other'}",
              f"pcap:linktype:{linktype}", f"pcap:version:{version[0]}.{version[1]}"]
    rows, outcomes, pos = [], [], 24
    stopped = False  # after an absurd captured length the model knows nothing more
    absurd_at = rng.randrange(records) if rng.random() < 0.1 else -1  # reading stops there: one per file at most
    for i in range(records):
        frame = random_frame(rng)
        data = frame.data
        cap, wire = len(data), len(data) + rng.choice((0, 0, 0, rng.randrange(1500)))
        sec, frac = rng.getrandbits(32), rng.choice((rng.randrange(units), rng.getrandbits(32)))
        if i == absurd_at:
            damage = "absurd_cap"
        elif i == records - 1 and rng.random() < 0.1:  # the last record runs past the end of the file
            damage = rng.choice(("cap_past_end", "header_cut"))
        else:
            damage = rng.choices(("none", "cap_over_wire", "cap_zero"), (92, 4, 4))[0]
        if damage == "cap_over_wire" and cap:
            wire = rng.randrange(cap)
        elif damage == "cap_zero":
            data, cap = b"", 0
        elif damage == "absurd_cap":
            cap = rng.choice((MAX_FRAME_LEN + 1, 2**31, 2**32 - 1, rng.randrange(MAX_FRAME_LEN + 1, 2**32)))
        elif damage == "cap_past_end":
            cap = len(data) + rng.randrange(1, 5000)
        if damage != "none":
            labels.append(f"record:{damage}")
        labels += [f"frame:{label}" for label in frame.labels]
        rows.append((sec, frac, data, wire, cap))
        pos += 16 + len(data)
        if stopped:
            continue
        if damage == "absurd_cap":
            outcomes.append(Outcome(pos, "corrupt_record", record=False))
            stopped = True
        elif damage in ("cap_past_end", "header_cut"):
            outcomes.append(Outcome(AT_EOF, "truncated_record", record=False))
        elif cap > wire:
            outcomes.append(Outcome(pos, "bad_record_length"))
        elif (linktype & 0xFFFF) not in SUPPORTED_LINKTYPES:  # the upper bits carry FCS information
            outcomes.append(Outcome(pos, f"unsupported_linktype:{linktype & 0xFFFF}"))
        else:
            if cap > snap_limit(snaplen):  # read whole, as Wireshark does
                labels.append("record:cap_over_snaplen")
            outcomes.append(Outcome(pos, None, ts=sec + frac / units, wire=wire, frame=data))
    data = pcap_bytes(rows, endian, nano, snaplen, linktype, version)
    if "record:header_cut" in labels:
        data = data[: len(data) - len(rows[-1][2]) - rng.randrange(1, 16)]  # part of the last record header only
    return Capture(data, "pcap", outcomes, labels=labels, records_generated=records)


@dataclass
class _Interface:
    linktype: int
    snaplen: int
    units: float
    offset: int


@dataclass
class _Block:
    """One pcapng block as written, and what the model needs to know about it."""

    kind: str  # shb, idb, epb, pb, spb, ignored, unknown
    data: bytes
    endian: str
    interface: _Interface | None = None  # idb
    packet: tuple | None = None  # epb/pb: (interface id, ts units, cap, wire); spb: (wire,)
    damage: str = "none"  # a block/trailer length damage: the reader must treat the block as corrupt


BLOCK_TYPES = {"shb": 0x0A0D0D0A, "idb": 1, "pb": 2, "spb": 3, "epb": 6}
PACKET_KINDS = ("epb", "pb", "spb")
MIN_LENGTH = {kind: MIN_BLOCK_LEN[t] for kind, t in BLOCK_TYPES.items()}


def _random_idb(rng: random.Random, endian: str) -> _Block:
    linktype = 1 if rng.random() < 0.85 else rng.choice((0, 101, 113, 228, 105))
    snaplen = rng.choice((0, 0, 65535, 262144, 64, 2**32 - 1, rng.randrange(1, 3000)))
    units, offset, opts = 1e6, 0, b""
    for _ in range(rng.choice((0, 0, 1, 2, 3))):
        what = rng.choice(("tsresol", "tsresol", "tsoffset", "unknown", "empty_tsresol", "broken"))
        if what == "tsresol":
            resol = rng.choice((3, 6, 9, 0x80 | 20, 0, 0x7F, 0xFF, rng.randrange(256)))
            opts += option(endian, 9, bytes([resol]))
            units = float(2 ** (resol & 0x7F)) if resol & 0x80 else float(10 ** (resol & 0x7F))
        elif what == "tsoffset":
            offset = rng.randrange(-(2**63), 2**63)
            opts += option(endian, 14, struct.pack(endian + "q", offset))
        elif what == "unknown":
            opts += option(endian, rng.choice((2, 3, 4, 0x8001)), rng.randbytes(rng.randrange(12)))
        elif what == "empty_tsresol":
            opts += struct.pack(endian + "HH", 9, 0)
        else:  # an option whose length runs past the block: the reader stops reading options there
            opts += struct.pack(endian + "HH", 9, 200 + rng.randrange(60000))
            break
    if opts and rng.random() < 0.5:
        opts += option(endian, 0, b"")
    body = struct.pack(endian + "HHI", linktype, 0, snaplen) + opts
    return _Block("idb", block(endian, 1, body), endian, interface=_Interface(linktype, snaplen, units, offset))


def _random_packet_block(rng: random.Random, endian: str, interfaces: int) -> tuple[_Block, list[str]]:
    frame = random_frame(rng)
    data, labels = frame.data, [f"frame:{label}" for label in frame.labels]
    kind = rng.choices(PACKET_KINDS, (8, 1, 2))[0]
    wire = len(data) + rng.choice((0, 0, 0, rng.randrange(1500)))
    if kind == "spb":
        return _Block("spb", spb(endian, data, wire), endian, packet=(wire,)), labels
    iface = rng.randrange(interfaces) if interfaces and rng.random() < 0.95 else rng.choice(
        (interfaces, interfaces + 3, 0xFFFF if kind == "pb" else 0xFFFF_FFFF))
    if iface >= interfaces:
        labels.append("block:unknown_interface")
    units = rng.getrandbits(rng.choice((40, 50, 60, 64)))
    cap = len(data)
    damage = rng.choices(("none", "cap_over_room", "cap_over_wire", "cap_short"), (90, 4, 3, 3))[0]
    if damage == "cap_over_room":
        cap = len(pad4(data)) + rng.choice((1, 4, 1000, 2**31))
    elif damage == "cap_over_wire" and cap:
        wire = rng.randrange(cap)
    elif damage == "cap_short":
        cap = rng.randrange(cap + 1)
    if damage != "none":
        labels.append(f"block:{damage}")
    if kind == "epb":
        head = struct.pack(endian + "IIIII", iface, units >> 32, units & 0xFFFF_FFFF, cap, wire)
        opts = option(endian, 2, struct.pack(endian + "I", rng.getrandbits(32))) if rng.random() < 0.1 else b""
        body = head + pad4(data) + opts
    else:
        drops = rng.randrange(65536)
        head = struct.pack(endian + "HHIIII", iface, drops, units >> 32, units & 0xFFFF_FFFF, cap, wire)
        body = head + pad4(data)
    return _Block(kind, block(endian, BLOCK_TYPES[kind], body), endian, packet=(iface, units, cap, wire)), labels


def _damage_block_length(rng: random.Random, blk: _Block) -> str:
    """Corrupt the length fields so the block cannot be trusted: too short, unaligned, huge, or a wrong trailer."""
    kind = rng.choice(("len_not_4x", "len_below_min", "len_huge", "len_past_eof", "trailer_mismatch"))
    data = bytearray(blk.data)
    true_len = len(data)
    if kind == "len_not_4x":
        length = true_len + rng.randrange(1, 4)
    elif kind == "len_below_min":
        length = rng.randrange(MIN_LENGTH.get(blk.kind, 12))
    elif kind == "len_huge":
        length = rng.choice((MAX_BLOCK_LEN + 4, 2**31, 2**32 - 4))
    elif kind == "len_past_eof":  # plausible, but longer than any generated file
        length = MAX_BLOCK_LEN - 4 * rng.randrange(1000)
    else:
        length = true_len
        struct.pack_into(blk.endian + "I", data, true_len - 4, true_len + 4 * rng.randrange(1, 100))
    struct.pack_into(blk.endian + "I", data, 4, length)
    blk.data, blk.damage = bytes(data), kind
    return kind


def random_pcapng(rng: random.Random, records: int) -> Capture:
    """pcapng: sections in either byte order, interfaces with options, every packet block type, ignored and
    unknown blocks, missing interfaces, and damaged block lengths; the model follows along."""
    blocks: list[_Block] = []
    labels = ["pcapng"]
    endian = rng.choice("<>")
    interfaces = 0
    written = 0
    while written < records:
        roll = rng.random()
        if not blocks or roll < 0.02:  # a (new) section, maybe in the other byte order
            endian = rng.choice("<>") if blocks else endian
            blocks.append(_Block("shb", shb(endian), endian))
            labels.append(f"pcapng:section:{'be' if endian == '>' else 'le'}")
            interfaces = 0
            if rng.random() < 0.05:
                continue  # a section without interfaces: its packets have none to name
            for _ in range(rng.choice((1, 1, 1, 2, 3))):
                blocks.append(_random_idb(rng, endian))
                interfaces += 1
        elif roll < 0.04:
            blocks.append(_random_idb(rng, endian))
            interfaces += 1
        elif roll < 0.07:
            kind = rng.choice((4, 5, 9, 0x0A, 0x0BAD, 0x4000_0BAD))
            blocks.append(_Block("ignored", block(endian, kind, rng.randbytes(rng.randrange(40))), endian))
            labels.append("block:ignored")
        elif roll < 0.09:
            kind = rng.choice((7, 8, 0x0B, 0x0C, 0x8000_0001, rng.getrandbits(32)))
            if kind in BT_KNOWN:
                continue
            blocks.append(_Block("unknown", block(endian, kind, rng.randbytes(rng.randrange(40))), endian))
            labels.append("block:unknown_type")
        else:
            blk, more = _random_packet_block(rng, endian, interfaces)
            blocks.append(blk)
            labels += more
            written += 1
    for blk in blocks[1:]:  # the first section header stays intact: it is the file header
        if rng.random() < 0.015:
            labels.append(f"block:{_damage_block_length(rng, blk)}")
    data = b"".join(blk.data for blk in blocks)
    truncate = rng.random() < 0.1
    if truncate:
        cut = len(data) - rng.randrange(1, len(blocks[-1].data))
        data = data[:cut]
        labels.append("block:truncated_last")
    capture = _model_pcapng(data, blocks, truncate)
    capture.labels, capture.records_generated = labels, records
    return capture


def _acceptable_block_at(data: bytes, pos: int, endian: str) -> bool:
    """Whether a pcapng block could be taken as starting at ``pos`` (known type, sane length, matching trailer)."""
    if pos + 12 > len(data):
        return False
    (block_type,) = struct.unpack_from(endian + "I", data, pos)
    if block_type not in BT_KNOWN:
        return False
    if block_type == 0x0A0D0D0A:
        endian = BYTE_ORDER_BYTES.get(data[pos + 8 : pos + 12])
        if endian is None:
            return False
    (length,) = struct.unpack_from(endian + "I", data, pos + 4)
    if length % 4 or not MIN_BLOCK_LEN.get(block_type, 12) <= length <= MAX_BLOCK_LEN or pos + length > len(data):
        return False
    return struct.unpack_from(endian + "I", data, pos + length - 4)[0] == length


def _model_pcapng(data: bytes, blocks: list[_Block], truncated: bool) -> Capture:
    """Walk the blocks as the reader must: count, skip, deliver; resync after a corrupt block to the next intact one.

    The model stays exact unless a resync could stop on a false block inside the damaged bytes, or a section
    header is damaged while the reader is already resyncing; then only what comes before is trusted.
    """
    capture = Capture(data, "pcapng", [])
    out = capture.outcomes
    interfaces: list[_Interface] = []
    endian, last_ts = blocks[0].endian, 0.0
    resync_from: int | None = None  # offset of the corrupt block whose damage the reader is skipping
    pos = 0

    def inexact(at: int) -> Capture:
        capture.exact, capture.trusted_until = False, at
        return capture

    def false_block_after(start: int, stop: int = len(data)) -> bool:
        return any(_acceptable_block_at(data, at, endian) for at in range(start + 4, min(stop, len(data)), 4))

    for n, blk in enumerate(blocks):
        start, end = pos, pos + len(blk.data)
        pos = end
        packet = blk.kind in PACKET_KINDS
        if resync_from is not None:
            if blk.kind == "shb" and blk.damage != "none":
                return inexact(resync_from)  # the reader cannot see this section start in the old byte order
            if blk.damage != "none" or blk.kind == "unknown" or (truncated and n == len(blocks) - 1):
                continue  # skipped silently while looking for the next intact block of a known type
            if false_block_after(resync_from, start):
                return inexact(resync_from)
            resync_from = None
        if truncated and n == len(blocks) - 1:
            if len(data) - start < 12:
                out.append(Outcome(AT_EOF, "truncated_block", record=False))
            elif blk.damage in ("len_not_4x", "len_below_min", "len_huge"):
                out.append(Outcome(AT_EOF, "corrupt_block", record=packet))
                resync_from = start
            elif false_block_after(start):
                return inexact(start)
            else:  # the length is plausible but runs past the end of the file
                out.append(Outcome(AT_EOF, "truncated_record" if packet else "truncated_block", record=packet))
            break
        if blk.kind == "shb":  # type and byte-order magic mark a new section, even when the length is damaged
            endian, interfaces = blk.endian, []
        if blk.damage != "none":
            if blk.damage == "len_past_eof":
                # The reader calls it corrupt only if an intact block of a known type follows, so the
                # outcome depends on the bytes up to the end of that block; otherwise it is a truncated last block.
                later = [end + sum(len(b.data) for b in blocks[n + 1 : m + 1]) for m in range(n + 1, len(blocks))
                         if blocks[m].damage == "none" and blocks[m].kind != "unknown"
                         and not (truncated and m == len(blocks) - 1)]
                if not later:
                    if false_block_after(start):
                        return inexact(start)
                    out.append(Outcome(AT_EOF, "truncated_record" if packet else "truncated_block", record=packet))
                    break
                end = later[0]
            out.append(Outcome(end, "corrupt_block", record=packet))
            resync_from = start
        elif blk.kind == "idb":
            interfaces.append(blk.interface)
        elif blk.kind == "unknown":
            out.append(Outcome(end, "unknown_block", record=False))
        elif packet:
            if blk.kind == "spb":
                (wire,) = blk.packet
                room = len(blk.data) - 16
                cap, iface_id, ts_units, data_at = min(wire, room), 0, None, start + 12
                if interfaces and interfaces[0].snaplen:
                    cap = min(cap, interfaces[0].snaplen)
            else:
                iface_id, ts_units, cap, wire = blk.packet
                room, data_at = len(blk.data) - 32, start + 28
            if iface_id >= len(interfaces):
                out.append(Outcome(end, "unknown_interface"))
                continue
            iface = interfaces[iface_id]
            if ts_units is not None:
                last_ts = iface.offset + ts_units / iface.units
            if cap > room:
                out.append(Outcome(end, "corrupt_block"))
            elif cap > wire:
                out.append(Outcome(end, "bad_record_length"))
            elif iface.linktype not in SUPPORTED_LINKTYPES:
                out.append(Outcome(end, f"unsupported_linktype:{iface.linktype}"))
            else:
                out.append(Outcome(end, None, ts=last_ts, wire=wire, frame=data[data_at : data_at + cap]))
    if resync_from is not None and false_block_after(resync_from):
        return inexact(resync_from)
    capture.trusted_until = len(data)
    return capture


def random_capture(rng: random.Random, records: int | None = None) -> Capture:
    """A pcap or pcapng file of ``records`` packet records (random when None), sometimes with byte damage."""
    if records is None:
        records = rng.choice((1, 2, rng.randrange(1, 40), rng.randrange(1, 120), rng.randrange(1, 400)))
    capture = (random_pcap if rng.random() < 0.45 else random_pcapng)(rng, records)
    roll = rng.random()
    if roll < 0.2:
        damaged, label = mutate_bytes(rng, capture.data, lambda: random_capture(rng, 8).data)
        _mark_damage(capture, damaged, f"file:{label}")
    elif roll < 0.23:  # a wrong magic number (sometimes the other byte order's, or the other format's)
        magic = rng.choice(sorted(PCAP_MAGIC_BYTES) + [SHB_BYTES, b"\0\0\0\0", rng.randbytes(4)])
        _mark_damage(capture, magic + capture.data[4:], "file:magic")
    return capture


def _mark_damage(capture: Capture, damaged: bytes, label: str) -> None:
    same = min(len(damaged), len(capture.data))
    first = next((i for i, (a, b) in enumerate(zip(capture.data, damaged)) if a != b), same)
    if damaged != capture.data:
        capture.exact = False
        capture.trusted_until = min(capture.trusted_until or len(capture.data), first)
    capture.data = damaged
    capture.labels.append(label)
