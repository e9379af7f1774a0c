"""The simulated network: hosts, the board's LAN, and random addresses.

Everything a model must not memorise is drawn here from the scenario's generator:
the LAN's subnet (private, or public for networks that are reachable from the
Internet), MAC and IP addresses, and the public addresses of servers and victims.

A remote host appears on the LAN with the gateway's MAC address, so ``Host.mac``
is the address its frames carry *on the captured link*.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

import numpy as np

# OUIs (first three bytes) of boards the agent runs on; other devices get random vendor-style OUIs.
BOARD_OUIS = (0xB827EB, 0xDCA632, 0xE45F01)  # Raspberry Pi
ESP_OUIS = (0x240AC4, 0x30AEA4, 0x84F3EB)  # Espressif (ESP8266/ESP32 plugs, sensors)


@dataclass(frozen=True)
class Host:
    name: str
    mac: int  # as seen on the captured link (the gateway's for remote hosts)
    ip: int
    is_board: bool = False  # frames it sends are captured unpadded (on the sender)
    local: bool = True  # on the board's LAN (else reached through the gateway)
    ttl: int = 64  # TTL of its packets as captured (initial TTL minus hops)

    @property
    def ip_text(self) -> str:
        return str(ipaddress.IPv4Address(self.ip))

    @property
    def mac_text(self) -> str:
        return ":".join(f"{(self.mac >> s) & 0xFF:02x}" for s in range(40, -8, -8))


def ip_text(ip: int) -> str:
    return str(ipaddress.IPv4Address(int(ip)))


def random_mac(rng: np.random.Generator, ouis: tuple[int, ...] = ()) -> int:
    """A unicast MAC: from one of ``ouis``, or a random globally administered vendor prefix."""
    if ouis:
        oui = int(ouis[rng.integers(len(ouis))])
    else:
        oui = int(rng.integers(0, 1 << 24)) & 0xFCFFFF  # clear the multicast and locally-administered bits
    return (oui << 24) | int(rng.integers(0, 1 << 24))


def random_private_mac(rng: np.random.Generator) -> int:
    """A randomised MAC as phones use them (locally administered, unicast)."""
    return (int(rng.integers(0, 1 << 48)) & ~(1 << 40)) | (1 << 41)


def _mirai_reserved(ips: np.ndarray) -> np.ndarray:
    """True for addresses Mirai's scanner never picks (bot/scanner.c, get_random_ip)."""
    o1 = ips >> 24
    o2 = (ips >> 16) & 0xFF
    return (
        np.isin(o1, [0, 3, 10, 15, 16, 56, 127, 6, 7, 11, 21, 22, 26, 28, 29, 30, 33, 55, 214, 215])
        | (o1 >= 224)
        | ((o1 == 192) & (o2 == 168))
        | ((o1 == 172) & (o2 >= 16) & (o2 < 32))
        | ((o1 == 100) & (o2 >= 64) & (o2 < 127))
        | ((o1 == 169) & (o2 > 254))
        | ((o1 == 198) & (o2 >= 18) & (o2 < 20))
    )


def random_public_ips(rng: np.random.Generator, n: int) -> np.ndarray:
    """n uniformly random IPv4 addresses outside the ranges Mirai's scanner skips (uint32)."""
    out = np.empty(0, dtype=np.int64)
    while len(out) < n:
        draw = rng.integers(0, 1 << 32, size=max(16, int((n - len(out)) * 1.3)), dtype=np.int64)
        out = np.concatenate([out, draw[~_mirai_reserved(draw)]])
    return out[:n].astype(np.uint32)


def random_public_ip(rng: np.random.Generator) -> int:
    return int(random_public_ips(rng, 1)[0])


def random_private_subnet(rng: np.random.Generator) -> int:
    """The network address of a /24 in one of the private ranges home and office routers use."""
    kind = rng.choice(3, p=[0.6, 0.3, 0.1])
    if kind == 0:
        # Routers' factory defaults are common (192.168.0/1/2/8/...), any other /24 is possible.
        defaults = [0, 1, 1, 1, 2, 8, 10, 31, 50, 68, 86, 100, 178]
        third = int(rng.choice(defaults)) if rng.random() < 0.7 else int(rng.integers(0, 256))
        return (192 << 24) | (168 << 16) | (third << 8)
    if kind == 1:
        return (10 << 24) | (int(rng.integers(0, 256)) << 16) | (int(rng.integers(0, 256)) << 8)
    return (172 << 24) | (int(rng.integers(16, 32)) << 16) | (int(rng.integers(0, 256)) << 8)


@dataclass
class Lan:
    """The board's /24: a gateway, the board and other devices, plus helpers for remote peers."""

    network: int
    gateway: Host
    board: Host
    devices: dict[str, Host] = field(default_factory=dict)
    public: bool = False  # addressed from public space: reachable from the Internet
    _used: set[int] = field(default_factory=set)

    @property
    def cidr(self) -> str:
        return f"{ip_text(self.network)}/24"

    @property
    def broadcast_ip(self) -> int:
        return self.network | 0xFF

    def hosts(self) -> list[Host]:
        return [self.gateway, self.board, *self.devices.values()]

    def add_device(self, rng: np.random.Generator, name: str, ouis: tuple[int, ...] = (), private_mac=False) -> Host:
        mac = random_private_mac(rng) if private_mac else random_mac(rng, ouis)
        host = Host(name, mac, self.free_ip(rng))
        self.devices[name] = host
        return host

    def free_ip(self, rng: np.random.Generator) -> int:
        while True:
            ip = self.network | int(rng.integers(2, 255))
            if ip not in self._used:
                self._used.add(ip)
                return ip

    def remote(self, rng: np.random.Generator, name: str, ip: int | None = None, initial_ttl: int = 64) -> Host:
        """A host beyond the gateway; its TTL arrives reduced by the hops between."""
        ip = random_public_ip(rng) if ip is None else ip
        ttl = initial_ttl - int(rng.integers(4, 22))
        return Host(name, self.gateway.mac, ip, local=False, ttl=ttl)

    def by_ip(self) -> dict[int, Host]:
        return {h.ip: h for h in self.hosts()}


def make_lan(rng: np.random.Generator, board_name: str = "board", public: bool = False) -> Lan:
    """A /24 with the gateway at .1 (or .254) and the board at a random free address."""
    if public:
        network = int(random_public_ip(rng)) & 0xFFFFFF00
    else:
        network = random_private_subnet(rng)
    gw_ip = network | (1 if rng.random() < 0.85 else 254)
    gateway = Host("gateway", random_mac(rng), gw_ip)
    lan = Lan(network=network, gateway=gateway, board=gateway, public=public, _used={gw_ip})
    lan.board = Host(board_name, random_mac(rng, BOARD_OUIS), lan.free_ip(rng), is_board=True)
    return lan
