"""The automatic allowlist: default gateways, DNS servers and the broker are found and kept off the block list."""

from __future__ import annotations

from agent.act.allowlist import dns_servers, effective_allowlist, gateways

ROUTE4 = """Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t0101A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0
eth0\t0001A8C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0
"""
# default route via fe80::1 on eth0, and a connected /64 without a gateway
ROUTE6 = (
    "00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000001 "
    "00000400 00000001 00000000 00000003 eth0\n"
    "fd000000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 "
    "00000100 00000001 00000000 00000001 eth0\n"
)


def test_default_gateways_are_read_from_the_routing_tables(tmp_path):
    (tmp_path / "route").write_text(ROUTE4)
    (tmp_path / "ipv6_route").write_text(ROUTE6)
    assert gateways(tmp_path / "route", tmp_path / "ipv6_route") == ["192.168.1.1", "fe80::1"]


def test_unreadable_routes_give_no_gateway(tmp_path):
    (tmp_path / "route").write_text("Iface\tDestination\tGateway\neth0\t00000000\tnot-hex\n")
    assert gateways(tmp_path / "route", tmp_path / "missing") == []


def test_dns_servers_skip_loopback_stubs(tmp_path):
    conf = tmp_path / "resolv.conf"
    conf.write_text("# generated\nsearch lan\nnameserver 127.0.0.53\nnameserver 192.168.1.53\nnameserver fe80::53%eth0\n")
    assert dns_servers(conf) == ["192.168.1.53", "fe80::53"]
    assert dns_servers(tmp_path / "none") == []


def test_effective_allowlist_keeps_configured_entries_first_and_adds_the_broker():
    allow = effective_allowlist(["10.1.2.3", "10.1.2.3", "192.168.7.0/24"], broker_host="127.0.0.1")
    assert allow[:2] == ["10.1.2.3", "192.168.7.0/24"]
    assert "127.0.0.1" in allow
    assert len(allow) == len(set(allow))
