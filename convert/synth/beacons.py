"""Discovery beacons: the slow periodic UDP broadcasts and multicasts IoT gear sends all day.

Real LANs are full of them: TP-Link Kasa plugs send a 71-byte frame to
255.255.255.255:9999 every 60 s, Tuya devices 214/230-byte frames to :6667 every
5 s, hubs and speakers SSDP NOTIFY bursts, PCs NetBIOS browser announcements
and Dropbox LAN sync.  Each packet looks like the first of a new stream, so a
model that never saw them mistakes them for spoofed flood packets.

Families are declared once as data (``FAMILIES``).  A device draws its own
fixed period, phase, jitter, size (inside its family's range) and a few size
variants; ``discovery_beacons`` then builds all of a device's packets in one
vectorised call.  Phones running a vendor's app now and then broadcast the
family's discovery query and get unicast answers from each such device.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .frames import BROADCAST_MAC, multicast_mac, payload_matrix, udp_frames
from .network import ESP_OUIS, Host
from .scene import Scene
from .timeline import BENIGN, periodic, poisson

log = logging.getLogger(__name__)

ROLE = "benign:beacon"
ALL_ONES = 0xFFFFFFFF
SSDP_GROUP = "239.255.255.250"
MDNS_GROUP = "224.0.0.251"


def _ip(dotted: str) -> int:
    a, b, c, d = (int(x) for x in dotted.split("."))
    return (a << 24) | (b << 16) | (c << 8) | d


# ---------------------------------------------------------------- payload bodies
# Each body builder takes (rng, host, filler) and returns bytes that grow by exactly
# ``filler`` bytes as filler grows, so a body can be fitted to a drawn size.


def _tplink_xor(plain: bytes) -> bytes:
    """TP-Link's autokey XOR (initial key 171), what Kasa devices put on UDP 9999."""
    key, out = 171, bytearray()
    for b in plain:
        key ^= b
        out.append(key)
    return bytes(out)


def _tplink_body(rng: np.random.Generator, host: Host, filler: int) -> bytes:
    return _tplink_xor(b'{"system":{"get_sysinfo":{}}}' + b" " * filler)


def _tuya_body(rng: np.random.Generator, host: Host, filler: int) -> bytes:
    """Tuya's 0x55AA frame: seq, command 0x13 (broadcast), length, return code, AES body, CRC, 0xAA55."""
    body = rng.bytes(100 + filler)
    head = (
        b"\x00\x00\x55\xaa" + (0).to_bytes(4, "big") + (0x13).to_bytes(4, "big") + (len(body) + 12).to_bytes(4, "big")
    )
    return head + b"\x00\x00\x00\x00" + body + rng.bytes(4) + b"\x00\x00\xaa\x55"


def _binary_body(magic: bytes) -> Callable[[np.random.Generator, Host, int], bytes]:
    def build(rng: np.random.Generator, host: Host, filler: int) -> bytes:
        return magic + host.mac.to_bytes(6, "big") + host.ip.to_bytes(4, "big") + b"\0" * filler

    return build


def _ssdp_body(server: str, nt: str) -> Callable[[np.random.Generator, Host, int], bytes]:
    def build(rng: np.random.Generator, host: Host, filler: int) -> bytes:
        uuid = f"{host.mac:012x}-1dd2-11b2-a7f4-{host.mac:012x}"
        return (
            "NOTIFY * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nCACHE-CONTROL: max-age=100\r\n"
            f"LOCATION: http://{host.ip_text}:80/description.xml\r\nSERVER: {server}\r\n"
            f"NTS: ssdp:alive\r\nNT: {nt}\r\nUSN: uuid:{uuid}::{nt}\r\n"
            f"X-ID: {'0' * filler}\r\n\r\n"
        ).encode()

    return build


def _json_body(fields: Callable[[Host], dict]) -> Callable[[np.random.Generator, Host, int], bytes]:
    def build(rng: np.random.Generator, host: Host, filler: int) -> bytes:
        doc = fields(host)
        doc["pad"] = "0" * filler  # stands for the variable part (namespaces, names)
        return json.dumps(doc).encode()

    return build


def _mdns_body(rng: np.random.Generator, host: Host, filler: int) -> bytes:
    from .payloads import mdns_announce

    txt = [f"id={host.mac:012x}", "ve=05", "md=Chromecast", "x=" + "0" * min(filler, 250)]
    return mdns_announce(
        "_googlecast._tcp.local", f"Chromecast-{host.mac & 0xFFFFFF:06x}", "cc.local", host.ip, 8009, txt
    )


def _netbios_body(rng: np.random.Generator, host: Host, filler: int) -> bytes:
    """A NetBIOS datagram (direct group) carrying an SMB browser host announcement."""
    name = f"DESKTOP-{host.mac & 0xFFFFFF:06X}".ljust(16)[:16].encode()
    header = bytes([0x11, 0x02]) + (host.mac & 0xFFFF).to_bytes(2, "big") + host.ip.to_bytes(4, "big") + b"\x00\x8a"
    return header + (188 + filler).to_bytes(2, "big") + b"\0\0" + b" " + name * 2 + b"\xffSMB%" + b"\0" * (151 + filler)


# ---------------------------------------------------------------- families


@dataclass(frozen=True)
class BeaconFamily:
    """One vendor's habit: who sends what, where, how big and how often."""

    name: str
    kind: str  # device kind for the metadata (plug, bulb, speaker, ...)
    sport: int  # 0: an ephemeral port, fixed per device
    dport: int
    dst: str  # "broadcast" (255.255.255.255), "subnet" (the /24's broadcast) or a multicast group
    size: tuple[int, int]  # UDP payload bytes of a device's main beacon, range across devices
    periods: tuple[float, ...]  # a device's period is one of these (seconds)
    body: Callable[[np.random.Generator, Host, int], bytes]
    variants: int = 1  # up to this many sizes per device (different NT headers, states)
    burst: int = 1  # packets per beacon (a NOTIFY per advertised type)
    ttl: int = 64
    ip_id: str = "zero"  # zero | random | counter (lwIP, Windows: one counter for all traffic)
    df: bool = True
    query: int = 0  # UDP payload bytes of the app's discovery query (0: the app does not query over UDP)
    reply: tuple[int, int] = (0, 0)  # UDP payload bytes of a device's unicast answer
    ouis: tuple[int, ...] = ()
    weight: float = 1.0  # how often homes have this ecosystem, relative to the others
    most: int = 12  # at most this many per home (few homes run four Plex servers)


# Sizes are UDP payload bytes (a frame is 42 more); kasa's 29 bytes make the 71-byte frame of real plugs.
# fmt: off
FAMILIES: dict[str, BeaconFamily] = {f.name: f for f in (
    BeaconFamily("kasa", "plug", 9999, 9999, "broadcast", (29, 29), (60.0, 60.0, 30.0), _tplink_body,
                 query=29, reply=(560, 900), weight=3),
    BeaconFamily("tuya", "plug", 0, 6667, "broadcast", (172, 188), (5.0,), _tuya_body,
                 variants=2, ttl=255, ip_id="counter", df=False, ouis=ESP_OUIS, weight=3),
    BeaconFamily("tuya31", "bulb", 0, 6666, "broadcast", (140, 190), (5.0, 10.0), _tuya_body,
                 ttl=255, ip_id="counter", df=False, ouis=ESP_OUIS),
    BeaconFamily("hue", "bridge", 1900, 1900, SSDP_GROUP, (290, 360), (60.0, 90.0, 120.0),
                 _ssdp_body("Hue/1.0 UPnP/1.0 IpBridge/1.48.0", "upnp:rootdevice"), variants=3, burst=3, ttl=4, weight=2, most=1),
    BeaconFamily("sonos", "speaker", 1900, 1900, SSDP_GROUP, (380, 480), (30.0, 60.0, 120.0),
                 _ssdp_body("Linux UPnP/1.0 Sonos/70.3-35220 (ZPS1)", "urn:schemas-upnp-org:device:ZonePlayer:1"),
                 variants=3, burst=4, ttl=4, most=4),
    BeaconFamily("chromecast", "tv", 5353, 5353, MDNS_GROUP, (330, 460), (60.0, 120.0), _mdns_body,
                 variants=2, burst=2, ttl=255, weight=2, most=3),
    BeaconFamily("lifx", "bulb", 56700, 56700, "broadcast", (41, 41), (10.0, 20.0, 30.0),
                 _binary_body(b"\x29\x00\x00\x34"), variants=2, ip_id="counter", df=False,
                 query=36, reply=(41, 41), ouis=(0xD073D5,)),
    BeaconFamily("wiz", "bulb", 38899, 38899, "broadcast", (110, 200), (2.0, 5.0, 15.0, 30.0),
                 _json_body(lambda h: {"method": "syncPilot", "params": {"mac": f"{h.mac:012x}", "state": True}}),
                 variants=3, ip_id="counter", df=False, query=30, reply=(180, 260), ouis=ESP_OUIS),
    BeaconFamily("broadlink", "remote", 0, 80, "broadcast", (48, 48), (10.0, 30.0, 60.0),
                 _binary_body(b"\x00" * 8 + b"\x06"), ip_id="counter", df=False, query=48, reply=(128, 128), most=2),
    BeaconFamily("yeelight", "bulb", 1982, 1982, SSDP_GROUP, (240, 310), (60.0, 120.0),
                 _ssdp_body("POSIX UPnP/1.0 YGLC/1", "wifi_bulb"), variants=2, ttl=1, ip_id="counter", df=False,
                 query=89, reply=(260, 330), ouis=ESP_OUIS),
    BeaconFamily("netbios", "pc", 138, 138, "subnet", (201, 243), (60.0, 120.0), _netbios_body,
                 variants=2, ttl=128, ip_id="counter", df=False, weight=1.5, most=3),
    BeaconFamily("dropbox", "pc", 17500, 17500, "broadcast", (140, 260), (30.0,),
                 _json_body(lambda h: {"version": [2, 0], "port": 17500, "host_int": h.mac, "displayname": ""}),
                 ip_id="random", df=False, most=2),
    BeaconFamily("ubiquiti", "ap", 0, 10001, "broadcast", (120, 180), (10.0,), _binary_body(b"\x02\x06\x00\x95"),
                 ip_id="random", df=False, most=3),
    BeaconFamily("plex", "media", 0, 32412, "subnet", (21, 21), (5.0, 10.0),
                 lambda rng, h, k: b"M-SEARCH * HTTP/1.1\r\n" + b" " * k, ip_id="random", most=2),
)}
# fmt: on


@dataclass
class Beaconer:
    """One device's fixed beaconing habit, drawn once."""

    host: Host
    family: BeaconFamily
    sport: int
    period: float
    jitter: float  # Gaussian, as a fraction of the period
    payloads: list[bytes]  # size variants; burst packets cycle through them
    weights: np.ndarray  # how often each variant starts a beacon


def draw_family_mix(rng: np.random.Generator) -> list[str]:
    """The ecosystems present in one home: a few families, not all of them."""
    names = list(FAMILIES)
    weights = np.array([FAMILIES[n].weight for n in names])
    chosen = rng.choice(len(names), size=int(rng.integers(1, 5)), replace=False, p=weights / weights.sum())
    return [names[i] for i in chosen]


def add_beacon_devices(scene: Scene, count: int, mix: list[str]) -> list[tuple[Host, str]]:
    """Add ``count`` devices of the mix's families to the LAN; returns (host, family) pairs."""
    rng, lan = scene.rng, scene.lan
    out: list[tuple[Host, str]] = []
    for _ in range(count):
        room = [f for f in mix if sum(name == f for _, name in out) < FAMILIES[f].most]
        if not room:
            break
        family = FAMILIES[str(rng.choice(room))]
        n = sum(name == family.name for _, name in out) + 1
        out.append((lan.add_device(rng, f"{family.name}{n}", family.ouis), family.name))
    return out


def make_beaconer(scene: Scene, host: Host, family: BeaconFamily) -> Beaconer:
    rng = scene.rng
    # Mostly the vendor's period; sometimes any period (firmware versions differ), so no single value is learnt.
    period = float(rng.choice(family.periods)) if rng.random() < 0.8 else float(np.exp(rng.uniform(0, np.log(120))))
    period *= float(rng.uniform(0.998, 1.002))  # each device's clock runs a little fast or slow
    base = int(rng.integers(family.size[0], family.size[1] + 1))
    k = int(rng.integers(1, family.variants + 1))
    sizes = [base] + [base + int(rng.integers(-40, 60)) for _ in range(k - 1)]
    payloads = []
    for size in sizes:
        empty = family.body(rng, host, 0)
        payloads.append(family.body(rng, host, max(0, size - len(empty))))
    weights = np.array([0.8] + [0.2 / (k - 1)] * (k - 1)) if k > 1 else np.ones(1)
    return Beaconer(
        host,
        family,
        family.sport or scene.ephemeral_port(),
        period,
        float(rng.uniform(0.0005, 0.004)),
        payloads,
        weights,
    )


def _destination(scene: Scene, family: BeaconFamily) -> tuple[int, int]:
    """(ip, mac) a family's beacons go to."""
    if family.dst == "broadcast":
        return ALL_ONES, BROADCAST_MAC
    if family.dst == "subnet":
        return scene.lan.broadcast_ip, BROADCAST_MAC
    group = _ip(family.dst)
    return group, multicast_mac(group)


def _ip_ids(rng: np.random.Generator, mode: str, n: int) -> np.ndarray | int:
    if mode == "zero":
        return 0
    if mode == "random":
        return rng.integers(0, 1 << 16, n)
    # A shared counter: +1 per beacon, more when the device sent other packets in between.
    steps = 1 + rng.geometric(0.7, n) - 1
    return int(rng.integers(0, 1 << 16)) + np.cumsum(steps)


def beacon_times(rng: np.random.Generator, b: Beaconer, start: float, stop: float) -> tuple[np.ndarray, np.ndarray]:
    """Send times and variant index of each packet: a timer, small jitter, now and then a late wake-up."""
    t = periodic(rng, start, stop, b.period, b.jitter)
    late = rng.random(len(t)) < 0.02  # a busy main loop or Wi-Fi power save delays one beacon
    t = t + late * rng.uniform(0, 0.03, len(t)) * b.period
    first = rng.choice(len(b.payloads), size=len(t), p=b.weights)
    if b.family.burst > 1:
        burst = b.family.burst
        t = np.repeat(t, burst) + np.tile(
            np.concatenate([[0], np.cumsum(rng.exponential(0.01, burst - 1))]), len(first)
        )
        first = (np.repeat(first, burst) + np.tile(np.arange(burst), len(first))) % len(b.payloads)
    keep = t < stop
    return t[keep], first[keep]


def send_beacons(scene: Scene, b: Beaconer, start: float, stop: float) -> int:
    """All of one device's beacons between start and stop, in one vectorised frame build."""
    rng = scene.rng
    t, variant = beacon_times(rng, b, start, stop)
    if not len(t):
        return 0
    matrix, lengths = payload_matrix(b.payloads)
    dst_ip, dst_mac = _destination(scene, b.family)
    frames = udp_frames(
        len(t),
        sport=b.sport,
        dport=b.family.dport,
        payload=matrix[variant],
        payload_len=lengths[variant],
        src_mac=b.host.mac,
        dst_mac=dst_mac,
        src_ip=b.host.ip,
        dst_ip=dst_ip,
        ttl=b.family.ttl,
        ip_id=_ip_ids(rng, b.family.ip_id, len(t)),
        df=b.family.df,
        pad=not b.host.is_board,
    )
    scene.timeline.add(t, frames, BENIGN, ROLE)
    return len(t)


def app_discovery(scene: Scene, phone: Host, beaconers: list[Beaconer], start: float, stop: float) -> None:
    """A vendor app opened on a phone: broadcast discovery queries, unicast answers, a few status polls."""
    rng = scene.rng
    by_family: dict[str, list[Beaconer]] = {}
    for b in beaconers:
        if b.family.query:
            by_family.setdefault(b.family.name, []).append(b)
    for members in by_family.values():
        family = members[0].family
        dst_ip, dst_mac = _destination(scene, family)
        bcast = Host("discovery", dst_mac, dst_ip)
        for t0 in poisson(rng, start, stop, float(rng.uniform(1 / 900, 1 / 200))):
            sport = scene.ephemeral_port()
            queries = t0 + np.cumsum(np.concatenate([[0], rng.uniform(0.5, 3.0, int(rng.integers(0, 3)))]))
            query = family.body(rng, phone, 0)[: family.query].ljust(family.query, b"\0")
            scene.udp(
                queries,
                phone,
                bcast,
                sport,
                family.dport,
                [query] * len(queries),
                ROLE,
                dst_mac=dst_mac,
                dst_ip=dst_ip,
                ip_id=None,
            )
            for b in members:
                size = int(rng.integers(family.reply[0], family.reply[1] + 1))
                answers = queries + rng.gamma(2.0, 0.01, len(queries))
                reply = rng.bytes(size)
                scene.udp(
                    answers,
                    b.host,
                    phone,
                    family.dport,
                    sport,
                    [reply] * len(answers),
                    ROLE,
                    ip_id=_ip_ids(rng, family.ip_id, len(answers)),
                    df=family.df,
                )
            if rng.random() < 0.5:  # the user opens one device's page: the app polls it
                b = members[int(rng.integers(0, len(members)))]
                polls = queries[-1] + 1 + np.arange(int(rng.integers(3, 20))) * float(rng.uniform(1, 3))
                polls = polls[polls < stop]
                scene.udp(polls, phone, b.host, sport, family.dport, [query] * len(polls), ROLE, ip_id=None)
                size = int(rng.integers(family.reply[0], family.reply[1] + 1))
                scene.udp(
                    polls + rng.gamma(2.0, 0.008, len(polls)),
                    b.host,
                    phone,
                    family.dport,
                    sport,
                    [rng.bytes(size)] * len(polls),
                    ROLE,
                    ip_id=_ip_ids(rng, family.ip_id, len(polls)),
                    df=family.df,
                )


def discovery_beacons(
    scene: Scene, devices: list[tuple[Host, str]], start: float, stop: float, phones: list[Host] = ()
) -> list[Beaconer]:
    """Every (host, family) device beacons from start to stop; phones run the vendors' apps now and then."""
    beaconers = [make_beaconer(scene, host, FAMILIES[name]) for host, name in devices]
    total = sum(send_beacons(scene, b, start, stop) for b in beaconers)
    for phone in phones:
        app_discovery(scene, phone, beaconers, start, stop)
    log.debug("%d beaconing devices, %d beacons", len(beaconers), total)
    return beaconers
