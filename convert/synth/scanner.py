"""Mirai's telnet scanner and brute force (``mirai/bot/scanner.c``), and its descendants' scanners.

* ``scan``: the board or a LAN neighbour scans.  40-byte SYNs, seq = destination
  address, fixed source port and window, port 23 except every tenth packet (2323),
  160 per second in one burst; the descendants' ports and fingerprint come from
  ``SCANNER_VARIANTS``.  A few targets answer; the bot's kernel resets the
  half-open connections and the bot logs in to open telnet ports.
* ``scanned``: the board has a reachable address and many scanning bots on the
  Internet probe it, one to three SYNs each; the board answers with its own stack.

Brute force follows scanner.c's state machine (IACs, user name, password,
enable/system/shell/sh, the token) and a successful login is reported to the
loader (``report_working``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from agent.capture.headers import ACK, RST, SYN

from .attack import AttackPlan, Bot
from .frames import TCP_MSS_OPTION, TCP_SYN_OPTIONS, pack, tcp_frames
from .network import Host, random_public_ips
from .options import SCANNER_VARIANTS
from .payloads import MIRAI_CREDENTIALS, TELNETD_IACS, dns_query, dns_response, mirai_iac_answers
from .scene import Scene
from .tcp import CLIENT, LINUX, SERVER, TcpConversation, TcpStack
from .timeline import BENIGN

TELNET_PORTS = (23, 2323)

# Stacks of scanned telnet devices (DVRs, routers, cameras on old embedded Linux).
TARGET_STACKS = (
    TcpStack("linux-2.6-embedded", syn_window=5792, window=1460, window_growth=200, window_scale=2),
    TcpStack("linux-3.x-embedded", syn_window=14480, window=227, window_growth=400, window_scale=6),
    TcpStack("embedded-nots", timestamps=False, window_scale=0, syn_window=5840, window=5840, window_growth=0, df=True),
)
BOT_STACK = TcpStack("bot-linux", syn_window=14600, window=229, window_growth=300, window_scale=5)
# The board's own stack when a scanner reaches it (a Linux board: 64240 window, timestamps, WS 7).
BOARD_STACK = LINUX
SCANNERS_ROLE = "mirai_scan:scanners"  # the scanned view's bots, all alike


@dataclass
class _Probes:
    """The SYNs one scanner sent: capture time, destination, ports and sequence number of each."""

    times: np.ndarray
    dst: np.ndarray
    sport: int  # fixed per scanner process
    dport: np.ndarray
    seq: np.ndarray


def scan(scene: Scene, plan: AttackPlan, bot: Bot) -> None:
    """One bot's scanner: bursts of SYNs to random addresses, the few answers, brute force on open telnet ports."""
    probes = _scan_syns(scene, plan, bot)
    if probes is None:
        return
    rng = scene.rng
    # Answers: a few targets run telnet (SYN-ACK), more refuse (RST), most stay silent.
    n = len(probes.times)
    p_open, p_closed = plan.open_fraction, plan.refuse_fraction
    draw = rng.random(n)
    opened = np.flatnonzero(draw < p_open)
    refused = np.flatnonzero((draw >= p_open) & (draw < p_open + p_closed))
    rtt = rng.uniform(0.015, 0.3, n)
    ttl = (np.asarray(rng.choice([64, 64, 128, 255], n)) - rng.integers(5, 22, n)).astype(np.int64)
    if len(refused):
        r = refused
        out = tcp_frames(
            len(r),
            tcp={"sport": probes.dport[r], "dport": probes.sport, "seq": 0, "ack": probes.seq[r] + 1,
                 "flags": RST | ACK, "window": 0},  # fmt: skip
            src_ip=probes.dst[r],
            ttl=ttl[r],
            ip_id=0,
            df=True,
            **_from_net(scene, bot),
        )
        scene.timeline.add(probes.times[r] + rtt[r], out, BENIGN, "reply:mirai_scan")
        plan.count("reply", len(r))
    if len(opened):
        _scan_opened(scene, plan, bot, probes, opened, rtt, ttl)


def _from_net(scene: Scene, bot: Bot) -> dict:
    """Ethernet and IPv4 fields of packets that reach the scanning bot from the Internet."""
    return {"src_mac": scene.lan.gateway.mac, "dst_mac": bot.host.mac, "dst_ip": bot.host.ip, "pad": True}


def _scan_syns(scene: Scene, plan: AttackPlan, bot: Bot) -> _Probes | None:
    """Add the scanner's SYNs: one burst each time its select() loop sees a new second."""
    rng = scene.rng
    variant = SCANNER_VARIANTS[bot.variant]
    sport = int(rng.integers(1024, 1 << 16))
    window = int(rng.integers(0, 1 << 16))
    bursts = []
    t = plan.start + float(rng.uniform(0, min(1.0, plan.stop - plan.start)))
    while t < plan.stop:
        bursts.append(t)
        t += 1.0 + float(rng.gamma(2.0, 0.004))
    if not bursts:
        return None
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
    scene.timeline.add(times, frames, "mirai_scan", f"mirai_scan:{bot.name}")
    plan.count("mirai_scan", n)
    return _Probes(times, dst, sport, dport, seq)


def _scan_opened(
    scene: Scene, plan: AttackPlan, bot: Bot, probes: _Probes, o: np.ndarray, rtt: np.ndarray, ttl: np.ndarray
) -> None:
    """Targets ``o`` answer SYN-ACK; the bot's kernel resets the connection and the bot logs in to telnet."""
    rng = scene.rng
    sport, dport, seq, dst = probes.sport, probes.dport, probes.seq, probes.dst
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
        **_from_net(scene, bot),
    )
    t_synack = probes.times[o] + rtt[o]
    scene.timeline.add(t_synack, out, BENIGN, "reply:mirai_scan")
    plan.count("reply", len(o))
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
    scene.timeline.add(t_synack + rng.gamma(2.0, 0.00003, len(o)), out, "mirai_scan", f"mirai_scan:{bot.name}")
    plan.count("mirai_scan", len(o))
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


def scanned(scene: Scene, plan: AttackPlan) -> None:
    """Scanning bots on the Internet probe the board: one to three SYNs each, then the board answers.

    Each bot sends from its own fixed source port and window (fixed per scanner process), a random IP ID,
    TTL 64 less its hops, to its variant's ports, sequence number = the address it probed (the board's, or
    the router's when a DMZ or port forward brings the packets in).  The board answers RST-ACK from closed
    ports (or nothing behind a dropping firewall) and SYN-ACK from open ones; the bot's kernel resets that
    half-open connection, and for an open telnet port the bot logs in with Mirai's brute force."""
    if not plan.bots:
        return
    syns = _syns_to_board(scene, plan)
    if syns is not None:
        _board_answers(scene, plan, *syns)


def _syns_to_board(scene: Scene, plan: AttackPlan) -> tuple[np.ndarray, ...] | None:
    """Add the scanners' SYNs that reach the board; returns their (times, bot, sport, dport, seq)."""
    rng, lan = scene.rng, scene.lan
    m = len(plan.bots)
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
        return None
    src, ttl = _scanner_addresses(plan, bot_of)
    syn = {"sport": sport, "dport": dport, "seq": seq, "ack": 0, "flags": SYN, "window": window}
    frames = tcp_frames(n, tcp=syn, src_mac=lan.gateway.mac, dst_mac=lan.board.mac, src_ip=src, dst_ip=lan.board.ip,
                        ttl=ttl, ip_id=rng.integers(0, 1 << 16, n), df=False, pad=True)  # fmt: skip
    scene.timeline.add(times, frames, "mirai_scan", SCANNERS_ROLE)
    plan.count("mirai_scan", n)
    return times, bot_of, sport, dport, seq


def _scanner_addresses(plan: AttackPlan, bot_of: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Source address and TTL (as seen at the board) of each packet's bot."""
    src = np.array([b.host.ip for b in plan.bots], dtype=np.int64)[bot_of]
    ttl = np.array([b.host.ttl for b in plan.bots], dtype=np.int64)[bot_of]
    return src, ttl


def _board_answers(
    scene: Scene, plan: AttackPlan, times: np.ndarray, bot_of: np.ndarray, sport: np.ndarray, dport: np.ndarray,
    seq: np.ndarray,
) -> None:
    """The board's RST-ACKs and SYN-ACKs, the bots' resets of the latter, and brute force on open telnet ports."""
    rng, board, gw = scene.rng, scene.lan.board, scene.lan.gateway
    n = len(times)
    src, ttl = _scanner_addresses(plan, bot_of)
    react = times + rng.gamma(2.0, 0.00004, n)
    from_board = {"src_mac": board.mac, "dst_mac": gw.mac, "src_ip": board.ip, "ttl": 64, "ip_id": 0, "df": True}
    opened = np.isin(dport, plan.replies.open_ports)
    closed = np.flatnonzero(~opened & (rng.random(n) < plan.refuse_fraction))
    if len(closed):
        c = closed
        tcp = {"sport": dport[c], "dport": sport[c], "seq": 0, "ack": seq[c] + 1, "flags": RST | ACK, "window": 0}
        out = tcp_frames(len(c), tcp=tcp, dst_ip=src[c], **from_board)
        scene.timeline.add(react[c], out, BENIGN, "reply:mirai_scan")
        plan.count("reply", len(c))
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
    plan.count("reply", k)
    # The bot's kernel resets the raw scanner's half-open connection, a round trip later.
    rtt = rng.uniform(0.015, 0.3, len(plan.bots))[bot_of[o]]
    t_rst = react[o] + rtt
    tcp = {"sport": sport[o], "dport": dport[o], "seq": seq[o] + 1, "ack": 0, "flags": RST, "window": 0}
    out = tcp_frames(k, tcp=tcp, src_mac=gw.mac, dst_mac=board.mac, src_ip=src[o], dst_ip=board.ip, ttl=ttl[o],
                     ip_id=0, df=True, pad=True)  # fmt: skip
    scene.timeline.add(t_rst, out, "mirai_scan", SCANNERS_ROLE)
    plan.count("mirai_scan", k)
    # Mirai connects for real to the telnet port that answered (once per bot) and tries its credentials.
    done: set[int] = set()
    for j in range(k):
        b = int(bot_of[o[j]])
        if int(dport[o[j]]) not in TELNET_PORTS or b in done or rng.random() >= plan.bruteforce_share:
            continue
        done.add(b)
        start = float(t_rst[j]) + float(rng.uniform(0.001, 0.05))
        _brute_force(scene, plan, plan.bots[b], board, int(dport[o[j]]), start, float(rtt[j]), near=SERVER,
                     role=SCANNERS_ROLE)  # fmt: skip


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
        plan.count("bruteforce", conv.add_to(scene.timeline, ("mirai_scan", role), (BENIGN, "reply:mirai_scan")))
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
