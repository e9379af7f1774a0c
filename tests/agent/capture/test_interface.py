"""Live capture through a TPACKET_V3 ring, on a real veth pair in namespaces the tests create."""

from __future__ import annotations

import importlib.util
import logging
import mmap
import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time

import dpkt
import numpy as np
import pytest

from agent.capture.interface import (
    BLOCK_DESC,
    BLOCK_DESC_LEN,
    TP_STATUS_USER,
    TP_STATUS_VLAN_VALID,
    TPACKET3_HDR,
    CaptureError,
    LiveCapture,
    pack_layout,
    _ring_kernel,
    read_block,
    read_block_python,
)
from agent.util import PrivilegeError, capability_bit, has_capability, missing_capabilities, require
from lab import REPO, netns

SENDER_MAC = bytes.fromhex("0200000000aa")  # not the veth's own MAC: kernel chatter never carries it
needs_netns = pytest.mark.skipif(netns.skip_reason() is not None, reason=str(netns.skip_reason()))


# -- helpers -------------------------------------------------------------------


def udp_frame(link: netns.VethLink, dst_mac: str, sport: int, dport: int, payload: bytes) -> bytes:
    udp = dpkt.udp.UDP(sport=sport, dport=dport, data=payload)
    udp.ulen = len(udp)
    ip = dpkt.ip.IP(src=socket.inet_aton(link.ip4_a), dst=socket.inet_aton(link.ip4_b), p=17, ttl=64, data=udp)
    ip.len = len(ip)
    return bytes(dpkt.ethernet.Ethernet(src=SENDER_MAC, dst=bytes.fromhex(dst_mac.replace(":", "")), data=ip))


def tcp_syn_frame(link: netns.VethLink, dst_mac: str, sport: int, dport: int) -> bytes:
    tcp = dpkt.tcp.TCP(sport=sport, dport=dport, seq=sport * 7, flags=dpkt.tcp.TH_SYN, win=0)
    ip = dpkt.ip.IP(src=socket.inet_aton(link.ip4_a), dst=socket.inet_aton(link.ip4_b), p=6, ttl=64, data=tcp)
    ip.len = len(ip)
    return bytes(dpkt.ethernet.Ethernet(src=SENDER_MAC, dst=bytes.fromhex(dst_mac.replace(":", "")), data=ip))


def mixed_frames(link: netns.VethLink, n: int) -> list[bytes]:
    """A mix of UDP datagrams (sizes up to 1000 bytes, beyond the snap length) and TCP SYNs."""
    frames = []
    for i in range(n):
        if i % 3 == 2:
            frames.append(tcp_syn_frame(link, link.mac_b, 20000 + i, 23))
        else:
            frames.append(udp_frame(link, link.mac_b, 30000 + i, 9, bytes([i % 251]) * ((i * 37) % 960)))
    return frames




def raw_sender(ns: netns.NetNamespace, ifname: str) -> socket.socket:
    sock = ns.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    sock.bind((ifname, 0))
    return sock


def ours(batch) -> np.ndarray:
    """Positions of the frames our raw sender made (source MAC SENDER_MAC)."""
    if not len(batch):
        return np.zeros(0, dtype=np.int64)
    starts = batch.offset[:, None] + np.arange(6, 12)
    return np.flatnonzero((batch.buf[starts] == np.frombuffer(SENDER_MAC, dtype=np.uint8)).all(axis=1))


def collect(cap: LiveCapture, want: int, deadline_s: float = 20.0) -> list:
    """Batches until ``want`` of our frames came in (or the deadline passed)."""
    stop = threading.Event()
    timer = threading.Timer(deadline_s, stop.set)
    timer.start()
    got, batches = 0, []
    try:
        for batch in cap.batches(stop):
            batches.append(batch)
            got += len(ours(batch))
            if got >= want:
                break
    finally:
        timer.cancel()
    return batches




@pytest.fixture
def link():
    with netns.veth_pair() as pair:
        yield pair


def capture_on(ns: netns.NetNamespace, ifname: str, **options) -> LiveCapture:
    with netns.entered(ns):
        return LiveCapture(ifname, **options).open()


# -- privileges ----------------------------------------------------------------


def test_capabilities_are_read_from_capeff(tmp_path):
    status = tmp_path / "status"
    status.write_text(f"Name:\tx\nCapEff:\t{1 << 13:016x}\n")  # CAP_NET_RAW only
    assert has_capability("CAP_NET_RAW", status) and has_capability("net_raw", status)
    assert not has_capability("CAP_NET_ADMIN", status)
    assert missing_capabilities(["cap_net_raw", "CAP_NET_ADMIN"], status) == ["CAP_NET_ADMIN"]
    with pytest.raises(PrivilegeError, match="CAP_NET_ADMIN") as exc:
        require(["CAP_NET_RAW", "CAP_NET_ADMIN"], "for nftables", status)
    assert exc.value.missing == ["CAP_NET_ADMIN"] and "root" in str(exc.value)
    require(["CAP_NET_RAW"], status_path=status)
    with pytest.raises(ValueError, match="CAP_FLY"):
        capability_bit("CAP_FLY")
    assert capability_bit("CAP_CHECKPOINT_RESTORE") == 40


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv to drop a capability"
)
def test_missing_cap_net_raw_is_named():
    code = "from agent.capture.interface import LiveCapture\nLiveCapture('lo').open()"
    proc = subprocess.run(
        ["setpriv", "--bounding-set=-net_raw", "--inh-caps=-net_raw", sys.executable, "-c", code],
        check=False, capture_output=True, text=True, cwd=REPO, timeout=60,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "PrivilegeError" in proc.stderr and "CAP_NET_RAW" in proc.stderr and "root" in proc.stderr


# -- ring blocks built by hand (no kernel needed) -------------------------------


def fake_block(frames: list[tuple[bytes, int]], block_size: int = 4096, vlan_tci: int | None = None) -> mmap.mmap:
    """A ring block laid out as the kernel does: descriptor, then chained frame headers + data."""
    ring = mmap.mmap(-1, block_size)
    pos, mac = BLOCK_DESC_LEN, 82
    for i, (data, wire) in enumerate(frames):
        slot = (mac + len(data) + 7) & ~7
        last = i == len(frames) - 1
        status = TP_STATUS_USER | (TP_STATUS_VLAN_VALID if vlan_tci is not None else 0)
        header = pack_layout(
            TPACKET3_HDR, tp_next_offset=0 if last else slot, tp_sec=1_700_000_000 + i, tp_nsec=500_000_000,
            tp_snaplen=len(data), tp_len=wire, tp_status=status, tp_mac=mac, tp_vlan_tci=vlan_tci or 0,
        )  # fmt: skip
        ring[pos : pos + len(header)] = header
        ring[pos + mac : pos + mac + len(data)] = data
        pos += slot
    desc = pack_layout(BLOCK_DESC, version=1, block_status=TP_STATUS_USER, num_pkts=len(frames),
                       offset_to_first_pkt=BLOCK_DESC_LEN, blk_len=pos)  # fmt: skip
    ring[: len(desc)] = desc
    return ring


@pytest.fixture(params=["python", "compiled"])
def read(request):
    """Both block readers: the compiled one (agent/native/ring.c) must do exactly what the Python one does."""
    if request.param == "python":
        return read_block_python
    if _ring_kernel() is None:
        pytest.skip("the compiled kernels are not built here (.ci/run builds them)")
    return read_block


def test_block_frames_are_copied_out(read):
    frames = [(bytes(range(60)), 60), (b"\xab" * 100, 1500)]
    frames_out = read(fake_block(frames), 0, 4096)
    assert bytes(frames_out.data) == frames[0][0] + frames[1][0]
    assert frames_out.cap_len.tolist() == [60, 100] and frames_out.wire_len.tolist() == [60, 1500]
    assert frames_out.ts.tolist() == pytest.approx([1_700_000_000.5, 1_700_000_001.5], abs=1e-6)
    tagged = read(fake_block(frames[:1], vlan_tci=0x2007), 0, 4096)
    assert bytes(tagged.data) == frames[0][0][:12] + bytes.fromhex("81002007") + frames[0][0][12:]
    assert tagged.cap_len.tolist() == [64] and tagged.wire_len.tolist() == [64]
    short = read(fake_block([(b"\x01" * 5, 5)], vlan_tci=7), 0, 4096)  # shorter than two MACs: the tag follows it
    assert bytes(short.data) == b"\x01" * 5 + bytes.fromhex("81000007")


@pytest.mark.parametrize(
    "field, value",
    [("num_pkts", 500), ("offset_to_first_pkt", 8), ("offset_to_first_pkt", 4090), ("blk_len", 1 << 20)],
)
def test_inconsistent_block_descriptors_are_refused(read, field, value):
    ring = fake_block([(bytes(60), 60)] * 3)
    offset = {name: i * 4 for i, (name, _, _) in enumerate(BLOCK_DESC[:6])}[field]
    ring[offset : offset + 4] = struct.pack("=I", value)
    assert read(ring, 0, 4096) is None


def test_frame_running_past_its_block_is_refused(read):
    ring = fake_block([(bytes(60), 60)])
    snaplen_at = BLOCK_DESC_LEN + 12
    ring[snaplen_at : snaplen_at + 4] = struct.pack("=I", 5000)
    assert read(ring, 0, 4096) is None


def test_compiled_reader_matches_python_on_damaged_blocks():
    """Random blocks with random bytes overwritten (descriptor and frame headers alike): both readers refuse
    the same blocks and copy the same frames out of the others."""
    if _ring_kernel() is None:
        pytest.skip("the compiled kernels are not built here (.ci/run builds them)")
    rng = np.random.default_rng(4)
    outcomes = set()
    for trial in range(400):
        frames = [(rng.integers(0, 256, int(rng.integers(1, 300)), dtype=np.uint8).tobytes(), int(rng.integers(1, 2000)))
                  for _ in range(int(rng.integers(0, 8)))]  # fmt: skip
        ring = fake_block(frames, vlan_tci=int(rng.integers(0, 65536)) if rng.random() < 0.3 else None)
        for _ in range(int(rng.integers(0, 4))):
            at = int(rng.integers(0, 400))
            ring[at : at + 2] = rng.integers(0, 256, 2, dtype=np.uint8).tobytes()
        want, got = read_block_python(ring, 0, 4096), read_block(ring, 0, 4096)
        outcomes.add(want is None)
        assert (got is None) == (want is None), trial
        if want is not None:
            assert bytes(got.data) == bytes(want.data), trial
            for name in ("ts", "wire_len", "cap_len"):
                assert np.array_equal(getattr(got, name), getattr(want, name)), (trial, name)
    assert outcomes == {True, False}, "the damage should refuse some blocks and spare others"


# -- options and errors --------------------------------------------------------


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="page size"):
        LiveCapture("lo", block_size=1000)
    with pytest.raises(ValueError, match="block_count"):
        LiveCapture("lo", block_count=0)
    with pytest.raises(ValueError, match="snaplen"):
        LiveCapture("lo", snaplen=4)


@needs_netns
def test_missing_interface_is_named():
    with netns.namespace() as ns, netns.entered(ns), pytest.raises(CaptureError, match="'nosuch0' does not exist"):
        LiveCapture("nosuch0").open()


# -- capture on a veth pair ----------------------------------------------------


@needs_netns
def test_captures_every_frame_with_lengths_and_timestamps(link):
    n = 300
    frames = mixed_frames(link, n)
    # Small blocks, so that the frames span many of them.
    with capture_on(link.b, link.if_b, block_size=4096, block_count=64, snaplen=256) as cap:
        with raw_sender(link.a, link.if_a) as tx:
            for frame in frames:
                tx.send(frame)
        batches = collect(cap, n)
        stats = cap.stats()
    mine = [(b, ours(b)) for b in batches]
    assert sum(len(sel) for _, sel in mine) == n
    wire = np.concatenate([b.wire_len[sel] for b, sel in mine])
    cap_len = np.concatenate([b.cap_len[sel] for b, sel in mine])
    assert wire.tolist() == [len(f) for f in frames]
    assert cap_len.tolist() == [min(len(f), 256) for f in frames]
    assert max(len(f) for f in frames) > 256  # the snap length was exercised
    got = [b.frame(int(i)) for b, sel in mine for i in sel]
    assert got == [f[:256] for f in frames]
    # Frames lie back to back in buf, indexes count every frame since start.
    for b in batches:
        assert (b.offset[1:] == b.offset[:-1] + b.cap_len[:-1]).all() and len(b.buf) == b.cap_len.sum()
    index = np.concatenate([b.index for b in batches])
    assert index.tolist() == list(range(len(index)))
    ts = np.concatenate([b.ts for b in batches])
    assert (np.diff(ts) >= 0).all() and abs(ts[0] - time.time()) < 3600
    assert stats.blocks > 10 and stats.bad_blocks == 0
    assert stats.kernel_drops == 0 and stats.packets >= n and stats.delivered == len(index)


@needs_netns
def test_captured_frames_parse(link):
    if importlib.util.find_spec("agent.capture.parse") is None:
        pytest.skip("agent.capture.parse is not there yet (written in parallel)")
    from agent.capture.parse import parse_frames

    n = 60
    frames = mixed_frames(link, n)
    with capture_on(link.b, link.if_b) as cap:
        with raw_sender(link.a, link.if_a) as tx:
            for frame in frames:
                tx.send(frame)
        batches = collect(cap, n)
    packets = [parse_frames(b) for b in batches]
    packets = [p[0] if isinstance(p, tuple) else p for p in packets]
    sports = np.concatenate([p.sport for p in packets])
    mine = sports[(sports >= 20000) & (sports < 31000)]
    assert sorted(mine.tolist()) == sorted((20000 if i % 3 == 2 else 30000) + i for i in range(n))


@needs_netns
def test_vlan_tag_is_put_back(link):
    """The kernel strips 802.1Q tags before packet sockets see them; the capture restores them."""
    plain = udp_frame(link, link.mac_b, 4000, 9, b"vlan")
    tagged = plain[:12] + bytes.fromhex("81002007") + plain[12:]  # priority 1, VLAN 7
    with capture_on(link.b, link.if_b) as cap:
        with raw_sender(link.a, link.if_a) as tx:
            tx.send(tagged)
            tx.send(plain)
        batches = collect(cap, 2)
    got = [b.frame(int(i)) for b in batches for i in ours(b)]
    lens = [int(b.wire_len[i]) for b in batches for i in ours(b)]
    assert got == [tagged, plain] and lens == [len(tagged), len(plain)]


@needs_netns
def test_outgoing_frames_are_kept_or_ignored(link):
    both = capture_on(link.a, link.if_a)
    incoming = capture_on(link.a, link.if_a, outgoing=False)
    with both, incoming:
        with raw_sender(link.a, link.if_a) as tx_out, raw_sender(link.b, link.if_b) as tx_in:
            for i in range(5):
                tx_out.send(udp_frame(link, link.mac_b, 5000 + i, 9, b"out"))
            for i in range(3):
                tx_in.send(udp_frame(link, link.mac_a, 6000 + i, 9, b"in"))
        got_both = sum(len(ours(b)) for b in collect(both, 8))
        got_in = sum(len(ours(b)) for b in collect(incoming, 3))
    assert got_both == 8
    assert got_in == 3


@needs_netns
def test_full_ring_counts_kernel_drops(link):
    n = 500
    with capture_on(link.b, link.if_b, block_size=4096, block_count=2, block_timeout_ms=10) as cap:
        with raw_sender(link.a, link.if_a) as tx:
            for _ in range(n):  # nobody reads meanwhile: the 8 KiB ring overflows
                tx.send(udp_frame(link, link.mac_b, 7000, 9, b"x" * 18))
        delivered = 0

        def drained() -> bool:
            nonlocal delivered
            while (batch := cap.read_ready()) is not None:
                delivered += len(ours(batch))
            stats = cap.stats()
            return stats.delivered + stats.kernel_drops == stats.packets and stats.packets >= n

        netns.wait_until(drained, "every frame either delivered or counted as dropped")
        stats = cap.stats()
    assert 0 < delivered < n
    assert stats.kernel_drops >= n - delivered and stats.freeze_count >= 1
    assert 0 < stats.drop_share < 1


@needs_netns
def test_interface_down_then_removed(link, caplog):
    caplog.set_level(logging.WARNING, logger="agent.capture.interface")
    cap = capture_on(link.b, link.if_b)
    result: dict = {"frames": 0, "error": None}
    stop = threading.Event()

    def consume() -> None:
        try:
            for batch in cap.batches(stop):
                result["frames"] += len(ours(batch))
        except CaptureError as exc:
            result["error"] = exc

    worker = threading.Thread(target=consume)
    worker.start()
    try:
        with raw_sender(link.a, link.if_a) as tx:
            link.b.run("ip", "link", "set", link.if_b, "down")
            netns.wait_until(lambda: "went down" in caplog.text, "the capture noticing the interface went down")
            link.b.run("ip", "link", "set", link.if_b, "up")

            def one_frame_through() -> bool:
                tx.send(udp_frame(link, link.mac_b, 8000, 9, b"back"))
                return result["frames"] > 0

            netns.wait_until(one_frame_through, "capture resuming after the interface came back up")
        link.b.run("ip", "link", "del", link.if_b)
        netns.wait_until(lambda: result["error"] is not None, "an error once the interface is gone")
        assert "was removed" in str(result["error"]) and link.if_b in str(result["error"])
    finally:
        stop.set()
        worker.join(timeout=30)
        cap.close()
