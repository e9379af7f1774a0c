"""What a Mirai attack is, for the synthesiser: its plan (class, view, bots, targets, options), how victims
answer (``ReplyStack``, ``TokenBuckets``), and the size of its packets.  ``mirai.plan_attack`` draws a plan,
``mirai.run_attack`` turns it into frames (floods.py, scanner.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from agent.capture.headers import ETHERNET

from .network import Host, ip_text
from .options import AttackOptions, default_options

ATTACK_CLASSES = ("mirai_ack", "mirai_scan", "mirai_syn", "mirai_udp", "mirai_udpplain")
VIEWS = {k: ("bot", "victim", "scanned") if k == "mirai_scan" else ("bot", "victim") for k in ATTACK_CLASSES}
WIRE_OVERHEAD = 24  # preamble, inter-frame gap and FCS around every frame on the wire
MAX_META_BOTS = 100  # bots listed in the metadata (a scanned board meets thousands)


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

    def count(self, key: str, n: int) -> None:
        """Add ``n`` packets of ``key`` (the attack's class, "reply", "bruteforce") to the metadata's counts."""
        self.counts[key] = self.counts.get(key, 0) + int(n)

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
