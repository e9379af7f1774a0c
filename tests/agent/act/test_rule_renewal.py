"""Local rules are renewed while their attack goes on: any hit for a source, a flood's rate for a flood rule.

A rule on what a spoofed flood has in common (one protocol from any source)
must lapse when the flood stops, even though ordinary traffic of that
protocol keeps hitting it; otherwise one flood would block it for ever.
"""

from __future__ import annotations

import dataclasses
import ipaddress

import pytest

import agent.live as live
from agent.config import load_config
from agent.live import LiveAgent
from agent.profile import load_profile
from agent.wire.rules import Rule

BLOCK_S = 100.0


@pytest.fixture
def agent(tmp_path, monkeypatch):
    clock = {"now": 1000.0}
    monkeypatch.setattr(live.time, "time", lambda: clock["now"])
    config = dataclasses.replace(load_config(None), state_dir=tmp_path, block_seconds=BLOCK_S)
    a = LiveAgent(load_profile("rpi-zero-2w"), config, interface="lo", enforcement="none")
    for rid, net, proto in (("src:10.0.0.9", "10.0.0.9/32", None), ("flood:10.0.0.1:tcp:None", "0.0.0.0/0", "tcp")):
        a.rules.add(Rule(rid, ipaddress.ip_network(net), proto, None, "drop", 1000.0 + BLOCK_S, "test"), origin="local")
    a.clock = clock
    return a


def hit(a: LiveAgent, rule_id: str, count: int) -> None:
    a.rules.entries[rule_id].hits += count


def expiry(a: LiveAgent, rule_id: str) -> float | None:
    entry = a.rules.entries.get(rule_id)
    return entry.rule.expires if entry else None


def test_a_trickle_renews_a_source_rule_but_not_a_flood_rule(agent):
    agent.clock["now"] = 1060.0  # past half the lifetime: due for renewal if the attack goes on
    hit(agent, "src:10.0.0.9", 1)
    hit(agent, "flood:10.0.0.1:tcp:None", 600)  # 10 packets/s of ordinary TCP: no flood
    agent.housekeeping(force=True)
    assert expiry(agent, "src:10.0.0.9") == 1060.0 + BLOCK_S
    assert expiry(agent, "flood:10.0.0.1:tcp:None") == 1000.0 + BLOCK_S
    agent.clock["now"] = 1101.0
    agent.housekeeping(force=True)
    assert expiry(agent, "flood:10.0.0.1:tcp:None") is None  # lapsed
    assert expiry(agent, "src:10.0.0.9") == 1060.0 + BLOCK_S


def test_a_flood_at_full_rate_keeps_its_rule(agent):
    flood_rate = agent.decision.cfg.flood_rate
    agent.clock["now"] = 1060.0
    hit(agent, "flood:10.0.0.1:tcp:None", int(flood_rate * 60) + 1)
    agent.housekeeping(force=True)
    assert expiry(agent, "flood:10.0.0.1:tcp:None") == 1060.0 + BLOCK_S
    # Renewed once; the next renewal needs the flood's rate again since then.
    agent.clock["now"] = 1120.0
    hit(agent, "flood:10.0.0.1:tcp:None", 10)
    agent.housekeeping(force=True)
    assert expiry(agent, "flood:10.0.0.1:tcp:None") == 1060.0 + BLOCK_S
