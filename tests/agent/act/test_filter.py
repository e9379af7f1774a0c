"""The primary filter's rule table: matching, allowlist, hit counts, bounds and persistence."""

from __future__ import annotations

import ipaddress
import json

import numpy as np

from agent.act.filter import RuleTable, parse_rule_json
from agent.capture.packets import format_ip
from agent.wire.rules import Rule
from lab.packet_factory import random_batch


def rule(rid, source, proto=None, dport=None, expires=None) -> Rule:
    return Rule(rid, ipaddress.ip_network(source), proto, dport, "drop", expires, "test")


def _src(batch, i):
    return format_ip(batch.src_ip_hi[i], batch.src_ip_lo[i])


def _from(batch, addr):
    hi, lo = divmod(int(ipaddress.IPv6Address(f"::ffff:{addr}") if ":" not in addr else ipaddress.IPv6Address(addr)), 2**64)
    return (batch.src_ip_hi == hi) & (batch.src_ip_lo == lo) & np.isin(batch.l3, (1, 2, 3))


def test_single_address_rule_drops_exactly_that_source():
    b = random_batch(2000, 1)
    addr = _src(b, 0)
    table = RuleTable()
    assert table.add(rule("a", addr))
    res = table.apply(b)
    want = _from(b, addr)
    assert res.dropped == want.sum() > 0
    np.testing.assert_array_equal(~res.keep, want)
    assert res.hits == {"a": int(want.sum())}
    assert table.entries["a"].hits == int(want.sum())


def test_cidr_and_port_rules():
    b = random_batch(3000, 2, hosts=4)
    b.proto[:] = 6
    addr = _src(b, 0)
    port = int(b.dport[b.port_kind == 1][0])
    table = RuleTable()
    table.add(rule("net", str(ipaddress.ip_network(addr + "/24", strict=False))))
    res = table.apply(b)
    assert res.dropped >= _from(b, addr).sum()
    table = RuleTable()
    table.add(rule("port", addr, "tcp", port))
    res = table.apply(b)
    want = _from(b, addr) & (b.port_kind == 1) & (b.dport == port)
    np.testing.assert_array_equal(~res.keep, want)


def test_allowlist_is_never_blocked():
    b = random_batch(1000, 3)
    addr = _src(b, 0)
    table = RuleTable(allowlist=[addr])
    assert not table.add(rule("a", addr))  # refused outright
    table.replace_origin("all", [rule("fleet", "0.0.0.0/0")])  # a catch-all rule still spares it
    res = table.apply(b)
    assert not (~res.keep & _from(b, addr)).any()
    assert res.dropped > 0


def test_local_rules_are_bounded():
    table = RuleTable(max_local_rules=10)
    added = [table.add(rule(f"r{i}", f"10.0.{i // 256}.{i % 256}")) for i in range(50)]
    assert sum(added) == 10 and table.count("local") == 10
    table.replace_origin("all", [rule(f"f{i}", f"10.1.0.{i}") for i in range(20)])  # other origins are not counted
    assert table.count() == 30


def test_rule_sets_of_different_origins_may_share_rule_ids():
    table = RuleTable()
    table.replace_origin("all", [rule("block-1", "198.51.100.7")])
    table.replace_origin("device", [rule("block-1", "203.0.113.9")])  # an operator's own numbering
    table.add(rule("block-1", "192.0.2.1"), origin="local")
    assert sorted(str(r.network) for r in table.rules()) == ["192.0.2.1/32", "198.51.100.7/32", "203.0.113.9/32"]
    table.replace_origin("device", [])
    assert [str(r.network) for r in table.rules("all")] == ["198.51.100.7/32"]


def test_rules_survive_restart_and_expire(tmp_path):
    path = tmp_path / "rules.json"
    table = RuleTable(path=path)
    table.add(rule("keep", "192.0.2.7", expires=2e9))
    table.add(rule("old", "192.0.2.8", expires=1.0))
    table.add(rule("fleet", "198.51.100.0/24"), origin="all")
    table.save()
    assert not list(tmp_path.glob("*.tmp"))
    again = RuleTable(path=path)
    assert again.load(now=100.0) == 1
    assert set(again.entries) == {"keep"}  # fleet rules come back from their signed rule sets, not this file


def test_corrupt_rule_file_is_reported_and_ignored(tmp_path, caplog):
    path = tmp_path / "rules.json"
    path.write_text('{"schema": "iotguard.rule-table/1", "rules": [')
    assert RuleTable(path=path).load() == 0
    assert "unreadable rule table" in caplog.text
    path.write_text(json.dumps({"schema": "iotguard.rule-table/1", "rules": [{"origin": "local", "id": "x", "source": "not-an-ip"}]}))
    assert RuleTable(path=path).load() == 0
    assert "skipping bad saved rule" in caplog.text


def test_parse_rule_json_round_trip():
    r = rule("a", "2001:db8::/32", "udp", 53, 123.0)
    assert parse_rule_json(r.to_json()) == r
