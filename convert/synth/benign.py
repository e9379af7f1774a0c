"""Benign IoT traffic: what cameras, sensors, plugs, hubs and phones send on a home or office LAN.

Each function adds one kind of activity between ``start`` and ``stop`` (seconds
from the capture start) to the scene's timeline, labelled benign with a role such
as ``benign:camera``.  ``device_profile`` bundles the activities of one kind of
device; ``lan_background`` adds the LAN's own chatter (ARP, DHCP, SSDP, mDNS).
Timing mixes periodic-with-jitter (telemetry, NTP, RTP), Poisson (user
activity, lookups) and bursts (keyframes, firmware downloads, sync sessions).
"""

from __future__ import annotations

import itertools
import logging

import numpy as np

from .frames import BROADCAST_MAC, Frames, arp_frames, multicast_mac, pack, random_payload, udp_frames
from .network import Host
from .payloads import (
    DHCPACK,
    DHCPDISCOVER,
    DHCPOFFER,
    DHCPREQUEST,
    MQTT_PINGREQ,
    MQTT_PINGRESP,
    RTP,
    TELNETD_IACS,
    dhcp_message,
    mdns_announce,
    mdns_query,
    mqtt_connack,
    mqtt_connect,
    mqtt_puback,
    mqtt_publish,
    mqtt_suback,
    mqtt_subscribe,
    ntp_reply,
    ntp_request,
    rtcp_receiver_report,
    rtcp_sender_report,
    rtsp_request,
    rtsp_response,
    sdp,
    ssdp_msearch,
    ssdp_notify,
    ssdp_response,
    telemetry_json,
    tls_app_data,
    tls_record,
    tls_stream_headers,
)
from .scene import Scene
from .tcp import CLIENT, LINUX, LINUX_SERVER, LWIP, SERVER, TcpConversation, TcpStack
from .timeline import BENIGN, periodic, poisson

log = logging.getLogger(__name__)

SSDP_GROUP = (239 << 24) | (255 << 16) | (255 << 8) | 250
MDNS_GROUP = (224 << 24) | 251
VENDORS = ("hearthlink", "lumora", "brightnest", "kiwisense", "ovelo", "tesselhome", "nimbuscam", "plugwise-ly")


def cloud_name(scene: Scene, kind: str, vendor: str | None = None) -> str:
    vendor = vendor or str(scene.rng.choice(VENDORS))
    return f"{kind}.{vendor}-iot.com"


def _near(a: Host) -> int:
    """Which end of a client/server pair the capture point sits near: the local one."""
    return CLIENT if a.local else SERVER


def conversation(scene: Scene, client: Host, server: Host, dport: int, **stacks: TcpStack) -> TcpConversation:
    return TcpConversation(
        scene.rng,
        client,
        server,
        scene.ephemeral_port(),
        dport,
        rtt=scene.rtt(client, server),
        near=_near(client),
        link_bps=scene.link_bps,
        **stacks,
    )


def tls_handshake(scene: Scene, conv: TcpConversation, t: float) -> float:
    """TLS 1.2 or 1.3 handshake record sizes as IoT SDKs (mbedTLS, OpenSSL) produce them."""
    rng = scene.rng
    t = conv.send(t, CLIENT, tls_record(rng, 22, int(rng.integers(180, 512)), version=0x0301), ack=False)
    t += conv.delay(SERVER)
    if rng.random() < 0.5:  # TLS 1.2: Certificate travels in the clear
        t = conv.send(t, SERVER, tls_record(rng, 22, int(rng.integers(2400, 4800))), ack=False)
        t += conv.delay(CLIENT)
        t = conv.send(t, CLIENT, tls_record(rng, 22, 70) + tls_record(rng, 20, 1) + tls_record(rng, 22, 40), ack=False)
        t += conv.delay(SERVER)
        t = conv.send(t, SERVER, tls_record(rng, 22, 186) + tls_record(rng, 20, 1) + tls_record(rng, 22, 40), ack=False)
    else:  # TLS 1.3: ServerHello, then everything encrypted
        t = conv.send(
            t,
            SERVER,
            tls_record(rng, 22, 118) + tls_record(rng, 20, 1) + tls_app_data(rng, int(rng.integers(1800, 4200))),
            ack=False,
        )
        t += conv.delay(CLIENT)
        t = conv.send(t, CLIENT, tls_record(rng, 20, 1) + tls_app_data(rng, 36), ack=False)
    return t + conv.delay(CLIENT)


# ---------------------------------------------------------------- LAN chatter


def arp_replies(n: int, target: Host, asker: Host) -> Frames:
    """``n`` ARP replies from ``target`` to ``asker`` (padded unless the board itself sends them)."""
    return arp_frames(
        n, src_mac=target.mac, dst_mac=asker.mac, op=2, sender_mac=target.mac, sender_ip=target.ip,
        target_mac=asker.mac, target_ip=asker.ip, pad=not target.is_board,
    )  # fmt: skip


def arp_activity(scene: Scene, hosts: list[Host], start: float, stop: float) -> None:
    """Hosts refreshing their neighbour entry of the gateway (and the gateway theirs).

    Linux re-validates a stale entry with unicast probes and falls back to a
    broadcast request; embedded stacks broadcast every few minutes.
    """
    rng, gw = scene.rng, scene.lan.gateway
    pairs = [(h, gw) for h in hosts if h is not gw] + [(gw, h) for h in hosts if h is not gw and rng.random() < 0.5]
    for asker, target in pairs:
        times = periodic(rng, start, stop, float(rng.uniform(40, 400)), 0.25)
        if not len(times):
            continue
        unicast = rng.random(len(times)) < (0.7 if asker.name != "gateway" else 0.4)
        frames = arp_frames(
            len(times),
            src_mac=asker.mac,
            dst_mac=np.where(unicast, target.mac, BROADCAST_MAC).astype(np.uint64),
            op=1,
            sender_mac=asker.mac,
            sender_ip=asker.ip,
            target_mac=np.where(unicast, target.mac, 0).astype(np.uint64),
            target_ip=target.ip,
            pad=not asker.is_board,
        )
        scene.timeline.add(times, frames, BENIGN, "benign:arp")
        replies = times + rng.gamma(2.0, 0.0002, len(times))
        frames = arp_replies(len(times), target, asker)
        scene.timeline.add(replies, frames, BENIGN, "benign:arp")


def dhcp_join(scene: Scene, host: Host, t: float, hostname: str) -> float:
    """A device (re)joining: DISCOVER/OFFER/REQUEST/ACK, then RFC 5227 probes and a gratuitous ARP."""
    rng, lan = scene.rng, scene.lan
    gw = lan.gateway
    xid = int(rng.integers(0, 1 << 32))
    bcast = Host("broadcast", BROADCAST_MAC, 0xFFFFFFFF)
    unconfigured = Host(host.name, host.mac, 0, is_board=host.is_board)
    msgs = [
        (unconfigured, bcast, 68, 67, dhcp_message(DHCPDISCOVER, xid, host.mac, hostname=hostname)),
        (gw, host, 67, 68, dhcp_message(DHCPOFFER, xid, host.mac, yiaddr=host.ip, server=gw.ip, router=gw.ip)),
        (
            unconfigured,
            bcast,
            68,
            67,
            dhcp_message(DHCPREQUEST, xid, host.mac, hostname=hostname, requested=host.ip, server=gw.ip),
        ),
        (gw, host, 67, 68, dhcp_message(DHCPACK, xid, host.mac, yiaddr=host.ip, server=gw.ip, router=gw.ip)),
    ]
    for src, dst, sport, dport, payload in msgs:
        scene.udp([t], src, dst, sport, dport, [payload], "benign:dhcp", ip_id=int(rng.integers(0, 1 << 16)), df=False)
        t += float(rng.uniform(0.0005, 0.02)) if src is gw else float(rng.uniform(0.001, 0.6))
    # Probes (sender IP 0.0.0.0) then announcements, as dhcpcd/systemd-networkd do.
    times = t + np.cumsum(rng.uniform(0.2, 1.0, 5))
    probe = np.arange(5) < 3
    frames = arp_frames(
        5,
        src_mac=host.mac,
        dst_mac=BROADCAST_MAC,
        op=1,
        sender_mac=host.mac,
        sender_ip=np.where(probe, 0, host.ip),
        target_mac=0,
        target_ip=host.ip,
        pad=not host.is_board,
    )
    scene.timeline.add(times, frames, BENIGN, "benign:arp")
    return float(times[-1])


def dhcp_renewals(scene: Scene, host: Host, start: float, stop: float) -> None:
    """Unicast REQUEST/ACK renewals at half the lease time."""
    rng, gw = scene.rng, scene.lan.gateway
    lease = float(rng.choice([600, 1800, 3600, 7200, 43200, 86400]))
    for t in periodic(rng, start, stop, lease / 2, 0.002):
        xid = int(rng.integers(0, 1 << 32))
        req = dhcp_message(DHCPREQUEST, xid, host.mac, ciaddr=host.ip, hostname=host.name)
        ack = dhcp_message(
            DHCPACK, xid, host.mac, ciaddr=host.ip, yiaddr=host.ip, server=gw.ip, router=gw.ip, lease=int(lease)
        )
        scene.udp([t], host, gw, 68, 67, [req], "benign:dhcp", ip_id=int(rng.integers(0, 1 << 16)))
        scene.udp(
            [t + float(rng.uniform(0.0005, 0.01))],
            gw,
            host,
            67,
            68,
            [ack],
            "benign:dhcp",
            ip_id=int(rng.integers(0, 1 << 16)),
        )


def ssdp_notifier(scene: Scene, dev: Host, start: float, stop: float, device_type: str) -> None:
    """UPnP NOTIFY alive bursts: one per advertised type, each sent twice, every few minutes."""
    rng = scene.rng
    uuid = "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}".format(
        *tuple(int(rng.integers(0, 1 << b)) for b in (32, 16, 16, 16, 48))
    )
    location = f"http://{dev.ip_text}:{int(rng.choice([1400, 49152, 5000, 80]))}/description.xml"
    server = f"Linux/{rng.choice(['3.10', '4.9', '4.14'])} UPnP/1.0 {device_type.split(':')[3]}/1.0"
    types = ["upnp:rootdevice", f"uuid:{uuid}", device_type]
    group = Host("ssdp", multicast_mac(SSDP_GROUP), SSDP_GROUP)
    for t in periodic(rng, start, stop, float(rng.uniform(60, 900)), 0.1):
        payloads = [ssdp_notify(location, nt, uuid, server) for nt in types for _ in range(2)]
        times = t + np.cumsum(rng.exponential(0.02, len(payloads)))
        src = Host(dev.name, dev.mac, dev.ip, dev.is_board, ttl=4)
        scene.udp(times, src, group, 1900, 1900, payloads, "benign:ssdp", ip_id=0)


def ssdp_searcher(scene: Scene, searcher: Host, responders: list[Host], start: float, stop: float) -> None:
    """M-SEARCH bursts (apps looking for devices), answered by unicast 200 OK from each responder."""
    rng = scene.rng
    group = Host("ssdp", multicast_mac(SSDP_GROUP), SSDP_GROUP)
    for t in poisson(rng, start, stop, float(rng.uniform(1 / 600, 1 / 60))):
        sport, mx = scene.ephemeral_port(), int(rng.choice([1, 2, 3, 5]))
        st = str(rng.choice(["ssdp:all", "upnp:rootdevice", "urn:dial-multiscreen-org:service:dial:1"]))
        count = int(rng.integers(2, 5))
        times = t + np.cumsum(rng.exponential(0.1, count))
        src = Host(searcher.name, searcher.mac, searcher.ip, searcher.is_board, ttl=4)
        scene.udp(times, src, group, sport, 1900, [ssdp_msearch(st, mx)] * count, "benign:ssdp", ip_id=0)
        for r in responders:
            loc = f"http://{r.ip_text}:49152/description.xml"
            reply = ssdp_response(loc, "upnp:rootdevice", f"{r.mac:012x}-0000-1000-8000-{r.mac:012x}", "Linux UPnP/1.0")
            scene.udp(times[:1] + rng.uniform(0, mx), r, searcher, 1900, sport, [reply], "benign:ssdp", ip_id=0)


def mdns_activity(
    scene: Scene, queriers: list[Host], services: dict[str, tuple[Host, int]], start: float, stop: float
) -> None:
    """Queries for service types (phones, hubs) and the advertised devices' multicast answers."""
    rng = scene.rng
    group = Host("mdns", multicast_mac(MDNS_GROUP), MDNS_GROUP)
    for q in queriers:
        src = Host(q.name, q.mac, q.ip, q.is_board, ttl=255)
        for t in poisson(rng, start, stop, float(rng.uniform(1 / 300, 1 / 30))):
            asked = [s for s in services if rng.random() < 0.6] or list(services)[:1]
            scene.udp([t], src, group, 5353, 5353, [mdns_query(asked)], "benign:mdns", ip_id=0)
            for svc in asked:
                dev, port = services[svc]
                answer = mdns_announce(
                    svc, dev.name.replace("_", "-"), f"{dev.name}.local", dev.ip, port, [f"id={dev.mac:012x}", "ve=05"]
                )
                responder = Host(dev.name, dev.mac, dev.ip, dev.is_board, ttl=255)
                scene.udp(
                    [t + float(rng.uniform(0.02, 0.12))], responder, group, 5353, 5353, [answer], "benign:mdns", ip_id=0
                )


def ntp_client(scene: Scene, host: Host, start: float, stop: float) -> None:
    """An NTP client polling a pool server every 64-1024 s (systemd-timesyncd, ntpd, SNTP in SDKs)."""
    rng = scene.rng
    poll = int(rng.choice([6, 6, 7, 8, 10]))
    name = f"{int(rng.integers(0, 4))}.{rng.choice(['pool', 'debian.pool', 'openwrt.pool', 'europe.pool'])}.ntp.org"
    sport = 123 if rng.random() < 0.3 else scene.ephemeral_port()
    for t in periodic(rng, start, stop, float(2**poll), 0.01):
        t, server = scene.resolve(t, host, name)
        t += 0.0002
        reply_t = t + scene.rtt(host, server)
        scene.udp([t], host, server, sport, 123, [ntp_request(scene.unix(t), poll)], "benign:ntp", ip_id=0)
        reply = ntp_reply(
            scene.unix(t), scene.unix(reply_t) - 0.01, scene.unix(reply_t) - 0.0099, 2, server.ip ^ 0x5A5A, poll
        )
        scene.udp(
            [reply_t], server, host, 123, sport, [reply], "benign:ntp", ip_id=int(rng.integers(0, 1 << 16)), df=False
        )


# ---------------------------------------------------------------- TCP applications


def mqtt_session(
    scene: Scene,
    device: Host,
    broker: Host,
    start: float,
    stop: float,
    *,
    tls: bool,
    period: float,
    keepalive: int = 60,
    qos: int = 0,
    stack: TcpStack = LINUX,
) -> None:
    """An MQTT client: CONNECT, SUBSCRIBE, telemetry every ``period`` s (jittered), PINGREQ when idle."""
    rng = scene.rng
    conv = conversation(scene, device, broker, 8883 if tls else 1883, client_stack=stack, server_stack=LINUX_SERVER)
    wrap = (lambda b: tls_app_data(rng, len(b))) if tls else (lambda b: b)
    t = conv.handshake(start)
    if tls:
        t = tls_handshake(scene, conv, t)
    client_id = f"{device.name}-{device.mac & 0xFFFFFF:06x}"
    t = conv.send(t, CLIENT, wrap(mqtt_connect(client_id, keepalive, username=client_id if tls else "")), ack=False)
    t = conv.send(t + conv.delay(SERVER), SERVER, wrap(mqtt_connack()), ack=False)
    t = conv.send(t + conv.delay(CLIENT), CLIENT, wrap(mqtt_subscribe(1, f"cmd/{client_id}/#")), ack=False)
    t = conv.send(t + conv.delay(SERVER), SERVER, wrap(mqtt_suback(1)))
    publish_times = periodic(rng, t + 0.5, stop - 0.05, period, float(rng.uniform(0.01, 0.08)))
    # PINGREQ whenever the client has been silent for a whole keepalive interval.
    sends = np.concatenate([[t], publish_times, [stop]])
    pings = [
        float(a + k * keepalive) for a, b in itertools.pairwise(sends) for k in range(1, int((b - a) // keepalive) + 1)
    ]
    commands = poisson(rng, t + 1, stop - 0.05, 1 / 600)
    events = sorted(
        [(x, "pub") for x in publish_times] + [(x, "ping") for x in pings if x < stop] + [(x, "cmd") for x in commands]
    )
    topic = f"tele/{client_id}/{rng.choice(['state', 'sensor', 'SENSOR', 'telemetry'])}"
    pid = 1
    for seq, (t_ev, kind) in enumerate(events):
        if kind == "pub":
            pid += 1
            body = telemetry_json(rng, client_id, seq, scene.unix(t_ev))
            conv.send(t_ev, CLIENT, wrap(mqtt_publish(topic, body, qos, pid)), ack=qos == 0)
            if qos:
                conv.send(t_ev + conv.delay(SERVER), SERVER, wrap(mqtt_puback(pid)))
        elif kind == "ping":
            conv.send(t_ev, CLIENT, wrap(MQTT_PINGREQ), ack=False)
            conv.send(t_ev + conv.delay(SERVER), SERVER, wrap(MQTT_PINGRESP))
        else:
            cmd = mqtt_publish(f"cmd/{client_id}/set", b'{"relay":"%s"}' % (b"on" if rng.random() < 0.5 else b"off"))
            conv.send(t_ev, SERVER, wrap(cmd))
    if stop < scene.seconds:
        conv.send(stop, CLIENT, wrap(b"\xe0\x00"), ack=False)
        conv.close(stop + conv.delay(CLIENT), CLIENT)
    conv.add_to(scene.timeline, (BENIGN, "benign:mqtt"))


def https_sync(
    scene: Scene, device: Host, name: str, start: float, stop: float, period: float, stack: TcpStack = LINUX
) -> None:
    """Periodic cloud sync sessions (jittered period)."""
    for t in periodic(scene.rng, start, stop, period, 0.15):
        https_session(scene, device, name, t, stack)


def https_session(scene: Scene, device: Host, name: str, t: float, stack: TcpStack = LINUX) -> float:
    """Look the name up, connect, TLS, a request or a few with their responses, close_notify, FIN."""
    rng = scene.rng
    t, server = scene.resolve(t, device, name)
    conv = conversation(scene, device, server, 443, client_stack=stack)
    t = tls_handshake(scene, conv, conv.handshake(t + 0.0003))
    for _ in range(int(rng.integers(1, 4))):
        t = conv.send(t, CLIENT, tls_app_data(rng, int(rng.integers(180, 1600))), ack=False)
        size = int(np.clip(rng.lognormal(7.0, 1.2), 60, 60000))
        t = conv.send(t + conv.delay(SERVER) + float(rng.exponential(0.03)), SERVER, tls_app_data(rng, size))
        t += float(rng.exponential(0.2))
    t = conv.send(t, CLIENT, tls_record(rng, 21, 26), ack=False)  # close_notify alert
    if rng.random() < 0.15:  # many servers answer close_notify with a RST instead of a FIN
        t = conv.reset(t + conv.delay(SERVER), SERVER)
    else:
        t = conv.close(t + 0.0002, CLIENT if rng.random() < 0.7 else SERVER)
    conv.add_to(scene.timeline, (BENIGN, "benign:https"))
    return t


def firmware_download(scene: Scene, device: Host, name: str, t: float, size: int, rate_bps: float) -> float:
    """An OTA image: full-size segments from the server at ``rate_bps``, ACKs back every two segments."""
    rng = scene.rng
    t, server = scene.resolve(t, device, name)
    conv = conversation(scene, device, server, 443)
    t = tls_handshake(scene, conv, conv.handshake(t + 0.0003))
    t = conv.send(t, CLIENT, tls_app_data(rng, int(rng.integers(250, 600))), ack=False)
    t = conv.bulk(t + conv.delay(SERVER), SERVER, size, rate_bps, overlay=tls_stream_headers(size))
    t = conv.close(t + conv.delay(CLIENT) + 0.05, CLIENT)
    conv.add_to(scene.timeline, (BENIGN, "benign:firmware"))
    return t


def camera_stream(scene: Scene, camera: Host, viewer: Host, start: float, stop: float) -> None:
    """RTSP control over TCP 554 and H.264 RTP over UDP: 25-30 fps, 1-3 packets per frame, keyframe bursts."""
    rng = scene.rng
    conv = conversation(scene, viewer, camera, 554, client_stack=LINUX, server_stack=LINUX_SERVER)
    if camera.is_board or not viewer.local:
        conv.near = SERVER
    url = f"rtsp://{camera.ip_text}:554/{rng.choice(['stream1', 'h264/ch1/main/av_stream', 'live/ch00_0', 'cam/realmonitor'])}"
    session = f"{int(rng.integers(0, 1 << 32)):08X}"
    cport = int(rng.integers(25000, 60000)) & ~1
    sport = int(rng.choice([6970, 8000, 15000, 50000])) + 2 * int(rng.integers(0, 20))
    t = conv.handshake(start)
    steps = [
        ("OPTIONS", "", "Public: OPTIONS, DESCRIBE, SETUP, TEARDOWN, PLAY, GET_PARAMETER", ""),
        ("DESCRIBE", "Accept: application/sdp", "Content-Base: " + url + "/", sdp(camera.ip_text)),
        (
            "SETUP",
            f"Transport: RTP/AVP;unicast;client_port={cport}-{cport + 1}",
            f"Transport: RTP/AVP;unicast;client_port={cport}-{cport + 1};server_port={sport}-{sport + 1}",
            "",
        ),
        ("PLAY", "Range: npt=0.000-", "RTP-Info: url=" + url + "/trackID=1;seq=1;rtptime=0", ""),
    ]
    for cseq, (method, req_extra, resp_extra, body) in enumerate(steps, start=1):
        sess = session if method in ("PLAY",) else ""
        t = conv.send(t, CLIENT, rtsp_request(method, url, cseq, req_extra, sess), ack=False)
        t = conv.send(
            t + conv.delay(SERVER),
            SERVER,
            rtsp_response(cseq, resp_extra, body, session if method in ("SETUP", "PLAY") else ""),
            ack=False,
        )
        t += conv.delay(CLIENT)
    play = t
    cseq = len(steps)
    for t_ka in periodic(rng, play + 5, stop, 30.0, 0.05):  # GET_PARAMETER keepalive, half the session timeout
        cseq += 1
        conv.send(t_ka, CLIENT, rtsp_request("GET_PARAMETER", url, cseq, session=session), ack=False)
        conv.send(t_ka + conv.delay(SERVER), SERVER, rtsp_response(cseq, session=session))
    if stop < scene.seconds:
        conv.send(stop, CLIENT, rtsp_request("TEARDOWN", url, cseq + 1, session=session), ack=False)
        conv.send(stop + conv.delay(SERVER), SERVER, rtsp_response(cseq + 1, session=session), ack=False)
        conv.close(stop + 0.01, CLIENT)
    conv.add_to(scene.timeline, (BENIGN, "benign:camera"))
    _rtp_video(scene, camera, viewer, sport, cport, play + 0.01, stop)


def _rtp_video(scene: Scene, camera: Host, viewer: Host, sport: int, cport: int, start: float, stop: float) -> None:
    rng = scene.rng
    fps = float(rng.choice([25.0, 30.0, 20.0, 15.0], p=[0.45, 0.35, 0.1, 0.1]))
    gop = int(fps * rng.choice([1, 2, 2, 4]))
    n_frames = int((stop - start) * fps)
    if n_frames <= 0:
        return
    frame_t = start + np.arange(n_frames) / fps + rng.normal(0, 0.002, n_frames)
    key = np.arange(n_frames) % gop == 0
    # Frame sizes: P-frames mostly 1-3 packets, keyframes a burst of tens of packets.
    size = np.where(
        key,
        np.clip(rng.normal(float(rng.uniform(20000, 60000)), 8000, n_frames), 6000, 120000),
        np.clip(rng.lognormal(np.log(float(rng.uniform(900, 2200))), 0.55, n_frames), 180, 6000),
    ).astype(np.int64)
    mtu_payload = 1400
    per_frame = -(-size // mtu_payload)
    total = int(per_frame.sum())
    frame_of = np.repeat(np.arange(n_frames), per_frame)
    first = np.concatenate([[0], np.cumsum(per_frame)[:-1]])
    pos = np.arange(total) - first[frame_of]
    last = pos == per_frame[frame_of] - 1
    chunk = np.where(last, size[frame_of] - mtu_payload * pos, mtu_payload)
    chunk = np.maximum(chunk, 160)
    t = frame_t[frame_of] + pos * rng.uniform(0.00004, 0.00015, total)
    ssrc = int(rng.integers(0, 1 << 32))
    seq0, ts0 = int(rng.integers(0, 1 << 16)), int(rng.integers(0, 1 << 32))
    rtp_ts = ts0 + np.round((frame_t[frame_of] - start) * 90000).astype(np.int64)
    header = pack(RTP, total, m_pt=96 | (last.astype(np.int64) << 7), seq=seq0 + np.arange(total), ts=rtp_ts, ssrc=ssrc)
    body = random_payload(rng, chunk + 2)
    body[:, 0] = np.where(
        per_frame[frame_of] > 1, 0x7C, np.where(key[frame_of], 0x65, 0x41)
    )  # FU-A / IDR / non-IDR NAL
    payload = np.concatenate([header, body], axis=1)
    frames = udp_frames(
        total,
        sport=sport,
        dport=cport,
        payload=payload,
        payload_len=12 + chunk + 2,
        src_mac=camera.mac,
        dst_mac=viewer.mac,
        src_ip=camera.ip,
        dst_ip=viewer.ip,
        ttl=camera.ttl,
        ip_id=0,
        df=True,
        pad=not camera.is_board,
    )
    scene.timeline.add(t, frames, BENIGN, "benign:camera")
    # RTCP: sender reports from the camera, receiver reports from the viewer, every ~5 s.
    for t_sr in periodic(rng, start + 1, stop, 5.0, 0.1):
        sent = int(np.searchsorted(t, t_sr))
        sr = rtcp_sender_report(
            ssrc, scene.unix(t_sr), ts0 + int((t_sr - start) * 90000), sent, sent * 1200, camera.name
        )
        scene.udp([t_sr], camera, viewer, sport + 1, cport + 1, [sr], "benign:camera", ip_id=0)
        rr = rtcp_receiver_report(ssrc ^ 0x1234567, ssrc, seq0 + sent, int(rng.integers(10, 400)))
        scene.udp(
            [t_sr + float(rng.uniform(0.1, 2.0))], viewer, camera, cport + 1, sport + 1, [rr], "benign:camera", ip_id=0
        )


def telnet_admin(scene: Scene, admin: Host, device: Host, t: float) -> None:
    """An administrator's legitimate telnet session (a hard negative for Mirai's brute force).

    Character-at-a-time typing with human gaps; the server echoes everything but the password.
    """
    rng = scene.rng
    conv = conversation(scene, admin, device, 23)
    t = conv.handshake(t)
    t = conv.send(t + 0.002, SERVER, TELNETD_IACS, ack=False)
    t = conv.send(
        t + conv.delay(CLIENT), CLIENT, bytes([255, 252, 1, 255, 251, 31, 255, 253, 1, 255, 253, 3]), ack=False
    )
    t = conv.send(t + conv.delay(SERVER), SERVER, f"\r\n{device.name} login: ".encode())

    def line(t: float, text: str, echo: bool, answer: bytes) -> float:
        for ch in text:
            t = conv.send(t + float(rng.gamma(3, 0.06)), CLIENT, ch.encode(), ack=not echo)
            if echo:
                t = conv.send(t + conv.delay(SERVER), SERVER, ch.encode())
        t = conv.send(t + float(rng.gamma(3, 0.08)), CLIENT, b"\r\n", ack=False)
        return conv.send(t + conv.delay(SERVER) + float(rng.uniform(0.001, 0.3)), SERVER, answer)

    t = line(t, "admin", True, b"\r\nPassword: ")
    t = line(t, "correct-horse-battery", False, b"\r\n\r\nBusyBox v1.31.1 built-in shell (ash)\r\n\r\n# ")
    t = line(t, "uptime", True, b"\r\n 12:01:33 up 3 days,  4:12,  load average: 0.08, 0.03, 0.01\r\n# ")
    t = line(t, "exit", True, b"\r\n")
    conv.close(t + 0.01, SERVER)
    conv.add_to(scene.timeline, (BENIGN, "benign:telnet"))


# ---------------------------------------------------------------- device profiles


def device_profile(scene: Scene, kind: str, dev: Host, start: float, stop: float, peers: dict[str, Host]) -> None:
    """Everything one device of ``kind`` does between start and stop (its own unicast traffic)."""
    rng = scene.rng
    vendor = str(rng.choice(VENDORS))
    if rng.random() < 0.8:
        ntp_client(scene, dev, start, stop)
    if kind == "camera":
        viewer = peers.get("nvr") or scene.remote_host("relay", scene.name_ip(cloud_name(scene, "p2p-relay", vendor)))
        camera_stream(scene, dev, viewer, start + float(rng.uniform(0, 2)), stop)
        https_sync(scene, dev, cloud_name(scene, "cam-api", vendor), start, stop, float(rng.uniform(60, 300)))
    elif kind in ("sensor", "plug", "thermostat"):
        # A local broker (the hub) over plain 1883, or the vendor's cloud broker over TLS 8883.
        local_broker = peers.get("hub")
        tls = local_broker is None or rng.random() < 0.4
        t0, broker = start + float(rng.uniform(0, 3)), local_broker
        if tls:
            t0, broker = scene.resolve(t0, dev, cloud_name(scene, "mqtt", vendor))
        mqtt_session(
            scene,
            dev,
            broker,
            t0,
            stop,
            tls=tls,
            period=float(rng.choice([1.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0])),
            keepalive=int(rng.choice([30, 60, 120])),
            qos=int(rng.random() < 0.4),
            stack=LWIP if kind == "plug" or rng.random() < 0.3 else LINUX,
        )
        if kind == "thermostat":
            https_sync(scene, dev, cloud_name(scene, "api", vendor), start, stop, float(rng.uniform(30, 180)))
    elif kind == "hub":
        https_sync(scene, dev, cloud_name(scene, "sync", vendor), start, stop, float(rng.uniform(20, 120)))
        if rng.random() < 0.5:
            mqtt_session(
                scene,
                dev,
                scene.remote_host("broker", scene.name_ip(cloud_name(scene, "mqtt", vendor))),
                start + 1,
                stop,
                tls=True,
                period=float(rng.uniform(20, 90)),
            )
    elif kind == "phone":
        # A person's phone: idle, then bursts of app traffic to the cloud.
        for t in poisson(rng, start, stop, 1 / 90):
            https_session(scene, dev, cloud_name(scene, "app"), t)
        if rng.random() < 0.3 and stop - start > 5:  # someone administering the router over telnet
            telnet_admin(scene, dev, scene.lan.gateway, float(rng.uniform(start, stop - 5)))
    # Firmware update check, now and then followed by a download.
    if kind != "phone" and rng.random() < 0.5:
        ota = cloud_name(scene, "ota", vendor)
        t = https_session(scene, dev, ota, float(rng.uniform(start, max(start, stop - 1))))
        if rng.random() < 0.5 and stop - t > 2:
            firmware_download(scene, dev, ota, t + 0.1, int(rng.uniform(0.3e6, 8e6)), float(rng.uniform(2e6, 40e6)))


def lan_background(scene: Scene, hosts: list[Host], start: float, stop: float) -> None:
    """The LAN's own chatter: ARP, DHCP renewals and a (re)joining device, SSDP and mDNS discovery."""
    rng, lan = scene.rng, scene.lan
    arp_activity(scene, hosts, start, stop)
    for h in hosts:
        if h is not lan.gateway:
            dhcp_renewals(scene, h, start, stop)
    joiners = [h for h in hosts if h is not lan.gateway and rng.random() < 0.15]
    for h in joiners:
        dhcp_join(scene, h, float(rng.uniform(start, stop)), h.name)
    others = [h for h in hosts if h is not lan.gateway]
    for h in others:
        if rng.random() < 0.5:
            ssdp_notifier(
                scene,
                h,
                start,
                stop,
                str(
                    rng.choice(
                        [
                            "urn:schemas-upnp-org:device:Basic:1",
                            "urn:schemas-upnp-org:device:MediaRenderer:1",
                            "urn:Belkin:device:controllee:1",
                            "urn:schemas-upnp-org:device:InternetGatewayDevice:1",
                        ]
                    )
                ),
            )
    searchers = [h for h in others if rng.random() < 0.3]
    for s in searchers:
        ssdp_searcher(scene, s, [h for h in others if h is not s and rng.random() < 0.4], start, stop)
    services = {}
    for h in others:
        if rng.random() < 0.4:
            svc = str(
                rng.choice(
                    [
                        "_hap._tcp.local",
                        "_googlecast._tcp.local",
                        "_rtsp._tcp.local",
                        "_http._tcp.local",
                        "_hue._tcp.local",
                    ]
                )
            )
            services[svc] = (h, int(rng.choice([80, 554, 8008, 8080, 51826])))
    if services:
        mdns_activity(scene, [h for h in others if rng.random() < 0.4][:3] or others[:1], services, start, stop)


# ---------------------------------------------------------------- first contacts


def quic_fetch(scene: Scene, client: Host, name: str, t: float) -> float:
    """A QUIC (HTTP/3) fetch: a padded ~1250-byte Initial, the server's flight, a short exchange, no handshake."""
    rng = scene.rng
    t, server = scene.resolve(t, client, name)
    rtt = scene.rtt(client, server)
    sport = scene.ephemeral_port()
    initial = int(rng.choice([1200, 1250, 1252, 1292, 1357]))
    up = [initial] + [int(rng.integers(30, 90)) for _ in range(int(rng.integers(1, 5)))]
    down = [int(rng.integers(1200, 1253)) for _ in range(int(rng.integers(1, 4)))]
    down += [int(rng.integers(40, 1253)) for _ in range(int(rng.integers(0, 12)))]
    t_up = t + np.concatenate([[0], rtt + np.cumsum(rng.exponential(0.01, len(up) - 1))])
    t_down = t + rtt + np.cumsum(rng.exponential(0.0015, len(down)))
    scene.udp(t_up, client, server, sport, 443, [rng.bytes(n) for n in up], "benign:quic", ip_id=0)
    scene.udp(t_down, server, client, 443, sport, [rng.bytes(n) for n in down], "benign:quic", ip_id=0)
    return float(max(t_up[-1], t_down[-1]))


def page_loads(scene: Scene, client: Host, start: float, stop: float, rate: float) -> None:
    """Someone browsing or opening apps: each load fetches from several CDN and tracker hosts at once.

    Every host name is new, so every load opens streams to many never-seen addresses:
    a first SYN (or QUIC Initial) to a new destination is everyday benign traffic.
    """
    rng = scene.rng
    for t in poisson(rng, start, stop, rate):
        for _ in range(int(rng.integers(2, 12))):
            name = f"{rng.choice(['cdn', 'img', 'static', 'api', 'ads', 'e', 'r'])}{int(rng.integers(1, 999))}."
            name += str(rng.choice(["fastedge.net", "cloudcache.com", "akam-media.net", "gstatic-cdn.com", "apps.io"]))
            at = t + float(rng.exponential(0.3))
            if rng.random() < 0.3:
                quic_fetch(scene, client, name, at)
            else:
                https_session(scene, client, name, at)


def visitor_joins(scene: Scene, start: float, stop: float) -> list[Host]:
    """Phones and laptops appearing on the Wi-Fi: DHCP, ARP probes, mDNS, then DNS, TLS and page loads."""
    rng, lan = scene.rng, scene.lan
    visitors = []
    for k in range(int(rng.choice([0, 1, 1, 2, 3]))):
        if stop - start < 2:
            break
        host = lan.add_device(rng, f"visitor{k + 1}", private_mac=True)
        visitors.append(host)
        t = dhcp_join(
            scene, host, float(rng.uniform(start, stop - 1)), str(rng.choice(["iPhone", "Galaxy-S23", "Pixel-8"]))
        )
        group = Host("mdns", multicast_mac(MDNS_GROUP), MDNS_GROUP)
        src = Host(host.name, host.mac, host.ip, ttl=255)
        asks = t + np.cumsum(rng.uniform(0.2, 1.5, int(rng.integers(1, 4))))
        services = ["_airplay._tcp.local", "_googlecast._tcp.local", "_companion-link._tcp.local", "_raop._tcp.local"]
        scene.udp(
            asks,
            src,
            group,
            5353,
            5353,
            [mdns_query(services[: int(rng.integers(1, 5))])] * len(asks),
            "benign:mdns",
            ip_id=0,
        )
        # Captive-portal and push checks right after joining, then the person's own use.
        for name in ("connectivitycheck.gstatic-cdn.com", "push.apple-cloud.net", "time.phone-vendor.com"):
            https_session(scene, host, name, float(asks[-1]) + float(rng.uniform(0, 1.5)))
        page_loads(scene, host, float(asks[-1]), stop, float(rng.uniform(1 / 120, 1 / 20)))
    return visitors
