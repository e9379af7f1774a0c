"""Ordinary traffic between a bot and its victim before (and sometimes during) an attack.

An infected device has usually talked to its victim before it is told to flood
it: a LAN neighbour sent the board small UDP datagrams, published over MQTT,
fetched a status page, pinged it; an infected board used a remote service
before attacking it.  ``prior_contact`` adds such an exchange, from half a
second to five minutes before the attack starts, sometimes carrying on during
the attack.  Every packet of it is benign (the bot's own non-attack packets and
the victim's answers, including ICMP port unreachable for datagrams to closed
ports), with roles ``benign:prior-<activity>``.
"""

from __future__ import annotations

import logging

import numpy as np

from agent.capture.headers import ETHERNET

from .attack import LINUX_REPLIES, ReplyStack, TokenBuckets
from .benign import arp_replies, conversation, mqtt_session
from .frames import BROADCAST_MAC, arp_frames, icmp_frames, payload_matrix, udp_frames
from .network import Host
from .scene import Scene
from .tcp import CLIENT, LINUX, LWIP, SERVER
from .timeline import BENIGN, periodic

log = logging.getLogger(__name__)

ACTIVITIES = ("udp", "udp", "ping", "mqtt", "http", "refused")
UDP_PORTS = (4999, 5683, 9999, 6666, 38899, 20002, 8888, 1982, 5000)
PING_DATA = bytes(range(0x10, 0x38))  # iputils/busybox ping: 8 bytes of timestamp, then this pattern


def prior_contact(
    scene: Scene, bot: Host, victim: Host, attack_start: float, attack_stop: float, replies: ReplyStack = LINUX_REPLIES
) -> dict:
    """Add benign bot<->victim traffic around the attack window; returns a description for the metadata."""
    rng, timeline = scene.rng, scene.timeline
    before = sum(len(b) for b in timeline.blocks)
    lead = float(np.exp(rng.uniform(np.log(0.5), np.log(300.0))))
    start = max(0.0, attack_start - lead)
    during = rng.random() < 0.35
    quiet = float(rng.uniform(0.002, 0.5)) * (attack_start - start)  # silence between contact and attack
    stop = attack_stop if during else max(start + 0.005, attack_start - quiet)
    kinds = sorted({str(k) for k in rng.choice(ACTIVITIES, size=int(rng.integers(1, 4)))})
    if bot.local and victim.local:
        _arp(scene, bot, victim, start - float(rng.uniform(0.0002, 0.003)))
        if not during and attack_start - stop > 30:  # the neighbour entry went stale: resolved again for the flood
            _arp(scene, bot, victim, attack_start - float(rng.uniform(0.0002, 0.003)))
    for kind in kinds:
        t0 = float(rng.uniform(start, start + 0.3 * (stop - start)))
        if kind == "udp":
            _udp(scene, bot, victim, t0, stop, replies)
        elif kind == "ping":
            _ping(scene, bot, victim, t0, stop)
        elif kind == "mqtt":
            client, server = (bot, victim) if rng.random() < 0.7 else (victim, bot)
            _mqtt(scene, client, server, t0, stop)
        elif kind == "http":
            client, server = (bot, victim) if rng.random() < 0.6 else (victim, bot)
            _http(scene, client, server, t0, stop)
        else:
            _refused(scene, bot, victim, t0, stop)
    packets = sum(len(b) for b in timeline.blocks) - before
    return {
        "bot": bot.ip_text,
        "victim": victim.ip_text,
        "activities": kinds,
        "start_s": round(start, 6),
        "stop_s": round(stop, 6),
        "during_attack": during,
        "packets": int(packets),
    }


def _mqtt(scene: Scene, client: Host, server: Host, t0: float, stop: float) -> None:
    rng = scene.rng
    mqtt_session(
        scene,
        client,
        server,
        t0,
        stop,
        tls=False,
        period=float(rng.choice([0.5, 1.0, 2.0, 5.0, 10.0, 30.0])),
        keepalive=int(rng.choice([15, 30, 60])),
        stack=LWIP if not client.is_board and rng.random() < 0.3 else LINUX,
    )


def _arp(scene: Scene, asker: Host, target: Host, t: float) -> None:
    if t < 0:
        return
    request = arp_frames(
        1,
        src_mac=asker.mac,
        dst_mac=BROADCAST_MAC,
        op=1,
        sender_mac=asker.mac,
        sender_ip=asker.ip,
        target_mac=0,
        target_ip=target.ip,
        pad=not asker.is_board,
    )
    reply = arp_replies(1, target, asker)
    scene.timeline.add(np.array([t]), request, BENIGN, "benign:prior-arp")
    scene.timeline.add(np.array([t + float(scene.rng.gamma(2.0, 0.0001))]), reply, BENIGN, "benign:prior-arp")


def _udp(scene: Scene, bot: Host, victim: Host, t0: float, stop: float, replies: ReplyStack) -> None:
    """Small datagrams from one socket: a quick burst (2 ms apart) or a periodic status message."""
    rng = scene.rng
    if rng.random() < 0.5:
        n = int(rng.integers(1, 30))
        times = t0 + np.cumsum(rng.gamma(4.0, float(rng.uniform(0.0003, 0.005)), n))
    else:
        times = periodic(rng, t0, stop, float(np.exp(rng.uniform(np.log(0.2), np.log(30.0)))), 0.05)[:200]
    if not len(times):
        return
    times = times[times < max(stop, times[0] + 1e-9)]  # at least one datagram
    n = len(times)
    size = int(rng.integers(2, 120))
    sizes = np.full(n, size) if rng.random() < 0.6 else rng.integers(2, 160, n)
    payload = [bytes(rng.integers(32, 127, int(k), dtype=np.uint8)) for k in sizes]  # text-like commands
    sport, dport = scene.ephemeral_port(), int(rng.choice(UDP_PORTS))
    matrix, lengths = payload_matrix(payload)
    # ...behind a LAN control protocol's header, as real ones have (Tuya's 0x000055aa, miIO's 0x2131, LIFX's frame):
    # a magic number of the service, then the datagram's sequence number.  (Derived, not drawn: the random stream,
    # and so every other packet of a synthesised capture, stays as it was.)
    header = np.zeros((n, 4), dtype=np.uint8)
    header[:, 0], header[:, 1] = 0xA5, dport & 0xFF
    header[:, 2], header[:, 3] = (np.arange(n) >> 8) & 0xFF, np.arange(n) & 0xFF
    width = min(4, matrix.shape[1])
    matrix = matrix.copy()
    matrix[:, :width] = header[:, :width]
    frames = udp_frames(
        n,
        sport=sport,
        dport=dport,
        payload=matrix,
        payload_len=lengths,
        src_mac=bot.mac,
        dst_mac=victim.mac,
        src_ip=bot.ip,
        dst_ip=victim.ip,
        ttl=bot.ttl,
        ip_id=rng.integers(0, 1 << 16) + np.arange(n),
        df=True,
        pad=not bot.is_board,
    )
    scene.timeline.add(times, frames, BENIGN, "benign:prior-udp")
    answer = times + (rng.gamma(2.0, 0.00005, n) if victim.local and bot.local else scene.rtt(bot, victim))
    if rng.random() < 0.4:  # a service listens: it answers each datagram
        out = [bytes(rng.integers(32, 127, int(rng.integers(2, 200)), dtype=np.uint8)) for _ in range(n)]
        matrix, lengths = payload_matrix(out)
        frames = udp_frames(
            n,
            sport=dport,
            dport=sport,
            payload=matrix,
            payload_len=lengths,
            src_mac=victim.mac,
            dst_mac=bot.mac,
            src_ip=victim.ip,
            dst_ip=bot.ip,
            ttl=victim.ttl,
            ip_id=rng.integers(0, 1 << 16, n),
            df=True,
            pad=not victim.is_board,
        )
        scene.timeline.add(answer, frames, BENIGN, "benign:prior-udp")
        return
    # Closed port: ICMP port unreachable, as rate-limited as the victim's stack does it.
    keep = TokenBuckets(replies.icmp_per_peer, replies.icmp_peer_burst).allow(answer, np.zeros(n))
    sel = np.flatnonzero(keep)
    rows = frames.rows[sel]
    ip_len = 20 + 8 + sizes[sel]
    out = icmp_frames(
        len(sel),
        icmp={"type": 3, "code": 3},
        payload=rows[:, ETHERNET.size : ETHERNET.size + replies.quote],
        payload_len=np.minimum(ip_len, replies.quote),
        src_mac=victim.mac,
        dst_mac=bot.mac,
        src_ip=victim.ip,
        dst_ip=bot.ip,
        ttl=victim.ttl if not victim.local else replies.ttl,
        tos=0 if replies.ttl == 255 else 0xC0,
        ip_id=rng.integers(0, 1 << 16, len(sel)),
        df=False,
        pad=not victim.is_board,
    )
    scene.timeline.add(answer[sel], out, BENIGN, "benign:prior-udp")


def _ping(scene: Scene, bot: Host, victim: Host, t0: float, stop: float) -> None:
    rng = scene.rng
    count = int(rng.choice([1, 3, 4, 5, 10, 30]))
    interval = float(rng.choice([1.0, 1.0, 0.2]))
    times = t0 + interval * np.arange(count) + rng.normal(0, 0.0005, count)
    times = np.sort(times)[: max(1, int(np.sum(times < stop)))]
    n = len(times)
    ident = int(rng.integers(0, 1 << 16))
    rest = (ident << 16) | np.arange(1, n + 1)
    stamp = [int(scene.unix(x) * 1e6).to_bytes(8, "little") + PING_DATA for x in times]
    matrix, lengths = payload_matrix(stamp)
    def echo(kind: int, src: Host, dst: Host, df: bool):
        return icmp_frames(
            n, icmp={"type": kind, "code": 0, "rest": rest}, payload=matrix, payload_len=lengths,
            src_mac=src.mac, dst_mac=dst.mac, src_ip=src.ip, dst_ip=dst.ip, ttl=src.ttl,
            ip_id=rng.integers(0, 1 << 16, n), df=df, pad=not src.is_board,
        )  # fmt: skip

    req = echo(8, bot, victim, df=True)  # iputils ping sets DF; the reply is the kernel's own
    rep = echo(0, victim, bot, df=False)
    scene.timeline.add(times, req, BENIGN, "benign:prior-ping")
    scene.timeline.add(times + scene.rtt(bot, victim), rep, BENIGN, "benign:prior-ping")


def _http(scene: Scene, client: Host, server: Host, t0: float, stop: float) -> None:
    """Status-page fetches: one connection each, a GET and a small response."""
    rng = scene.rng
    period = float(rng.choice([1.0, 5.0, 15.0, 60.0]))
    for t in np.concatenate([[t0], periodic(rng, t0 + period, stop, period, 0.1)])[:50]:
        conv = conversation(scene, client, server, int(rng.choice([80, 8080])))
        t = conv.handshake(float(t))
        path = rng.choice(["/status", "/api/v1/state", "/", "/snapshot.jpg", "/cgi-bin/info"])
        request = f"GET {path} HTTP/1.1\r\nHost: {server.ip_text}\r\nUser-Agent: iot/1.0\r\nAccept: */*\r\n\r\n"
        t = conv.send(t + conv.delay(CLIENT), CLIENT, request.encode(), ack=False)
        body = int(rng.integers(40, 6000))
        header = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {body}\r\n\r\n".encode()
        t = conv.send(t + conv.delay(SERVER), SERVER, header, ack=False)
        t = conv.send(t + 0.0002, SERVER, body)
        conv.close(t + conv.delay(CLIENT), CLIENT)
        conv.add_to(scene.timeline, (BENIGN, "benign:prior-http"))


def _refused(scene: Scene, bot: Host, victim: Host, t0: float, stop: float) -> None:
    """Connections to a port nobody listens on: SYN, RST-ACK, retried a few times."""
    rng = scene.rng
    t = t0
    for _ in range(int(rng.integers(1, 6))):
        if t >= max(stop, t0 + 1e-6):
            break
        conv = conversation(scene, bot, victim, int(rng.choice([23, 80, 554, 1883, 8000, 8443])))
        conv.refused(t)
        conv.add_to(scene.timeline, (BENIGN, "benign:prior-tcp"))
        t += float(rng.uniform(0.2, 10.0))
