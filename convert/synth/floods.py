"""Mirai's floods (syn, ack, udp, udpplain) packet for packet, and what the victims send back.

``mirai/bot/attack_tcp.c`` (syn, ack) and ``attack_udp.c`` (udp generic, udpplain) fix
each header field; ``flood`` reproduces those fields, vectorised per bot, with the
options of the attack's command (Mirai's defaults below):

* syn: DF, random ports/seq/IP ID per packet, ack 0, window 0, options MSS
  1400-1415 and TSval chosen once per target, TSecr 0, WS 6; IP 60 bytes.
  Flags, TOS, TTL, DF, ident, ports, seqnum, acknum and source may be set.
* ack: no DF, random ports/seq/ack per packet, window random once per target,
  512 random payload bytes (IP 552); also len and rand (rand=0: the bytes drawn
  once per target at setup are sent again and again).
* udp: no DF, random ports per packet, 512 random bytes (IP 540); rand=0
  sends zeros (the buffer is never filled).
* udpplain: a connected UDP socket: the kernel sets DF and counts the IP ID up,
  one bound source port (a second socket cannot bind it: the kernel gives it an
  ephemeral port), one destination port per target; only len, rand, sport, dport.

Netmask targets spread destinations over the prefix (``addr + (rand >> netmask)``);
a spoofed source is random per packet or one fixed address (raw-socket attacks only).
Packets the router cannot deliver (absent victims) never reach the LAN, only its
ARP requests for them do (``router_arp``).

Victims answer as their stack does (``ReplyStack``): Linux sends ICMP port
unreachable quoting up to 576 bytes of IP, limited per peer (a token bucket:
a burst of 6, then one per ``icmp_ratelimit``, 1 s by default) and overall
(1000/s, burst 50); lwIP quotes only the IP header and 8 bytes and never
limits.  TCP as RFC 793 and Linux answer a segment without a connection:
nothing to a RST; RST (seq = its ack) to anything with ACK; to a SYN, SYN-ACK
from a listening port (SYN cookies), else RST-ACK; a listening port drops
segments with neither SYN nor ACK; some hosts limit their RSTs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from agent.capture.headers import ACK, ETHERNET, FIN, IPV4, RST, SYN, TCP, URG

from .attack import AttackPlan, Bot, frame_length
from .frames import (
    BROADCAST_MAC,
    TCP_SYN_OPTIONS,
    Frames,
    arp_frames,
    icmp_frames,
    pack,
    random_payload,
    tcp_frames,
    udp_frames,
)
from .options import AttackOptions
from .scene import Scene
from .timeline import BENIGN, flood_times

CHUNK_BYTES = 48 << 20  # frame bytes built at once (bounds memory for long floods)


def flood(scene: Scene, plan: AttackPlan, bot: Bot) -> tuple[np.ndarray, np.ndarray]:
    """Add one bot's flood; returns (time, destination) of packets the router drops (victim absent)."""
    rng, lan = scene.rng, scene.lan
    kind, o = plan.kind, plan.options
    times = _send_times(rng, plan, bot)
    targets = _setup_targets(rng, plan)
    lan_ips = {h.ip: h for h in lan.hosts()}
    role = f"{kind}:{bot.name}"
    ttl = _seen_ttl(bot, 64 if kind == "mirai_udpplain" else o.ttl)
    absent_t, absent_dst = [np.zeros(0)], [np.zeros(0, dtype=np.int64)]
    chunk = max(1024, CHUNK_BYTES // frame_length(kind, o))
    for lo in range(0, len(times), chunk):
        t = times[lo : lo + chunk]
        which = (lo + np.arange(len(t))) % len(targets)  # one packet per target per pass of the send loop
        dst, src = _addresses(rng, plan, bot, targets, which)
        if plan.view == "victim":  # the router delivers only to hosts on the LAN
            keep = np.isin(dst, list(lan_ips))
            absent_t.append(t[~keep])
            absent_dst.append(dst[~keep])
            t, dst, src, which = t[keep], dst[keep], src[keep], which[keep]
        if not len(t):
            continue
        dst_mac = _macs_for(scene, dst) if plan.view == "victim" else lan.gateway.mac
        ip = {"src_mac": bot.host.mac, "dst_mac": dst_mac, "src_ip": src, "dst_ip": dst, "ttl": ttl,
              "pad": not bot.host.is_board}  # fmt: skip
        frames, sent = _flood_frames(rng, plan, targets, which, ip)
        scene.timeline.add(t, frames, kind, role)
        plan.count(kind, len(t))
        _flood_replies(scene, plan, bot, t, frames, src, dst, **sent)
    return np.concatenate(absent_t), np.concatenate(absent_dst)


def _seen_ttl(bot: Bot, ttl: int) -> int:
    """The TTL a bot's packet carries where it is captured: as set on the LAN, less the hops from a remote bot.

    (A remote bot's host TTL is 64 minus its hops.)  A TTL too small for the path would never arrive; such a
    bot is taken to be that many hops away at most, so forced small TTLs still reach the capture."""
    hops = 0 if bot.host.local else 64 - bot.host.ttl
    return max(1, int(ttl) - min(hops, int(ttl) - 1))


def _payload(rng: np.random.Generator, o: AttackOptions, n: int, fixed: np.ndarray, which: np.ndarray) -> np.ndarray:
    """Flood payloads: fresh random bytes (rand=1), or what the buffer holds when never refreshed (rand=0)."""
    if o.payload_random:
        return random_payload(rng, o.payload_len, n)
    return fixed[which]


def _send_times(rng: np.random.Generator, plan: AttackPlan, bot: Bot) -> np.ndarray:
    """When the bot's packets are captured: its send rate, shifted by the command's lag and the path."""
    # The command reaches bots at slightly different times; the duration is the same for all.
    lag = float(rng.uniform(0, min(1.5, 0.2 * (plan.stop - plan.start)))) if plan.view == "victim" else 0.0
    times = flood_times(rng, plan.start + lag, plan.stop + lag, bot.rate)
    if plan.view == "victim" and not bot.host.local:
        # Path delay plus queueing; queues are FIFO, so a bot's packets stay in order.
        times = np.maximum.accumulate(times + float(rng.uniform(0.01, 0.15)) + rng.exponential(0.0002, len(times)))
    return times


@dataclass
class _Targets:
    """The targets, and what a bot fixes once per target at attack setup: MSS and TSval for syn, window
    and the rand=0 payload for ack, ports, address and IP ID counter of udpplain's connected sockets."""

    ip: np.ndarray  # network address
    prefix: np.ndarray
    mss: np.ndarray
    tsval: np.ndarray
    window: np.ndarray
    payload: np.ndarray  # (targets, payload_len) uint8
    plain_sport: np.ndarray
    plain_dport: np.ndarray
    plain_dst: np.ndarray
    plain_id: np.ndarray
    plain_sent: np.ndarray  # datagrams each udpplain socket has sent so far

    def __len__(self) -> int:
        return len(self.ip)


def _setup_targets(rng: np.random.Generator, plan: AttackPlan) -> _Targets:
    o = plan.options
    n_targets = len(plan.targets)
    target_ip = np.array([t.ip for t in plan.targets], dtype=np.int64)
    target_prefix = np.array([t.prefix for t in plan.targets], dtype=np.int64)
    mss = 1400 + rng.integers(0, 16, n_targets)
    tsval = rng.integers(0, 1 << 32, n_targets)
    window = rng.integers(0, 1 << 16, n_targets)
    if plan.kind == "mirai_ack":
        fixed_payload = random_payload(rng, o.payload_len, n_targets)  # rand_str() once at setup
    else:
        fixed_payload = np.zeros((n_targets, o.payload_len), dtype=np.uint8)  # calloc'd, never filled
    # udpplain binds every socket to one port; only the first bind succeeds, the others get ephemeral ports.
    plain_sport = np.concatenate(
        [[o.sport if o.sport is not None else int(rng.integers(0, 1 << 16))], rng.integers(32768, 61000, n_targets - 1)]
    )
    plain_dport = rng.integers(0, 1 << 16, n_targets) if o.dport is None else np.full(n_targets, o.dport)
    plain_dst = target_ip + np.where(target_prefix < 32, rng.integers(0, 1 << 32, n_targets) >> target_prefix, 0)
    plain_id = rng.integers(0, 1 << 16, n_targets)
    return _Targets(target_ip, target_prefix, mss, tsval, window, fixed_payload, plain_sport, plain_dport, plain_dst,
                    plain_id, plain_sent=np.zeros(n_targets, dtype=np.int64))  # fmt: skip


def _addresses(
    rng: np.random.Generator, plan: AttackPlan, bot: Bot, targets: _Targets, which: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Each packet's destination (spread over a netmask target) and source (the bot's, or spoofed)."""
    o, n = plan.options, len(which)
    if plan.kind == "mirai_udpplain":
        dst = targets.plain_dst[which]
    else:
        spread = rng.integers(0, 1 << 32, n) >> targets.prefix[which]
        dst = targets.ip[which] + np.where(targets.prefix[which] < 32, spread, 0)
    if not bot.spoof:
        src = np.full(n, bot.host.ip, dtype=np.int64)
    elif o.source == "fixed" and o.source_ip is not None:
        src = np.full(n, o.source_ip, dtype=np.int64)
    else:
        src = rng.integers(0, 1 << 32, n)
    return dst, src


def _flood_frames(
    rng: np.random.Generator, plan: AttackPlan, targets: _Targets, which: np.ndarray, ip: dict
) -> tuple[Frames, dict[str, np.ndarray]]:
    """One chunk of the flood, and the header fields the victims' answers depend on (sport, dport, seq, ack)."""
    kind, o, n = plan.kind, plan.options, len(which)
    sport = rng.integers(0, 1 << 16, n) if o.sport is None else np.full(n, o.sport, dtype=np.int64)
    dport = rng.integers(0, 1 << 16, n) if o.dport is None else np.full(n, o.dport, dtype=np.int64)
    seq = rng.integers(0, 1 << 32, n) if o.seqnum is None else np.full(n, o.seqnum, dtype=np.int64)
    ack = rng.integers(0, 1 << 32, n) if o.acknum is None else np.full(n, o.acknum, dtype=np.int64)
    ip_id = rng.integers(0, 1 << 16, n) if o.ident is None else o.ident
    raw = {"ip_id": ip_id, "df": o.df, "tos": o.tos}
    if kind == "mirai_syn":
        options = pack(TCP_SYN_OPTIONS, n, mss=targets.mss[which], tsval=targets.tsval[which], tsecr=0, ws=6)
        urgent = rng.integers(0, 1 << 16, n) if o.tcp_flags & URG else 0  # only the syn flood draws it
        tcp = {"sport": sport, "dport": dport, "seq": seq, "ack": ack, "flags": o.tcp_flags, "window": 0,
               "urgent": urgent}  # fmt: skip
        frames = tcp_frames(n, tcp=tcp, options=options, **raw, **ip)
    elif kind == "mirai_ack":
        tcp = {"sport": sport, "dport": dport, "seq": seq, "ack": ack, "flags": o.tcp_flags,
               "window": targets.window[which]}  # fmt: skip
        frames = tcp_frames(n, tcp=tcp, payload=_payload(rng, o, n, targets.payload, which), **raw, **ip)
    elif kind == "mirai_udp":
        payload = _payload(rng, o, n, targets.payload, which)
        frames = udp_frames(n, sport=sport, dport=dport, payload=payload, **raw, **ip)
    elif kind == "mirai_udpplain":
        # IP ID: the socket's counter, one step per datagram it sends to that target.
        counter = targets.plain_sent[which] + _rank_within(which, len(targets))
        targets.plain_sent += np.bincount(which, minlength=len(targets))
        sport, dport = targets.plain_sport[which], targets.plain_dport[which]
        payload = _payload(rng, o, n, targets.payload, which)
        frames = udp_frames(
            n, sport=sport, dport=dport, payload=payload, ip_id=targets.plain_id[which] + counter, df=True, **ip
        )
    else:
        raise ValueError(f"not a flood: {kind}")
    return frames, {"sport": sport, "dport": dport, "seq": seq, "ack": ack}


def _rank_within(which: np.ndarray, groups: int) -> np.ndarray:
    """For each element, how many earlier elements share its group (0, 1, 2, ... per group)."""
    order = np.argsort(which, kind="stable")
    counts = np.bincount(which, minlength=groups)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.empty(len(which), dtype=np.int64)
    rank[order] = np.arange(len(which)) - starts[which[order]]
    return rank


def _macs_for(scene: Scene, ips: np.ndarray) -> np.ndarray:
    """The MAC each address has on the captured link: its own for LAN hosts, else the gateway's."""
    table = {h.ip: h.mac for h in scene.lan.hosts()}
    keys = np.array(sorted(table), dtype=np.int64)
    vals = np.array([table[k] for k in sorted(table)], dtype=np.uint64)
    pos = np.clip(np.searchsorted(keys, ips), 0, len(keys) - 1)
    return np.where(keys[pos] == ips, vals[pos], np.uint64(scene.lan.gateway.mac))


def router_arp(scene: Scene, plan: AttackPlan, t: np.ndarray, dst: np.ndarray) -> None:
    """The router asks, once a second per address, for victims in its subnet that do not exist."""
    if not len(t):
        return
    gw = scene.lan.gateway
    dst = dst.astype(np.int64)
    idx = _first_per_second(t, dst)
    n = len(idx)
    frames = arp_frames(
        n, src_mac=gw.mac, dst_mac=BROADCAST_MAC, op=1, sender_mac=gw.mac, sender_ip=gw.ip, target_mac=0,
        target_ip=dst[idx], pad=True,
    )
    scene.timeline.add(t[idx] + 0.00005, frames, BENIGN, f"reply:{plan.kind}")
    plan.count("reply", n)


def _first_per_second(t: np.ndarray, key: np.ndarray, per_second: float = 1.0) -> np.ndarray:
    """Indices of the first packet for each key in each 1/per_second interval (a token bucket, roughly)."""
    slot = np.floor(t * per_second).astype(np.int64)
    combined = (np.asarray(key, dtype=np.int64) << 24) + slot
    _, first = np.unique(combined, return_index=True)
    return np.sort(first)


def _flood_replies(scene, plan, bot, t, frames, src, dst, sport, dport, seq, ack) -> None:
    """What the victims send back: SYN-ACK or RST-ACK to SYNs, RST to ACKs, rate-limited ICMP for UDP."""
    rng, lan = scene.rng, scene.lan
    if plan.view == "bot":
        if bot.spoof or plan.reply_fraction <= 0:
            return  # answers go to the spoofed addresses, not to the board
        answered = np.isin(dst, np.unique(dst)[rng.random(len(np.unique(dst))) < plan.reply_fraction])
        sel = np.flatnonzero(answered)
        if not len(sel):
            return
        # Each victim's TTL: its OS's initial value minus the hops back to the board (fixed per address).
        victim_ttl = np.array([64, 128, 255])[dst[sel] % 3] - (6 + (dst[sel] >> 8) % 14)
        victim = {"src_mac": lan.gateway.mac, "dst_mac": bot.host.mac, "ttl": victim_ttl, "pad": True}
        delay = float(rng.uniform(0.015, 0.2))
        _emit_replies(scene, plan, sel, t + delay, frames, src, dst, sport, dport, seq, ack, victim)
        return
    # Victim view: the board answers unpadded, other LAN hosts are captured padded.
    react = t + rng.gamma(2.0, 0.00004, len(t))
    to_board = dst == lan.board.ip
    for group, board in ((to_board, True), (~to_board, False)):
        sel = np.flatnonzero(group)
        if len(sel):
            victim = {
                "src_mac": _macs_for(scene, dst[sel]),
                "dst_mac": _macs_for(scene, src[sel]),
                "ttl": plan.replies.ttl,
                "pad": not board,
            }
            _emit_replies(scene, plan, sel, react, frames, src, dst, sport, dport, seq, ack, victim)


def _emit_replies(scene, plan, sel, t_reply, frames, src, dst, sport, dport, seq, ack, victim) -> None:
    rng, stack, kind = scene.rng, plan.replies, plan.kind
    role = f"reply:{kind}"

    def keep_only(keep: np.ndarray) -> None:
        nonlocal sel, victim
        sel, victim = sel[keep], _subset(victim, keep)

    def add(out, idx) -> None:
        scene.timeline.add(t_reply[idx], out, BENIGN, role)
        plan.count("reply", len(idx))

    opened = np.isin(dport[sel], stack.open_ports)
    if kind in ("mirai_udp", "mirai_udpplain"):
        keep_only(~opened)  # a listening socket takes the datagram silently
        peer = (dst[sel] & 0xFFFFFF) << 32 | src[sel]
        keep_only(plan.buckets("icmp-peer", stack.icmp_per_peer, stack.icmp_peer_burst).allow(t_reply[sel], peer))
        keep_only(plan.buckets("icmp", stack.icmp_global, stack.icmp_global_burst).allow(t_reply[sel], dst[sel]))
        if not len(sel):
            return
        rows = frames.rows[sel]
        at = ETHERNET.size + IPV4.offset("total_len")
        ip_len = rows[:, at].astype(np.int64) << 8 | rows[:, at + 1]
        out = icmp_frames(
            len(sel),
            icmp={"type": 3, "code": 3},
            payload=rows[:, ETHERNET.size : ETHERNET.size + stack.quote],  # the offending datagram, quoted
            payload_len=np.minimum(ip_len, stack.quote),
            src_ip=dst[sel],
            dst_ip=src[sel],
            tos=0 if stack.ttl == 255 else 0xC0,
            ip_id=rng.integers(0, 1 << 16, len(sel)),
            df=False,
            **victim,
        )
        add(out, sel)
        return
    flags = plan.options.tcp_flags
    if flags & RST:
        return  # nobody answers a reset
    if not flags & ACK:
        if flags & SYN and not flags & FIN and opened.any():
            # A listening port answers every SYN (SYN cookies once the backlog is full), echoing the TSval.
            o, ov = sel[opened], _subset(victim, opened)
            m = len(o)
            tcp = {
                "sport": dport[o],
                "dport": sport[o],
                "seq": rng.integers(0, 1 << 32, m),
                "ack": (seq[o] + 1) & 0xFFFFFFFF,
                "flags": SYN | ACK,
                "window": 65160,
            }
            options = None
            if kind == "mirai_syn":  # the flood's SYNs carry timestamps: the answer echoes them
                at = ETHERNET.size + IPV4.size + TCP.size + TCP_SYN_OPTIONS.offset("tsval")
                tsval = frames.rows[o, at : at + 4].astype(np.int64) @ np.array([1 << 24, 1 << 16, 1 << 8, 1])
                options = pack(TCP_SYN_OPTIONS, m, mss=1460, tsval=rng.integers(0, 1 << 32, m), tsecr=tsval, ws=7)
            add(tcp_frames(m, tcp=tcp, options=options, src_ip=dst[o], dst_ip=src[o], ip_id=0, df=True, **ov), o)
        keep_only(~opened)  # a listening port answered the SYN above, or drops what is neither SYN nor ACK
    keep_only(
        plan.buckets("rst", stack.rst_per_second, max(1, int(min(stack.rst_per_second, 1e6)))).allow(
            t_reply[sel], dst[sel]
        )
    )
    if not len(sel):
        return
    if flags & ACK:  # no connection: RST carrying the segment's acknowledgement number as its sequence number
        tcp = {"sport": dport[sel], "dport": sport[sel], "seq": ack[sel], "ack": 0, "flags": RST, "window": 0}
    else:  # closed port: RST-ACK acknowledging what the segment occupied
        length = plan.options.payload_len if kind == "mirai_ack" else 0
        occupied = length + bool(flags & SYN) + bool(flags & FIN)
        tcp = {"sport": dport[sel], "dport": sport[sel], "seq": 0, "ack": (seq[sel] + occupied) & 0xFFFFFFFF}
        tcp |= {"flags": RST | ACK, "window": 0}
    add(tcp_frames(len(sel), tcp=tcp, src_ip=dst[sel], dst_ip=src[sel], ip_id=0, df=True, **victim), sel)


def _subset(fields: dict, keep: np.ndarray) -> dict:
    """Per-packet arrays of header values follow the packets kept; scalars stay."""
    return {k: (v[keep] if isinstance(v, np.ndarray) and v.ndim == 1 else v) for k, v in fields.items()}
