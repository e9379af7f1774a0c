"""agent.act.respond: verdicts -> rules, kernel blocks and alerts; renewal and expiry; fleet rule sets.

Local rules are renewed while their attack goes on: any hit for a source, a
flood's rate for a flood rule.  A rule on what a spoofed flood has in common
(one protocol from any source) must lapse when the flood stops, even though
ordinary traffic of that protocol keeps hitting it; otherwise one flood would
block it for ever.
"""

from __future__ import annotations

import ipaddress
import json

import pytest

from agent.act.enforce import EnforcementError, NoneEnforcer
from agent.act.filter import RuleTable
from agent.act.respond import FLOOD_RULE_PREFIX, Responder, ResponseConfig
from agent.detect.decide import DecisionConfig, Verdict
from agent.wire.rules import Rule

BLOCK_S = 100.0
SOURCE_RULE, FLOOD_RULE = "src:10.0.0.9", f"{FLOOD_RULE_PREFIX}10.0.0.1:tcp:None"


def rule(rid: str, net: str, proto: str | None = None, expires: float | None = 2e9) -> Rule:
    return Rule(rid, ipaddress.ip_network(net), proto, None, "drop", expires, "test")


def verdict(kind: str = "source", label: str = "mirai_syn", basis: str = "model", **kw) -> Verdict:
    fields = dict(kind=kind, label=label, confidence=0.93, packets=40, first_seen=1.0, last_seen=2.0, decided_at=2.0,
                  basis=basis)  # fmt: skip
    return Verdict(**(fields | kw))


@pytest.fixture
def responder(tmp_path) -> Responder:
    r = Responder(RuleTable(["192.168.1.1"], path=tmp_path / "rules.json"), NoneEnforcer(), ResponseConfig(block_seconds=BLOCK_S))
    for rid, net, proto in ((SOURCE_RULE, "10.0.0.9/32", None), (FLOOD_RULE, "0.0.0.0/0", "tcp")):
        r.rules.add(rule(rid, net, proto, 1000.0 + BLOCK_S), origin="local")
    return r


def expiry(r: Responder, rule_id: str) -> float | None:
    entry = r.rules.entries.get(rule_id)
    return entry.rule.expires if entry else None


def test_a_trickle_renews_a_source_rule_but_not_a_flood_rule(responder):
    responder.rules.entries[SOURCE_RULE].hits += 1
    responder.rules.entries[FLOOD_RULE].hits += 600  # 10 packets/s of ordinary TCP: no flood
    responder.housekeeping(1060.0)  # past half the lifetime: due for renewal if the attack goes on
    assert expiry(responder, SOURCE_RULE) == 1060.0 + BLOCK_S
    assert expiry(responder, FLOOD_RULE) == 1000.0 + BLOCK_S
    responder.housekeeping(1101.0)
    assert expiry(responder, FLOOD_RULE) is None  # lapsed
    assert expiry(responder, SOURCE_RULE) == 1060.0 + BLOCK_S


def test_a_flood_at_full_rate_keeps_its_rule(responder):
    assert responder.config.flood_rate == DecisionConfig().flood_rate  # one default, the decision stage's
    responder.rules.entries[FLOOD_RULE].hits += int(responder.config.flood_rate * 60) + 1
    responder.housekeeping(1060.0)
    assert expiry(responder, FLOOD_RULE) == 1060.0 + BLOCK_S
    # Renewed once; the next renewal needs the flood's rate again since then.
    responder.rules.entries[FLOOD_RULE].hits += 10
    responder.housekeeping(1120.0)
    assert expiry(responder, FLOOD_RULE) == 1060.0 + BLOCK_S


def test_a_source_blocked_again_after_its_rule_lapsed_is_renewed_on_its_new_hits(responder):
    responder.rules.entries[SOURCE_RULE].hits += 50
    responder.housekeeping(1060.0)  # renewed: the record says 50 hits by 1060
    responder.housekeeping(1060.0 + BLOCK_S + 1)  # no hit since: lapsed
    assert expiry(responder, SOURCE_RULE) is None
    responder.act([verdict(src_ip="10.0.0.9")], now=2000.0)  # the source comes back: a new rule, 0 hits
    responder.rules.entries[SOURCE_RULE].hits += 3
    responder.housekeeping(2060.0)
    assert expiry(responder, SOURCE_RULE) == 2060.0 + BLOCK_S  # not judged against the old rule's 50 hits


def test_verdicts_become_rules_blocks_and_alerts(responder):
    spoofed = verdict("spoofed", "mirai_ack", victim_ip="10.0.0.5", victim_port=80, proto=6, src_mac="02:00:00:00:00:01")
    alerts = responder.act([verdict(src_ip="10.0.0.7", src_port=4444), spoofed, verdict(src_ip="192.168.1.1")], now=1000.0)
    assert [(a["action"], a["rule_id"]) for a in alerts] == [
        ("drop", "src:10.0.0.7"), ("drop", f"{FLOOD_RULE_PREFIX}10.0.0.5:tcp:80"), ("none", None)]  # allowlisted: no rule
    assert alerts[1]["source"]["ip"] == "spoofed" and alerts[0]["source"]["port"] == 4444
    blocked = {e.address for e in responder.enforcer.active.values()}
    assert {"10.0.0.7", "0.0.0.0/0"} <= blocked and "192.168.1.1" not in blocked
    assert responder.rules.entries["src:10.0.0.7"].rule.expires == 1000.0 + BLOCK_S
    saved = json.loads(responder.rules.path.read_text())["rules"]  # new rules are saved at once
    assert {"src:10.0.0.7", f"{FLOOD_RULE_PREFIX}10.0.0.5:tcp:80"} <= {r["id"] for r in saved}


def test_anomaly_verdicts_block_only_when_configured(responder):
    odd = verdict(label="anomaly", basis="anomaly", src_ip="10.0.0.8")
    assert responder.act([odd], now=1000.0)[0]["action"] == "none"
    responder.config.block_anomalies = True
    assert responder.act([odd], now=1000.0)[0]["action"] == "drop"


def test_a_kernel_that_refuses_keeps_the_rule_and_is_resynced(responder, monkeypatch):
    def refuse(entries):
        raise EnforcementError("nft: busy")

    monkeypatch.setattr(responder.enforcer, "block", refuse)
    alerts = responder.act([verdict(src_ip="10.0.0.7")], now=1000.0)
    assert alerts[0]["action"] == "drop" and "src:10.0.0.7" in responder.rules.entries
    assert responder.kernel_stale and responder.enforcement_errors == 1
    responder.housekeeping(1000.0 + responder.config.resync_s)  # retried: the whole table goes to the kernel
    assert not responder.kernel_stale
    assert "10.0.0.7" in {e.address for e in responder.enforcer.active.values()}


def test_a_fleet_rule_set_replaces_its_origin_and_rolls_back_when_the_kernel_refuses(responder, monkeypatch):
    responder.apply_ruleset("all", [rule("f1", "198.51.100.0/24"), rule("f2", "203.0.113.9/32")], now=1000.0)
    assert {r.id for r in responder.rules.rules("all")} == {"f1", "f2"}
    assert "198.51.100.0/24" in {e.address for e in responder.enforcer.active.values()}

    def refuse(entries):
        raise EnforcementError("nft: no memory")

    monkeypatch.setattr(responder.enforcer, "sync", refuse)
    with pytest.raises(EnforcementError):
        responder.apply_ruleset("all", [rule("f3", "192.0.2.0/24")], now=1001.0)
    assert {r.id for r in responder.rules.rules("all")} == {"f1", "f2"}  # as the kernel still has it


def test_fleet_rules_are_not_saved_and_survive_a_reload(responder):
    responder.apply_ruleset("device", [rule("d1", "198.51.100.7/32")], now=1000.0)
    responder.act([verdict(src_ip="10.0.0.7")])  # now: the reload reads the file at the real time
    saved = json.loads(responder.rules.path.read_text())["rules"]
    assert "d1" not in {r["id"] for r in saved}  # the fleet link keeps the signed rule set instead
    assert responder.reload(["192.168.0.0/16"]) == 1  # SIGHUP: local rules re-read, new allowlist
    assert [r.id for r in responder.rules.rules("local")] == ["src:10.0.0.7"]
    assert [r.id for r in responder.rules.rules("device")] == ["d1"]
    assert responder.enforcer.allow == ["192.168.0.0/16"]
    assert "198.51.100.7" in {e.address for e in responder.enforcer.active.values()}
