"""Live capture from a network interface through a TPACKET_V3 ring (AF_PACKET + mmap).

The kernel writes frames into a ring of fixed-size blocks shared with us via
mmap; a block is handed over when it is full or when its timeout expires.  We
poll() the socket, take every ready block, copy its frames into one
``FrameBatch`` and give the blocks back.  Python therefore pays one system
call per batch, not per frame, and the kernel keeps filling the other blocks
meanwhile.  Only the standard library and numpy are used (struct layouts from
linux/if_packet.h are declared below as data).

Notes for users:
* ``wire_len`` is the true length; only ``snaplen`` bytes are copied (the
  snap length is applied by a one-instruction BPF filter, as libpcap does).
* The kernel strips 802.1Q tags before packet sockets see them; we put them
  back so the parser sees the frame as it was on the wire.
* Turn off GRO/LRO on the capture interface (``ethtool -K eth0 gro off lro
  off``) or the kernel hands over merged TCP segments larger than the MTU.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import logging
import mmap
import os
import select
import socket
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from agent import native
from agent.capture.packets import LINKTYPE_ETHERNET, FrameBatch
from agent.util import PrivilegeError, has_capability

log = logging.getLogger(__name__)

# Constants from linux/if_ether.h, linux/if_packet.h, linux/if_arp.h, asm/socket.h.
ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_MR_PROMISC = 1
PACKET_RX_RING = 5
PACKET_STATISTICS = 6
PACKET_VERSION = 10
PACKET_IGNORE_OUTGOING = 23
TPACKET_V3 = 2
TP_STATUS_KERNEL = 0
TP_STATUS_USER = 1
TP_STATUS_VLAN_VALID = 1 << 4
TP_STATUS_VLAN_TPID_VALID = 1 << 6
SO_ATTACH_FILTER = 26
SIOCGIFINDEX = 0x8933
BPF_RET_K = 0x06  # BPF_RET | BPF_K: accept the packet, keep k bytes
ETH_P_8021Q = 0x8100
ARPHRD_ETHER = 1
ARPHRD_LOOPBACK = 772  # loopback frames carry an Ethernet header with zero MACs

# Struct layouts, declared once as (field, struct format, default).  All are
# host-endian kernel structures whose fields are already naturally aligned.
TPACKET_REQ3 = (
    ("tp_block_size", "I", 0),
    ("tp_block_nr", "I", 0),
    ("tp_frame_size", "I", 0),
    ("tp_frame_nr", "I", 0),
    ("tp_retire_blk_tov", "I", 0),  # block timeout, ms
    ("tp_sizeof_priv", "I", 0),
    ("tp_feature_req_word", "I", 0),
)
BLOCK_DESC = (  # struct tpacket_block_desc with its tpacket_hdr_v1
    ("version", "I", 0),
    ("offset_to_priv", "I", 0),
    ("block_status", "I", TP_STATUS_KERNEL),
    ("num_pkts", "I", 0),
    ("offset_to_first_pkt", "I", 0),
    ("blk_len", "I", 0),
    ("seq_num", "Q", 0),
    ("ts_first_sec", "I", 0),
    ("ts_first_nsec", "I", 0),
    ("ts_last_sec", "I", 0),
    ("ts_last_nsec", "I", 0),
)
TPACKET3_HDR = (
    ("tp_next_offset", "I", 0),  # 0 for the last frame of a block
    ("tp_sec", "I", 0),
    ("tp_nsec", "I", 0),
    ("tp_snaplen", "I", 0),
    ("tp_len", "I", 0),
    ("tp_status", "I", 0),
    ("tp_mac", "H", 0),  # frame start, from this header
    ("tp_net", "H", 0),
    ("tp_rxhash", "I", 0),
    ("tp_vlan_tci", "I", 0),
    ("tp_vlan_tpid", "H", 0),
    ("tp_padding_hv1", "H", 0),
    ("tp_padding", "8s", b""),
)
TPACKET_STATS_V3 = (
    ("tp_packets", "I", 0),  # frames the socket saw, drops included
    ("tp_drops", "I", 0),  # frames lost because the ring was full
    ("tp_freeze_q_cnt", "I", 0),  # times the ring was full (queue frozen)
)
PACKET_MREQ = (
    ("mr_ifindex", "i", 0),
    ("mr_type", "H", 0),
    ("mr_alen", "H", 0),
    ("mr_address", "8s", b""),
)


def layout_struct(layout: tuple) -> struct.Struct:
    return struct.Struct("=" + "".join(fmt for _, fmt, _ in layout))


def layout_offsets(layout: tuple) -> dict[str, int]:
    offsets, pos = {}, 0
    for name, fmt, _ in layout:
        offsets[name] = pos
        pos += struct.calcsize("=" + fmt)
    return offsets


def pack_layout(layout: tuple, **values) -> bytes:
    return layout_struct(layout).pack(*(values.get(name, default) for name, _, default in layout))


BD = layout_offsets(BLOCK_DESC)
HDR = layout_offsets(TPACKET3_HDR)
STATS_V3 = layout_struct(TPACKET_STATS_V3)
BLOCK_DESC_LEN = layout_struct(BLOCK_DESC).size  # the first frame starts after it (no private area)
# Smallest distance from a frame header to its data (tpacket3_hdr + sockaddr_ll, aligned).
TPACKET3_HDRLEN = 68


class CaptureError(RuntimeError):
    """Live capture could not start or continue; the message says why."""


def interface_index(name: str) -> int:
    """The interface's index in this network namespace; CaptureError naming it when there is none."""
    try:
        return socket.if_nametoindex(name)
    except (OSError, ValueError):  # ValueError: a name with a NUL byte
        raise CaptureError(f"network interface {name!r} does not exist (in this network namespace)") from None


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


def _snaplen_filter(snaplen: int) -> tuple[bytes, object]:
    """A classic BPF program 'accept, keep snaplen bytes' as SO_ATTACH_FILTER wants it.

    Returns the sock_fprog bytes and the instruction array they point to (keep
    it alive until setsockopt returns).
    """
    program = (_SockFilter * 1)(_SockFilter(BPF_RET_K, 0, 0, snaplen))
    fprog = _SockFprog(1, program)
    return ctypes.string_at(ctypes.addressof(fprog), ctypes.sizeof(fprog)), program


@dataclass
class CaptureStats:
    """Cumulative counters since open()."""

    packets: int = 0  # frames the kernel offered to the socket (delivered + dropped)
    kernel_drops: int = 0  # frames lost because the ring was full
    freeze_count: int = 0  # times the ring filled up (TPACKET_V3 queue freezes)
    delivered: int = 0  # frames handed out in batches
    blocks: int = 0  # ring blocks read
    bad_blocks: int = 0  # blocks whose descriptors did not make sense (skipped, frames lost)

    @property
    def drop_share(self) -> float:
        return self.kernel_drops / self.packets if self.packets else 0.0


@dataclass
class _BlockFrames:
    """Frames copied out of one ring block."""

    ts: np.ndarray
    wire_len: np.ndarray
    cap_len: np.ndarray
    data: bytes | np.ndarray  # the frames' bytes one after another (uint8 from the compiled reader)


def _ring_kernel():
    """agent/native/ring.c's block reader (signature declared here), or None."""
    v = native
    return v.function("iotguard_ring_block", [v.ptr, v.n, v.n, v.f64, v.i64, v.i64, v.u8, v.n], restype=ctypes.c_int64)


def read_block(ring: mmap.mmap, start: int, block_size: int) -> _BlockFrames | None:
    """Copy the frames of the ready block at ``start`` out of the ring (None: inconsistent descriptor).

    One pass in C (agent/native/ring.c) where the kernels were built, else ``read_block_python``.
    """
    kernel = _ring_kernel()
    if kernel is None:
        return read_block_python(ring, start, block_size)
    most = block_size // 64 + 1  # frames of the usual shape; a block with more takes the Python path
    ts, wire_len, cap_len = np.empty(most), np.empty(most, dtype=np.int64), np.empty(most, dtype=np.int64)
    data = np.empty(block_size + 4 * most, dtype=np.uint8)
    at = np.frombuffer(ring, dtype=np.uint8).ctypes.data + start  # the array is dropped at once: close() stays possible
    n = kernel(at, block_size, most, ts, wire_len, cap_len, data, len(data))
    if n == -1:
        return None
    if n < 0:
        return read_block_python(ring, start, block_size)
    return _BlockFrames(ts=ts[:n], wire_len=wire_len[:n], cap_len=cap_len[:n], data=data[: int(cap_len[:n].sum())])


def read_block_python(ring: mmap.mmap, start: int, block_size: int) -> _BlockFrames | None:
    """Copy the frames of the ready block at ``start`` out of the ring.

    Frames are variable-length and chained by tp_next_offset, so a short loop
    walks the headers; the per-frame fields are then read with numpy.  Returns
    None when the descriptor is inconsistent (the caller counts the block).
    """
    words = memoryview(ring).cast("I")
    halves = memoryview(ring).cast("H")
    num, first, blk_len = (words[(start + BD[f]) >> 2] for f in ("num_pkts", "offset_to_first_pkt", "blk_len"))
    end = start + block_size
    if num and (first < BLOCK_DESC_LEN or first + TPACKET3_HDRLEN > block_size or blk_len > block_size):
        return None
    if num > block_size // 4:  # frames start 4-aligned and move forward: a damaged count, not a list to allocate
        return None
    offsets = [0] * num
    pieces: list[bytes] = []
    vlan: list[int] = []  # positions of frames whose 802.1Q tag the kernel stripped
    pos = start + first
    for i in range(num):
        if pos + TPACKET3_HDRLEN > end or pos & 3:
            return None
        offsets[i] = pos
        data_start = pos + halves[(pos + HDR["tp_mac"]) >> 1]
        data_end = data_start + words[(pos + HDR["tp_snaplen"]) >> 2]
        if data_end > end:
            return None
        pieces.append(ring[data_start:data_end])
        if words[(pos + HDR["tp_status"]) >> 2] & TP_STATUS_VLAN_VALID:
            vlan.append(i)
        step = words[pos >> 2]  # tp_next_offset: 0 only for the last frame
        if step == 0 and i < num - 1:
            return None
        pos += step
    at = np.frombuffer(ring, dtype=np.uint32)[start >> 2 : end >> 2]
    rel = (np.asarray(offsets, dtype=np.int64) - start) >> 2
    ts = at[rel + (HDR["tp_sec"] >> 2)] + at[rel + (HDR["tp_nsec"] >> 2)] * 1e-9
    wire_len = at[rel + (HDR["tp_len"] >> 2)].astype(np.int64)
    cap_len = at[rel + (HDR["tp_snaplen"] >> 2)].astype(np.int64)
    for i in vlan:
        pos = offsets[i]
        status = words[(pos + HDR["tp_status"]) >> 2]
        tpid = halves[(pos + HDR["tp_vlan_tpid"]) >> 1] if status & TP_STATUS_VLAN_TPID_VALID else ETH_P_8021Q
        tci = words[(pos + HDR["tp_vlan_tci"]) >> 2] & 0xFFFF
        frame = pieces[i]
        pieces[i] = frame[:12] + struct.pack("!HH", tpid or ETH_P_8021Q, tci) + frame[12:]
        wire_len[i] += 4
        cap_len[i] = len(pieces[i])
    return _BlockFrames(ts=ts, wire_len=wire_len, cap_len=cap_len, data=b"".join(pieces))


class LiveCapture:
    """Frames from one network interface, batch by batch.

    Ring memory is ``block_size * block_count`` bytes.  A block is handed over
    when full or after ``block_timeout_ms``, so at low rates batches still come
    out promptly.  Use as a context manager::

        with LiveCapture("eth0") as cap:
            for batch in cap.batches(stop_event):
                ...
    """

    def __init__(
        self,
        interface: str,
        block_size: int = 1 << 18,
        block_count: int = 16,
        snaplen: int = 256,
        block_timeout_ms: int = 50,
        promiscuous: bool = False,
        outgoing: bool = True,
        poll_timeout_ms: int = 200,
    ) -> None:
        page = mmap.PAGESIZE
        if block_size <= 0 or block_size % page:
            raise ValueError(f"block_size must be a positive multiple of the page size ({page}), got {block_size}")
        if block_count < 1:
            raise ValueError(f"block_count must be at least 1, got {block_count}")
        if not 14 <= snaplen <= block_size - 256:
            raise ValueError(f"snaplen must be between 14 and block_size - 256, got {snaplen}")
        if block_timeout_ms < 1 or poll_timeout_ms < 1:
            raise ValueError("block_timeout_ms and poll_timeout_ms must be at least 1")
        self.interface = interface
        self.block_size = block_size
        self.block_count = block_count
        self.snaplen = snaplen
        self.block_timeout_ms = block_timeout_ms
        self.promiscuous = promiscuous
        self.outgoing = outgoing
        self.poll_timeout_ms = poll_timeout_ms
        self.linktype = LINKTYPE_ETHERNET
        self._sock: socket.socket | None = None
        self._ifindex = 0
        self._link_down = False  # the kernel said ENETDOWN and no frame came since
        self._ring: mmap.mmap | None = None
        self._next_block = 0
        self._next_index = 0
        self._stats = CaptureStats()
        self._stats_lock = threading.Lock()

    # -- setup -------------------------------------------------------------

    def open(self) -> LiveCapture:
        if self._sock is not None:
            return self
        if not has_capability("CAP_NET_RAW"):
            raise PrivilegeError(["CAP_NET_RAW"], "to open an AF_PACKET socket for live capture")
        ifindex = interface_index(self.interface)
        try:
            # Protocol 0: the socket receives nothing until bind(), so no frame
            # arrives before the ring and the snap length filter are in place.
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        except PermissionError:
            raise PrivilegeError(["CAP_NET_RAW"], "to open an AF_PACKET socket for live capture") from None
        try:
            self._configure(sock, ifindex)
        except BaseException:
            sock.close()
            if self._ring is not None:
                self._ring.close()
                self._ring = None
            raise
        self._sock = sock
        self._ifindex = ifindex
        self._next_block = 0
        log.info(
            "capturing on %s: ring %d x %d KiB, snaplen %d, block timeout %d ms%s%s",
            self.interface, self.block_count, self.block_size // 1024, self.snaplen, self.block_timeout_ms,
            ", promiscuous" if self.promiscuous else "", "" if self.outgoing else ", incoming only",
        )  # fmt: skip
        return self

    def _configure(self, sock: socket.socket, ifindex: int) -> None:
        sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
        if not self.outgoing:
            try:
                sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
            except OSError as exc:
                raise CaptureError(f"this kernel cannot ignore outgoing packets (needs Linux 4.20+): {exc}") from None
        fprog, _program = _snaplen_filter(self.snaplen)
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
        frame_size = min(2048, self.block_size)  # TPACKET_V3 only checks it; frames are packed
        req = pack_layout(
            TPACKET_REQ3,
            tp_block_size=self.block_size,
            tp_block_nr=self.block_count,
            tp_frame_size=frame_size,
            tp_frame_nr=self.block_size // frame_size * self.block_count,
            tp_retire_blk_tov=self.block_timeout_ms,
        )
        try:
            sock.setsockopt(SOL_PACKET, PACKET_RX_RING, req)
            self._ring = mmap.mmap(
                sock.fileno(), self.block_size * self.block_count, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE
            )
        except OSError as exc:
            raise CaptureError(
                f"could not set up a capture ring of {self.block_count} blocks of {self.block_size} bytes: {exc}"
            ) from None
        try:
            sock.bind((self.interface, ETH_P_ALL))
        except OSError as exc:
            raise CaptureError(f"cannot capture on interface {self.interface!r}: {exc}") from None
        hatype = sock.getsockname()[3]
        if hatype not in (ARPHRD_ETHER, ARPHRD_LOOPBACK):
            raise CaptureError(
                f"interface {self.interface!r} is not an Ethernet interface (ARPHRD type {hatype}); "
                "only Ethernet frames are decoded"
            )
        if self.promiscuous:
            mreq = pack_layout(PACKET_MREQ, mr_ifindex=ifindex, mr_type=PACKET_MR_PROMISC)
            sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)  # undone by the kernel on close

    def close(self) -> None:
        if self._sock is None:
            return
        self._read_kernel_stats()
        if self._ring is not None:
            self._ring.close()
            self._ring = None
        self._sock.close()
        self._sock = None

    def __enter__(self) -> LiveCapture:
        return self.open()

    def __exit__(self, *exc_info) -> None:
        self.close()

    # -- reading -------------------------------------------------------------

    def batches(self, stop_event: threading.Event | None = None) -> Iterator[FrameBatch]:
        """Yield one FrameBatch per poll round with frames (all blocks ready then).

        Rounds without frames yield nothing; the loop checks ``stop_event``
        at least every ``poll_timeout_ms``.  To end a capture from another
        thread, set the event, and close() once the loop has returned.
        """
        if self._sock is None:
            self.open()
        poller = select.poll()
        poller.register(self._sock.fileno(), select.POLLIN | select.POLLERR)
        while stop_event is None or not stop_event.is_set():
            batch = self.read_ready()
            if batch is not None:
                self._link_down = False
                yield batch
                continue
            events = poller.poll(self.poll_timeout_ms)
            if any(mask & select.POLLERR for _, mask in events):
                self._handle_socket_error()
            elif self._link_down and self._current_ifindex() != self._ifindex:
                # Removal of a down interface raises no second socket error.
                raise CaptureError(f"capture interface {self.interface!r} was removed")

    def read_ready(self) -> FrameBatch | None:
        """Take every block the kernel has handed over, without waiting; None if there is none."""
        ring = self._ring
        if ring is None:
            raise CaptureError("capture is not open")
        words = np.frombuffer(ring, dtype=np.uint32)
        parts: list[_BlockFrames] = []
        for _ in range(self.block_count):
            start = self._next_block * self.block_size
            status_word = (start + BD["block_status"]) >> 2
            if not words[status_word] & TP_STATUS_USER:
                break  # blocks are handed over in ring order: the rest are not ready either
            frames = read_block(ring, start, self.block_size)
            words[status_word] = TP_STATUS_KERNEL  # frames are copied: hand the block back
            self._next_block = (self._next_block + 1) % self.block_count
            with self._stats_lock:
                self._stats.blocks += 1
                if frames is None:
                    self._stats.bad_blocks += 1
            if frames is None:
                log.warning("capture on %s: skipped a ring block with an inconsistent descriptor", self.interface)
            elif len(frames.ts):
                parts.append(frames)
        if not parts:
            return None
        batch = self._assemble(parts)
        with self._stats_lock:
            self._stats.delivered += len(batch)
        return batch

    def _assemble(self, parts: list[_BlockFrames]) -> FrameBatch:
        cap_len = np.concatenate([p.cap_len for p in parts])
        n = len(cap_len)
        offset = np.zeros(n, dtype=np.int64)
        np.cumsum(cap_len[:-1], out=offset[1:])
        index = np.arange(self._next_index, self._next_index + n, dtype=np.int64)
        self._next_index += n
        return FrameBatch(
            index=index,
            ts=np.concatenate([p.ts for p in parts]),
            wire_len=np.concatenate([p.wire_len for p in parts]),
            cap_len=cap_len,
            offset=offset,
            linktype=np.full(n, self.linktype, dtype=np.uint16),
            buf=np.concatenate([np.frombuffer(p.data, dtype=np.uint8) for p in parts]),
        )

    def _handle_socket_error(self) -> None:
        code = self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)  # reading clears it
        if code == errno.ENETDOWN:  # the kernel reports both "down" and "removed" this way
            if self._current_ifindex() != self._ifindex:
                raise CaptureError(f"capture interface {self.interface!r} was removed")
            self._link_down = True
            log.warning("capture interface %s went down; waiting for it to come back", self.interface)
        elif code:
            raise CaptureError(f"capture on interface {self.interface!r} failed: {os.strerror(code)}")

    def _current_ifindex(self) -> int | None:
        """The interface's index now, looked up in the capture socket's own namespace."""
        request = struct.pack("16si20x", self.interface.encode(), 0)
        try:
            return struct.unpack("16si20x", fcntl.ioctl(self._sock.fileno(), SIOCGIFINDEX, request))[1]
        except OSError:
            return None

    # -- counters ------------------------------------------------------------

    def _read_kernel_stats(self) -> None:
        # The kernel resets its counters on every read, so we accumulate them.
        raw = self._sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, STATS_V3.size)
        packets, drops, freezes = STATS_V3.unpack(raw)
        with self._stats_lock:
            self._stats.packets += packets
            self._stats.kernel_drops += drops
            self._stats.freeze_count += freezes

    def stats(self) -> CaptureStats:
        """Cumulative counters (a copy); reads the kernel's counters when open."""
        if self._sock is not None:
            self._read_kernel_stats()
        with self._stats_lock:
            return CaptureStats(**vars(self._stats))
