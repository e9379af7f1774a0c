"""Real-looking TCP conversations: handshake, segmentation, delayed ACKs, timestamps, windows, FIN/RST.

A ``TcpConversation`` records what happens (who sends how many bytes when, with
which flags) and ``add_to`` derives every header field for all segments at once:
sequence and acknowledgement numbers from cumulative sums per direction, the
timestamps option from each host's millisecond clock and the last value seen
from the peer, windows that grow as data is received, and an IP ID counter per
socket.  Numbers are computed from the capture point's order of events, which is
what the board (near one end of the conversation) observes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from agent.capture.headers import ACK, FIN, PSH, RST, SYN

from .frames import TCP_MSS_OPTION, TCP_SYN_OPTIONS, TCP_TS_OPTIONS, Frames, pack, random_payload, tcp_frames
from .network import Host
from .timeline import Timeline

CLIENT, SERVER = 0, 1


@dataclass
class _Segments:
    """Every segment of a conversation, one array element each, in capture order."""

    t: np.ndarray
    sender: np.ndarray  # CLIENT or SERVER
    flags: np.ndarray
    length: np.ndarray  # payload bytes
    event_no: np.ndarray  # which recorded event it belongs to ...
    seg_no: np.ndarray  # ... and which of its segments it is (for explicit payload bytes)


@dataclass(frozen=True)
class TcpStack:
    """How one host's TCP/IP stack fills in headers."""

    name: str = "linux"
    mss: int = 1460
    timestamps: bool = True  # Linux-style SYN options (MSS, SACK-permitted, TS, NOP, WS) and TS on every segment
    window_scale: int = 7
    syn_window: int = 64240
    window: int = 502  # scaled window advertised once connected
    window_growth: int = 1500  # how far the window may grow (scaled units) as data arrives
    df: bool = True
    ts_hz: int = 1000


LINUX = TcpStack()
LINUX_SERVER = TcpStack("linux-server", syn_window=65160, window=509, window_growth=3000)
LWIP = TcpStack("lwip", timestamps=False, window_scale=0, syn_window=5840, window=5840, window_growth=0, df=False)


class TcpConversation:
    """One TCP connection between a client and a server, seen from near the client (``near=CLIENT``) or server."""

    def __init__(
        self,
        rng: np.random.Generator,
        client: Host,
        server: Host,
        sport: int,
        dport: int,
        *,
        rtt: float,
        near: int = CLIENT,
        client_stack: TcpStack = LINUX,
        server_stack: TcpStack = LINUX_SERVER,
        link_bps: float = 100e6,
    ) -> None:
        self.rng = rng
        self.hosts = (client, server)
        self.ports = (int(sport), int(dport))
        self.stacks = (client_stack, server_stack)
        self.rtt = float(rtt)
        self.near = near
        self.link_bps = link_bps
        self.timestamps = client_stack.timestamps and server_stack.timestamps
        self._events: list[tuple[np.ndarray, int, np.ndarray, np.ndarray]] = []  # (t, direction, flags, length)
        # (event number, segment) -> [(offset, bytes)]: explicit payload bytes; the rest is opaque (random)
        self._content: dict[tuple[int, int], list[tuple[int, bytes]]] = {}
        self.end = 0.0  # capture time of the last event

    # ------------------------------------------------------------ timing

    def delay(self, sender: int) -> float:
        """Time from an event seen at the capture point to ``sender``'s reaction being seen there."""
        processing = float(self.rng.gamma(2.0, 0.00015))
        return processing if sender == self.near else self.rtt * float(self.rng.uniform(0.95, 1.15)) + processing

    def ack_delay(self, receiver: int) -> float:
        """An ACK leaves the kernel within tens of microseconds; a far receiver's is seen a round trip later."""
        kernel = 0.000004 + float(self.rng.gamma(2.0, 0.000015))
        return kernel if receiver == self.near else self.rtt * float(self.rng.uniform(0.95, 1.15)) + kernel

    @staticmethod
    def _before_next(times: np.ndarray, acked: np.ndarray, react) -> np.ndarray:
        """A near receiver's ACK leaves before the next segment arrives (so it acknowledges just these two)."""
        nxt = np.append(times, np.inf)[acked + 1]
        return np.minimum(np.asarray(react, dtype=np.float64), 0.5 * (nxt - times[acked]))

    def payload_per_segment(self) -> int:
        return min(s.mss for s in self.stacks) - (12 if self.timestamps else 0)

    def _emit(self, t, sender: int, flags, length, content: bytes | None = None) -> None:
        t = np.atleast_1d(np.asarray(t, dtype=np.float64))
        flags = np.broadcast_to(np.asarray(flags, dtype=np.uint8), t.shape).copy()
        length = np.broadcast_to(np.asarray(length, dtype=np.int64), t.shape).copy()
        if content is not None:
            self._content[(len(self._events), 0)] = [(0, content)]
        self._events.append((t, sender, flags, length))
        self.end = max(self.end, float(t.max()))

    # ------------------------------------------------------------ what happens

    def handshake(self, t: float) -> float:
        self._emit(t, CLIENT, SYN, 0)
        t += self.delay(SERVER)
        self._emit(t, SERVER, SYN | ACK, 0)
        t += self.delay(CLIENT)
        self._emit(t, CLIENT, ACK, 0)
        return t

    def refused(self, t: float) -> float:
        """A SYN answered by RST (closed port)."""
        self._emit(t, CLIENT, SYN, 0)
        t += self.delay(SERVER)
        self._emit(t, SERVER, RST | ACK, 0)
        return t

    def send(self, t: float, sender: int, data: bytes | int, ack: bool = True) -> float:
        """``data`` (explicit bytes, or a byte count of opaque content) from ``sender`` starting at ``t``.

        Split into segments sent back to back; the receiver ACKs every second
        segment and, with ``ack``, the last one after its delayed-ACK timer (pass
        ``ack=False`` when the receiver answers at once and the ACK rides on the answer).
        Returns the capture time of the last segment.
        """
        size = len(data) if isinstance(data, (bytes, bytearray)) else int(data)
        if size <= 0:
            return t
        per = self.payload_per_segment()
        count = -(-size // per)
        lengths = np.full(count, per, dtype=np.int64)
        lengths[-1] = size - per * (count - 1)
        gap = (per + 66) * 8 / self.link_bps
        times = t + gap * np.arange(count) * self.rng.uniform(1.0, 1.3, count)
        flags = np.full(count, ACK, dtype=np.uint8)
        flags[-1] |= PSH
        event = len(self._events)
        self._emit(times, sender, flags, lengths)
        if isinstance(data, (bytes, bytearray)):
            for i in range(count):
                self._content[(event, i)] = [(0, bytes(data[i * per : (i + 1) * per]))]
        receiver = 1 - sender
        acked = np.arange(1, count, 2)
        if len(acked):
            self._emit(
                times[acked] + self._before_next(times, acked, [self.ack_delay(receiver) for _ in acked]),
                receiver,
                ACK,
                0,
            )
        if ack and count % 2 == 1:
            self._emit(times[-1] + self.delay(receiver) + float(self.rng.uniform(0.004, 0.040)), receiver, ACK, 0)
        return float(times[-1])

    def bulk(self, t: float, sender: int, size: int, rate_bps: float, overlay: list[tuple[int, bytes]] = ()) -> float:
        """A long transfer (firmware image, backup) paced at ``rate_bps`` with ACKs every two segments.

        The content is opaque except ``overlay``: (stream offset, bytes) pieces such as TLS record headers.
        """
        per = self.payload_per_segment()
        count = max(1, -(-int(size) // per))
        lengths = np.full(count, per, dtype=np.int64)
        lengths[-1] = int(size) - per * (count - 1) or per
        gap = (per + 66) * 8 / rate_bps
        # Senders emit in bursts of a few segments (congestion window, interrupt coalescing).
        gaps = self.rng.exponential(gap, count)
        burst = self.rng.random(count) < 0.6
        gaps[burst] = (per + 66) * 8 / self.link_bps
        times = t + np.cumsum(gaps)
        flags = np.full(count, ACK, dtype=np.uint8)
        flags[-1] |= PSH
        event = len(self._events)
        self._emit(times, sender, flags, lengths)
        for offset, piece in overlay:
            while piece:  # a piece may straddle segment boundaries
                seg, within = divmod(offset, per)
                take = piece[: per - within]
                self._content.setdefault((event, seg), []).append((within, take))
                offset, piece = offset + len(take), piece[len(take) :]
        acked = np.arange(1, count, 2)
        receiver = 1 - sender
        react = 0.000004 + self.rng.gamma(2.0, 0.000015, len(acked))
        if receiver != self.near:
            react += self.rtt
        else:
            react = self._before_next(times, acked, react)
        self._emit(times[acked] + react, receiver, ACK, 0)
        return float(times[-1])

    def close(self, t: float, initiator: int) -> float:
        self._emit(t, initiator, FIN | ACK, 0)
        t += self.delay(1 - initiator)
        self._emit(t, 1 - initiator, FIN | ACK, 0)
        t += self.delay(initiator)
        self._emit(t, initiator, ACK, 0)
        return t

    def reset(self, t: float, sender: int) -> float:
        self._emit(t, sender, RST | ACK, 0)
        return t

    # ------------------------------------------------------------ headers

    def add_to(
        self, timeline: Timeline, client: tuple[int | str, str], server: tuple[int | str, str] | None = None
    ) -> int:
        """Derive every header and add the frames, labelled (label, role) per direction. Returns the packet count."""
        if not self._events:
            return 0
        server = client if server is None else server
        seg = self._segments()
        headers = self._sequence_numbers(seg)
        redundant = self._redundant_acks(seg, headers["ack"])
        headers["window"] = self._windows(seg, headers["got"])
        headers["ip_id"] = self._ip_ids(seg)

        packets = 0
        for side in (CLIENT, SERVER):
            for is_syn in (True, False):
                sel = np.flatnonzero((seg.sender == side) & ((seg.flags & SYN > 0) == is_syn) & ~redundant)
                if not len(sel):
                    continue
                label, role = client if side == CLIENT else server
                timeline.add(seg.t[sel], self._frames(side, is_syn, seg, headers, sel), label, role)
                packets += len(sel)
        return packets

    def _segments(self) -> _Segments:
        """Every recorded segment, in capture order."""
        events = self._events
        t = np.concatenate([e[0] for e in events])
        sender = np.concatenate([np.full(len(e[0]), e[1], dtype=np.int8) for e in events])
        flags = np.concatenate([e[2] for e in events])
        length = np.concatenate([e[3] for e in events])
        event_no = np.concatenate([np.full(len(e[0]), i) for i, e in enumerate(events)])
        seg_no = np.concatenate([np.arange(len(e[0])) for e in events])
        order = np.argsort(t, kind="stable")
        return _Segments(*(a[order] for a in (t, sender, flags, length, event_no, seg_no)))

    def _sequence_numbers(self, seg: _Segments) -> dict[str, np.ndarray]:
        """Sequence and acknowledgement numbers, timestamps, and the bytes each sender has received ("got")."""
        t, sender, flags = seg.t, seg.sender, seg.flags
        n = len(t)
        consumed = seg.length + ((flags & SYN) > 0) + ((flags & FIN) > 0)
        first_syn = (flags & SYN > 0) & (flags & ACK == 0)
        isn = self.rng.integers(0, 1 << 32, 2)
        ts_base = self.rng.integers(0, 1 << 32, 2)
        hz = np.array([s.ts_hz for s in self.stacks])
        tsval = (ts_base[sender] + np.floor(t * hz[sender]).astype(np.int64)) & 0xFFFFFFFF
        seq = np.zeros(n, dtype=np.int64)
        ack_no = np.zeros(n, dtype=np.int64)
        got = np.zeros(n, dtype=np.int64)  # bytes this packet's sender has received so far
        tsecr = np.zeros(n, dtype=np.int64)
        for side in (CLIENT, SERVER):
            mine = np.flatnonzero(sender == side)
            other = np.flatnonzero(sender != side)
            seq[mine] = isn[side] + np.concatenate([[0], np.cumsum(consumed[mine])[:-1]])
            # What the sender has received: for the end near the capture point, everything captured
            # before its packet; for the far end, only what was captured a round trip earlier.
            if side == self.near:
                k = np.searchsorted(other, mine)
            else:
                k = np.searchsorted(t[other], t[mine] - 0.9 * self.rtt, side="right")
            received = np.concatenate([[0], np.cumsum(consumed[other])])[k]
            ack_no[mine] = isn[1 - side] + received
            got[mine] = received
            tsecr[mine] = np.where(k > 0, tsval[other[np.maximum(k - 1, 0)]], 0) if len(other) else 0
        ack_no[flags & ACK == 0] = 0
        tsecr[first_syn] = 0
        return {"seq": seq, "ack": ack_no, "got": got, "tsval": tsval, "tsecr": tsecr, "first_syn": first_syn}

    @staticmethod
    def _redundant_acks(seg: _Segments, ack_no: np.ndarray) -> np.ndarray:
        """A pending delayed ACK is cancelled when the host sends anything that carries the same
        acknowledgement: pure ACKs that acknowledge nothing new (no loss, so no real duplicates)."""
        redundant = np.zeros(len(seg.t), dtype=bool)
        for side in (CLIENT, SERVER):
            mine = np.flatnonzero(seg.sender == side)
            pure = (seg.flags[mine] == ACK) & (seg.length[mine] == 0)
            same = np.concatenate([[False], ack_no[mine][1:] == ack_no[mine][:-1]])
            redundant[mine[pure & same]] = True
        return redundant

    def _windows(self, seg: _Segments, got: np.ndarray) -> np.ndarray:
        """Advertised windows: the SYN window, then the connected window growing as data arrives."""
        win = np.zeros(len(seg.t), dtype=np.int64)
        for side in (CLIENT, SERVER):
            stack = self.stacks[side]
            mine = seg.sender == side
            scale = stack.window_scale if self.timestamps else 0
            growth = np.minimum(got[mine] >> (3 + scale), stack.window_growth)
            win[mine] = np.minimum(stack.window + growth, 0xFFFF)
            win[mine & (seg.flags & SYN > 0)] = stack.syn_window
        return win

    def _ip_ids(self, seg: _Segments) -> np.ndarray:
        """One IP ID counter per socket, from a random start."""
        ip_id = np.zeros(len(seg.t), dtype=np.int64)
        for side in (CLIENT, SERVER):
            mine = seg.sender == side
            ip_id[mine] = self.rng.integers(0, 1 << 16) + np.arange(int(mine.sum()))
        return ip_id

    def _frames(
        self, side: int, is_syn: bool, seg: _Segments, headers: dict[str, np.ndarray], sel: np.ndarray
    ) -> Frames:
        """Frames of segments ``sel``, all sent by ``side`` and all SYNs or all not."""
        me, peer = self.hosts[side], self.hosts[1 - side]
        stack = self.stacks[side]
        options = self._options(stack, is_syn, headers["tsval"][sel], headers["tsecr"][sel], headers["first_syn"][sel])
        payload = random_payload(self.rng, seg.length[sel])
        for row, (e, s) in enumerate(zip(seg.event_no[sel].tolist(), seg.seg_no[sel].tolist())):
            for offset, piece in self._content.get((e, s), ()):
                payload[row, offset : offset + len(piece)] = np.frombuffer(piece, dtype=np.uint8)
        return tcp_frames(
            len(sel),
            tcp={
                "sport": self.ports[side],
                "dport": self.ports[1 - side],
                "seq": headers["seq"][sel],
                "ack": headers["ack"][sel],
                "flags": seg.flags[sel],
                "window": headers["window"][sel],
            },
            options=options,
            payload=payload,
            payload_len=seg.length[sel],
            src_mac=me.mac,
            dst_mac=peer.mac,
            src_ip=me.ip,
            dst_ip=peer.ip,
            ttl=me.ttl,
            ip_id=headers["ip_id"][sel],
            df=stack.df,
            pad=not me.is_board,
        )

    def _options(self, stack: TcpStack, is_syn: bool, tsval, tsecr, first_syn) -> np.ndarray | None:
        n = len(tsval)
        if is_syn:
            offered = stack.timestamps and (self.timestamps or bool(first_syn.all()))
            if offered:
                return pack(TCP_SYN_OPTIONS, n, mss=stack.mss, tsval=tsval, tsecr=tsecr, ws=stack.window_scale)
            return pack(TCP_MSS_OPTION, n, mss=stack.mss)
        if self.timestamps:
            return pack(TCP_TS_OPTIONS, n, tsval=tsval, tsecr=tsecr)
        return None
