"""Mirai's five traffic classes, packet for packet as the public source builds them (DESIGN 5).

``plan_attack`` draws an attack: the options of its command (``options.AttackOptions``,
drawn by ``sample_options`` over their real range), its bots, their rates and its
targets; ``run_attack`` adds its frames to the scene: the floods (syn, ack, udp,
udpplain) and the victims' answers in floods.py, the telnet scanner and brute
force in scanner.py, the plan itself in attack.py.

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
"""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np

from .attack import (
    LINUX_REPLIES,
    LWIP_REPLIES,
    REPLY_STACKS,
    VIEWS,
    AttackPlan,
    Bot,
    ReplyStack,
    Target,
    frame_length,
    link_rate_cap,
)
from .floods import flood, router_arp
from .network import Host, random_public_ips
from .options import SCANNER_VARIANTS, AttackOptions, OptionSpace, draw_option, sample_options
from .scanner import scan, scanned
from .scene import Scene

log = logging.getLogger(__name__)

# One attack's frames at most; a bigger one stops early (its rates are kept): memory and training time.
MAX_FLOOD_BYTES = 200 << 20
MAX_FLOOD_PACKETS = 800_000
COMMON_PORTS = (22, 23, 53, 80, 443, 554, 1883, 8080, 8883)  # victims' listening ports, each open 30% of the time


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
            scanned(scene, plan)
            return plan
        for bot in plan.bots:
            scan(scene, plan, bot)
        return plan
    absent_t, absent_dst = [], []
    for bot in plan.bots:
        t, dst = flood(scene, plan, bot)
        absent_t.append(t)
        absent_dst.append(dst)
    router_arp(scene, plan, np.concatenate(absent_t), np.concatenate(absent_dst))
    return plan


