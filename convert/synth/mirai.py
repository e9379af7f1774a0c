"""Mirai's five traffic classes, packet for packet as the public source builds them (DESIGN 5).

``mirai/bot/attack_tcp.c`` (syn, ack), ``attack_udp.c`` (udp generic, udpplain)
and ``scanner.c`` (telnet scanner and brute force) fix each header field; the
functions here reproduce those fields, vectorised per bot.  Every attack runs
with the options of its command (``options.AttackOptions``, drawn by
``sample_options`` over their real range; Mirai's defaults below):

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
* scan: 40-byte SYNs, seq = destination address, fixed source port and window,
  port 23 except every tenth packet (2323), 160 per second in one burst; the
  descendants' ports and fingerprint come from ``SCANNER_VARIANTS``.

Netmask targets spread destinations over the prefix (``addr + (rand >> netmask)``);
a spoofed source is random per packet or one fixed address (raw-socket attacks only).

Three vantage points: ``view="bot"``, the board is infected and captures what it
sends (no Ethernet padding: a scan SYN stays 54 bytes); ``view="victim"``, the
attack arrives at the board or its LAN (for the scanner: an infected neighbour
seen through a mirror port), and frames under 60 bytes carry the Ethernet
padding a receiver sees; ``view="scanned"`` (scanner only), the board has a
reachable address and many scanning bots on the Internet probe it, one to three
SYNs each.  Remote bots' packets arrive with their TTL minus their hop count;
packets the router cannot deliver (absent victims) never reach the LAN, only its
ARP requests for them do.

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
limits.  TCP as RFC 793 and Linux answer a segment without a connection:
nothing to a RST; RST (seq = its ack) to anything with ACK; to a SYN, SYN-ACK
from a listening port (SYN cookies), else RST-ACK; a listening port drops
segments with neither SYN nor ACK; some hosts limit their RSTs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace

import numpy as np

from agent.capture.headers import ACK, ETHERNET, FIN, IPV4, RST, SYN, TCP

from .frames import (
    BROADCAST_MAC,
    TCP_MSS_OPTION,
    TCP_SYN_OPTIONS,
    arp_frames,
    icmp_frames,
    pack,
    random_payload,
    tcp_frames,
    udp_frames,
)
from .network import Host, ip_text, random_public_ips
from .options import (
    SCANNER_VARIANTS,
    URG,
    AttackOptions,
    OptionSpace,
    default_options,
    draw_option,
    sample_options,
)
from .payloads import MIRAI_CREDENTIALS, TELNETD_IACS, dns_query, dns_response, mirai_iac_answers
from .scene import Scene
from .tcp import CLIENT, LINUX, SERVER, TcpConversation, TcpStack
from .timeline import BENIGN, flood_times

log = logging.getLogger(__name__)

ATTACK_CLASSES = ("mirai_ack", "mirai_scan", "mirai_syn", "mirai_udp", "mirai_udpplain")
VIEWS = {k: ("bot", "victim", "scanned") if k == "mirai_scan" else ("bot", "victim") for k in ATTACK_CLASSES}
CHUNK_BYTES = 48 << 20  # frame bytes built at once (bounds memory for long floods)
# One attack's frames at most; a bigger one stops early (its rates are kept): memory and training time.
MAX_FLOOD_BYTES = 200 << 20
MAX_FLOOD_PACKETS = 800_000
WIRE_OVERHEAD = 24  # preamble, inter-frame gap and FCS around every frame on the wire
TELNET_PORTS = (23, 2323)


def ip_length(kind: str, options: AttackOptions) -> int:
    """IP total length of one attack packet with these options."""
    if kind == "mirai_syn":
        return 60  # 20 bytes of options, no payload
    if kind == "mirai_scan":
        return 40
    return (40 if kind == "mirai_ack" else 28) + options.payload_len


def frame_length(kind: str, options: AttackOptions) -> int:
    """Ethernet frame length on the wire (without FCS; at least 60)."""
    return ETHERNET.size + max(ip_length(kind, options), 46)


def link_rate_cap(kind: str, options: AttackOptions, link_bps: float) -> float:
    """Most frames of this attack per second a link carries."""
    return link_bps / ((frame_length(kind, options) + WIRE_OVERHEAD) * 8)


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
    spoof: bool = False  # a spoofed source: the options' fixed source_ip, else random per packet
    variant: str = "mirai"  # scanners: which SCANNER_VARIANTS entry it runs


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
    view: str  # "bot" (the board is infected), "victim" (the board or its LAN is attacked), "scanned"
    start: float
    stop: float
    bots: list[Bot]
    targets: list[Target]
    reply_fraction: float = 0.0  # bot view: share of victims that answer the flood
    open_fraction: float = 0.0  # scan: share of scanned addresses that answer SYN-ACK (telnet open)
    refuse_fraction: float = 0.0  # scan: share that answer RST (port closed); the rest stay silent
    vulnerable_fraction: float = 0.25  # scan: share of open devices whose login is in Mirai's table
    options: AttackOptions | None = None  # the command's options (None: Mirai's defaults)
    replies: ReplyStack = LINUX_REPLIES  # how the victims answer (scanned view: the board)
    reach: str = ""  # scanned view: "public" (the board's own address), "dmz" or "port-forward" (the router's)
    scanned_ip: int = 0  # scanned view: the address the scanners probe (their sequence number)
    forwarded_ports: tuple[int, ...] | None = None  # scanned view: ports that reach the board (None: all)
    bruteforce_share: float = 0.8  # scanned view: bots that log in after an open telnet port answers
    arrivals: np.ndarray | None = None  # scanned view: when each bot's first SYN reaches the board
    counts: dict[str, int] = field(default_factory=dict)
    prior_contacts: list[dict] = field(default_factory=list)  # benign bot-victim traffic around the attack
    _buckets: dict[str, TokenBuckets] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.options is None:
            self.options = default_options(self.kind)

    def buckets(self, name: str, rate: float, burst: int) -> TokenBuckets:
        """The victims' rate limiter ``name`` (state kept across the chunks of a flood)."""
        if name not in self._buckets:
            self._buckets[name] = TokenBuckets(rate, burst)
        return self._buckets[name]

    def meta(self) -> dict:
        out = {
            "class": self.kind,
            "view": self.view,
            "start_s": round(self.start, 6),
            "stop_s": round(self.stop, 6),
            "options": {k: v for k, v in self.options.meta(self.kind).items()
                        if not (self.view == "scanned" and k == "scan_variant")},  # each scanner has its own
            "packets": dict(self.counts),
        }
        bots = self.bots[:MAX_META_BOTS]
        out["bots"] = [
            {
                "name": b.name,
                "ip": "spoofed" if b.spoof else b.host.ip_text,
                "real_ip": b.host.ip_text,
                "mac": b.host.mac_text,
                "ttl_seen": b.host.ttl,
                "rate_pps": round(b.rate, 1),
                **({"variant": b.variant} if self.kind == "mirai_scan" else {}),
            }
            for b in bots
        ]
        if len(self.bots) > len(bots):
            out["bots_listed"] = f"{len(bots)} of {len(self.bots)}"
        if self.kind != "mirai_scan":
            out |= {"targets": [t.text for t in self.targets], "replies": self.replies.name}
        elif self.view == "scanned":
            out |= {
                "targets": [ip_text(self.scanned_ip)],
                "scanners": len(self.bots),
                "reach": self.reach,
                "forwarded_ports": "all" if self.forwarded_ports is None else list(self.forwarded_ports),
                "open_ports": list(self.replies.open_ports),
                "closed_ports_answer": self.refuse_fraction > 0,
                "variants": {v: sum(b.variant == v for b in self.bots) for v in sorted({b.variant for b in self.bots})},
            }
        else:
            out |= {
                "targets": "random public IPv4",
                "answer_fractions": {"open": round(self.open_fraction, 4), "refused": round(self.refuse_fraction, 4)},
            }
        if self.prior_contacts:
            out["prior_contacts"] = list(self.prior_contacts)
        return out


MAX_META_BOTS = 100  # bots listed in the metadata (a scanned board meets thousands)


# ---------------------------------------------------------------- planning


def plan_attack(
    scene: Scene,
    kind: str,
    view: str,
    start: float,
    stop: float,
    bot_hosts: list[Host] | None = None,
    space: OptionSpace | None = None,
) -> AttackPlan:
    """Random but plausible parameters: the command's options (within ``space``), bots, rates, targets."""
    if kind not in VIEWS or view not in VIEWS[kind]:
        raise ValueError(f"no {view!r} view of {kind!r}; views: {VIEWS.get(kind, ())}")
    rng, lan = scene.rng, scene.lan
    options = sample_options(rng, kind, space)
    if options.duration_s is not None:
        stop = min(stop, start + options.duration_s)
    if kind == "mirai_scan":
        if view == "scanned":
            return _plan_scanned(scene, start, stop, options, space)
        # The scanner: one bot (the board, or an infected neighbour seen through a mirror port).
        host = lan.board if view == "bot" else (bot_hosts or [lan.board])[0]
        burst = SCANNER_VARIANTS[options.scan_variant].burst
        return AttackPlan(
            kind,
            view,
            start,
            stop,
            [Bot("bot1", host, float(burst), variant=options.scan_variant)],
            [],
            open_fraction=float(rng.uniform(0.002, 0.012)),
            refuse_fraction=float(rng.uniform(0.02, 0.08)),
            options=options,
        )
    cap = link_rate_cap(kind, options, scene.link_bps)
    spoof = options.source != "real"
    if view == "bot":
        count = int(rng.choice([1, 1, 1, 2, 3]))
        prefixes = rng.choice([32, 32, 32, 32, 30, 28, 24, 20, 16], count)
        targets = [Target(int(ip) & _mask(p), int(p)) for ip, p in zip(random_public_ips(rng, count), prefixes)]
        rate = _bot_rates(kind, [options.rate_pps], cap, space)[0]
        plan = AttackPlan(
            kind,
            view,
            start,
            stop,
            [Bot("bot1", lan.board, rate, spoof=spoof)],
            targets,
            reply_fraction=float(rng.choice([0.0, 0.3, 1.0])),
            options=options,
            replies=_reply_stack(rng, lwip_possible=True),
        )
        return _fit_budget(plan)
    # Victim view: the board, another device, or the whole /24 is the target.
    choice = rng.random()
    if choice < 0.5:
        targets = [Target(lan.board.ip)]
    elif lan.devices and (choice < 0.75 or kind == "mirai_udpplain"):  # udpplain hits one address anyway
        dev = list(lan.devices.values())[int(rng.integers(len(lan.devices)))]
        targets = [Target(dev.ip)]
    else:
        targets = [Target(lan.network, 24)]
    # Through the Internet a public LAN meets any number of bots; a private one only its own infected devices.
    n_bots = int(rng.choice([1, 1, 2, 3, 5, 8, 20, 50] if lan.public else [1, 1, 2, 3]))
    rates = [options.rate_pps] + [draw_option(rng, kind, "rate_pps", space) for _ in range(n_bots - 1)]
    rates = _bot_rates(kind, rates, cap, space)
    bots = []
    for i, rate in enumerate(rates):
        local = bot_hosts[i] if bot_hosts and i < len(bot_hosts) else None
        if local is None and not lan.public:
            local = lan.add_device(rng, f"infected{i + 1}")  # a private LAN is only reachable from inside
        host = local if local is not None else scene.remote_host(f"bot{i + 1}", int(random_public_ips(rng, 1)[0]))
        bots.append(Bot(f"bot{i + 1}", host, rate, spoof=spoof))
    # The board is a Linux host; other LAN devices may run lwIP (ESP plugs and sensors).
    lwip = any(t.prefix == 32 and t.ip != lan.board.ip for t in targets)
    plan = AttackPlan(kind, view, start, stop, bots, targets, options=options, replies=_reply_stack(rng, lwip))
    return _fit_budget(plan)


def _bot_rates(kind: str, rates: list[float], cap: float, space: OptionSpace | None) -> list[float]:
    """Each bot's rate as the victim's (or the board's) link carries it.

    Bots together faster than the link: each is slowed in proportion (the rest is dropped upstream),
    unless that lands a rate on a value ``space`` holds out or differs from a forced one: then fewer
    bots send, each at its own rate, so the traffic keeps the rates the space allows.
    """
    total = sum(rates)
    if total <= cap:
        return rates
    space = space or OptionSpace()
    scaled = [r * cap / total for r in rates]
    if all(space.allows("rate_pps", r) for r in scaled):
        return scaled
    kept: list[float] = []
    for r in rates:
        if sum(kept) + r <= cap:
            kept.append(r)
    if not kept:
        log.warning("%s: %.0f packets/s exceed the link (%.0f/s): one bot at the link's rate", kind, rates[0], cap)
        kept = [cap]
    return kept


def _fit_budget(plan: AttackPlan) -> AttackPlan:
    """Stop an attack early when it would pass MAX_FLOOD_PACKETS or MAX_FLOOD_BYTES (rates stay as drawn)."""
    pps = sum(b.rate for b in plan.bots)
    longest = min(MAX_FLOOD_PACKETS / pps, MAX_FLOOD_BYTES / (pps * frame_length(plan.kind, plan.options)))
    if plan.stop - plan.start > longest:
        log.debug("%s: %.0f packets/s, stopped after %.1f s instead of %.1f s", plan.kind, pps, longest,
                  plan.stop - plan.start)  # fmt: skip
        plan.stop = plan.start + longest
    return plan


def _reply_stack(rng: np.random.Generator, lwip_possible: bool) -> ReplyStack:
    """A victim's stack: mostly stock Linux, sometimes tuned limits, lwIP, or a BSD-like limiter."""
    if lwip_possible and rng.random() < 0.25:
        stack = LWIP_REPLIES
    else:
        stack = REPLY_STACKS[int(rng.choice(len(REPLY_STACKS), p=[0.6, 0.15, 0.15, 0.1]))]
    return replace(stack, open_ports=tuple(int(p) for p in COMMON_PORTS if rng.random() < 0.3))


def _mask(prefix: int) -> int:
    return (0xFFFFFFFF << (32 - int(prefix))) & 0xFFFFFFFF


MIN_SCANNERS = 8  # scanning bots that find a reachable board in any capture

# Ports a reachable board may listen on, with how often: telnet open is what Mirai looks for.
BOARD_PORTS = ((23, 0.35), (2323, 0.05), (22, 0.25), (80, 0.45), (443, 0.2), (554, 0.2), (8080, 0.2), (81, 0.05))


def _plan_scanned(
    scene: Scene, start: float, stop: float, options: AttackOptions, space: OptionSpace | None
) -> AttackPlan:
    """The board reachable from the Internet (its own public address, or the router's with a DMZ or a port
    forward) and the scanning bots that find it: a Poisson process of arrivals, each bot running its variant."""
    rng, lan = scene.rng, scene.lan
    open_ports = tuple(p for p, share in BOARD_PORTS if rng.random() < share)
    if lan.public:
        reach, scanned_ip, forwarded = "public", lan.board.ip, None
    elif rng.random() < 0.5:
        reach, scanned_ip, forwarded = "dmz", int(random_public_ips(rng, 1)[0]), None
    else:
        # A forward for the board's services (its web and RTSP ports) and telnet, the forward Mirai lives on.
        forwarded = tuple(sorted({p for p in open_ports if rng.random() < 0.7} | {23}))
        reach, scanned_ip = "port-forward", int(random_public_ips(rng, 1)[0])
    # At least a few scanners: a short capture at a few per minute would otherwise hold none to learn from.
    n = max(MIN_SCANNERS, int(rng.poisson(options.scanners_per_s * (stop - start))))
    names = tuple(SCANNER_VARIANTS)
    shares = np.array([v.share for v in SCANNER_VARIANTS.values()])
    if space is not None and (space.defaults or "scan_variant" in space.force):
        variants = [space.force.get("scan_variant", "mirai")] * n
    else:
        weights = (space or OptionSpace()).choice_weights("scan_variant", names, shares)
        variants = [names[i] for i in rng.choice(len(names), n, p=weights)]
    ips = random_public_ips(rng, n)
    hops = rng.integers(4, 26, n)
    hosts = [Host(f"scanner{i + 1}", lan.gateway.mac, int(ip), local=False, ttl=64 - int(h))
             for i, (ip, h) in enumerate(zip(ips, hops))]  # fmt: skip
    bots = [Bot(h.name, h, float(SCANNER_VARIANTS[v].burst), variant=v) for h, v in zip(hosts, variants)]
    return AttackPlan(
        "mirai_scan",
        "scanned",
        start,
        stop,
        bots,
        [],
        refuse_fraction=0.0 if rng.random() < 0.15 else 1.0,  # a firewall that drops instead of refusing
        vulnerable_fraction=0.0,  # the board's password is not in Mirai's table
        options=options,
        replies=replace(LINUX_REPLIES, open_ports=open_ports),
        reach=reach,
        scanned_ip=scanned_ip,
        forwarded_ports=forwarded,
        bruteforce_share=float(rng.uniform(0.5, 1.0)),
        arrivals=np.sort(rng.uniform(start, stop, n)),
    )


def run_attack(scene: Scene, plan: AttackPlan) -> AttackPlan:
    if plan.kind == "mirai_scan":
        if plan.view == "scanned":
            _scanned(scene, plan)
            return plan
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


def _flood(scene: Scene, plan: AttackPlan, bot: Bot) -> tuple[np.ndarray, np.ndarray]:
    """Add one bot's flood; returns (time, destination) of packets the router drops (victim absent)."""
    rng, lan = scene.rng, scene.lan
    kind, o = plan.kind, plan.options
    # The command reaches bots at slightly different times; the duration is the same for all.
    lag = float(rng.uniform(0, min(1.5, 0.2 * (plan.stop - plan.start)))) if plan.view == "victim" else 0.0
    times = flood_times(rng, plan.start + lag, plan.stop + lag, bot.rate)
    if plan.view == "victim" and not bot.host.local:
        # Path delay plus queueing; queues are FIFO, so a bot's packets stay in order.
        times = np.maximum.accumulate(times + float(rng.uniform(0.01, 0.15)) + rng.exponential(0.0002, len(times)))
    n_targets = len(plan.targets)
    target_ip = np.array([t.ip for t in plan.targets], dtype=np.int64)
    target_prefix = np.array([t.prefix for t in plan.targets], dtype=np.int64)
    # Fixed once per target (attack setup): MSS and TSval for syn, window and the rand=0 payload for ack,
    # ports, address and IP ID counter of udpplain's connected sockets.
    mss = 1400 + rng.integers(0, 16, n_targets)
    tsval = rng.integers(0, 1 << 32, n_targets)
    window = rng.integers(0, 1 << 16, n_targets)
    if kind == "mirai_ack":
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
    lan_ips = {h.ip: h for h in lan.hosts()}
    role = f"{kind}:{bot.name}"
    ttl = _seen_ttl(bot, 64 if kind == "mirai_udpplain" else o.ttl)
    source_ip = o.source_ip if o.source == "fixed" and o.source_ip is not None else None

    sent_so_far = np.zeros(n_targets, dtype=np.int64)
    absent_t, absent_dst = [np.zeros(0)], [np.zeros(0, dtype=np.int64)]
    chunk = max(1024, CHUNK_BYTES // frame_length(kind, o))
    for lo in range(0, len(times), chunk):
        t = times[lo : lo + chunk]
        n = len(t)
        which = (lo + np.arange(n)) % n_targets  # one packet per target per pass of the send loop
        if kind == "mirai_udpplain":
            dst = plain_dst[which]
        else:
            spread = rng.integers(0, 1 << 32, n) >> target_prefix[which]
            dst = target_ip[which] + np.where(target_prefix[which] < 32, spread, 0)
        if not bot.spoof:
            src = np.full(n, bot.host.ip, dtype=np.int64)
        elif source_ip is not None:
            src = np.full(n, source_ip, dtype=np.int64)
        else:
            src = rng.integers(0, 1 << 32, n)
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
        ip = {"src_mac": bot.host.mac, "dst_mac": dst_mac, "src_ip": src, "dst_ip": dst, "ttl": ttl,
              "pad": not bot.host.is_board}  # fmt: skip
        sport = rng.integers(0, 1 << 16, n) if o.sport is None else np.full(n, o.sport, dtype=np.int64)
        dport = rng.integers(0, 1 << 16, n) if o.dport is None else np.full(n, o.dport, dtype=np.int64)
        seq = rng.integers(0, 1 << 32, n) if o.seqnum is None else np.full(n, o.seqnum, dtype=np.int64)
        ack = rng.integers(0, 1 << 32, n) if o.acknum is None else np.full(n, o.acknum, dtype=np.int64)
        ip_id = rng.integers(0, 1 << 16, n) if o.ident is None else o.ident
        raw = {"ip_id": ip_id, "df": o.df, "tos": o.tos}
        if kind == "mirai_syn":
            options = pack(TCP_SYN_OPTIONS, n, mss=mss[which], tsval=tsval[which], tsecr=0, ws=6)
            urgent = rng.integers(0, 1 << 16, n) if o.tcp_flags & URG else 0  # only the syn flood draws it
            tcp = {"sport": sport, "dport": dport, "seq": seq, "ack": ack, "flags": o.tcp_flags, "window": 0,
                   "urgent": urgent}  # fmt: skip
            frames = tcp_frames(n, tcp=tcp, options=options, **raw, **ip)
        elif kind == "mirai_ack":
            tcp = {"sport": sport, "dport": dport, "seq": seq, "ack": ack, "flags": o.tcp_flags,
                   "window": window[which]}  # fmt: skip
            frames = tcp_frames(n, tcp=tcp, payload=_payload(rng, o, n, fixed_payload, which), **raw, **ip)
        elif kind == "mirai_udp":
            payload = _payload(rng, o, n, fixed_payload, which)
            frames = udp_frames(n, sport=sport, dport=dport, payload=payload, **raw, **ip)
        elif kind == "mirai_udpplain":
            # IP ID: the socket's counter, one step per datagram it sends to that target.
            counter = sent_so_far[which] + _rank_within(which, n_targets)
            sent_so_far += np.bincount(which, minlength=n_targets)
            sport, dport = plain_sport[which], plain_dport[which]
            payload = _payload(rng, o, n, fixed_payload, which)
            frames = udp_frames(
                n, sport=sport, dport=dport, payload=payload, ip_id=plain_id[which] + counter, df=True, **ip
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
        n, src_mac=gw.mac, dst_mac=BROADCAST_MAC, op=1, sender_mac=gw.mac, sender_ip=gw.ip, target_mac=0,
        target_ip=dst[idx], pad=True,
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
    variant = SCANNER_VARIANTS[bot.variant]
    sport = int(rng.integers(1024, 1 << 16))
    window = int(rng.integers(0, 1 << 16))
    # One burst of SYNs each time the select() loop sees a new second.
    bursts = []
    t = plan.start + float(rng.uniform(0, min(1.0, plan.stop - plan.start)))
    while t < plan.stop:
        bursts.append(t)
        t += 1.0 + float(rng.gamma(2.0, 0.004))
    if not bursts:
        return
    per = variant.burst
    gaps = rng.gamma(2.0, float(rng.uniform(5e-6, 25e-6)), (len(bursts), per))
    times = (np.asarray(bursts)[:, None] + np.cumsum(gaps, axis=1)).ravel()
    i = np.tile(np.arange(per), len(bursts))
    n = len(times)
    dst = random_public_ips(rng, n).astype(np.int64)
    cycle = variant.port_cycle()
    dport = cycle[i % len(cycle)]
    seq = dst if variant.seq_is_dst else rng.integers(0, 1 << 32, n)
    frames = tcp_frames(
        n,
        tcp={"sport": sport, "dport": dport, "seq": seq, "ack": 0, "flags": SYN, "window": window},
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
            tcp={"sport": dport[r], "dport": sport, "seq": 0, "ack": seq[r] + 1, "flags": RST | ACK, "window": 0},
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
            "ack": seq[o] + 1,
            "flags": SYN | ACK,
            "window": rng.choice([5840, 14600, 29200, 5792], len(o)),
        },
        options=pack(TCP_MSS_OPTION, len(o), mss=rng.choice([1460, 1452, 1400, 1360], len(o))),
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
        tcp={"sport": sport, "dport": dport[o], "seq": seq[o] + 1, "ack": 0, "flags": RST, "window": 0},
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
        if int(dport[o[k]]) not in TELNET_PORTS:
            continue  # other variants' exploits (HTTP, TR-064, ADB) are not synthesised
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


# The board's own stack when a scanner reaches it (a Linux board: 64240 window, timestamps, WS 7).
BOARD_STACK = LINUX


def _scanned(scene: Scene, plan: AttackPlan) -> None:
    """Scanning bots on the Internet probe the board: one to three SYNs each, then the board answers.

    Each bot sends from its own fixed source port and window (fixed per scanner process), a random IP ID,
    TTL 64 less its hops, to its variant's ports, sequence number = the address it probed (the board's, or
    the router's when a DMZ or port forward brings the packets in).  The board answers RST-ACK from closed
    ports (or nothing behind a dropping firewall) and SYN-ACK from open ones; the bot's kernel resets that
    half-open connection, and for an open telnet port the bot logs in with Mirai's brute force."""
    rng, lan = scene.rng, scene.lan
    board, gw = lan.board, lan.gateway
    role = "mirai_scan:scanners"
    m = len(plan.bots)
    if not m:
        return
    count = rng.choice([1, 2, 3], m, p=[0.6, 0.25, 0.15])
    bot_of = np.repeat(np.arange(m), count)
    first = np.concatenate([[True], bot_of[1:] != bot_of[:-1]])
    # A bot's further SYNs: the same pass of its loop (another port) or a later one.
    n = len(bot_of)
    gaps = np.where(rng.random(n) < 0.5, rng.exponential(0.002, n), rng.uniform(0.5, 3.5, n))
    gaps[first] = 0.0
    offset = np.cumsum(gaps)
    offset -= np.repeat(offset[first], count)
    times = plan.arrivals[bot_of] + offset
    sport = rng.integers(1024, 1 << 16, m)[bot_of]
    window = rng.integers(0, 1 << 16, m)[bot_of]
    dport = np.zeros(n, dtype=np.int64)
    seq = np.full(n, plan.scanned_ip, dtype=np.int64)
    variant_of = np.array([b.variant for b in plan.bots])[bot_of]
    for name in np.unique(variant_of):
        v = SCANNER_VARIANTS[str(name)]
        mine = np.flatnonzero(variant_of == name)
        dport[mine] = rng.choice(np.asarray(v.ports), len(mine), p=v.port_probabilities())
        if not v.seq_is_dst:
            seq[mine] = rng.integers(0, 1 << 32, len(mine))
    # A port forward lets through only its ports; the router drops the rest out of the board's sight.
    arrive = np.ones(n, dtype=bool) if plan.forwarded_ports is None else np.isin(dport, plan.forwarded_ports)
    times, bot_of, sport, window, dport, seq = (a[arrive] for a in (times, bot_of, sport, window, dport, seq))
    n = len(times)
    if not n:
        return
    src = np.array([b.host.ip for b in plan.bots], dtype=np.int64)[bot_of]
    ttl = np.array([b.host.ttl for b in plan.bots], dtype=np.int64)[bot_of]
    syn = {"sport": sport, "dport": dport, "seq": seq, "ack": 0, "flags": SYN, "window": window}
    frames = tcp_frames(n, tcp=syn, src_mac=gw.mac, dst_mac=board.mac, src_ip=src, dst_ip=board.ip, ttl=ttl,
                        ip_id=rng.integers(0, 1 << 16, n), df=False, pad=True)  # fmt: skip
    scene.timeline.add(times, frames, "mirai_scan", role)
    _count(plan, "mirai_scan", n)

    react = times + rng.gamma(2.0, 0.00004, n)
    from_board = {"src_mac": board.mac, "dst_mac": gw.mac, "src_ip": board.ip, "ttl": 64, "ip_id": 0, "df": True}
    opened = np.isin(dport, plan.replies.open_ports)
    closed = np.flatnonzero(~opened & (rng.random(n) < plan.refuse_fraction))
    if len(closed):
        c = closed
        tcp = {"sport": dport[c], "dport": sport[c], "seq": 0, "ack": seq[c] + 1, "flags": RST | ACK, "window": 0}
        out = tcp_frames(len(c), tcp=tcp, dst_ip=src[c], **from_board)
        scene.timeline.add(react[c], out, BENIGN, "reply:mirai_scan")
        _count(plan, "reply", len(c))
    o = np.flatnonzero(opened)
    if not len(o):
        return
    k = len(o)
    tsval = rng.integers(0, 1 << 32) + np.floor(react[o] * 1000).astype(np.int64)  # the board's millisecond clock
    options = pack(TCP_SYN_OPTIONS, k, mss=BOARD_STACK.mss, tsval=tsval, tsecr=0, ws=BOARD_STACK.window_scale)
    tcp = {"sport": dport[o], "dport": sport[o], "seq": rng.integers(0, 1 << 32, k), "ack": seq[o] + 1,
           "flags": SYN | ACK, "window": BOARD_STACK.syn_window}  # fmt: skip
    out = tcp_frames(k, tcp=tcp, options=options, dst_ip=src[o], **from_board)
    scene.timeline.add(react[o], out, BENIGN, "reply:mirai_scan")
    _count(plan, "reply", k)
    # The bot's kernel resets the raw scanner's half-open connection, a round trip later.
    rtt = rng.uniform(0.015, 0.3, m)[bot_of[o]]
    t_rst = react[o] + rtt
    tcp = {"sport": sport[o], "dport": dport[o], "seq": seq[o] + 1, "ack": 0, "flags": RST, "window": 0}
    out = tcp_frames(k, tcp=tcp, src_mac=gw.mac, dst_mac=board.mac, src_ip=src[o], dst_ip=board.ip, ttl=ttl[o],
                     ip_id=0, df=True, pad=True)  # fmt: skip
    scene.timeline.add(t_rst, out, "mirai_scan", role)
    _count(plan, "mirai_scan", k)
    # Mirai connects for real to the telnet port that answered (once per bot) and tries its credentials.
    done: set[int] = set()
    for j in range(k):
        b = int(bot_of[o[j]])
        if int(dport[o[j]]) not in TELNET_PORTS or b in done or rng.random() >= plan.bruteforce_share:
            continue
        done.add(b)
        bot = plan.bots[b]
        start = float(t_rst[j]) + float(rng.uniform(0.001, 0.05))
        _brute_force(scene, plan, bot, board, int(dport[o[j]]), start, float(rtt[j]), near=SERVER, role=role)


def _weighted_credential(rng: np.random.Generator) -> tuple[str, str]:
    weights = np.array([w for _, _, w in MIRAI_CREDENTIALS], dtype=np.float64)
    user, password, _ = MIRAI_CREDENTIALS[int(rng.choice(len(weights), p=weights / weights.sum()))]
    return user, password




def _brute_force(
    scene: Scene,
    plan: AttackPlan,
    bot: Bot,
    victim: Host,
    port: int,
    t: float,
    rtt: float,
    near: int = CLIENT,
    role: str | None = None,
) -> None:
    """Mirai's telnet login attempts on one device: up to 10 connections, one credential each.

    ``near=CLIENT``: captured beside the bot (the board scans); ``near=SERVER``: beside the device (the board
    is the one scanned, answering with its own stack)."""
    rng = scene.rng
    vulnerable = rng.random() < plan.vulnerable_fraction
    secret = _weighted_credential(rng) if vulnerable else ("", "\0")
    stack = TARGET_STACKS[int(rng.integers(len(TARGET_STACKS)))] if near == CLIENT else BOARD_STACK
    hostname = str(rng.choice(["dvr", "ipcam", "router", "(none)", "localhost", "HG8245", "hi3518"]))
    role = role or f"mirai_scan:{bot.name}"
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
            near=near,
            client_stack=BOT_STACK,
            server_stack=stack,
            link_bps=scene.link_bps,
        )
        success = cred == secret
        t = _telnet_login(scene, conv, t, cred, success, hostname)
        _count(plan, "bruteforce", conv.add_to(scene.timeline, ("mirai_scan", role), (BENIGN, "reply:mirai_scan")))
        if success:
            if near == CLIENT:  # the report leaves from the bot: seen only beside it
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
