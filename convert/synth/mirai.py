"""Mirai's five traffic classes, packet for packet as the public source builds them (DESIGN 5).

``mirai/bot/attack_tcp.c`` (syn, ack), ``attack_udp.c`` (udp generic, udpplain)
and ``scanner.c`` (telnet scanner and brute force) fix each header field; the
functions here reproduce those fields, vectorised per bot:

* syn: DF, random ports/seq/IP ID per packet, ack 0, window 0, options MSS
  1400-1415 and TSval chosen once per target, TSecr 0, WS 6; IP 60 bytes.
* ack: no DF, random ports/seq/ack per packet, window random once per target,
  512 random payload bytes; IP 552 bytes.
* udp: no DF, random ports per packet, 512 random bytes; IP 540 bytes.
* udpplain: a connected UDP socket: the kernel sets DF and counts the IP ID up,
  one source port per attack, one destination port per target.
* scan: 40-byte SYNs, seq = destination address, fixed source port and window,
  port 23 except every tenth packet (2323), 160 per second in one burst.

Netmask targets spread destinations over the prefix (``addr + (rand >> netmask)``),
spoofing draws a random source per packet (raw-socket attacks only).

Two vantage points: ``view="bot"``, the board is infected and captures what it
sends (no Ethernet padding: a scan SYN stays 54 bytes); ``view="victim"``, the
attack arrives at the board or its LAN (for the scanner: an infected neighbour
seen through a mirror port), and frames under 60 bytes carry the Ethernet
padding a receiver sees.  Remote bots' packets arrive with TTL 64 minus their
hop count; packets the router cannot deliver (absent victims) never reach the
LAN, only its ARP requests for them do.

Labels say who sends what: packets a bot sends for an attack (including its
kernel's RSTs to scan answers, its telnet brute force and its report to the
loader) carry the attack's class; packets innocent hosts send in reaction
(victims' RSTs and ICMP errors, scanned hosts' SYN-ACKs and telnet output, the
router's ARP for absent victims) are benign with role ``reply:<class>``, so
they can be relabelled by role.

Victims answer as their stack does (``ReplyStack``): Linux sends ICMP port
unreachable quoting up to 576 bytes of IP, limited per peer (a token bucket:
a burst of 6, then one per ``icmp_ratelimit``, 1 s by default) and overall
(1000/s, burst 50); lwIP quotes only the IP header and 8 bytes and never
limits.  SYNs to open ports get SYN-ACKs (SYN cookies), to closed ports RST-ACK;
ACKs get RST; some hosts limit their RSTs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace

import numpy as np

from .frames import (
    ACK,
    BROADCAST_MAC,
    ETH_HEADER,
    RST,
    SYN,
    TCP_MSS_OPTION,
    TCP_SYN_OPTIONS,
    arp_frames,
    icmp_frames,
    random_payload,
    tcp_frames,
    udp_frames,
)
from .network import Host, ip_text, random_public_ips
from .payloads import MIRAI_CREDENTIALS, TELNETD_IACS, dns_query, dns_response, mirai_iac_answers
from .scene import Scene
from .tcp import CLIENT, SERVER, TcpConversation, TcpStack
from .timeline import BENIGN, flood_times

log = logging.getLogger(__name__)

ATTACK_CLASSES = ("mirai_ack", "mirai_scan", "mirai_syn", "mirai_udp", "mirai_udpplain")
FLOOD_PAYLOAD = 512  # ATK_OPT_PAYLOAD_SIZE default
SCANNER_RAW_PPS = 160  # SYNs per burst, one burst per second
CHUNK = 200_000  # packets built at once (bounds memory for long floods)
WIRE_OVERHEAD = 24  # preamble, inter-frame gap and FCS around every frame on the wire

# IP total length of each flood class at Mirai's defaults (DESIGN 5).
IP_LENGTH = {
    "mirai_syn": 60,
    "mirai_ack": 40 + FLOOD_PAYLOAD,
    "mirai_udp": 28 + FLOOD_PAYLOAD,
    "mirai_udpplain": 28 + FLOOD_PAYLOAD,
    "mirai_scan": 40,
}


@dataclass(frozen=True)
class ReplyStack:
    """How a victim host answers unsolicited packets."""

    name: str
    icmp_per_peer: float = 1.0  # ICMP errors per second to one peer (inf: no per-peer limit)
    icmp_peer_burst: int = 6  # Linux: XRLIM_BURST_FACTOR tokens of icmp_ratelimit each
    icmp_global: float = 1000.0  # icmp_msgs_per_sec (inf: no limit)
    icmp_global_burst: int = 50  # icmp_msgs_burst
    quote: int = 548  # bytes of the offending datagram an ICMP error quotes (576 bytes of IP in all)
    ttl: int = 64
    rst_per_second: float = float("inf")
    open_ports: tuple[int, ...] = ()  # TCP ports that answer a SYN with SYN-ACK


LINUX_REPLIES = ReplyStack("linux")
REPLY_STACKS = (
    LINUX_REPLIES,
    ReplyStack("linux-icmp-100ms", icmp_per_peer=10.0),
    ReplyStack("linux-icmp-unlimited-peer", icmp_per_peer=float("inf")),  # icmp_ratelimit=0: 1000/s overall
    ReplyStack("bsd", icmp_per_peer=float("inf"), icmp_global=200.0, icmp_global_burst=200, rst_per_second=200.0),
)
LWIP_REPLIES = ReplyStack(
    "lwip", icmp_per_peer=float("inf"), icmp_global=float("inf"), quote=28, ttl=255
)  # ICMP_DEST_UNREACH_DATASIZE: IP header + 8 bytes
COMMON_PORTS = (22, 23, 53, 80, 443, 554, 1883, 8080, 8883)


class TokenBuckets:
    """Which packets a token bucket per key lets through: full at a key's first packet, ``burst`` at once,
    then one per 1/``rate`` s.  A vectorised approximation (after the burst, the first packet of each
    1/rate-long slot), exact enough for floods much faster than ``rate``.  It remembers across calls which
    keys spent their burst and which slots are taken, so several bots' floods share one victim's limit."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = float(rate), int(burst)
        self.spent = np.zeros(0, dtype=np.int64)  # keys whose burst is used up (sorted)
        self.taken = np.zeros(0, dtype=np.int64)  # (key hash, slot) codes already sent in (sorted)

    def allow(self, t: np.ndarray, key: np.ndarray) -> np.ndarray:
        n = len(t)
        if not n or not np.isfinite(self.rate):
            return np.ones(n, dtype=bool)
        key = np.broadcast_to(np.asarray(key, dtype=np.int64), (n,))
        order = np.lexsort((t, key))
        k, tt = key[order], np.asarray(t, dtype=np.float64)[order]
        new = np.concatenate([[True], k[1:] != k[:-1]])
        group = np.cumsum(new) - 1
        first = np.flatnonzero(new)
        rank = np.arange(n) - first[group]
        fresh = ~np.isin(k, self.spent)
        in_burst = fresh & (rank < self.burst)
        slot = np.floor(tt * self.rate).astype(np.int64)
        # A fresh key's next token comes the slot after its burst ended; a spent key's any free slot.
        burst_len = np.minimum(np.bincount(group), self.burst)
        last_burst_slot = np.where(fresh[first], slot[first + burst_len - 1], -1)[group]
        first_in_slot = new | np.concatenate([[True], slot[1:] != slot[:-1]])
        khash = (k.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(33)
        code = (khash.astype(np.int64) << 30) | (slot & ((1 << 30) - 1))
        later = ~in_burst & first_in_slot & (slot > last_burst_slot) & ~np.isin(code, self.taken)
        self.taken = np.union1d(self.taken, code[later])
        self.spent = np.union1d(self.spent, k[fresh & (rank >= self.burst - 1)])
        mask = np.empty(n, dtype=bool)
        mask[order] = in_burst | later
        return mask


@dataclass
class Bot:
    name: str
    host: Host  # as captured: the gateway's MAC and a reduced TTL when it is remote
    rate: float  # packets per second it manages to send
    spoof: bool = False


@dataclass
class Target:
    ip: int  # network address when prefix < 32
    prefix: int = 32

    @property
    def text(self) -> str:
        return f"{ip_text(self.ip)}/{self.prefix}"


@dataclass
class AttackPlan:
    kind: str
    view: str  # "bot" (the board is infected) or "victim" (the board is attacked or on the victims' LAN)
    start: float
    stop: float
    bots: list[Bot]
    targets: list[Target]
    reply_fraction: float = 0.0  # bot view: share of victims that answer the flood
    open_fraction: float = 0.0  # scan: share of scanned addresses that answer SYN-ACK (telnet open)
    refuse_fraction: float = 0.0  # scan: share that answer RST (port closed); the rest stay silent
    vulnerable_fraction: float = 0.25  # scan: share of open devices whose login is in Mirai's table
    dport: int | None = None  # syn/ack/udp: ATK_OPT_DPORT (None: random per packet, Mirai's default)
    replies: ReplyStack = LINUX_REPLIES  # how the victims answer
    counts: dict[str, int] = field(default_factory=dict)
    prior_contacts: list[dict] = field(default_factory=list)  # benign bot-victim traffic around the attack
    _buckets: dict[str, TokenBuckets] = field(default_factory=dict, repr=False)

    def buckets(self, name: str, rate: float, burst: int) -> TokenBuckets:
        """The victims' rate limiter ``name`` (state kept across the chunks of a flood)."""
        if name not in self._buckets:
            self._buckets[name] = TokenBuckets(rate, burst)
        return self._buckets[name]

    def meta(self) -> dict:
        return {
            "class": self.kind,
            "view": self.view,
            "start_s": round(self.start, 6),
            "stop_s": round(self.stop, 6),
            "bots": [
                {
                    "name": b.name,
                    "ip": "spoofed" if b.spoof else b.host.ip_text,
                    "real_ip": b.host.ip_text,
                    "mac": b.host.mac_text,
                    "ttl_seen": b.host.ttl,
                    "rate_pps": round(b.rate, 1),
                }
                for b in self.bots
            ],
            "targets": [t.text for t in self.targets] if self.kind != "mirai_scan" else "random public IPv4",
            "packets": dict(self.counts),
            **(
                {"dport": self.dport if self.dport is not None else "random", "replies": self.replies.name}
                if self.kind != "mirai_scan"
                else {}
            ),
            **({"prior_contacts": list(self.prior_contacts)} if self.prior_contacts else {}),
            **(
                {"answer_fractions": {"open": round(self.open_fraction, 4), "refused": round(self.refuse_fraction, 4)}}
                if self.kind == "mirai_scan"
                else {}
            ),
        }


# ---------------------------------------------------------------- planning


def link_rate_cap(kind: str, link_bps: float) -> float:
    """Most frames of this class per second a link carries."""
    return link_bps / ((ETH_HEADER + max(IP_LENGTH[kind], 46) + WIRE_OVERHEAD) * 8)


def plan_attack(
    scene: Scene, kind: str, view: str, start: float, stop: float, bot_hosts: list[Host] | None = None
) -> AttackPlan:
    """Random but plausible parameters: bots, rates (a few hundred to tens of thousands pps), spoofing, targets."""
    rng, lan = scene.rng, scene.lan
    cap = link_rate_cap(kind, scene.link_bps)
    if kind == "mirai_scan":
        # The scanner: one bot (the board, or an infected neighbour seen through a mirror port).
        host = lan.board if view == "bot" else (bot_hosts or [lan.board])[0]
        return AttackPlan(
            kind,
            view,
            start,
            stop,
            [Bot("bot1", host, float(SCANNER_RAW_PPS))],
            [],
            open_fraction=float(rng.uniform(0.002, 0.012)),
            refuse_fraction=float(rng.uniform(0.02, 0.08)),
        )
    if view == "bot":
        bots = [Bot("bot1", lan.board, _bot_rate(rng, cap), spoof=kind != "mirai_udpplain" and rng.random() < 0.3)]
        count = int(rng.choice([1, 1, 1, 2, 3]))
        targets = [
            Target(int(ip) & _mask(p), p)
            for ip, p in zip(random_public_ips(rng, count), rng.choice([32, 32, 32, 28, 24], count))
        ]
        return AttackPlan(
            kind,
            view,
            start,
            stop,
            bots,
            targets,
            reply_fraction=float(rng.choice([0.0, 0.3, 1.0])),
            dport=_flood_dport(rng, kind),
            replies=_reply_stack(rng, lwip_possible=True),
        )
    # Victim view: the board, another device, or the whole /24 is the target.
    choice = rng.random()
    if choice < 0.5:
        targets = [Target(lan.board.ip)]
    elif lan.devices and (choice < 0.75 or kind == "mirai_udpplain"):  # udpplain hits one address anyway
        dev = list(lan.devices.values())[int(rng.integers(len(lan.devices)))]
        targets = [Target(dev.ip)]
    else:
        targets = [Target(lan.network, 24)]
    bots = []
    # Through the Internet a public LAN meets any number of bots; a private one only its own infected devices.
    n_bots = int(rng.choice([1, 1, 2, 3, 5, 8] if lan.public else [1, 1, 2, 3]))
    spoof = kind != "mirai_udpplain" and rng.random() < 0.35
    for i in range(n_bots):
        local = bot_hosts[i] if bot_hosts and i < len(bot_hosts) else None
        if local is None and not lan.public:
            local = lan.add_device(rng, f"infected{i + 1}")  # a private LAN is only reachable from inside
        host = local if local is not None else scene.remote_host(f"bot{i + 1}", int(random_public_ips(rng, 1)[0]))
        bots.append(Bot(f"bot{i + 1}", host, _bot_rate(rng, cap), spoof=spoof))
    total = sum(b.rate for b in bots)
    if total > cap:  # the victim's link carries no more: the rest is dropped upstream
        for b in bots:
            b.rate *= cap / total
    # The board is a Linux host; other LAN devices may run lwIP (ESP plugs and sensors).
    lwip = any(t.prefix == 32 and t.ip != lan.board.ip for t in targets)
    dport = _flood_dport(rng, kind)
    return AttackPlan(kind, view, start, stop, bots, targets, dport=dport, replies=_reply_stack(rng, lwip))


def _flood_dport(rng: np.random.Generator, kind: str) -> int | None:
    """Most floods use Mirai's random ports; some commands fix the destination port (dport=...)."""
    if kind not in ("mirai_syn", "mirai_ack", "mirai_udp") or rng.random() >= 0.2:
        return None
    return int(rng.choice(COMMON_PORTS)) if rng.random() < 0.8 else int(rng.integers(1024, 1 << 16))


def _reply_stack(rng: np.random.Generator, lwip_possible: bool) -> ReplyStack:
    """A victim's stack: mostly stock Linux, sometimes tuned limits, lwIP, or a BSD-like limiter."""
    if lwip_possible and rng.random() < 0.25:
        stack = LWIP_REPLIES
    else:
        stack = REPLY_STACKS[int(rng.choice(len(REPLY_STACKS), p=[0.6, 0.15, 0.15, 0.1]))]
    return replace(stack, open_ports=tuple(int(p) for p in COMMON_PORTS if rng.random() < 0.3))


def _bot_rate(rng: np.random.Generator, cap: float) -> float:
    return float(min(np.exp(rng.uniform(np.log(300), np.log(30000))), cap))


def _mask(prefix: int) -> int:
    return (0xFFFFFFFF << (32 - int(prefix))) & 0xFFFFFFFF


def run_attack(scene: Scene, plan: AttackPlan) -> AttackPlan:
    if plan.kind == "mirai_scan":
        for bot in plan.bots:
            _scan(scene, plan, bot)
        return plan
    absent_t, absent_dst = [], []
    for bot in plan.bots:
        t, dst = _flood(scene, plan, bot)
        absent_t.append(t)
        absent_dst.append(dst)
    _router_arp(scene, plan, np.concatenate(absent_t), np.concatenate(absent_dst))
    return plan


# ---------------------------------------------------------------- floods


def _count(plan: AttackPlan, key: str, n: int) -> None:
    plan.counts[key] = plan.counts.get(key, 0) + int(n)


def _flood(scene: Scene, plan: AttackPlan, bot: Bot) -> tuple[np.ndarray, np.ndarray]:
    """Add one bot's flood; returns (time, destination) of packets the router drops (victim absent)."""
    rng, lan = scene.rng, scene.lan
    kind = plan.kind
    # The command reaches bots at slightly different times; the duration is the same for all.
    lag = float(rng.uniform(0, min(1.5, 0.2 * (plan.stop - plan.start)))) if plan.view == "victim" else 0.0
    times = flood_times(rng, plan.start + lag, plan.stop + lag, bot.rate)
    if plan.view == "victim" and not bot.host.local:
        # Path delay plus queueing; queues are FIFO, so a bot's packets stay in order.
        times = np.maximum.accumulate(times + float(rng.uniform(0.01, 0.15)) + rng.exponential(0.0002, len(times)))
    n_targets = len(plan.targets)
    target_ip = np.array([t.ip for t in plan.targets], dtype=np.int64)
    target_prefix = np.array([t.prefix for t in plan.targets], dtype=np.int64)
    # Fixed once per target (attack setup): MSS and TSval for syn, window for ack, dport for udpplain.
    mss = 1400 + rng.integers(0, 16, n_targets)
    tsval = rng.integers(0, 1 << 32, n_targets)
    window = rng.integers(0, 1 << 16, n_targets)
    plain_sport = int(rng.integers(1024, 1 << 16))
    plain_dport = rng.integers(0, 1 << 16, n_targets)
    plain_dst = target_ip + np.where(target_prefix < 32, rng.integers(0, 1 << 32, n_targets) >> target_prefix, 0)
    plain_id = rng.integers(0, 1 << 16, n_targets)
    lan_ips = {h.ip: h for h in lan.hosts()}
    role = f"{kind}:{bot.name}"

    sent_so_far = np.zeros(n_targets, dtype=np.int64)
    absent_t, absent_dst = [np.zeros(0)], [np.zeros(0, dtype=np.int64)]
    for lo in range(0, len(times), CHUNK):
        t = times[lo : lo + CHUNK]
        n = len(t)
        which = (lo + np.arange(n)) % n_targets  # one packet per target per pass of the send loop
        if kind == "mirai_udpplain":
            dst = plain_dst[which]
        else:
            spread = rng.integers(0, 1 << 32, n) >> target_prefix[which]
            dst = target_ip[which] + np.where(target_prefix[which] < 32, spread, 0)
        src = rng.integers(0, 1 << 32, n) if bot.spoof else np.full(n, bot.host.ip, dtype=np.int64)
        keep = np.ones(n, dtype=bool)
        if plan.view == "victim":
            keep = np.isin(dst, list(lan_ips))
            absent_t.append(t[~keep])
            absent_dst.append(dst[~keep])
        t, dst, src, which = t[keep], dst[keep], src[keep], which[keep]
        n = len(t)
        if not n:
            continue
        dst_mac = _macs_for(scene, dst) if plan.view == "victim" else lan.gateway.mac
        ip = {
            "src_mac": bot.host.mac,
            "dst_mac": dst_mac,
            "src_ip": src,
            "dst_ip": dst,
            "ttl": bot.host.ttl,
            "pad": not bot.host.is_board,
        }
        sport = rng.integers(0, 1 << 16, n)
        dport = rng.integers(0, 1 << 16, n) if plan.dport is None else np.full(n, plan.dport, dtype=np.int64)
        seq = rng.integers(0, 1 << 32, n)
        ack = rng.integers(0, 1 << 32, n)
        ip_id = rng.integers(0, 1 << 16, n)
        if kind == "mirai_syn":
            options = TCP_SYN_OPTIONS.pack(n, mss=mss[which], tsval=tsval[which], tsecr=0, ws=6)
            tcp = {"sport": sport, "dport": dport, "seq": seq, "ack": 0, "flags": SYN, "win": 0}
            frames = tcp_frames(n, tcp=tcp, options=options, ip_id=ip_id, df=True, **ip)
        elif kind == "mirai_ack":
            tcp = {"sport": sport, "dport": dport, "seq": seq, "ack": ack, "flags": ACK, "win": window[which]}
            frames = tcp_frames(n, tcp=tcp, payload=random_payload(rng, FLOOD_PAYLOAD, n), ip_id=ip_id, df=False, **ip)
        elif kind == "mirai_udp":
            frames = udp_frames(
                n, sport=sport, dport=dport, payload=random_payload(rng, FLOOD_PAYLOAD, n), ip_id=ip_id, df=False, **ip
            )
        elif kind == "mirai_udpplain":
            # IP ID: the socket's counter, one step per datagram it sends to that target.
            counter = sent_so_far[which] + _rank_within(which, n_targets)
            sent_so_far += np.bincount(which, minlength=n_targets)
            sport = np.full(n, plain_sport)
            dport = plain_dport[which]
            ip_id = plain_id[which] + counter
            frames = udp_frames(
                n, sport=sport, dport=dport, payload=random_payload(rng, FLOOD_PAYLOAD, n), ip_id=ip_id, df=True, **ip
            )
        else:
            raise ValueError(f"not a flood: {kind}")
        scene.timeline.add(t, frames, kind, role)
        _count(plan, kind, n)
        _flood_replies(scene, plan, bot, t, frames, src, dst, sport, dport, seq, ack)
    return np.concatenate(absent_t), np.concatenate(absent_dst)


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


def _router_arp(scene: Scene, plan: AttackPlan, t: np.ndarray, dst: np.ndarray) -> None:
    """The router asks, once a second per address, for victims in its subnet that do not exist."""
    if not len(t):
        return
    gw = scene.lan.gateway
    dst = dst.astype(np.int64)
    idx = _first_per_second(t, dst)
    n = len(idx)
    frames = arp_frames(
        n, src_mac=gw.mac, dst_mac=BROADCAST_MAC, op=1, sha=gw.mac, spa=gw.ip, tha=0, tpa=dst[idx], pad=True
    )
    scene.timeline.add(t[idx] + 0.00005, frames, BENIGN, f"reply:{plan.kind}")
    _count(plan, "reply", n)


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
        _count(plan, "reply", len(idx))

    opened = np.isin(dport[sel], stack.open_ports)
    if kind in ("mirai_udp", "mirai_udpplain"):
        keep_only(~opened)  # a listening socket takes the datagram silently
        peer = (dst[sel] & 0xFFFFFF) << 32 | src[sel]
        keep_only(plan.buckets("icmp-peer", stack.icmp_per_peer, stack.icmp_peer_burst).allow(t_reply[sel], peer))
        keep_only(plan.buckets("icmp", stack.icmp_global, stack.icmp_global_burst).allow(t_reply[sel], dst[sel]))
        if not len(sel):
            return
        rows = frames.rows[sel]
        ip_len = rows[:, ETH_HEADER + 2].astype(np.int64) << 8 | rows[:, ETH_HEADER + 3]
        out = icmp_frames(
            len(sel),
            icmp={"type": 3, "code": 3},
            payload=rows[:, ETH_HEADER : ETH_HEADER + stack.quote],  # the offending datagram, quoted
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
    if kind == "mirai_syn" and opened.any():
        # A listening port answers every SYN (SYN cookies once the backlog is full), echoing the TSval.
        o, ov = sel[opened], _subset(victim, opened)
        tsval = frames.rows[o, 62:66].astype(np.int64) @ np.array([1 << 24, 1 << 16, 1 << 8, 1])
        m = len(o)
        options = TCP_SYN_OPTIONS.pack(m, mss=1460, tsval=rng.integers(0, 1 << 32, m), tsecr=tsval, ws=7)
        tcp = {
            "sport": dport[o],
            "dport": sport[o],
            "seq": rng.integers(0, 1 << 32, m),
            "ack": (seq[o] + 1) & 0xFFFFFFFF,
            "flags": SYN | ACK,
            "win": 65160,
        }
        add(tcp_frames(m, tcp=tcp, options=options, src_ip=dst[o], dst_ip=src[o], ip_id=0, df=True, **ov), o)
        keep_only(~opened)
    keep_only(
        plan.buckets("rst", stack.rst_per_second, max(1, int(min(stack.rst_per_second, 1e6)))).allow(
            t_reply[sel], dst[sel]
        )
    )
    if not len(sel):
        return
    if kind == "mirai_syn":  # closed port: RST-ACK
        tcp = {"sport": dport[sel], "dport": sport[sel], "seq": 0, "ack": (seq[sel] + 1) & 0xFFFFFFFF}
        tcp |= {"flags": RST | ACK, "win": 0}
    else:  # ACK without a connection: RST carrying the ACK's acknowledgement number as its sequence number
        tcp = {"sport": dport[sel], "dport": sport[sel], "seq": ack[sel], "ack": 0, "flags": RST, "win": 0}
    add(tcp_frames(len(sel), tcp=tcp, src_ip=dst[sel], dst_ip=src[sel], ip_id=0, df=True, **victim), sel)


def _subset(fields: dict, keep: np.ndarray) -> dict:
    """Per-packet arrays of header values follow the packets kept; scalars stay."""
    return {k: (v[keep] if isinstance(v, np.ndarray) and v.ndim == 1 else v) for k, v in fields.items()}


# ---------------------------------------------------------------- scanner and brute force

# Stacks of scanned telnet devices (DVRs, routers, cameras on old embedded Linux).
TARGET_STACKS = (
    TcpStack("linux-2.6-embedded", syn_window=5792, window=1460, window_growth=200, window_scale=2),
    TcpStack("linux-3.x-embedded", syn_window=14480, window=227, window_growth=400, window_scale=6),
    TcpStack("embedded-nots", timestamps=False, window_scale=0, syn_window=5840, window=5840, window_growth=0, df=True),
)
BOT_STACK = TcpStack("bot-linux", syn_window=14600, window=229, window_growth=300, window_scale=5)


def _scan(scene: Scene, plan: AttackPlan, bot: Bot) -> None:
    rng = scene.rng
    role = f"mirai_scan:{bot.name}"
    sport = int(rng.integers(1024, 1 << 16))
    window = int(rng.integers(0, 1 << 16))
    # One burst of 160 SYNs each time the select() loop sees a new second.
    bursts = []
    t = plan.start + float(rng.uniform(0, min(1.0, plan.stop - plan.start)))
    while t < plan.stop:
        bursts.append(t)
        t += 1.0 + float(rng.gamma(2.0, 0.004))
    if not bursts:
        return
    per = SCANNER_RAW_PPS
    gaps = rng.gamma(2.0, float(rng.uniform(5e-6, 25e-6)), (len(bursts), per))
    times = (np.asarray(bursts)[:, None] + np.cumsum(gaps, axis=1)).ravel()
    i = np.tile(np.arange(per), len(bursts))
    n = len(times)
    dst = random_public_ips(rng, n).astype(np.int64)
    dport = np.where(i % 10 == 0, 2323, 23)
    frames = tcp_frames(
        n,
        tcp={"sport": sport, "dport": dport, "seq": dst, "ack": 0, "flags": SYN, "win": window},
        src_mac=bot.host.mac,
        dst_mac=scene.lan.gateway.mac,
        src_ip=bot.host.ip,
        dst_ip=dst,
        ttl=bot.host.ttl,
        ip_id=rng.integers(0, 1 << 16, n),
        df=False,
        pad=not bot.host.is_board,
    )
    scene.timeline.add(times, frames, "mirai_scan", role)
    _count(plan, "mirai_scan", n)

    # Answers: a few targets run telnet (SYN-ACK), more refuse (RST), most stay silent.
    p_open, p_closed = plan.open_fraction, plan.refuse_fraction
    draw = rng.random(n)
    opened = np.flatnonzero(draw < p_open)
    refused = np.flatnonzero((draw >= p_open) & (draw < p_open + p_closed))
    rtt = rng.uniform(0.015, 0.3, n)
    ttl = (np.asarray(rng.choice([64, 64, 128, 255], n)) - rng.integers(5, 22, n)).astype(np.int64)
    from_net = {"src_mac": scene.lan.gateway.mac, "dst_mac": bot.host.mac, "dst_ip": bot.host.ip, "pad": True}
    if len(refused):
        r = refused
        out = tcp_frames(
            len(r),
            tcp={"sport": dport[r], "dport": sport, "seq": 0, "ack": dst[r] + 1, "flags": RST | ACK, "win": 0},
            src_ip=dst[r],
            ttl=ttl[r],
            ip_id=0,
            df=True,
            **from_net,
        )
        scene.timeline.add(times[r] + rtt[r], out, BENIGN, "reply:mirai_scan")
        _count(plan, "reply", len(r))
    if not len(opened):
        return
    o = opened
    synack_seq = rng.integers(0, 1 << 32, len(o))
    out = tcp_frames(
        len(o),
        tcp={
            "sport": dport[o],
            "dport": sport,
            "seq": synack_seq,
            "ack": dst[o] + 1,
            "flags": SYN | ACK,
            "win": rng.choice([5840, 14600, 29200, 5792], len(o)),
        },
        options=TCP_MSS_OPTION.pack(len(o), mss=rng.choice([1460, 1452, 1400, 1360], len(o))),
        src_ip=dst[o],
        ttl=ttl[o],
        ip_id=0,
        df=True,
        **from_net,
    )
    t_synack = times[o] + rtt[o]
    scene.timeline.add(t_synack, out, BENIGN, "reply:mirai_scan")
    _count(plan, "reply", len(o))
    # The bot's kernel owns no socket on the raw scanner's port: it resets the half-open connection.
    out = tcp_frames(
        len(o),
        tcp={"sport": sport, "dport": dport[o], "seq": dst[o] + 1, "ack": 0, "flags": RST, "win": 0},
        src_mac=bot.host.mac,
        dst_mac=scene.lan.gateway.mac,
        src_ip=bot.host.ip,
        dst_ip=dst[o],
        ttl=bot.host.ttl,
        ip_id=0,
        df=True,
        pad=not bot.host.is_board,
    )
    scene.timeline.add(t_synack + rng.gamma(2.0, 0.00003, len(o)), out, "mirai_scan", role)
    _count(plan, "mirai_scan", len(o))
    for k in range(len(o)):
        victim = Host(f"telnet{k}", scene.lan.gateway.mac, int(dst[o[k]]), local=False, ttl=int(ttl[o[k]]))
        _brute_force(
            scene,
            plan,
            bot,
            victim,
            int(dport[o[k]]),
            float(t_synack[k]) + float(rng.uniform(0.001, 0.05)),
            float(rtt[o[k]]),
        )


def _weighted_credential(rng: np.random.Generator) -> tuple[str, str]:
    weights = np.array([w for _, _, w in MIRAI_CREDENTIALS], dtype=np.float64)
    user, password, _ = MIRAI_CREDENTIALS[int(rng.choice(len(weights), p=weights / weights.sum()))]
    return user, password


def _brute_force(scene: Scene, plan: AttackPlan, bot: Bot, victim: Host, port: int, t: float, rtt: float) -> None:
    """Mirai's telnet login attempts on one device: up to 10 connections, one credential each."""
    rng = scene.rng
    vulnerable = rng.random() < plan.vulnerable_fraction
    secret = _weighted_credential(rng) if vulnerable else ("", "\0")
    stack = TARGET_STACKS[int(rng.integers(len(TARGET_STACKS)))]
    hostname = str(rng.choice(["dvr", "ipcam", "router", "(none)", "localhost", "HG8245", "hi3518"]))
    role = f"mirai_scan:{bot.name}"
    for _attempt in range(10):
        if t >= scene.seconds:
            return
        cred = _weighted_credential(rng)
        conv = TcpConversation(
            rng,
            bot.host,
            victim,
            scene.ephemeral_port(),
            port,
            rtt=rtt,
            near=CLIENT,
            client_stack=BOT_STACK,
            server_stack=stack,
            link_bps=scene.link_bps,
        )
        success = cred == secret
        t = _telnet_login(scene, conv, t, cred, success, hostname)
        _count(plan, "bruteforce", conv.add_to(scene.timeline, ("mirai_scan", role), (BENIGN, "reply:mirai_scan")))
        if success:
            _report(scene, plan, bot, victim, port, cred, t + 0.01)
            return
        t += float(rng.uniform(0.0, 1.0))  # the select() loop notices the closed socket and reconnects


def _telnet_login(
    scene: Scene, conv: TcpConversation, t: float, cred: tuple[str, str], success: bool, hostname: str
) -> float:
    """One connection of the state machine in scanner.c: IACs, username, password, enable/system/shell/sh, token."""
    rng = scene.rng
    t = conv.handshake(t)
    t = conv.send(t + float(rng.uniform(0.001, 0.02)), SERVER, TELNETD_IACS, ack=False)
    answers = mirai_iac_answers(TELNETD_IACS)
    t = conv.send(t + conv.delay(CLIENT), CLIENT, answers[0], ack=False)  # Nagle: the rest waits for the ACK
    t = conv.send(t + conv.delay(SERVER), SERVER, b"\r\n" + f"{hostname} login: ".encode(), ack=False)
    t = conv.send(t + conv.delay(CLIENT), CLIENT, b"".join(answers[1:]), ack=False)

    def exchange(t: float, line: str, reply: bytes, wait: float = 0.0) -> float:
        t = conv.send(t + conv.delay(CLIENT), CLIENT, line.encode(), ack=False)
        t = conv.send(t + conv.delay(SERVER), SERVER, line.encode() if reply != b"" else b"", ack=False)
        t = conv.send(t + conv.delay(CLIENT), CLIENT, b"\r\n", ack=False)
        return conv.send(t + conv.delay(SERVER) + wait, SERVER, reply, ack=False)

    user, password = cred
    t = exchange(t, user, b"\r\nPassword: ")
    if success:
        t = conv.send(t + conv.delay(CLIENT), CLIENT, password.encode() or b"\r\n", ack=False)
        t = conv.send(
            t + conv.delay(SERVER) + 0.2, SERVER, b"\r\n\r\nBusyBox v1.19.4 built-in shell (ash)\r\n\r\n# ", ack=False
        )
        for command, output in (
            ("enable", b"-sh: enable: not found\r\n# "),
            ("system", b"-sh: system: not found\r\n# "),
            ("shell", b"-sh: shell: not found\r\n# "),
            ("sh", b"\r\n\r\nBusyBox v1.19.4 built-in shell (ash)\r\n# "),
            ("/bin/busybox MIRAI", b"MIRAI: applet not found\r\n# "),
        ):
            t = conv.send(t + conv.delay(CLIENT), CLIENT, command.encode(), ack=False)
            t = conv.send(t + conv.delay(CLIENT) + 0.0003, CLIENT, b"\r\n", ack=False)
            t = conv.send(t + conv.delay(SERVER), SERVER, command.encode() + b"\r\n" + output, ack=False)
        return conv.close(t + conv.delay(CLIENT), CLIENT)
    # Wrong password: busybox login waits 3 s per failure and gives up after three.
    failed = b"\r\nLogin incorrect\r\n" + f"{hostname} login: ".encode()
    t = conv.send(t + conv.delay(CLIENT), CLIENT, password.encode() or b"\r\n", ack=False)
    if password:
        t = conv.send(t + conv.delay(CLIENT) + 0.0003, CLIENT, b"\r\n", ack=False)
    t = conv.send(t + conv.delay(SERVER) + 3.0, SERVER, failed, ack=False)
    t = exchange(t, "enable", b"\r\nPassword: ")
    t = conv.send(t + conv.delay(CLIENT), CLIENT, b"system", ack=False)
    t = conv.send(t + conv.delay(CLIENT) + 0.0003, CLIENT, b"\r\n", ack=False)
    t = conv.send(t + conv.delay(SERVER) + 3.0, SERVER, failed, ack=False)
    t = exchange(t, "shell", b"\r\nPassword: ")
    t = conv.send(t + conv.delay(CLIENT), CLIENT, b"sh", ack=False)
    t = conv.send(t + conv.delay(CLIENT) + 0.0003, CLIENT, b"\r\n", ack=False)
    t = conv.send(t + conv.delay(SERVER) + 3.0, SERVER, b"\r\nLogin incorrect\r\n", ack=False)
    return conv.close(t + 0.001, SERVER)


def _report(scene: Scene, plan: AttackPlan, bot: Bot, victim: Host, port: int, cred: tuple[str, str], t: float) -> None:
    """report_working(): resolve the report server through 8.8.8.8, send (0, ip, port, user, password)."""
    rng = scene.rng
    role = f"mirai_scan:{bot.name}"
    resolver = scene.remote_host("dns.google", (8 << 24) | (8 << 16) | (8 << 8) | 8)
    name = f"report.{rng.choice(['santasbigcandycane', 'mirai-c2', 'iotnet'])}.{rng.choice(['cx', 'xyz', 'top'])}"
    loader_ip = int(random_public_ips(rng, 1)[0])
    txid, sport = int(rng.integers(0, 1 << 16)), scene.ephemeral_port()
    reply_t = t + scene.rtt(bot.host, resolver)
    scene.udp([t], bot.host, resolver, sport, 53, [dns_query(txid, name)], role, label="mirai_scan", ip_id=None)
    scene.udp(
        [reply_t],
        resolver,
        bot.host,
        53,
        sport,
        [dns_response(txid, name, 1, [loader_ip.to_bytes(4, "big")], 300)],
        "reply:mirai_scan",
        ip_id=None,
        df=False,
    )
    loader = scene.remote_host("loader", loader_ip)
    conv = TcpConversation(
        rng,
        bot.host,
        loader,
        scene.ephemeral_port(),
        48101,
        rtt=scene.rtt(bot.host, loader),
        client_stack=BOT_STACK,
        link_bps=scene.link_bps,
    )
    t = conv.handshake(reply_t + 0.001)
    user, password = cred
    t = conv.send(t + 0.0002, CLIENT, b"\0", ack=False)
    record = (
        victim.ip.to_bytes(4, "big")
        + port.to_bytes(2, "big")
        + bytes([len(user)])
        + user.encode()
        + bytes([len(password)])
        + password.encode()
    )
    t = conv.send(t + conv.delay(SERVER), CLIENT, record)
    conv.close(t + 0.001, CLIENT)
    conv.add_to(scene.timeline, ("mirai_scan", role), (BENIGN, "reply:mirai_scan"))
