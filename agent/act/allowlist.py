"""Addresses the agent must never block: the configured allowlist plus what the board depends on.

A spoofed flood can forge any source, and a wrong verdict can name any host,
so the gateway, the DNS servers and the MQTT broker are added to the
configured allowlist automatically: blocking them would cut the board off the
network or from its controller.  Each lookup reads what the kernel and the
resolver say now (the default routes of this network namespace,
/etc/resolv.conf, the broker's name); a lookup that fails is logged and left out.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from pathlib import Path

log = logging.getLogger(__name__)

ROUTE4 = Path("/proc/net/route")
ROUTE6 = Path("/proc/net/ipv6_route")
RESOLV_CONF = Path("/etc/resolv.conf")


def gateways(route4: Path = ROUTE4, route6: Path = ROUTE6) -> list[str]:
    """Next hops of the default routes (IPv4 and IPv6)."""
    found = []
    try:
        for line in route4.read_text().splitlines()[1:]:
            f = line.split()
            if len(f) >= 3 and f[1] == "00000000" and f[2] != "00000000":  # destination 0.0.0.0, a gateway
                found.append(str(ipaddress.IPv4Address(bytes.fromhex(f[2])[::-1])))
    except (OSError, ValueError) as exc:
        log.warning("cannot read IPv4 routes from %s: %s", route4, exc)
    try:
        for line in route6.read_text().splitlines():
            f = line.split()
            if len(f) >= 5 and f[0] == "0" * 32 and f[1] == "00" and f[4] != "0" * 32:
                found.append(str(ipaddress.IPv6Address(bytes.fromhex(f[4]))))
    except FileNotFoundError:
        pass  # no IPv6 on this board
    except (OSError, ValueError) as exc:
        log.warning("cannot read IPv6 routes from %s: %s", route6, exc)
    return found


def dns_servers(resolv_conf: Path = RESOLV_CONF) -> list[str]:
    """The ``nameserver`` lines of resolv.conf (loopback stubs such as systemd-resolved's are skipped)."""
    found = []
    try:
        for line in resolv_conf.read_text().splitlines():
            f = line.split()
            if len(f) >= 2 and f[0] == "nameserver":
                address = ipaddress.ip_address(f[1].split("%")[0])
                if not address.is_loopback:
                    found.append(str(address))
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as exc:
        log.warning("cannot read DNS servers from %s: %s", resolv_conf, exc)
    return found


def host_addresses(host: str) -> list[str]:
    """The addresses ``host`` resolves to now (the broker's)."""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError) as exc:
        log.warning("cannot resolve %s to keep it off the block list: %s", host, exc)
        return []
    return sorted({str(ipaddress.ip_address(info[4][0].split("%")[0])) for info in infos})


def effective_allowlist(configured: list[str], broker_host: str | None = None) -> list[str]:
    """Configured entries first, then gateways, DNS servers and the broker; no duplicates."""
    found = {"gateway": gateways(), "DNS": dns_servers(), "broker": host_addresses(broker_host) if broker_host else []}
    out = list(dict.fromkeys(configured))
    for what, addresses in found.items():
        for a in addresses:
            if a not in out:
                out.append(a)
                log.info("allowlisted %s %s", what, a)
    return out
