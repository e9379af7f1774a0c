"""nftables enforcement against real traffic in network namespaces the tests create.

Namespace B runs the rules and a UDP receiver; namespace A sends from two
addresses (the attacker and an innocent peer) over a veth pair.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys

import pytest

from agent.act.enforce import BlockEntry, EnforcementError, NftablesEnforcer, NoneEnforcer, make_enforcer
from lab import REPO, netns

PORT, OTHER_PORT = 5555, 5556
_reason = netns.skip_reason() or (None if shutil.which("nft") else "needs nft (apt-get install nftables)")
needs_nft = pytest.mark.skipif(_reason is not None, reason=str(_reason))


# -- helpers -------------------------------------------------------------------




class Traffic:
    """UDP senders in namespace A (one per source address) and receivers in B."""

    def __init__(self, link: netns.VethLink) -> None:
        self.link = link
        self.sockets: list[socket.socket] = []
        self.rx = {}
        for family, addr in ((socket.AF_INET, link.ip4_b), (socket.AF_INET6, link.ip6_b)):
            for port in (PORT, OTHER_PORT):
                sock = self._socket(link.b, family)
                sock.bind((addr, port))
                sock.setblocking(False)
                self.rx[addr, port] = sock
        self.tx = {}
        for family, addr in ((socket.AF_INET, link.ip4_a), (socket.AF_INET, link.ip4_a2),
                             (socket.AF_INET6, link.ip6_a), (socket.AF_INET6, link.ip6_a2)):  # fmt: skip
            sock = self._socket(link.a, family)
            sock.bind((addr, 0))
            self.tx[addr] = sock

    def _socket(self, ns: netns.NetNamespace, family: int) -> socket.socket:
        sock = ns.socket(family, socket.SOCK_DGRAM)
        self.sockets.append(sock)
        return sock

    def send(self, src: str, dst: str, port: int = PORT, payload: bytes = b"hello") -> None:
        self.tx[src].sendto(payload, (dst, port))

    def received(self, dst: str, port: int = PORT) -> list[tuple[str, bytes]]:
        """Everything queued on the receiver now, as (source address, payload)."""
        got = []
        while True:
            try:
                data, addr = self.rx[dst, port].recvfrom(2048)
            except BlockingIOError:
                return got
            got.append((addr[0], data))

    def delivered(self, src: str, dst: str, port: int = PORT) -> bool:
        """Send one datagram and wait for it (True), or for its drop to be counted (False)."""
        token = os.urandom(8)
        self.send(src, dst, port, token)
        seen: list = []
        netns.wait_until(
            lambda: seen.extend(self.received(dst, port)) or any(p == token for _, p in seen),
            f"{src} -> {dst}:{port}",
            10,
        )
        return True

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()


def drops(enforcer: NftablesEnforcer, set_name: str) -> int:
    return enforcer.counters()[set_name]["packets"]


def assert_dropped(
    traffic: Traffic, enforcer: NftablesEnforcer, set_name: str, src: str, dst: str, port: int = PORT
) -> None:
    """Send one datagram that must be dropped: the set's counter grows and nothing arrives."""
    before = drops(enforcer, set_name)
    traffic.send(src, dst, port, b"must not arrive")
    netns.wait_until(lambda: drops(enforcer, set_name) == before + 1, f"the {set_name} drop counter counting {src}")
    assert [p for _, p in traffic.received(dst, port) if p == b"must not arrive"] == []


@pytest.fixture
def link():
    with netns.veth_pair() as pair:
        yield pair


@pytest.fixture
def traffic(link):
    t = Traffic(link)
    try:
        yield t
    finally:
        t.close()


@pytest.fixture
def enforcer(link):
    e = NftablesEnforcer(table=f"iotguard_{netns.unique_token()}", netns=link.b.name)
    e.start()
    try:
        yield e
    finally:
        e.stop()


def table_json(ns: netns.NetNamespace, table: str) -> list[dict]:
    return json.loads(ns.run("nft", "-j", "list", "table", "inet", table).stdout)["nftables"]


# -- entries and backends without a kernel -----------------------------------


def test_block_entries_are_checked_and_normalised():
    assert BlockEntry("10.1.2.3/24").address == "10.1.2.0/24"
    assert BlockEntry("10.1.2.3/32").address == "10.1.2.3"
    assert BlockEntry("::ffff:192.0.2.7").address == "192.0.2.7"
    assert BlockEntry("2001:DB8::1").address == "2001:db8::1"
    assert BlockEntry("192.0.2.7", "UDP", 53).key == ("192.0.2.7", 17, 53)
    for bad, message in (
        (dict(address="10.1.2.300"), "not an IP address"),
        (dict(address="192.0.2.7", dport=53), "dport needs a protocol"),
        (dict(address="192.0.2.7", proto="icmp", dport=1), "dport needs a protocol"),
        (dict(address="192.0.2.7", proto="udp", dport=70000), "port number"),
        (dict(address="192.0.2.7", proto="carrier-pigeon"), "unknown protocol"),
        (dict(address="192.0.2.7", timeout=0), "timeout"),
    ):
        with pytest.raises(ValueError, match=message):
            BlockEntry(**bad)


def test_none_enforcer_records_without_acting():
    e = make_enforcer("none")
    assert isinstance(e, NoneEnforcer)
    e.start()
    e.block([BlockEntry("192.0.2.1"), BlockEntry("192.0.2.2", timeout=5)])
    e.unblock([BlockEntry("192.0.2.1")])
    assert set(e.active) == {("192.0.2.2", None, None)}
    e.sync([BlockEntry("198.51.100.0/24")])
    assert set(e.active) == {("198.51.100.0/24", None, None)} and e.counters() == {}
    e.stop()
    assert [c for c, _ in e.calls] == ["start", "block", "unblock", "sync", "stop"] and not e.active
    with pytest.raises(ValueError, match="nftables"):
        make_enforcer("iptables")


def test_missing_nft_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    e = NftablesEnforcer()
    for action in (e.check, e.start):
        with pytest.raises(EnforcementError, match=r"`nft` \(nftables\) not found in PATH.*apt-get install nftables"):
            action()


def test_using_it_before_start_is_a_clear_error():
    with pytest.raises(EnforcementError, match="call start"):
        NftablesEnforcer().block([BlockEntry("192.0.2.1")])


# -- the real thing ------------------------------------------------------------


@needs_nft
def test_start_creates_the_table_and_stop_removes_it(link):
    e = NftablesEnforcer(table=f"iotguard_{netns.unique_token()}", netns=link.b.name)
    e.start()
    try:
        items = table_json(link.b, e.table)
        sets = {i["set"]["name"] for i in items if "set" in i}
        chains = [i["chain"] for i in items if "chain" in i]
        rules = [i["rule"]["comment"] for i in items if "rule" in i]
        assert sets == {"allow4", "allow6", "blocked4", "blocked4_net", "blocked4_port", "blocked6", "blocked6_net",
                        "blocked6_port"}  # fmt: skip
        assert [(c["hook"], c["prio"], c["policy"]) for c in chains] == [("prerouting", -300, "accept")]
        assert sorted(rules) == sorted(sets | {"loopback"})
        e.start()  # again: replaces, does not fail or duplicate
        assert len([i for i in table_json(link.b, e.table) if "rule" in i]) == 9
    finally:
        e.stop()
    assert e.table not in link.b.run("nft", "list", "tables").stdout
    e.stop()  # stopping twice is harmless


@needs_nft
def test_blocked_address_is_dropped_and_others_still_arrive(link, traffic, enforcer):
    attacker, peer = link.ip4_a, link.ip4_a2
    assert traffic.delivered(attacker, link.ip4_b)  # reachable before the block
    enforcer.block([BlockEntry(attacker)])
    for _ in range(3):
        assert_dropped(traffic, enforcer, "blocked4", attacker, link.ip4_b)
    assert traffic.delivered(peer, link.ip4_b)
    counters = enforcer.counters()
    assert counters["blocked4"]["packets"] == 3 and counters["blocked4"]["bytes"] > 3 * 28
    assert counters["blocked4"]["elements"] == 1
    enforcer.unblock([BlockEntry(attacker)])
    assert traffic.delivered(attacker, link.ip4_b)
    enforcer.unblock([BlockEntry(attacker)])  # unblocking what is not blocked is harmless


@needs_nft
def test_the_boards_own_address_blocked_never_drops_its_connections_to_itself(link, traffic, enforcer):
    """A flood forging the board's own address as its source (CIC-IoT's "SynonymousIP" flood) convicts that address;
    the board's connections to itself (through lo) still pass."""
    board = link.ip4_b
    enforcer.block([BlockEntry(board)])
    assert enforcer.counters()["blocked4"]["elements"] == 1
    own = link.b.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        own.bind((board, 0))
        own.sendto(b"to myself", (board, PORT))
        seen: list = []
        netns.wait_until(lambda: seen.extend(traffic.received(board)) or (board, b"to myself") in seen,
                         "the board's datagram to its own address", 10)  # fmt: skip
    finally:
        own.close()


@needs_nft
def test_ipv6_address_and_ranges(link, traffic, enforcer):
    enforcer.block([BlockEntry(link.ip6_a), BlockEntry("10.199.0.0/31")])  # the /31 holds .0 and .1, not .3
    assert_dropped(traffic, enforcer, "blocked6", link.ip6_a, link.ip6_b)
    assert traffic.delivered(link.ip6_a2, link.ip6_b)
    assert_dropped(traffic, enforcer, "blocked4_net", link.ip4_a, link.ip4_b)
    assert traffic.delivered(link.ip4_a2, link.ip4_b)


@needs_nft
def test_nested_ranges_merge_into_the_widest(link, traffic, enforcer):
    enforcer.block([BlockEntry("10.199.0.0/31", timeout=300)])
    enforcer.block([BlockEntry("10.199.0.0/24", timeout=60), BlockEntry("10.199.0.2/31", timeout=30)])
    enforcer.block([BlockEntry(link.ip4_a)])  # an address inside a blocked range: a separate set
    items = table_json(link.b, enforcer.table)
    (ranges,) = [i["set"]["elem"] for i in items if "set" in i and i["set"]["name"] == "blocked4_net"]
    assert len(ranges) == 1 and ranges[0]["elem"]["val"]["prefix"] == {"addr": "10.199.0.0", "len": 24}
    assert ranges[0]["elem"]["timeout"] >= 299  # as long as the longest of the merged ranges
    assert_dropped(traffic, enforcer, "blocked4_net", link.ip4_a2, link.ip4_b)


@needs_nft
def test_timeout_expires(link, traffic, enforcer):
    enforcer.block([BlockEntry(link.ip4_a, timeout=1.5)])
    assert_dropped(traffic, enforcer, "blocked4", link.ip4_a, link.ip4_b)
    token = b"after the timeout"

    def through() -> bool:
        traffic.send(link.ip4_a, link.ip4_b, PORT, token)
        return any(p == token for _, p in traffic.received(link.ip4_b))

    netns.wait_until(through, "the block to expire")
    assert enforcer.counters()["blocked4"]["elements"] == 0
    enforcer.block([BlockEntry(link.ip4_a, timeout=60)])  # blocking again after expiry works
    assert_dropped(traffic, enforcer, "blocked4", link.ip4_a, link.ip4_b)


@needs_nft
def test_refresh_changes_the_timeout(link, enforcer):
    enforcer.block([BlockEntry(link.ip4_a, timeout=5)])
    enforcer.block([BlockEntry(link.ip4_a, timeout=600)])
    items = table_json(link.b, enforcer.table)
    (elems,) = [i["set"]["elem"] for i in items if "set" in i and i["set"]["name"] == "blocked4"]
    assert len(elems) == 1 and elems[0]["elem"]["timeout"] >= 599


@needs_nft
def test_protocol_and_port_rules(link, traffic, enforcer):
    enforcer.block([BlockEntry(link.ip4_a, "udp", PORT), BlockEntry(link.ip4_a2, "tcp")])
    assert_dropped(traffic, enforcer, "blocked4_port", link.ip4_a, link.ip4_b, PORT)
    assert traffic.delivered(link.ip4_a, link.ip4_b, OTHER_PORT)  # other port: fine
    assert traffic.delivered(link.ip4_a2, link.ip4_b, PORT)  # a2 is blocked for TCP only
    before = drops(enforcer, "blocked4_port")
    tcp = link.a.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        tcp.bind((link.ip4_a2, 0))
        tcp.setblocking(False)
        tcp.connect_ex((link.ip4_b, PORT))  # its SYN must be dropped
        netns.wait_until(lambda: drops(enforcer, "blocked4_port") > before, "the TCP SYN from a2 being dropped")
    finally:
        tcp.close()


@needs_nft
def test_sync_replaces_everything(link, traffic, enforcer):
    enforcer.block([BlockEntry(link.ip4_a), BlockEntry("10.199.0.0/30"), BlockEntry(link.ip6_a, "udp")])
    enforcer.sync([BlockEntry(link.ip4_a2)])
    assert {k: v["elements"] for k, v in enforcer.counters().items() if v["elements"]} == {"blocked4": 1}
    assert traffic.delivered(link.ip4_a, link.ip4_b)
    assert traffic.delivered(link.ip6_a, link.ip6_b)
    assert_dropped(traffic, enforcer, "blocked4", link.ip4_a2, link.ip4_b)


@needs_nft
def test_stop_lets_traffic_through_again(link, traffic):
    e = NftablesEnforcer(table=f"iotguard_{netns.unique_token()}", netns=link.b.name)
    e.start()
    e.block([BlockEntry(link.ip4_a)])
    assert_dropped(traffic, e, "blocked4", link.ip4_a, link.ip4_b)
    e.stop()
    assert traffic.delivered(link.ip4_a, link.ip4_b)


@needs_nft
def test_nft_failures_are_reported(link, enforcer):
    with pytest.raises(EnforcementError, match="nft failed"):
        NftablesEnforcer(table="no spaces allowed", netns=link.b.name).start()
    link.b.run("nft", "delete", "table", "inet", enforcer.table)  # someone removes our table
    with pytest.raises(EnforcementError, match="nft failed.*No such file or directory"):
        enforcer.block([BlockEntry("192.0.2.1")])
    enforcer.start()  # start() recovers
    enforcer.block([BlockEntry("192.0.2.1")])


@needs_nft
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv to drop a capability")
def test_missing_cap_net_admin_is_explained(link):
    code = f"from agent.act.enforce import NftablesEnforcer\nNftablesEnforcer(netns={link.b.name!r}).check()"
    # ip netns exec itself needs CAP_SYS_ADMIN, so only CAP_NET_ADMIN goes.
    proc = subprocess.run(
        ["setpriv", "--bounding-set=-net_admin", "--inh-caps=-net_admin", sys.executable, "-c", code],
        check=False, capture_output=True, text=True, cwd=REPO, timeout=60,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "EnforcementError" in proc.stderr and "CAP_NET_ADMIN" in proc.stderr


@needs_nft
def test_allowlisted_sources_pass_even_a_rule_on_any_source(link, traffic):
    """A spoofed-flood rule blocks every source; the allowlist (gateway, DNS, broker...) still gets through."""
    e = NftablesEnforcer(table=f"iotguard_{netns.unique_token()}", netns=link.b.name, allow=[link.ip4_a2])
    e.start()
    try:
        e.block([BlockEntry("0.0.0.0/0", "udp")])
        assert_dropped(traffic, e, "blocked4_port", link.ip4_a, link.ip4_b)
        assert traffic.delivered(link.ip4_a2, link.ip4_b)
        e.set_allowlist([])  # SIGHUP with a configuration that no longer lists it
        assert_dropped(traffic, e, "blocked4_port", link.ip4_a2, link.ip4_b)
    finally:
        e.stop()
