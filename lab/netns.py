"""Network namespaces and veth pairs for tests that need a real kernel network.

``veth_pair()`` creates two fresh namespaces joined by a veth pair, with
unique names per test run, and always deletes them again (also when the test
fails).  ``entered(ns)`` switches the calling thread into a namespace for a
moment, so that sockets created inside belong to it: they keep working after
we switch back, so a test can drive both ends from one process.
"""

from __future__ import annotations

import ctypes
import itertools
import logging
import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

log = logging.getLogger(__name__)

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
_counter = itertools.count()
_RUN_TOKEN = secrets.token_hex(2)  # differs between concurrent test runs


def skip_reason() -> str | None:
    """Why namespace tests cannot run here, or None when they can."""
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    if shutil.which("ip") is None:
        return "needs the `ip` tool (apt-get install iproute2)"
    return None


def unique_token() -> str:
    return f"{_RUN_TOKEN}{next(_counter):x}"


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns failed: {os.strerror(err)}")


@dataclass
class NetNamespace:
    name: str

    @property
    def path(self) -> str:
        return f"/run/netns/{self.name}"

    def run(self, *args: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
        """Run a command inside the namespace (``ip netns exec``)."""
        return subprocess.run(
            ["ip", "netns", "exec", self.name, *args], check=check, capture_output=True, text=True, **kwargs
        )

    def socket(self, *args, **kwargs) -> socket.socket:
        """A socket that lives in this namespace."""
        with entered(self):
            return socket.socket(*args, **kwargs)


@contextmanager
def entered(ns: NetNamespace) -> Iterator[None]:
    """Run the body with the calling thread inside ``ns``."""
    with open("/proc/thread-self/ns/net") as home, open(ns.path) as target:
        _setns(target.fileno())
        try:
            yield
        finally:
            _setns(home.fileno())


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


@contextmanager
def namespace(tag: str = "ns") -> Iterator[NetNamespace]:
    """A fresh namespace with loopback up, deleted afterwards."""
    ns = NetNamespace(f"iotguard-test-{unique_token()}-{tag}")
    _ip("netns", "add", ns.name)
    try:
        ns.run("ip", "link", "set", "lo", "up")
        yield ns
    finally:
        done = _ip("netns", "delete", ns.name, check=False)
        if done.returncode:
            log.warning("could not delete namespace %s: %s", ns.name, done.stderr.strip())


@dataclass
class VethLink:
    """Two namespaces joined by a veth pair; side A has a second address (the "other peer")."""

    a: NetNamespace
    b: NetNamespace
    if_a: str
    if_b: str
    mac_a: str
    mac_b: str
    ip4_a: str = "10.199.0.1"
    ip4_a2: str = "10.199.0.3"
    ip4_b: str = "10.199.0.2"
    ip6_a: str = "fd00:199::1"
    ip6_a2: str = "fd00:199::3"
    ip6_b: str = "fd00:199::2"


@contextmanager
def veth_pair() -> Iterator[VethLink]:
    """Namespaces A and B with a veth pair between them, addressed and up."""
    token = unique_token()
    with namespace("a") as a, namespace("b") as b:
        link = VethLink(a, b, f"iga{token}", f"igb{token}", "02:00:00:00:00:0a", "02:00:00:00:00:0b")
        _ip("link", "add", link.if_a, "netns", a.name, "address", link.mac_a,
            "type", "veth", "peer", "name", link.if_b, "netns", b.name, "address", link.mac_b)  # fmt: skip
        for ns, ifname, addrs in (
            (a, link.if_a, (link.ip4_a, link.ip4_a2, link.ip6_a, link.ip6_a2)),
            (b, link.if_b, (link.ip4_b, link.ip6_b)),
        ):
            for addr in addrs:
                prefix = "64" if ":" in addr else "24"
                ns.run("ip", "addr", "add", f"{addr}/{prefix}", "dev", ifname, *(["nodad"] if ":" in addr else []))
            ns.run("ip", "link", "set", ifname, "up")
        # Static neighbours: no ARP/ND exchange needed before the first datagram.
        a.run("ip", "neigh", "replace", link.ip4_b, "lladdr", link.mac_b, "dev", link.if_a)
        a.run("ip", "neigh", "replace", link.ip6_b, "lladdr", link.mac_b, "dev", link.if_a)
        for addr4, addr6 in ((link.ip4_a, link.ip6_a), (link.ip4_a2, link.ip6_a2)):
            b.run("ip", "neigh", "replace", addr4, "lladdr", link.mac_a, "dev", link.if_b)
            b.run("ip", "neigh", "replace", addr6, "lladdr", link.mac_a, "dev", link.if_b)
        yield link


def wait_until(predicate, what: str, deadline_s: float = 20.0) -> None:
    """Poll ``predicate`` until it holds; fail naming ``what`` after ``deadline_s`` seconds."""
    end = time.monotonic() + deadline_s
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"gave up waiting for: {what}")
        time.sleep(0.02)
